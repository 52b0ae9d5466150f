package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/examples/internal/e2e"
	"github.com/keyledger/keyledger/usage"
)

// stubToken is every token the stub upstream generates: 4 bytes, so the
// gateway's bytes-per-token estimate of a stub answer is exact.
const stubToken = " tok"

// stubPromptTokens is the prompt usage the stub reports.
const stubPromptTokens = 7

// stubConfig makes the stub behave like one kind of real server.
type stubConfig struct {
	// answer is the tokens a choice takes when nothing limits it.
	answer int64
	// ignoreLimits: the limit field is read but not obeyed.
	ignoreLimits bool
	// omitUsage: no usage, in responses or streams.
	omitUsage bool
	// hangAfter > 0: a stream sends this many tokens per choice and then
	// waits until the gateway ends the request.
	hangAfter int64
	// hangHeaders: the server never answers until the gateway gives up.
	hangHeaders bool
	// cached and reasoning are the usage details reported, as OpenAI
	// does (prompt_tokens_details.cached_tokens,
	// completion_tokens_details.reasoning_tokens): parts of the prompt and
	// completion counts. rawUsage, if set, is sent verbatim as the usage
	// object instead (an upstream's adversarial report).
	cached, reasoning int64
	rawUsage          json.RawMessage
}

// openAIStub is an OpenAI-compatible server that behaves like a real
// one where billing depends on it: it honours n; it reads exactly one of
// the two max-token fields — max_tokens for upstream models named
// "llama…" (as some Ollama and llama.cpp servers do), else
// max_completion_tokens, rejecting a request carrying both as OpenAI does;
// and, by configuration, ignores limits, omits usage or hangs. A request
// may set its own answer length, ignore_limits, omit_usage, cached,
// reasoning and raw_usage in an "x_stub" object (the gateway forwards
// unknown fields). Usage always carries the token details, zero unless set.
type openAIStub struct {
	*httptest.Server
	cfg stubConfig

	mu     sync.Mutex
	bodies []map[string]json.RawMessage
	// ended receives one value each time a hanging request was ended by
	// the gateway.
	ended chan struct{}
}

func newOpenAIStub(t *testing.T, cfg stubConfig) *openAIStub {
	t.Helper()
	if cfg.answer == 0 {
		cfg.answer = 200
	}
	s := &openAIStub{cfg: cfg, ended: make(chan struct{}, 16)}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// lastBody is the last request body the stub received.
func (s *openAIStub) lastBody(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.bodies) == 0 {
		t.Fatal("the upstream received no request")
	}
	return s.bodies[len(s.bodies)-1]
}

func stubError(w http.ResponseWriter, status int, param, msg string) {
	openai.WriteErrorResponse(w, status, openai.Error{Message: msg, Type: openai.TypeInvalidRequest, Param: param, Code: "invalid_request"})
}

