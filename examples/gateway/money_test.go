package main

// End-to-end tests of issue 17's gateway bullets: charged = delivered and
// never more than reserved, for every request shape, against a stub
// upstream that behaves like a real OpenAI server (stubupstream_test.go)
// and the simulated model.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/examples/gateway/internal/simmodel"
)

// completion decodes a non-streaming answer.
func completion(t *testing.T, b []byte) openai.ChatCompletion {
	t.Helper()
	cc, err := openai.ParseChatCompletion(b)
	if err != nil {
		t.Fatalf("%v: %s", err, short(b))
	}
	return cc
}

// errorMessage decodes an error envelope's message.
func errorMessage(t *testing.T, b []byte) string {
	t.Helper()
	var env openai.ErrorResponse
	if err := json.Unmarshal(b, &env); err != nil || env.Error.Message == "" {
		t.Fatalf("not an error envelope: %s", short(b))
	}
	return env.Error.Message
}

// n multiplies what a request may produce, so it multiplies the
// reservation: a ₹50 account cannot ask 4 choices of 2,000 tokens
// (₹80) of an upstream that honours n, and gets them, charged in full,
// when they fit.
func TestUpstreamNMultipliesTheReservation(t *testing.T) {
	up := newOpenAIStub(t, stubConfig{answer: 5000})
	g, s, _ := startServed(t, config{upstream: up.URL + "/v1", modelsFile: stubCatalog(t)})
	u := g.signup("Choices")

	st, _, b := g.do("POST", chatEndpoint, u.key, chatJSON("test/gpt", map[string]any{"n": maxChoices + 1, "max_completion_tokens": 1}))
	if st != 400 || !strings.Contains(errorMessage(t, b), "n must be at most 16") {
		t.Fatalf("n above the maximum: %d %s", st, short(b))
	}
	// 16 choices of the default 1,024 tokens can never fit Free's 10,000
	// completion tokens a minute: a 400 naming both, not a 429 to retry.
	st, _, b = g.do("POST", chatEndpoint, u.key, chatJSON("test/gpt", map[string]any{"n": maxChoices}))
	if msg := errorMessage(t, b); st != 400 || !strings.Contains(msg, "16,384 completion tokens") || !strings.Contains(msg, "10,000") {
		t.Fatalf("16 × 1,024 tokens on Free: %d %s", st, short(b))
	}
	st, _, b = g.do("POST", chatEndpoint, u.key, chatJSON("test/gpt", map[string]any{"n": 4, "max_completion_tokens": 2000}))
	if st != 402 {
		t.Fatalf("4 × 2,000 tokens (₹80) on ₹50: %d %s", st, short(b))
	}
	st, _, b = g.do("POST", chatEndpoint, u.key, chatJSON("test/gpt", map[string]any{"n": 4, "max_completion_tokens": 1000}))
	if st != 200 {
		t.Fatalf("4 × 1,000 tokens: %d %s", st, short(b))
	}
	if cc := completion(t, b); len(cc.Choices) != 4 || cc.Usage.CompletionTokens != 4000 {
		t.Fatalf("answer: %d choices, usage %+v", len(cc.Choices), cc.Usage)
	}
	// Streamed, with two choices.
	st, _, b = g.do("POST", chatEndpoint, u.key, chatJSON("test/gpt", map[string]any{"n": 2, "max_completion_tokens": 250,
		"stream": true, "stream_options": map[string]any{"include_usage": true}}))
	chunks, done := sseEvents(t, b)
	if st != 200 || !done || chunks[len(chunks)-1].Usage == nil || chunks[len(chunks)-1].Usage.CompletionTokens != 500 {
		t.Fatalf("stream: %d %s", st, short(b))
	}
	entries := g.ledger(u)
	if len(entries) != 3 || num(t, entries[1]["amount_inr"]).String() != "-40" || num(t, entries[0]["amount_inr"]).String() != "-5" ||
		num(t, entries[0]["balance_inr"]).String() != "5" {
		t.Fatalf("ledger: %v", entries)
	}
	for _, r := range records(t, s, u.id) {
		if r.StatusCode == 200 && (r.ErrorType != "" || r.Cost.IsZero()) {
			t.Fatalf("record %+v was not paid in full", r)
		}
	}
}

