package openai

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseChatCompletionRequest(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		kind      error // nil = valid
		param     string
		wantText  []string
		wantLimit int64 // 0 = none
	}{
		{name: "minimal", body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, wantText: []string{"hi"}},
		{name: "unknown fields ignored", body: `{"model":"m","messages":[{"role":"user","content":"hi","x":1}],"tools":[{"type":"function"}],"response_format":{"type":"json_object"},"logprobs":true}`, wantText: []string{"hi"}},
		{name: "content parts", body: `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]}]}`, wantText: []string{"ab"}},
		{name: "assistant null content", body: `{"model":"m","messages":[{"role":"user","content":"q"},{"role":"assistant","content":null,"tool_calls":[]}]}`, wantText: []string{"q", ""}},
		{name: "max_tokens", body: `{"model":"m","messages":[{"role":"user","content":""}],"max_tokens":7}`, wantText: []string{""}, wantLimit: 7},
		{name: "max_completion_tokens wins", body: `{"model":"m","messages":[{"role":"user","content":""}],"max_tokens":7,"max_completion_tokens":9}`, wantText: []string{""}, wantLimit: 9},
		{name: "stream options", body: `{"model":"m","messages":[{"role":"system","content":"s"}],"stream":true,"stream_options":{"include_usage":true},"temperature":0.7,"stop":"x","n":1}`, wantText: []string{"s"}},
		{name: "stop list", body: `{"model":"m","messages":[{"role":"developer","content":"s"}],"stop":["a","b"]}`, wantText: []string{"s"}},
		{name: "trailing whitespace", body: "{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"t\"}]}\n\t ", wantText: []string{"t"}},

		{name: "not JSON", body: `{"model":`, kind: ErrMalformedJSON},
		{name: "trailing data", body: `{"model":"m","messages":[{"role":"user","content":"a"}]} {}`, kind: ErrMalformedJSON},
		{name: "array body", body: `[]`, kind: ErrMalformedJSON},
		{name: "null body", body: `null`, kind: ErrInvalidRequest, param: "model"},
		{name: "model wrong type", body: `{"model":5,"messages":[]}`, kind: ErrMalformedJSON, param: "model"},
		{name: "max_tokens string", body: `{"model":"m","messages":[{"role":"user","content":"a"}],"max_tokens":"5"}`, kind: ErrMalformedJSON, param: "max_tokens"},
		{name: "max_tokens fraction", body: `{"model":"m","messages":[{"role":"user","content":"a"}],"max_tokens":1.5}`, kind: ErrMalformedJSON, param: "max_tokens"},
		{name: "stream string", body: `{"model":"m","messages":[{"role":"user","content":"a"}],"stream":"yes"}`, kind: ErrMalformedJSON, param: "stream"},
		{name: "include_usage wrong type", body: `{"model":"m","messages":[{"role":"user","content":"a"}],"stream_options":{"include_usage":1}}`, kind: ErrMalformedJSON, param: "stream_options.include_usage"},
		{name: "content number", body: `{"model":"m","messages":[{"role":"user","content":5}]}`, kind: ErrMalformedJSON, param: "messages.content"},
		{name: "content object", body: `{"model":"m","messages":[{"role":"user","content":{"text":"a"}}]}`, kind: ErrMalformedJSON, param: "messages.content"},
		{name: "part without type", body: `{"model":"m","messages":[{"role":"user","content":[{"text":"a"}]}]}`, kind: ErrMalformedJSON, param: "messages.content"},
		{name: "text part without text", body: `{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}`, kind: ErrMalformedJSON, param: "messages.content"},
		{name: "part not object", body: `{"model":"m","messages":[{"role":"user","content":["a"]}]}`, kind: ErrMalformedJSON, param: "messages.content"},
		{name: "stop number", body: `{"model":"m","messages":[{"role":"user","content":"a"}],"stop":3}`, kind: ErrMalformedJSON, param: "stop"},
		{name: "messages object", body: `{"model":"m","messages":{}}`, kind: ErrMalformedJSON, param: "messages"},

		{name: "case variant key", body: `{"model":"m","Stream":true,"messages":[{"role":"user","content":"a"}]}`, kind: ErrInvalidRequest, param: "Stream"},
		{name: "no model", body: `{"messages":[{"role":"user","content":"a"}]}`, kind: ErrInvalidRequest, param: "model"},
		{name: "long model", body: `{"model":"` + strings.Repeat("m", 257) + `","messages":[{"role":"user","content":"a"}]}`, kind: ErrInvalidRequest, param: "model"},
		{name: "no messages", body: `{"model":"m","messages":[]}`, kind: ErrInvalidRequest, param: "messages"},
		{name: "bad role", body: `{"model":"m","messages":[{"role":"robot","content":"a"}]}`, kind: ErrInvalidRequest, param: "messages[0].role"},
		{name: "missing role", body: `{"model":"m","messages":[{"content":"a"}]}`, kind: ErrInvalidRequest, param: "messages[0].role"},
		{name: "user null content", body: `{"model":"m","messages":[{"role":"user","content":null}]}`, kind: ErrInvalidRequest, param: "messages[0].content"},
		{name: "user no content", body: `{"model":"m","messages":[{"role":"user"}]}`, kind: ErrInvalidRequest, param: "messages[0].content"},
		{name: "zero max_tokens", body: `{"model":"m","messages":[{"role":"user","content":"a"}],"max_tokens":0}`, kind: ErrInvalidRequest, param: "max_tokens"},
		{name: "huge max_completion_tokens", body: `{"model":"m","messages":[{"role":"user","content":"a"}],"max_completion_tokens":2147483648}`, kind: ErrInvalidRequest, param: "max_completion_tokens"},
		{name: "temperature high", body: `{"model":"m","messages":[{"role":"user","content":"a"}],"temperature":2.5}`, kind: ErrInvalidRequest, param: "temperature"},
		{name: "top_p negative", body: `{"model":"m","messages":[{"role":"user","content":"a"}],"top_p":-0.1}`, kind: ErrInvalidRequest, param: "top_p"},
		{name: "n zero", body: `{"model":"m","messages":[{"role":"user","content":"a"}],"n":0}`, kind: ErrInvalidRequest, param: "n"},
		{name: "five stops", body: `{"model":"m","messages":[{"role":"user","content":"a"}],"stop":["a","b","c","d","e"]}`, kind: ErrInvalidRequest, param: "stop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseChatCompletionRequest([]byte(tt.body))
			if tt.kind != nil {
				var re *RequestError
				if !errors.As(err, &re) || !errors.Is(err, tt.kind) {
					t.Fatalf("err = %v, want %v", err, tt.kind)
				}
				if re.Param != tt.param || re.Message == "" {
					t.Fatalf("param = %q message %q, want param %q", re.Param, re.Message, tt.param)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Messages) != len(tt.wantText) {
				t.Fatalf("%d messages", len(r.Messages))
			}
			for i, m := range r.Messages {
				if got := m.Content.Text(); got != tt.wantText[i] {
					t.Errorf("message %d text %q, want %q", i, got, tt.wantText[i])
				}
			}
			n, ok := r.OutputLimit()
			if ok != (tt.wantLimit != 0) || n != tt.wantLimit {
				t.Errorf("OutputLimit = %d, %v, want %d", n, ok, tt.wantLimit)
			}
		})
	}
}

