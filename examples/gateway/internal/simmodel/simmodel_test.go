package simmodel

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/internal/fakeclock"
)

func req(t testing.TB, body string) openai.ChatCompletionRequest {
	t.Helper()
	r, err := openai.ParseChatCompletionRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newModel(t testing.TB) *Model {
	t.Helper()
	clock := fakeclock.New(time.Unix(1_750_000_000, 0))
	m, err := New(&Options{Now: clock.Now, NewID: func() string { return "chatcmpl-test" }})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTokenCounts(t *testing.T) {
	tests := []struct {
		name             string
		body             string
		prompt, complete int64
	}{
		{"empty content", `{"model":"m","messages":[{"role":"user","content":""}]}`, 2 + 4, 16},
		{"one byte", `{"model":"m","messages":[{"role":"user","content":"a"}]}`, 2 + 4 + 1, 16},
		{"four bytes", `{"model":"m","messages":[{"role":"user","content":"abcd"}]}`, 2 + 4 + 1, 16},
		{"five bytes", `{"model":"m","messages":[{"role":"user","content":"abcde"}]}`, 2 + 4 + 2, 16},
		{"utf8 bytes not runes", `{"model":"m","messages":[{"role":"user","content":"₹₹"}]}`, 2 + 4 + 2, 16}, // 6 bytes
		{"per message ceil", `{"model":"m","messages":[{"role":"system","content":"abc"},{"role":"user","content":"abc"}]}`, 2 + 4 + 1 + 4 + 1, 16},
		{"parts", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url"},{"type":"text","text":"e"}]}]}`, 2 + 4 + 2 + ImageTokens, 16},
		{"low image, audio", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"detail":"low"}},{"type":"input_audio","input_audio":{"data":"AAAA"}}]}]}`,
			int64(2 + 4 + LowImageTokens + (len(`{"type":"input_audio","input_audio":{"data":"AAAA"}}`)+3)/4), 16},
		{"tools", `{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"c"}]}],"tools":[{"type":"function","function":{"name":"get_weather"}}],"tool_choice":"auto"}`,
			int64(2 + 4 + 1 + 4 + (len(`[{"id":"c"}]`)+3)/4 + (len(`[{"type":"function","function":{"name":"get_weather"}}]`)+3)/4 + (len(`"auto"`)+3)/4), 16},
		{"null assistant", `{"model":"m","messages":[{"role":"user","content":"abcd"},{"role":"assistant","content":null}]}`, 2 + 4 + 1 + 4, 16},
		{"max_tokens", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":100}`, 2 + 4 + 1, 100},
		{"max_completion_tokens wins", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":100,"max_completion_tokens":3}`, 2 + 4 + 1, 3},
	}
	m := newModel(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := req(t, tt.body)
			if got := PromptTokens(r); got != tt.prompt {
				t.Errorf("PromptTokens = %d, want %d", got, tt.prompt)
			}
			if got := EstimatePromptTokens(r); got != tt.prompt {
				t.Errorf("EstimatePromptTokens = %d, want %d", got, tt.prompt)
			}
			if got := CompletionTokens(r); got != tt.complete {
				t.Errorf("CompletionTokens = %d, want %d", got, tt.complete)
			}
			c, err := m.Complete(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			want := openai.Usage{PromptTokens: tt.prompt, CompletionTokens: tt.complete, TotalTokens: tt.prompt + tt.complete}
			if *c.Usage != want || Usage(r) != want {
				t.Errorf("usage %+v, want %+v", *c.Usage, want)
			}
			if words := len(strings.Fields(c.Choices[0].Message.Content)); int64(words) != tt.complete {
				t.Errorf("%d words for %d tokens", words, tt.complete)
			}
		})
	}
}