// The upstream is given the reserved limit in the one field it reads,
// never both: a server that reads only max_tokens obeys a client's
// max_completion_tokens, and one that reads only max_completion_tokens
// obeys a client's max_tokens and is not sent both.
func TestUpstreamGetsTheLimitInItsField(t *testing.T) {
	up := newOpenAIStub(t, stubConfig{answer: 200})
	g, _, _ := startServed(t, config{upstream: up.URL + "/v1", modelsFile: stubCatalog(t)})
	u := g.signup("Fields")
	for _, c := range []struct {
		model string
		extra map[string]any
		sent  string
	}{
		{"test/llama", map[string]any{"max_completion_tokens": 5}, "max_tokens=5"},
		{"test/llama", map[string]any{"max_tokens": 5, "max_completion_tokens": 6}, "max_tokens=6"},
		{"test/gpt", map[string]any{"max_tokens": 5}, "max_completion_tokens=5"},
		{"test/gpt", map[string]any{"max_tokens": 9, "max_completion_tokens": 5}, "max_completion_tokens=5"},
		{"test/gpt", nil, "max_completion_tokens=1024"},
	} {
		st, _, b := g.do("POST", chatEndpoint, u.key, chatJSON(c.model, c.extra))
		if st != 200 {
			t.Fatalf("%s %v: %d %s", c.model, c.extra, st, short(b))
		}
		if sent := fieldsSent(up.lastBody(t)); sent != c.sent {
			t.Errorf("%s %v: upstream got %s, want %s", c.model, c.extra, sent, c.sent)
		}
		want := int64(200)
		if !strings.HasSuffix(c.sent, "1024") {
			want = int64(c.sent[len(c.sent)-1] - '0')
		}
		if cc := completion(t, b); cc.Usage.CompletionTokens != want {
			t.Errorf("%s %v: %d completion tokens, want %d", c.model, c.extra, cc.Usage.CompletionTokens, want)
		}
	}
}

// bigTools is a tools array of about 4 KB: at 4 bytes a token, over 1,000
// prompt tokens that the model reads.
func bigTools() []map[string]any {
	return []map[string]any{{"type": "function", "function": map[string]any{
		"name": "lookup", "description": strings.Repeat("Look the order up by id. ", 160),
		"parameters": map[string]any{"type": "object", "properties": map[string]any{"id": map[string]any{"type": "string"}}},
	}}}
}

// Tools, tool calls and images are prompt: they count in the estimate
// that is reserved (and, for the simulated model, charged), and a part
// whose size cannot be known is refused.
func TestToolsAndPartsCountInThePromptEstimate(t *testing.T) {
	g := startGateway(t)
	u := g.signup("Tools")
	st, h, b := g.do("POST", chatEndpoint, u.key, chatJSON("forii/llama-3.1-8b", map[string]any{"tools": bigTools(), "max_tokens": 1}))
	if st != 200 {
		t.Fatalf("tools: %d %s", st, short(b))
	}
	prompt := completion(t, b).Usage.PromptTokens
	if prompt < 1000 || h.Get("X-Ratelimit-Remaining-Prompt-Tokens") != itoa(100_000-prompt) {
		t.Fatalf("tools of 4 KB: %d prompt tokens, remaining prompt budget %s", prompt, h.Get("X-Ratelimit-Remaining-Prompt-Tokens"))
	}

	image := map[string]any{"model": "forii/llama-3.1-8b", "max_tokens": 1, "messages": []any{map[string]any{"role": "user", "content": []any{
		map[string]any{"type": "text", "text": "What is this?"},
		map[string]any{"type": "image_url", "image_url": map[string]any{"url": "https://example.com/cat.png"}},
	}}}}
	st, _, b = g.do("POST", chatEndpoint, u.key, image)
	if st != 200 || completion(t, b).Usage.PromptTokens != 2+4+4+simmodel.ImageTokens {
		t.Fatalf("image: %d %s", st, short(b))
	}

	byID := map[string]any{"model": "forii/llama-3.1-8b", "messages": []any{map[string]any{"role": "user", "content": []any{
		map[string]any{"type": "file", "file": map[string]any{"file_id": "file-abc"}},
	}}}}
	st, _, b = g.do("POST", chatEndpoint, u.key, byID)
	if st != 400 || !strings.Contains(errorMessage(t, b), "file_id") {
		t.Fatalf("file by id: %d %s", st, short(b))
	}
}

