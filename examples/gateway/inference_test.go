package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/internal/fakeclock"
)

// sseEvents reads an OpenAI streaming response as the openai clients do:
// "data: " lines until "data: [DONE]".
func sseEvents(t *testing.T, body []byte) (chunks []openai.ChatCompletionChunk, done bool) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return chunks, true
		}
		var c openai.ChatCompletionChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		chunks = append(chunks, c)
	}
	return chunks, false
}

// ledger returns an account's transactions (newest first) and checks that
// the entries add up to the balance and the balance is never negative.
func (g *gw) ledger(u user) []map[string]any {
	g.t.Helper()
	var all []map[string]any
	cursor := ""
	for {
		p := "/v1/accounts/" + u.id + "/transactions?limit=500"
		if cursor != "" {
			p += "&cursor=" + cursor
		}
		m := g.must(200, "GET", p, u.token, nil)
		for _, e := range m["data"].([]any) {
			all = append(all, e.(map[string]any))
		}
		if m["next_cursor"] == nil {
			break
		}
		cursor = m["next_cursor"].(string)
	}
	sum := decimal.Zero
	for i := len(all) - 1; i >= 0; i-- {
		sum = sum.Add(num(g.t, all[i]["amount_inr"]))
		bal := num(g.t, all[i]["balance_inr"])
		if !bal.Equal(sum) || bal.IsNegative() {
			g.t.Fatalf("entry %v: balance %s, running sum %s", all[i]["id"], bal, sum)
		}
	}
	b := g.must(200, "GET", "/v1/accounts/"+u.id+"/balance", u.token, nil)
	if shown := num(g.t, b["credits_inr"]); !shown.Equal(sum.Round(2)) {
		g.t.Fatalf("balance %s, entries sum to %s", shown, sum)
	}
	return all
}

func num(t *testing.T, v any) decimal.Decimal {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("%v (%T) is not a JSON number", v, v)
	}
	return decimal.RequireFromString(n.String())
}

func TestChatCompletions(t *testing.T) {
	g := startGateway(t)
	u := g.signup("Dev")

	models := g.must(200, "GET", "/inference/v1/models", u.key, nil)
	if models["object"] != "list" || len(models["data"].([]any)) != 3 {
		t.Fatalf("models: %v", models)
	}
	m0 := models["data"].([]any)[0].(map[string]any)
	if m0["id"] != "forii/deepseek-v3" || num(t, m0["pricing"].(map[string]any)["prompt_inr_per_1m"]).String() != "330" {
		t.Fatalf("model: %v", m0)
	}
	g.must(401, "GET", "/inference/v1/models", "", nil)

	st, h, b := g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("forii/deepseek-v3", 4, false))
	if st != 200 {
		t.Fatalf("chat: %d %s", st, b)
	}
	if h.Get("X-Ratelimit-Limit-Requests") != "60" || h.Get("X-Ratelimit-Remaining-Requests") != "59" || h.Get("X-Ratelimit-Reset") == "" {
		t.Fatalf("rate-limit headers: %v", h)
	}
	var cc openai.ChatCompletion
	if err := json.Unmarshal(b, &cc); err != nil {
		t.Fatal(err)
	}
	// "Hello, Forii!" is 13 bytes: 2 + 4 + ⌈13/4⌉ = 10 prompt tokens.
	if cc.Object != "chat.completion" || cc.Usage == nil || *cc.Usage != openai.NewUsage(10, 4) || cc.Choices[0].Message.Role != "assistant" {
		t.Fatalf("completion: %s", b)
	}

	// Streaming: chunks, a final usage chunk, [DONE]; metered the same.
	st, h, b = g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("forii/deepseek-v3", 4, true))
	if st != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/event-stream") || h.Get("X-Ratelimit-Remaining-Requests") != "58" {
		t.Fatalf("stream: %d %v %s", st, h, b)
	}
	chunks, done := sseEvents(t, b)
	if !done || len(chunks) != 4+3 {
		t.Fatalf("stream: %d chunks, done %v: %s", len(chunks), done, b)
	}
	var text strings.Builder
	for _, c := range chunks[:len(chunks)-1] {
		if c.Object != "chat.completion.chunk" || c.Usage != nil {
			t.Fatalf("chunk: %+v", c)
		}
		if len(c.Choices) == 1 {
			text.WriteString(c.Choices[0].Delta.Content)
		}
	}
	last := chunks[len(chunks)-1]
	if last.Usage == nil || *last.Usage != openai.NewUsage(10, 4) || len(last.Choices) != 0 {
		t.Fatalf("usage chunk: %+v", last)
	}
	if text.String() != cc.Choices[0].Message.Content {
		t.Fatalf("streamed %q, completed %q", text.String(), cc.Choices[0].Message.Content)
	}

	// Each request cost exactly 10 × 330/1M + 4 × 350/1M = ₹0.0047.
	entries := g.ledger(u)
	if len(entries) != 3 || entries[0]["type"] != "debit" || num(t, entries[0]["amount_inr"]).String() != "-0.0047" ||
		num(t, entries[1]["amount_inr"]).String() != "-0.0047" || num(t, entries[0]["balance_inr"]).String() != "49.9906" {
		t.Fatalf("ledger: %v", entries)
	}
	if e := g.must(200, "GET", "/v1/accounts/"+u.id+"/transactions?type=grant", u.token, nil)["data"].([]any); len(e) != 1 {
		t.Fatalf("grants: %v", e)
	}
}

