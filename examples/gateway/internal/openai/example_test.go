package openai_test

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"

	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
)

func ExampleParseChatCompletionRequest() {
	req, err := openai.ParseChatCompletionRequest([]byte(`{
		"model": "llama-3.1-8b",
		"messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
		"max_tokens": 32, "stream": true, "logit_bias": {}
	}`))
	if err != nil {
		panic(err)
	}
	n, _ := req.OutputLimit()
	fmt.Println(req.Model, req.Messages[0].Content.Text(), n, req.Stream)

	_, err = openai.ParseChatCompletionRequest([]byte(`{"model":"m","messages":[],"max_tokens":"32"}`))
	fmt.Println(err)
	// Output:
	// llama-3.1-8b Hello 32 true
	// openai: malformed JSON: max_tokens: invalid type for max_tokens: got string
}

// A gateway proxying a streamed upstream response forwards each event and
// meters the usage of the final chunk.
func ExampleStreamReader() {
	upstream := strings.NewReader("data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n" +
		"data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}\n\n" +
		"data: [DONE]\n\n")
	rec := httptest.NewRecorder()
	out := openai.NewSSEWriter(rec)
	r := openai.NewStreamReader(upstream, 0)
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		if ev.Done {
			_ = out.WriteDone()
			continue
		}
		_ = out.WriteData(ev.Data)
	}
	u, ok := r.Usage()
	fmt.Println(u.PromptTokens, u.CompletionTokens, ok)
	fmt.Print(rec.Body.String())
	// Output:
	// 9 1 true
	// data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}
	//
	// data: {"object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}
	//
	// data: [DONE]
}