func TestContentRoundTrip(t *testing.T) {
	for _, c := range []Content{{}, TextContent(""), TextContent("héllo\n"), PartsContent(), PartsContent(ContentPart{Type: "text", Text: "a"}, ContentPart{Type: "image_url"})} {
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var got Content
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if got.kind != c.kind || got.Text() != c.Text() || len(got.Parts()) != len(c.Parts()) {
			t.Errorf("%s round-tripped to %+v from %+v", b, got, c)
		}
	}
	if PartsContent().Parts() == nil || TextContent("x").Parts() != nil || !(Content{}).IsNull() {
		t.Error("Parts/IsNull")
	}
}

func TestPrepareUpstreamBody(t *testing.T) {
	tests := []struct {
		name, body, model string
		want              map[string]any
		bad               bool
	}{
		{name: "non-stream keeps fields", body: `{"model":"a","messages":[],"tools":[1]}`, model: "b",
			want: map[string]any{"model": "b", "messages": []any{}, "tools": []any{1.0}}},
		{name: "model kept when empty", body: `{"model":"a"}`, want: map[string]any{"model": "a"}},
		{name: "stream adds include_usage", body: `{"model":"a","stream":true}`,
			want: map[string]any{"model": "a", "stream": true, "stream_options": map[string]any{"include_usage": true}}},
		{name: "stream merges options", body: `{"model":"a","stream":true,"stream_options":{"include_usage":false,"x":1}}`,
			want: map[string]any{"model": "a", "stream": true, "stream_options": map[string]any{"include_usage": true, "x": 1.0}}},
		{name: "stream null options", body: `{"stream":true,"stream_options":null}`,
			want: map[string]any{"stream": true, "stream_options": map[string]any{"include_usage": true}}},
		{name: "stream false untouched", body: `{"stream":false,"stream_options":{"include_usage":false}}`,
			want: map[string]any{"stream": false, "stream_options": map[string]any{"include_usage": false}}},
		{name: "not object", body: `[1]`, bad: true},
		{name: "null", body: `null`, bad: true},
		{name: "stream not bool", body: `{"stream":"true"}`, bad: true},
		{name: "options not object", body: `{"stream":true,"stream_options":[]}`, bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := PrepareUpstreamBody([]byte(tt.body), tt.model)
			if tt.bad {
				if !errors.Is(err, ErrMalformedJSON) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(tt.want)
			if string(gb) != string(wb) {
				t.Errorf("got %s, want %s", gb, wb)
			}
		})
	}
}