// mangle changes a key's last character (to one it is not: a key that
// happens to end in the replacement would otherwise stay valid).
func mangle(key string) string {
	if key[len(key)-1] == 'x' {
		return key[:len(key)-1] + "y"
	}
	return key[:len(key)-1] + "x"
}

func TestInferenceErrorsAreNotCharged(t *testing.T) {
	g := startGateway(t)
	u := g.signup("Errs")
	restricted := g.must(201, "POST", "/v1/accounts/"+u.id+"/apiKeys", u.token, `{"name":"llama only","models":["forii/llama-3.1-8b"]}`)
	for _, c := range []struct {
		key, model string
		want       int
		code       string
	}{
		{"", "forii/deepseek-v3", 401, "invalid_api_key"},
		{"forii_sk_notarealkey", "forii/deepseek-v3", 401, "invalid_api_key"},
		{mangle(u.key), "forii/deepseek-v3", 401, "invalid_api_key"},
		{restricted["key"].(string), "forii/deepseek-v3", 403, "model_not_allowed"},
		{u.key, "forii/unknown", 404, "model_not_found"},
		{u.key, "", 400, ""},
	} {
		st, _, b := g.do("POST", "/inference/v1/chat/completions", c.key, chatBody(c.model, 4, false))
		var env openai.ErrorResponse
		if st != c.want || json.Unmarshal(b, &env) != nil || env.Error.Message == "" || (c.code != "" && env.Error.Code != c.code) {
			t.Errorf("key %.12q model %q: %d %s, want %d %s", c.key, c.model, st, b, c.want, c.code)
		}
	}
	g.must(200, "POST", "/inference/v1/chat/completions", restricted["key"].(string), chatBody("forii/llama-3.1-8b", 4, false))
	if entries := g.ledger(u); len(entries) != 2 { // the grant and the one good request
		t.Fatalf("ledger: %v", entries)
	}

	// Revoked: the very next request is 401.
	g.must(200, "DELETE", "/v1/accounts/"+u.id+"/apiKeys/"+u.keyID, u.token, nil)
	st, _, b := g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("forii/deepseek-v3", 4, false))
	if st != 401 || !strings.Contains(string(b), "revoked") {
		t.Fatalf("revoked key: %d %s", st, b)
	}
}

func TestRateLimit61stRequest(t *testing.T) {
	// A stopped clock: the 60 requests take no time, however slow the
	// machine (GCRA would otherwise refill one request a second).
	clock := fakeclock.New(time.Date(2026, 1, 15, 10, 30, 0, 0, time.UTC))
	g := startGatewayAt(t, clock.Now, filepath.Join(t.TempDir(), "gw.db"))
	u := g.signup("Burst")
	for i := 1; i <= 60; i++ {
		st, h, b := g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("forii/llama-3.1-8b", 1, false))
		if st != 200 || h.Get("X-Ratelimit-Remaining-Requests") != strconv.Itoa(60-i) {
			t.Fatalf("request %d: %d %s %v", i, st, b, h)
		}
	}
	st, h, b := g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("forii/llama-3.1-8b", 1, false))
	ra, _ := strconv.Atoi(h.Get("Retry-After"))
	if st != 429 || ra < 1 || ra > 60 || h.Get("X-Ratelimit-Remaining-Requests") != "0" || !strings.Contains(string(b), "rate_limit_exceeded") {
		t.Fatalf("61st: %d %s %v", st, b, h)
	}
	if n := len(g.ledger(u)); n != 61 { // grant + 60 debits; the 429 is free
		t.Fatalf("ledger has %d entries", n)
	}
	clock.Advance(time.Duration(ra) * time.Second)
	g.must(200, "POST", "/inference/v1/chat/completions", u.key, chatBody("forii/llama-3.1-8b", 1, false))
}