func TestDeterministicAndStreamMatches(t *testing.T) {
	m := newModel(t)
	ctx := context.Background()
	r := req(t, `{"model":"sim-1","messages":[{"role":"user","content":"Tell me about GST"}],"max_tokens":12}`)
	a, err := m.Complete(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.Complete(ctx, r)
	if a.Choices[0].Message.Content != b.Choices[0].Message.Content {
		t.Fatal("not deterministic")
	}
	other, _ := m.Complete(ctx, req(t, `{"model":"sim-1","messages":[{"role":"user","content":"Something else"}],"max_tokens":12}`))
	if other.Choices[0].Message.Content == a.Choices[0].Message.Content {
		t.Error("different prompts gave the same text")
	}
	longer := m.Text(r, 20)
	if !strings.HasPrefix(longer, strings.TrimSuffix(a.Choices[0].Message.Content, ".")) {
		t.Errorf("longer answer %q does not extend %q", longer, a.Choices[0].Message.Content)
	}
	if a.ID != "chatcmpl-test" || a.Created != 1_750_000_000 || a.Model != "sim-1" || a.Object != openai.ObjectChatCompletion ||
		a.Choices[0].FinishReason != openai.FinishStop || a.Choices[0].Message.Role != openai.RoleAssistant {
		t.Errorf("response %+v", a)
	}

	chunks, err := m.Stream(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) != 12+3 {
		t.Fatalf("%d chunks", len(chunks))
	}
	var text strings.Builder
	for i, c := range chunks {
		if c.ID != a.ID || c.Object != openai.ObjectChatCompletionChunk || c.Created != a.Created || c.Model != "sim-1" {
			t.Fatalf("chunk %d header %+v", i, c)
		}
		switch {
		case i == 0:
			if c.Choices[0].Delta.Role != openai.RoleAssistant || c.Choices[0].Delta.Content != "" {
				t.Errorf("first chunk %+v", c)
			}
		case i == len(chunks)-2:
			if fr := c.Choices[0].FinishReason; fr == nil || *fr != openai.FinishStop {
				t.Errorf("finish chunk %+v", c)
			}
		case i == len(chunks)-1:
			if len(c.Choices) != 0 || c.Usage == nil || *c.Usage != *a.Usage {
				t.Errorf("usage chunk %+v", c)
			}
			continue
		default:
			if c.Usage != nil || c.Choices[0].FinishReason != nil {
				t.Errorf("content chunk %d %+v", i, c)
			}
		}
		text.WriteString(c.Choices[0].Delta.Content)
	}
	if text.String() != a.Choices[0].Message.Content {
		t.Errorf("stream %q != complete %q", text.String(), a.Choices[0].Message.Content)
	}
}

func TestErrors(t *testing.T) {
	m, err := New(&Options{MaxCompletionTokens: 50})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := m.Complete(ctx, req(t, `{"model":"m","messages":[{"role":"user","content":"a"}],"max_tokens":51}`)); !errors.Is(err, ErrTooManyTokens) {
		t.Errorf("max: %v", err)
	}
	if _, err := m.Stream(ctx, req(t, `{"model":"m","messages":[{"role":"user","content":"a"}],"n":2}`)); !errors.Is(err, ErrUnsupported) {
		t.Errorf("n: %v", err)
	}
	if _, err := m.Complete(ctx, openai.ChatCompletionRequest{}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("empty: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Stream(cctx, req(t, `{"model":"m","messages":[{"role":"user","content":"a"}]}`)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	for _, bad := range []int64{-1, openai.MaxTokenLimit + 1} {
		if _, err := New(&Options{MaxCompletionTokens: bad}); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("options %d: %v", bad, err)
		}
	}
	if m.Text(req(t, `{"model":"m","messages":[{"role":"user","content":"a"}]}`), 51) != "" {
		t.Error("Text beyond limit")
	}
	d, _ := New(nil)
	c, err := d.Complete(ctx, req(t, `{"model":"m","messages":[{"role":"user","content":"a"}]}`))
	if err != nil || !strings.HasPrefix(c.ID, "chatcmpl-") || len(c.ID) != len("chatcmpl-")+24 {
		t.Errorf("default id %q %v", c.ID, err)
	}
}

func TestConcurrent(t *testing.T) {
	m, _ := New(nil)
	r := req(t, `{"model":"m","messages":[{"role":"user","content":"same"}],"max_tokens":8}`)
	want := m.Text(r, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				c, err := m.Complete(context.Background(), r)
				if err != nil || c.Choices[0].Message.Content != want {
					t.Errorf("concurrent answer %q %v", c.Choices[0].Message.Content, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// FuzzStreamMatchesComplete checks the streaming and non-streaming forms
// agree for any conversation and length.
func FuzzStreamMatchesComplete(f *testing.F) {
	f.Add("hello", "m", uint16(16))
	f.Add("", "", uint16(1))
	f.Fuzz(func(t *testing.T, content, model string, n uint16) {
		if model == "" || n == 0 || n > 512 {
			return
		}
		m := newModel(t)
		mt := int64(n)
		r := openai.ChatCompletionRequest{Model: model, Messages: []openai.Message{{Role: "user", Content: openai.TextContent(content)}}, MaxTokens: &mt}
		c, err := m.Complete(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		chunks, err := m.Stream(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, ch := range chunks {
			for _, cc := range ch.Choices {
				b.WriteString(cc.Delta.Content)
			}
		}
		if b.String() != c.Choices[0].Message.Content || *chunks[len(chunks)-1].Usage != *c.Usage || c.Usage.PromptTokens != 2+4+int64(len(content)+3)/4 {
			t.Fatalf("mismatch for %q", content)
		}
	})
}

func TestEstimable(t *testing.T) {
	for body, ok := range map[string]bool{
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"},{"type":"input_audio"},{"type":"refusal","refusal":"no"}]}]}`: true,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_data":"AAAA"}}]}]}`:                                                              true,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-1"}}]}]}`:                                                              false,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"video_url"}]}]}`:                                                                                     false,
	} {
		r, err := openai.ParseChatCompletionRequest([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if err := Estimable(r); (err == nil) != ok || (err != nil && !errors.Is(err, ErrUnsupported)) {
			t.Errorf("%s: %v", body, err)
		}
	}
}

// FuzzPromptTokens checks the prompt rule on any valid request: at least
// the fixed overhead and the text, and never negative however large the
// extras; Estimable never panics.
func FuzzPromptTokens(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"detail":"low"}},{"type":"file","file":{"file_id":"f"}},{"type":"x"}]}],"tools":[{"type":"function"}]}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"function":{"arguments":"{}"}}]}],"response_format":{"type":"json_object"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := openai.ParseChatCompletionRequest(body)
		if err != nil {
			return
		}
		_ = Estimable(r)
		floor := int64(primingTokens)
		for _, m := range r.Messages {
			floor += perMessageTokens + (int64(len(m.Content.Text()))+3)/4
		}
		if n := PromptTokens(r); n < floor || n > floor+int64(len(body))+int64(ImageTokens)*int64(len(body)) {
			t.Fatalf("prompt tokens %d, floor %d, body %d bytes", n, floor, len(body))
		}
	})
}
