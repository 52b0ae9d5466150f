package simmodel_test

import (
	"context"
	"fmt"
	"time"

	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/examples/gateway/internal/simmodel"
)

func Example() {
	model, err := simmodel.New(&simmodel.Options{
		Now:   func() time.Time { return time.Unix(1_750_000_000, 0) },
		NewID: func() string { return "chatcmpl-1" },
	})
	if err != nil {
		panic(err)
	}
	req, err := openai.ParseChatCompletionRequest([]byte(`{"model":"forii-sim","max_tokens":6,
		"messages":[{"role":"user","content":"What does a token cost?"}]}`))
	if err != nil {
		panic(err)
	}
	fmt.Println("reserve", simmodel.EstimatePromptTokens(req), "prompt tokens")

	resp, _ := model.Complete(context.Background(), req)
	fmt.Printf("%q\n", resp.Choices[0].Message.Content)
	u := resp.Usage
	fmt.Printf("prompt %d, completion %d, total %d tokens\n", u.PromptTokens, u.CompletionTokens, u.TotalTokens)

	chunks, _ := model.Stream(context.Background(), req)
	fmt.Println(len(chunks), "chunks, last carries usage:", chunks[len(chunks)-1].Usage.TotalTokens)
	// Output:
	// reserve 12 prompt tokens
	// "Words limits be of without limits."
	// prompt 12, completion 6, total 18 tokens
	// 9 chunks, last carries usage: 18
}