// pricyCatalog writes a -models file with one model, test/pricy, whose
// prompt is free and whose completion costs completionPer1M per 1M tokens.
func pricyCatalog(t *testing.T, completionPer1M, extra string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "models.json")
	body := `{"models":[{"id":"test/pricy","owned_by":"test","prompt_inr_per_1m":0,"completion_inr_per_1m":` + completionPer1M + extra + `}]}`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConcurrentInferenceAtTheEdgeOfTheBalance(t *testing.T) {
	g := startGateway(t, "-models", pricyCatalog(t, "1000000", ""))
	u := g.signup("Edge")
	// ₹50 buys exactly ten ₹5 requests; 30 race for them.
	const n = 30
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() {
			st, _, _ := g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("test/pricy", 5, i%2 == 0))
			statuses[i] = st
		})
	}
	wg.Wait()
	ok, poor := 0, 0
	for _, st := range statuses {
		switch st {
		case http.StatusOK:
			ok++
		case http.StatusPaymentRequired:
			poor++
		default:
			t.Errorf("status %d", st)
		}
	}
	if ok != 10 || poor != n-10 {
		t.Fatalf("%d succeeded, %d refused with 402", ok, poor)
	}
	entries := g.ledger(u) // Σ entries = balance, never negative
	if bal := num(t, entries[0]["balance_inr"]); !bal.IsZero() {
		t.Fatalf("balance %s", bal)
	}
	st, _, b := g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("test/pricy", 1, false))
	if st != 402 || !strings.Contains(string(b), "insufficient_quota") {
		t.Fatalf("broke: %d %s", st, b)
	}
}

// TestRedisSharedLimits runs two gateways on one SQLite file and one Redis
// (KEYLEDGER_TEST_REDIS): they share the key's 60 requests a minute.
func TestRedisSharedLimits(t *testing.T) {
	addr := os.Getenv("KEYLEDGER_TEST_REDIS")
	if addr == "" {
		t.Skip("KEYLEDGER_TEST_REDIS is not set")
	}
	clock := fakeclock.New(time.Date(2026, 1, 15, 10, 30, 0, 0, time.UTC))
	db := filepath.Join(t.TempDir(), "gw.db")
	// A prefix of this run's own: the frozen clock is the same instant in
	// every run, so buckets (sign-ups per address included) left in a
	// shared Redis by an earlier run would still be full.
	prefix := fmt.Sprintf("kltest:%d:", time.Now().UnixNano())
	t.Cleanup(func() {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		defer rdb.Close()
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})
	// Two processes on one file keep their holds in it (-shared-db).
	a := startGatewayAt(t, clock.Now, db, "-shared-db", "-redis", addr, "-redis-prefix", prefix)
	b := startGatewayAt(t, clock.Now, db, "-shared-db", "-redis", addr, "-redis-prefix", prefix)
	u := a.signup("Shared")
	for i := 1; i <= 60; i++ {
		g := a
		if i%2 == 0 {
			g = b
		}
		st, h, body := g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("forii/llama-3.1-8b", 1, false))
		if st != 200 || h.Get("X-Ratelimit-Remaining-Requests") != strconv.Itoa(60-i) {
			t.Fatalf("request %d: %d %s %v", i, st, body, h)
		}
	}
	for _, g := range []*gw{a, b} {
		if st, h, body := g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("forii/llama-3.1-8b", 1, false)); st != 429 || h.Get("Retry-After") == "" {
			t.Fatalf("61st: %d %s", st, body)
		}
	}
}