func TestRewriteUpstreamBody(t *testing.T) {
	tests := []struct {
		name, body string
		o          UpstreamOptions
		want       string
	}{
		{name: "default field replaces both", body: `{"max_tokens":9,"max_completion_tokens":8,"n":2}`,
			o: UpstreamOptions{Limit: 5}, want: `{"max_completion_tokens":5,"n":2}`},
		{name: "max_tokens field", body: `{"max_completion_tokens":8}`,
			o: UpstreamOptions{Limit: 5, LimitField: LimitMaxTokens}, want: `{"max_tokens":5}`},
		{name: "limit added", body: `{"model":"a"}`, o: UpstreamOptions{Model: "b", Limit: 1024},
			want: `{"max_completion_tokens":1024,"model":"b"}`},
		{name: "no limit keeps both", body: `{"max_tokens":9,"max_completion_tokens":8}`,
			want: `{"max_completion_tokens":8,"max_tokens":9}`},
		{name: "stream", body: `{"stream":true,"max_tokens":3}`, o: UpstreamOptions{Limit: 3, LimitField: LimitMaxTokens},
			want: `{"max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}`},
	}
	for _, tt := range tests {
		out, err := RewriteUpstreamBody([]byte(tt.body), tt.o)
		if err != nil || string(out) != tt.want {
			t.Errorf("%s: %s %v, want %s", tt.name, out, err, tt.want)
		}
	}
	if _, err := RewriteUpstreamBody([]byte(`{}`), UpstreamOptions{Limit: 1, LimitField: "max_new_tokens"}); err == nil {
		t.Error("unknown limit field accepted")
	}
}