// An upstream that reports no usage is charged for what it delivered, at
// the documented 4 bytes a token, and the record says it is an estimate:
// never zero, never the whole reservation for a short answer.
func TestUpstreamWithoutUsageIsChargedWhatItDelivered(t *testing.T) {
	up := newOpenAIStub(t, stubConfig{answer: 3, omitUsage: true})
	g, s, _ := startServed(t, config{upstream: up.URL + "/v1", modelsFile: stubCatalog(t)})
	u := g.signup("NoUsage")
	st, _, b := g.do("POST", chatEndpoint, u.key, chatJSON("test/gpt", map[string]any{"max_completion_tokens": 1000, "tools": bigTools()}))
	if st != 200 || completion(t, b).Usage != nil {
		t.Fatalf("non-streaming: %d %s", st, short(b))
	}
	st, _, b = g.do("POST", chatEndpoint, u.key, chatJSON("test/gpt", map[string]any{"max_completion_tokens": 1000, "stream": true, "n": 2,
		"stream_options": map[string]any{"include_usage": true}}))
	chunks, done := sseEvents(t, b)
	if st != 200 || !done {
		t.Fatalf("streaming: %d %s", st, short(b))
	}
	// The client asked for usage: it gets the estimate it is charged.
	if last := chunks[len(chunks)-1]; last.Usage == nil || last.Usage.CompletionTokens != 2*3 {
		t.Fatalf("no estimated usage chunk: %s", short(b))
	}
	recs := records(t, s, u.id)
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	for i, want := range []int64{2 * 3, 3} { // newest first: the 2-choice stream
		r := recs[i]
		if r.CompletionTokens != want || r.Metadata["usage"] != "estimated" || r.Cost.IsZero() {
			t.Errorf("record %d: %d completion tokens (want %d), metadata %v, cost %s", i, r.CompletionTokens, want, r.Metadata, r.Cost)
		}
	}
	if recs[1].PromptTokens < 1000 {
		t.Errorf("the tools were not in the charged prompt estimate: %d prompt tokens", recs[1].PromptTokens)
	}
	if entries := g.ledger(u); num(t, entries[0]["amount_inr"]).String() != "-0.06" || num(t, entries[1]["amount_inr"]).String() != "-0.03" {
		t.Fatalf("ledger: %v", entries)
	}
}

