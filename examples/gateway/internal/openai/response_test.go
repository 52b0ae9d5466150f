package openai

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
)

func TestParseChatCompletion(t *testing.T) {
	tests := []struct {
		name string
		body string
		want *Usage
		err  error
	}{
		{name: "ok", body: `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`, want: &Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}},
		{name: "total filled", body: `{"object":"chat.completion","usage":{"prompt_tokens":3,"completion_tokens":2}}`, want: &Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}},
		// OpenAI's details (LiteLLM #11364, #18599): parts of the totals.
		{name: "cached and reasoning", body: `{"object":"chat.completion","usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":256,"audio_tokens":0,"accepted_prediction_tokens":0}}}`,
			want: &Usage{PromptTokens: 2006, CompletionTokens: 300, TotalTokens: 2306, PromptTokensDetails: &PromptTokensDetails{CachedTokens: 1920}, CompletionTokensDetails: &CompletionTokensDetails{ReasoningTokens: 256}}},
		// A bad part never fails the response: it reads as 0 (plain price).
		{name: "parts bad", body: `{"object":"chat.completion","usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":-1},"completion_tokens_details":{"reasoning_tokens":1e30}}}`,
			want: &Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}},
		{name: "parts not numbers", body: `{"object":"chat.completion","usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":"7"},"completion_tokens_details":{"reasoning_tokens":1.5}}}`,
			want: &Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}},
		{name: "parts null", body: `{"object":"chat.completion","usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":null}}}`,
			want: &Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}},
		// Above its total a part is kept: keyledger clamps it and logs.
		{name: "part above total", body: `{"object":"chat.completion","usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":9}}}`,
			want: &Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5, PromptTokensDetails: &PromptTokensDetails{CachedTokens: 9}}},
		{name: "no usage", body: `{"object":"chat.completion","choices":[]}`},
		{name: "null content", body: `{"object":"chat.completion","choices":[{"message":{"role":"assistant","content":null}}]}`},
		{name: "wrong object", body: `{"object":"list"}`, err: ErrMalformedResponse},
		{name: "not JSON", body: `<html>`, err: ErrMalformedResponse},
		{name: "usage string", body: `{"object":"chat.completion","usage":{"prompt_tokens":"3"}}`, err: ErrMalformedResponse},
		{name: "usage negative", body: `{"object":"chat.completion","usage":{"prompt_tokens":-3}}`, err: ErrInvalidUsage},
		{name: "usage huge", body: `{"object":"chat.completion","usage":{"completion_tokens":1099511627777}}`, err: ErrInvalidUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseChatCompletion([]byte(tt.body))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if (c.Usage == nil) != (tt.want == nil) || (c.Usage != nil && !sameUsage(*c.Usage, *tt.want)) {
				t.Fatalf("usage %+v, want %+v", c.Usage, tt.want)
			}
		})
	}
}

// sameUsage compares counts, details included (absent details are zero).
func sameUsage(a, b Usage) bool {
	return a.PromptTokens == b.PromptTokens && a.CompletionTokens == b.CompletionTokens && a.TotalTokens == b.TotalTokens &&
		a.CachedTokens() == b.CachedTokens() && a.ReasoningTokens() == b.ReasoningTokens()
}