func TestToolsAndParts(t *testing.T) {
	body := `{"model":"m","tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"tool_choice":"auto",
	  "response_format":{"type":"json_object"},"messages":[
	  {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}},
	    {"type":"file","file":{"file_id":"file-1"}},{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]},
	  {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},
	  {"role":"tool","tool_call_id":"c","content":"42"}]}`
	r, err := ParseChatCompletionRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.PromptExtras()) != 3 || len(r.Messages[1].ToolCalls) == 0 || r.Messages[2].ToolCallID != "c" {
		t.Fatalf("%+v", r)
	}
	p := r.Messages[0].Content.Parts()
	if p[1].Detail != "low" || p[2].FileID != "file-1" || p[3].Bytes != len(`{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}`) {
		t.Fatalf("parts %+v", p)
	}
	for _, bad := range []string{
		`{"model":"m","messages":[{"role":"user","content":"x"}],"tools":{}}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":1}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":"json"}`,
		`{"model":"m","messages":[{"role":"assistant","content":"x","tool_calls":{}}]}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"Tools":[]}`,
	} {
		if _, err := ParseChatCompletionRequest([]byte(bad)); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func FuzzParseChatCompletionRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"detail":"low"}},{"type":"file","file":{"file_id":"f"}}]}],"tools":[{"type":"function"}],"tool_choice":"auto","max_completion_tokens":2,"max_tokens":3}`,
		`{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"function":{"arguments":"{}"}}]}],"functions":[],"response_format":{"type":"text"}}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","messages":[{"role":"assistant","content":null}],"stop":["x"],"temperature":1}`,
		`{"model":"m","messages":[{"role":"user","content":5}]}`,
		`[]`, `null`, `{"stream":true,"stream_options":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseChatCompletionRequest(body)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) || (!errors.Is(err, ErrMalformedJSON) && !errors.Is(err, ErrInvalidRequest)) || re.Message == "" {
				t.Fatalf("error %v is not a *RequestError", err)
			}
			return
		}
		if r.Model == "" || len(r.Messages) == 0 {
			t.Fatalf("accepted %q", body)
		}
		if n, ok := r.OutputLimit(); ok && (n < 1 || n > MaxTokenLimit) {
			t.Fatalf("accepted output limit %d", n)
		}
		// A valid request re-encodes to a valid request with the same text.
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseChatCompletionRequest(again)
		if err != nil {
			t.Fatalf("re-encoded request %s rejected: %v", again, err)
		}
		for i := range r.Messages {
			if r.Messages[i].Content.Text() != r2.Messages[i].Content.Text() {
				t.Fatalf("message %d changed on round trip", i)
			}
		}
		up, err := PrepareUpstreamBody(body, "upstream")
		if err != nil {
			t.Fatalf("PrepareUpstreamBody rejected a valid body: %v", err)
		}
		r3, err := ParseChatCompletionRequest(up)
		if err != nil || r3.Model != "upstream" || r3.Stream != r.Stream || (r.Stream && !r3.IncludeUsage()) {
			t.Fatalf("upstream body %s: %+v %v", up, r3, err)
		}
		// With a limit, the upstream sees exactly that limit in exactly
		// the field it reads, whatever the client sent.
		for _, field := range []string{LimitMaxCompletionTokens, LimitMaxTokens} {
			up, err := RewriteUpstreamBody(body, UpstreamOptions{Model: "upstream", Limit: 7, LimitField: field})
			if err != nil {
				t.Fatalf("RewriteUpstreamBody rejected a valid body: %v", err)
			}
			r4, err := ParseChatCompletionRequest(up)
			if err != nil {
				t.Fatalf("rewritten body %s: %v", up, err)
			}
			got, want := r4.MaxCompletionTokens, r4.MaxTokens
			if field == LimitMaxTokens {
				got, want = want, got
			}
			if got == nil || *got != 7 || want != nil || len(r4.PromptExtras()) != len(r.PromptExtras()) {
				t.Fatalf("rewritten body %s for %s", up, field)
			}
		}
	})
}