// short is the start of a body, for failure messages.
func short(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// leavingClient is a client that goes away after k writes: the next write
// fails and the request's context is cancelled, as net/http does when the
// connection is reset.
type leavingClient struct {
	h      http.Header
	k      int
	writes int
	cancel context.CancelFunc
	body   bytes.Buffer
}

func (w *leavingClient) Header() http.Header {
	if w.h == nil {
		w.h = http.Header{}
	}
	return w.h
}

func (w *leavingClient) WriteHeader(int) {}

func (w *leavingClient) Write(p []byte) (int, error) {
	if w.writes == w.k {
		w.cancel()
		return 0, errors.New("connection reset by peer")
	}
	w.writes++
	w.body.Write(p)
	return len(p), nil
}

// A client that leaves a simulated stream pays for the chunks it was
// written: the prompt and one completion token a content chunk.
func TestSimulatedStreamLeftMidwayPaysWhatWasWritten(t *testing.T) {
	g := newInproc(t, io.Discard)
	ten := g.newTenant(t, "Leaver")
	body := `{"model":"forii/deepseek-v3","stream":true,"max_tokens":1000,"messages":[{"role":"user","content":"Hello, Forii!"}]}`
	for _, k := range []int{0, 1, 2, 50} { // events written: the role chunk, then one a token
		ctx, cancel := context.WithCancel(context.Background())
		req := httptest.NewRequestWithContext(ctx, "POST", chatEndpoint, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+ten.key)
		w := &leavingClient{k: k, cancel: cancel}
		g.h.ServeHTTP(w, req)
		cancel()
		chunks, done := sseEvents(t, w.body.Bytes())
		if len(chunks) != k || done {
			t.Fatalf("k=%d: the client got %d chunks (done %v)", k, len(chunks), done)
		}
		r := records(t, g.s, ten.id)[0]
		want := max(int64(k-1), 0)
		if r.PromptTokens != 10 || r.CompletionTokens != want || r.Cost.IsZero() || r.ErrorType != "" {
			t.Fatalf("k=%d: charged %d prompt + %d completion tokens, ₹%s, error %q; want 10 + %d", k, r.PromptTokens, r.CompletionTokens, r.Cost, r.ErrorType, want)
		}
	}
}

// The same over a real connection: a client reads about 1 MB of a long
// stream and resets the connection; it pays at least for the tokens it
// read and not for the part never sent.
func TestSimulatedStreamResetAfter1MBPaysWhatWasWritten(t *testing.T) {
	_, s, _ := startServed(t, config{})
	// Small socket buffers on both ends, as a far client sees: the server
	// cannot write far ahead of what the client reads.
	hs := httptest.NewUnstartedServer(s.handler())
	hs.Listener = smallBuffers{hs.Listener}
	hs.Start()
	t.Cleanup(hs.Close)
	ten := (&inproc{s: s, h: s.handler()}).newTenant(t, "Resetter")
	conn, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := conn.(*net.TCPConn)
	_ = tc.SetReadBuffer(16 << 10) // a small window: the server cannot write far ahead
	body := `{"model":"forii/llama-3.1-8b","stream":true,"max_tokens":16384,"messages":[{"role":"user","content":"Write at length."}]}`
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		chatEndpoint, ten.key, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("response: %v %v", resp, err)
	}
	rd := bufio.NewReader(resp.Body)
	var read, received int64
	for read < 1<<20 {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d bytes: %v", read, err)
		}
		read += int64(len(line))
		if strings.HasPrefix(line, "data: {") && strings.Contains(line, `"content":"`) {
			received++
		}
	}
	_ = tc.SetLinger(0) // close with a reset
	conn.Close()
	hs.Close() // waits for the handler
	recs := records(t, s, ten.id)
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[0]
	if r.CompletionTokens < received || r.CompletionTokens >= 16384 || r.Cost.IsZero() || r.ErrorType != "" {
		t.Fatalf("read %d tokens (%d bytes) and reset: charged %d completion tokens, ₹%s, error %q", received, read, r.CompletionTokens, r.Cost, r.ErrorType)
	}
	t.Logf("read %d tokens (%d bytes) and reset: charged %d completion tokens", received, read, r.CompletionTokens)
}

// smallBuffers gives each accepted connection a 16 KiB send buffer.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(16 << 10)
	}
	return c, err
}

// No request outlives its hold: a stream still running at
// -max-request-duration (below -hold-ttl) is cut there and ends cleanly —
// finish_reason "length", the usage so far, [DONE] — and is charged what
// it delivered from its hold; an upstream that never answers gets a 504
// naming the limit, not charged.
func TestRequestsEndBeforeTheirHold(t *testing.T) {
	up := newOpenAIStub(t, stubConfig{answer: 1000, hangAfter: 3})
	limits := requestLimits{holdTTL: 3 * time.Second, maxRequestDuration: time.Second}
	g, s, _ := startServed(t, config{upstream: up.URL + "/v1", modelsFile: stubCatalog(t), limits: limits})
	u := g.signup("Slow")
	st, _, b := g.do("POST", chatEndpoint, u.key, chatJSON("test/gpt", map[string]any{"max_completion_tokens": 100,
		"stream": true, "stream_options": map[string]any{"include_usage": true}}))
	chunks, done := sseEvents(t, b)
	if st != 200 || !done || len(chunks) != 1+3+2 {
		t.Fatalf("stream: %d %s", st, short(b))
	}
	if fr := chunks[4].Choices; len(fr) != 1 || fr[0].FinishReason == nil || *fr[0].FinishReason != "length" {
		t.Fatalf("no finish_reason length: %s", short(b))
	}
	if u := chunks[5].Usage; u == nil || u.CompletionTokens != 3 || len(chunks[5].Choices) != 0 {
		t.Fatalf("usage chunk: %s", short(b))
	}
	select {
	case <-up.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request was not ended")
	}
	r := records(t, s, u.id)[0]
	if r.CompletionTokens != 3 || r.Metadata["stream_end"] != "deadline" || r.Metadata["usage"] != "estimated" || r.ErrorType != "" || r.Cost.IsZero() {
		t.Fatalf("record %+v", r)
	}
	if e := g.ledger(u); len(e) != 2 || num(t, e[0]["amount_inr"]).String() != "-0.03" {
		t.Fatalf("ledger %v", e)
	}

	hang := newOpenAIStub(t, stubConfig{hangHeaders: true})
	g2, _, _ := startServed(t, config{upstream: hang.URL + "/v1", modelsFile: stubCatalog(t), limits: limits})
	u2 := g2.signup("Silent")
	st, _, b = g2.do("POST", chatEndpoint, u2.key, chatJSON("test/gpt", map[string]any{"max_completion_tokens": 100}))
	if st != 504 || !strings.Contains(errorMessage(t, b), "-max-request-duration") {
		t.Fatalf("silent upstream: %d %s", st, short(b))
	}
	if e := g2.ledger(u2); len(e) != 1 {
		t.Fatalf("charged: %v", e)
	}
}