func FuzzParseChatCompletion(f *testing.F) {
	f.Add([]byte(`{"object":"chat.completion","usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":-4e99}}}`))
	f.Add([]byte(`{"object":"chat.completion","choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}`))
	f.Add([]byte(`{"object":"chat.completion","choices":[{"message":{"content":null,"refusal":"no","reasoning_content":"hm","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := ParseChatCompletion(body)
		if err != nil {
			return
		}
		for _, ch := range c.Choices {
			if n := ch.Message.OutputBytes(); n < int64(len(ch.Message.Content)+len(ch.Message.Refusal)) {
				t.Fatalf("output bytes %d, below the content and refusal", n)
			}
		}
		if u := c.Usage; u != nil && (u.CachedTokens() < 0 || u.CachedTokens() > maxUsageTokens || u.ReasoningTokens() < 0 || u.ReasoningTokens() > maxUsageTokens) {
			t.Fatalf("usage parts out of range: %+v", u)
		}
		if u := c.Usage; u != nil && (u.PromptTokens < 0 || u.CompletionTokens < 0 || u.TotalTokens < 0 || u.TotalTokens == 0 && u.PromptTokens+u.CompletionTokens != 0) {
			t.Fatalf("bad usage %+v", u)
		}
	})
}

func TestChatCompletionJSON(t *testing.T) {
	u := NewUsage(10, 16)
	c := ChatCompletion{ID: "chatcmpl-1", Object: ObjectChatCompletion, Created: 1700000000, Model: "m",
		Choices: []Choice{{Message: ResponseMessage{Role: RoleAssistant, Content: "hi"}, FinishReason: FinishStop}}, Usage: &u}
	b, _ := json.Marshal(c)
	want := `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":16,"total_tokens":26}}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	stop := FinishStop
	b, _ = json.Marshal(ChatCompletionChunk{ID: "x", Object: ObjectChatCompletionChunk, Choices: []ChunkChoice{{Delta: Delta{}, FinishReason: &stop}}})
	if want := `{"id":"x","object":"chat.completion.chunk","created":0,"model":"","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`; string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func TestDecimal(t *testing.T) {
	tests := []struct{ in, out string }{
		{"50", "50.00"}, {"50.0", "50.00"}, {"0.5", "0.50"}, {"12.345", "12.345"}, {"0.000001", "0.000001"},
		{"1e2", "100.00"}, {"1.50000", "1.50"}, {"-3", "-3.00"}, {"0", "0.00"}, {`"7.25"`, "7.25"}, {"1E-3", "0.001"},
	}
	for _, tt := range tests {
		var d Decimal
		if err := json.Unmarshal([]byte(tt.in), &d); err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		b, err := json.Marshal(d)
		if err != nil || string(b) != tt.out {
			t.Errorf("%s -> %s %v, want %s", tt.in, b, err, tt.out)
		}
		var back Decimal
		if err := json.Unmarshal(b, &back); err != nil || !back.Equal(d.Decimal) {
			t.Errorf("%s does not round-trip: %v", b, err)
		}
	}
	for _, bad := range []string{`"x"`, `true`, `null`, `"1e999999999"`, `1e999999999`, `{}`, `"1,5"`, `"NaN"`, `"Infinity"`, `"0x10"`, strings.Repeat("9", 25), "0." + strings.Repeat("1", 19), "1e40"} {
		var d Decimal
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("accepted %s as %s", bad, d)
		}
	}
	l := NewModelList(Model{ID: "llama", OwnedBy: "forii", Pricing: Pricing{
		PromptINRPer1M: NewDecimal(decimal.RequireFromString("12.5")), CompletionINRPer1M: NewDecimal(decimal.RequireFromString("0.125"))}})
	b, _ := json.Marshal(l)
	if want := `{"object":"list","data":[{"id":"llama","object":"model","owned_by":"forii","pricing":{"prompt_inr_per_1m":12.50,"completion_inr_per_1m":0.125}}]}`; string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func FuzzDecimal(f *testing.F) {
	for _, s := range []string{"1", "0.125", "1e3", `"2.50"`, "-0", "1e-40"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Decimal
		if err := json.Unmarshal(b, &d); err != nil {
			return
		}
		out, err := json.Marshal(d)
		if err != nil || len(out) > maxDecimalLen {
			t.Fatalf("%q -> %q %v", b, out, err)
		}
		var back Decimal
		if err := json.Unmarshal(out, &back); err != nil || !back.Equal(d.Decimal) {
			t.Fatalf("%q -> %q does not round-trip: %v", b, out, err)
		}
	})
}

func TestWriteError(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Retry-After", "3")
	WriteError(rec, http.StatusTooManyRequests, TypeRateLimit, "rate_limit_exceeded", "slow down")
	if rec.Code != 429 || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Retry-After") != "3" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	if want := `{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit_exceeded","param":null}}` + "\n"; rec.Body.String() != want {
		t.Errorf("got %s", rec.Body)
	}
	rec = httptest.NewRecorder()
	_, err := ParseChatCompletionRequest([]byte(`{"model":"m","messages":[{"role":"user","content":"a"}],"max_tokens":"x"}`))
	var re *RequestError
	if !errors.As(err, &re) {
		t.Fatal(err)
	}
	WriteRequestError(rec, re)
	var env ErrorResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || rec.Code != 400 || env.Error.Param != "max_tokens" || env.Error.Code != "invalid_json" || env.Error.Type != TypeInvalidRequest {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
}