func (s *openAIStub) serve(w http.ResponseWriter, r *http.Request) {
	var body map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		stubError(w, 400, "", "invalid JSON")
		return
	}
	s.mu.Lock()
	s.bodies = append(s.bodies, body)
	s.mu.Unlock()
	if s.cfg.hangHeaders {
		<-r.Context().Done()
		s.ended <- struct{}{}
		return
	}
	cfg := s.cfg
	if o, ok := body["x_stub"]; ok { // per-request behaviour, passed through by the gateway
		var x struct {
			Answer       int64           `json:"answer"`
			IgnoreLimits bool            `json:"ignore_limits"`
			OmitUsage    bool            `json:"omit_usage"`
			Cached       int64           `json:"cached"`
			Reasoning    int64           `json:"reasoning"`
			RawUsage     json.RawMessage `json:"raw_usage"`
		}
		if err := json.Unmarshal(o, &x); err != nil {
			stubError(w, 400, "x_stub", "bad x_stub")
			return
		}
		cfg.answer, cfg.ignoreLimits, cfg.omitUsage = max(x.Answer, 1), x.IgnoreLimits, x.OmitUsage
		cfg.cached, cfg.reasoning, cfg.rawUsage = x.Cached, x.Reasoning, x.RawUsage
	}
	var req struct {
		Model         string `json:"model"`
		N             *int64 `json:"n"`
		Stream        bool   `json:"stream"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	raw, _ := json.Marshal(body)
	if err := json.Unmarshal(raw, &req); err != nil {
		stubError(w, 400, "", "invalid request")
		return
	}
	field := openai.LimitMaxCompletionTokens
	if strings.HasPrefix(req.Model, "llama") {
		field = openai.LimitMaxTokens
	} else if body[openai.LimitMaxTokens] != nil && body[openai.LimitMaxCompletionTokens] != nil {
		stubError(w, 400, "max_tokens", "max_tokens and max_completion_tokens cannot both be set")
		return
	}
	tokens := cfg.answer
	if v, ok := body[field]; ok && !cfg.ignoreLimits {
		var limit int64
		if err := json.Unmarshal(v, &limit); err != nil || limit < 1 {
			stubError(w, 400, field, field+" must be a positive integer")
			return
		}
		tokens = min(tokens, limit)
	}
	finish := openai.FinishStop
	if tokens < cfg.answer {
		finish = openai.FinishLength
	}
	n := int64(1)
	if req.N != nil {
		n = *req.N
	}
	usage := openai.NewUsage(stubPromptTokens, n*tokens)
	usage.PromptTokensDetails = &openai.PromptTokensDetails{CachedTokens: openai.PartCount(cfg.cached)}
	usage.CompletionTokensDetails = &openai.CompletionTokensDetails{ReasoningTokens: openai.PartCount(cfg.reasoning)}
	if !req.Stream {
		cc := openai.ChatCompletion{ID: "stub-1", Object: openai.ObjectChatCompletion, Created: 1, Model: req.Model}
		for i := range n {
			cc.Choices = append(cc.Choices, openai.Choice{Index: int(i), FinishReason: finish,
				Message: openai.ResponseMessage{Role: openai.RoleAssistant, Content: strings.Repeat(stubToken, int(tokens))}})
		}
		if !cfg.omitUsage {
			cc.Usage = &usage
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(withRawUsage(cc, cfg.rawUsage))
		return
	}
	sse := openai.NewSSEWriter(w)
	chunk := func(choices []openai.ChunkChoice, u *openai.Usage) error {
		return sse.WriteChunk(openai.ChatCompletionChunk{ID: "stub-2", Object: openai.ObjectChatCompletionChunk, Created: 1, Model: req.Model, Choices: choices, Usage: u})
	}
	for i := range n {
		if chunk([]openai.ChunkChoice{{Index: int(i), Delta: openai.Delta{Role: openai.RoleAssistant}}}, nil) != nil {
			return
		}
	}
	for k := range tokens {
		if cfg.hangAfter > 0 && k == cfg.hangAfter {
			<-r.Context().Done()
			s.ended <- struct{}{}
			return
		}
		for i := range n {
			if chunk([]openai.ChunkChoice{{Index: int(i), Delta: openai.Delta{Content: stubToken}}}, nil) != nil {
				return
			}
		}
	}
	for i := range n {
		_ = chunk([]openai.ChunkChoice{{Index: int(i), FinishReason: &finish}}, nil)
	}
	if req.StreamOptions.IncludeUsage && !cfg.omitUsage {
		last := openai.ChatCompletionChunk{ID: "stub-2", Object: openai.ObjectChatCompletionChunk, Created: 1, Model: req.Model,
			Choices: []openai.ChunkChoice{}, Usage: &usage}
		_ = sse.WriteData(withRawUsage(last, cfg.rawUsage))
	}
	_ = sse.WriteDone()
}

// withRawUsage is v as JSON, with its usage replaced by raw when raw is
// set.
func withRawUsage(v any, raw json.RawMessage) []byte {
	b, _ := json.Marshal(v)
	if raw == nil {
		return b
	}
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	m["usage"] = raw
	b, _ = json.Marshal(m)
	return b
}

// stubCatalog writes a -models file of two models proxied to the stub:
// test/gpt (upstream "gpt-stub", which reads max_completion_tokens) and
// test/llama (upstream "llama-stub", which reads only max_tokens, declared
// in the catalog). Prompts are free; a completion token costs ₹0.01, but
// ₹1 on test/dear (upstream "gpt-stub" too).
func stubCatalog(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "models.json")
	body := `{"models":[
	  {"id":"test/gpt","owned_by":"test","prompt_inr_per_1m":0,"completion_inr_per_1m":10000,"upstream_model":"gpt-stub"},
	  {"id":"test/llama","owned_by":"test","prompt_inr_per_1m":0,"completion_inr_per_1m":10000,"upstream_model":"llama-stub","upstream_limit_field":"max_tokens"},
	  {"id":"test/dear","owned_by":"test","prompt_inr_per_1m":0,"completion_inr_per_1m":1000000,"upstream_model":"gpt-stub"}]}`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startServed builds the gateway in-process on a temporary SQLite file
// with c's settings (db and the Razorpay secrets filled in), serves it on
// a loopback listener and returns a client harness for it with the server
// (its KeyLedger reads what was recorded). The listener closes at cleanup,
// waiting for the handlers, before the gateway flushes.
func startServed(t *testing.T, c config) (*gw, *server, *httptest.Server) {
	t.Helper()
	logs := e2e.NewLogs(t)
	// Not t.TempDir(): a fuzz seed's test name holds '#', which a SQLite
	// path may not.
	dir, err := os.MkdirTemp("", "gateway-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	c.db = filepath.Join(dir, "gw.db")
	c.rzpKeyID, c.rzpSecret, c.rzpWebhook = defaultRazorpayKeyID, defaultRazorpaySecret, defaultRazorpayWebhookSecret
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, closeAll, err := newServer(context.Background(), c, log, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.handler())
	client := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		hs.Close()
		if err := closeAll(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &gw{t: t, base: hs.URL, c: client, logs: logs, stop: func() {}}, s, hs
}

// records returns an account's usage records, newest first.
func records(t *testing.T, s *server, acct string) []usage.Record {
	t.Helper()
	var out []usage.Record
	for cursor := ""; ; {
		page, err := s.kl.Usage.List(context.Background(), usage.ListQuery{AccountID: acct, Cursor: cursor, Limit: 500})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page.Records...)
		if cursor = page.NextCursor; cursor == "" {
			return out
		}
	}
}

// chatJSON is a chat completion body: a model, a user message and extra
// top-level fields.
func chatJSON(model string, extra map[string]any) map[string]any {
	b := map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": "Hello"}}}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

// fieldsSent reports which max-token fields a body the upstream received
// carries, as "field=value" joined by commas.
func fieldsSent(body map[string]json.RawMessage) string {
	var out []string
	for _, f := range []string{openai.LimitMaxCompletionTokens, openai.LimitMaxTokens} {
		if v, ok := body[f]; ok {
			out = append(out, fmt.Sprintf("%s=%s", f, v))
		}
	}
	return strings.Join(out, ",")
}