// A client that stops reading cannot hold a request past its deadline
// (and so past its hold): the write deadline ends the stream, and the
// request is charged, from its hold, what was written.
func TestStalledClientIsCutAtTheDeadline(t *testing.T) {
	_, s, _ := startServed(t, config{limits: requestLimits{holdTTL: 3 * time.Second, maxRequestDuration: time.Second}})
	hs := httptest.NewUnstartedServer(s.handler())
	hs.Listener = smallBuffers{hs.Listener}
	hs.Start()
	t.Cleanup(hs.Close)
	ten := (&inproc{s: s, h: s.handler()}).newTenant(t, "Staller")
	conn, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(16 << 10)
	body := `{"model":"forii/llama-3.1-8b","stream":true,"max_tokens":16384,"messages":[{"role":"user","content":"Write at length."}]}`
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		chatEndpoint, ten.key, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("response: %v %v", resp, err)
	}
	// The client reads nothing more and keeps the connection open.
	hs.Close() // returns once the handler has ended
	recs := records(t, s, ten.id)
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[0]
	if r.CompletionTokens == 0 || r.CompletionTokens >= 16384 || r.Metadata["stream_end"] != "deadline" || r.Cost.IsZero() || r.ErrorType != "" {
		t.Fatalf("record %+v", r)
	}
	acct, err := s.kl.Credits.Account(context.Background(), ten.id)
	if err != nil || !acct.Held.IsZero() {
		t.Fatalf("held %s %v", acct.Held, err)
	}
}

func TestRequestLimitFlags(t *testing.T) {
	c, err := parseFlags(nil, io.Discard)
	if err != nil || c.limits.holdTTL != 5*time.Minute || c.limits.maxRequestDuration >= c.limits.holdTTL || c.limits.streamHoldTokens != 1024 {
		t.Fatalf("defaults: %+v %v", c.limits, err)
	}
	c, err = parseFlags([]string{"-hold-ttl", "2m", "-max-request-duration", "90s", "-stream-hold-tokens", "0"}, io.Discard)
	if err != nil || c.limits != (requestLimits{holdTTL: 2 * time.Minute, maxRequestDuration: 90 * time.Second}) {
		t.Fatalf("set: %+v %v", c.limits, err)
	}
	for _, args := range [][]string{
		{"-hold-ttl", "1m", "-max-request-duration", "1m"},
		{"-max-request-duration", "6m"},
		{"-hold-ttl", "0s"},
		{"-max-request-duration", "-1s"},
		{"-stream-hold-tokens", "-1"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil || !strings.Contains(err.Error(), "-") {
			t.Errorf("%v accepted", args)
		}
	}
}

// checkCutStream checks a stream the gateway ended at the balance: the
// client got `tokens` content chunks, then finish_reason "length", the
// usage so far and [DONE].
func checkCutStream(t *testing.T, b []byte, tokens int64) {
	t.Helper()
	chunks, done := sseEvents(t, b)
	var content int64
	length := false
	for _, c := range chunks {
		for _, ch := range c.Choices {
			if ch.Delta.Content != "" {
				content++
			}
			if ch.FinishReason != nil {
				length = *ch.FinishReason == openai.FinishLength
			}
		}
	}
	last := chunks[len(chunks)-1]
	if !done || !length || content != tokens || last.Usage == nil || last.Usage.CompletionTokens != tokens {
		t.Fatalf("cut stream: %d content chunks (want %d), length %v, done %v, last %+v", content, tokens, length, done, last)
	}
}

// A stream holds an estimate (-stream-hold-tokens), not its whole limit,
// and grows the hold as it delivers; when the balance cannot fund more it
// ends cleanly — finish_reason "length", the usage so far, [DONE] — and is
// charged exactly what it delivered: the balance reaches zero, never
// below.
func TestSimulatedStreamStopsAtTheBalance(t *testing.T) {
	g := startGateway(t, "-models", pricyCatalog(t, "1000000", ""), "-stream-hold-tokens", "10")
	u := g.signup("Edge")
	// ₹1 a completion token: 100 tokens (₹100) do not fit ₹50 at once.
	if st, _, b := g.do("POST", chatEndpoint, u.key, chatBody("test/pricy", 100, false)); st != 402 {
		t.Fatalf("non-streaming ₹100 on ₹50: %d %s", st, short(b))
	}
	st, _, b := g.do("POST", chatEndpoint, u.key, chatBody("test/pricy", 100, true))
	if st != 200 {
		t.Fatalf("stream: %d %s", st, short(b))
	}
	checkCutStream(t, b, 50)
	entries := g.ledger(u)
	if len(entries) != 2 || num(t, entries[0]["amount_inr"]).String() != "-50" || !num(t, entries[0]["balance_inr"]).IsZero() {
		t.Fatalf("ledger: %v", entries)
	}
	if st, _, b := g.do("POST", chatEndpoint, u.key, chatBody("test/pricy", 1, true)); st != 402 {
		t.Fatalf("after the balance ran out: %d %s", st, short(b))
	}
}

// The same through an upstream that reports usage only at the end: the
// gateway counts the delivered text, stops reading the upstream at the
// balance and charges the estimate.
func TestUpstreamStreamStopsAtTheBalance(t *testing.T) {
	up := newOpenAIStub(t, stubConfig{answer: 1000})
	g, s, _ := startServed(t, config{upstream: up.URL + "/v1", modelsFile: stubCatalog(t), limits: requestLimits{streamHoldTokens: 10}})
	u := g.signup("UpEdge")
	st, _, b := g.do("POST", chatEndpoint, u.key, chatJSON("test/dear", map[string]any{"max_completion_tokens": 100,
		"stream": true, "stream_options": map[string]any{"include_usage": true}}))
	if st != 200 {
		t.Fatalf("stream: %d %s", st, short(b))
	}
	checkCutStream(t, b, 50)
	r := records(t, s, u.id)[0]
	if r.CompletionTokens != 50 || r.Metadata["stream_end"] != "budget" || r.Metadata["usage"] != "estimated" || r.ErrorType != "" {
		t.Fatalf("record %+v", r)
	}
	if e := g.ledger(u); !num(t, e[0]["balance_inr"]).IsZero() || num(t, e[0]["amount_inr"]).String() != "-50" {
		t.Fatalf("ledger %v", e)
	}
}

// Streams racing for the last of a balance share it: together they
// deliver exactly what it funds, each admitted one ends cleanly, and the
// balance ends at zero.
func TestConcurrentStreamsShareTheBalanceEdge(t *testing.T) {
	g, s, _ := startServed(t, config{modelsFile: pricyCatalog(t, "1000000", ""), limits: requestLimits{streamHoldTokens: 10}})
	u := g.signup("Racers")
	const n = 3
	bodies := make([][]byte, n)
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			statuses[i], _, bodies[i] = g.do("POST", chatEndpoint, u.key, chatBody("test/pricy", 100, true))
		})
	}
	wg.Wait()
	var delivered int64
	for i := range n {
		// A stream that starts after the others took the balance is
		// refused; the ones admitted share it.
		if statuses[i] == 402 {
			continue
		}
		if statuses[i] != 200 {
			t.Fatalf("stream %d: %d %s", i, statuses[i], short(bodies[i]))
		}
		chunks, done := sseEvents(t, bodies[i])
		last := chunks[len(chunks)-1]
		if !done || last.Usage == nil {
			t.Fatalf("stream %d did not end cleanly: %s", i, short(bodies[i]))
		}
		delivered += last.Usage.CompletionTokens
	}
	var charged int64
	for _, r := range records(t, s, u.id) {
		charged += r.CompletionTokens
	}
	entries := g.ledger(u)
	if delivered != 50 || charged != 50 || !num(t, entries[0]["balance_inr"]).IsZero() {
		t.Fatalf("delivered %d, charged %d tokens, balance %v", delivered, charged, entries[0]["balance_inr"])
	}
}

// An upstream that ignores its limit is charged all it delivered: a
// non-streaming answer beyond the balance becomes a debt (the library's
// default overrun policy) that refuses the account's next request; a
// stream is funded as it goes and stops at the balance, so it never
// overdraws.
func TestUpstreamIgnoringItsLimit(t *testing.T) {
	up := newOpenAIStub(t, stubConfig{answer: 80, ignoreLimits: true})
	g, s, _ := startServed(t, config{upstream: up.URL + "/v1", modelsFile: stubCatalog(t)})

	u := g.signup("Overrun")
	st, _, b := g.do("POST", chatEndpoint, u.key, chatJSON("test/dear", map[string]any{"max_completion_tokens": 10}))
	if st != 200 || completion(t, b).Usage.CompletionTokens != 80 {
		t.Fatalf("non-streaming: %d %s", st, short(b))
	}
	if r := records(t, s, u.id)[0]; r.CompletionTokens != 80 || r.Cost.String() != "80" {
		t.Fatalf("record: %d tokens, ₹%s", r.CompletionTokens, r.Cost)
	}
	if bal := g.must(200, "GET", "/v1/accounts/"+u.id+"/balance", u.token, nil); num(t, bal["credits_inr"]).String() != "-30" {
		t.Fatalf("balance %v, want -30 (a debt of the ₹30 overshoot)", bal["credits_inr"])
	}
	st, _, b = g.do("POST", chatEndpoint, u.key, chatJSON("test/dear", map[string]any{"max_completion_tokens": 1}))
	if st != 402 || !strings.Contains(errorMessage(t, b), "owes") {
		t.Fatalf("in debt: %d %s", st, short(b))
	}

	v := g.signup("Funded")
	st, _, b = g.do("POST", chatEndpoint, v.key, chatJSON("test/dear", map[string]any{"max_completion_tokens": 10,
		"stream": true, "stream_options": map[string]any{"include_usage": true}}))
	if st != 200 {
		t.Fatalf("stream: %d %s", st, short(b))
	}
	checkCutStream(t, b, 50)
	if e := g.ledger(v); !num(t, e[0]["balance_inr"]).IsZero() {
		t.Fatalf("ledger %v", e)
	}
}

// A client that leaves a proxied stream pays for the text it was sent
// (estimated: the upstream's usage never came), and the upstream call is
// ended.
func TestUpstreamStreamLeftMidwayPaysWhatWasSent(t *testing.T) {
	up := newOpenAIStub(t, stubConfig{answer: 1000, hangAfter: 3})
	g, s, hs := startServed(t, config{upstream: up.URL + "/v1", modelsFile: stubCatalog(t)})
	u := g.signup("UpLeaver")
	raw, _ := json.Marshal(chatJSON("test/gpt", map[string]any{"max_completion_tokens": 500, "stream": true}))
	req, _ := http.NewRequest("POST", g.base+chatEndpoint, bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+u.key)
	resp, err := g.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(resp.Body)
	for got := 0; got < 3; {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(line, stubToken) {
			got++
		}
	}
	resp.Body.Close()
	select {
	case <-up.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request was not ended")
	}
	hs.Close() // waits for the handler
	r := records(t, s, u.id)[0]
	if r.CompletionTokens != 3 || r.Metadata["usage"] != "estimated" || r.ErrorType != "" || r.Cost.IsZero() {
		t.Fatalf("record %+v", r)
	}
}
