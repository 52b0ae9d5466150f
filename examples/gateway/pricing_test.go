package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

// cachedCatalog: test/cache (upstream "gpt-stub") costs ₹1 a prompt token,
// ₹0.25 a cached one, ₹2 a completion token and ₹3 a reasoning one.
func cachedCatalog(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "models.json")
	body := `{"models":[{"id":"test/cache","owned_by":"test","prompt_inr_per_1m":1000000,"completion_inr_per_1m":2000000,
	  "cached_prompt_inr_per_1m":250000,"reasoning_inr_per_1m":3000000,"upstream_model":"gpt-stub"}]}`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The three shapes LiteLLM's users report wrong spend for — cached prompt
// tokens (#11364), reasoning tokens (#18599) and streaming (#6633) — and an
// upstream that reports impossible details: each request is charged exactly
// per the catalog, the parts are stored on its record, and the ledger
// reconciles with the records.
func TestCachedReasoningAndStreamingAreChargedExactly(t *testing.T) {
	up := newOpenAIStub(t, stubConfig{answer: 10})
	g, s, _ := startServed(t, config{upstream: up.URL + "/v1", modelsFile: cachedCatalog(t)})
	u := g.signup("Cache")
	ctx := context.Background()
	if _, err := s.kl.Credits.Purchase(ctx, credits.CreditParams{AccountID: u.id, Amount: credits.AmountFromInt(1000), IdempotencyKey: "top-up"}); err != nil {
		t.Fatal(err)
	}
	stream := map[string]any{"stream": true, "stream_options": map[string]any{"include_usage": true}}
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	cases := []struct {
		name              string
		extra             map[string]any
		stub              map[string]any
		cached, reasoning int64
		want              string
	}{
		// 7 prompt tokens, 5 cached: 2×1 + 5×0.25; 10 completion: 10×2.
		{"cached (#11364)", nil, map[string]any{"cached": 5}, 5, 0, "23.25"},
		// 10 completion, 4 reasoning: 6×2 + 4×3, never 10×2 + 4×3.
		{"reasoning (#18599)", nil, map[string]any{"reasoning": 4}, 0, 4, "31"},
		// The same in a stream's final usage chunk: 3.25 + 24.
		{"streaming (#6633)", stream, map[string]any{"cached": 5, "reasoning": 4}, 5, 4, "27.25"},
		// The client did not ask for usage: the gateway still reads it.
		{"streaming, usage not asked", map[string]any{"stream": true}, map[string]any{"cached": 5, "reasoning": 4}, 5, 4, "27.25"},
		// Parts above their totals are clamped: 7×0.25 + 10×3.
		{"parts above totals", nil, map[string]any{"raw_usage": raw(`{"prompt_tokens":7,"completion_tokens":10,"total_tokens":17,
			"prompt_tokens_details":{"cached_tokens":9999},"completion_tokens_details":{"reasoning_tokens":50}}`)}, 7, 10, "31.75"},
		{"parts above totals, streaming", stream, map[string]any{"raw_usage": raw(`{"prompt_tokens":7,"completion_tokens":10,
			"prompt_tokens_details":{"cached_tokens":9999},"completion_tokens_details":{"reasoning_tokens":50}}`)}, 7, 10, "31.75"},
		// Negative, absurd and non-numeric parts read as none: 7×1 + 10×2.
		{"parts absurd", nil, map[string]any{"raw_usage": raw(`{"prompt_tokens":7,"completion_tokens":10,
			"prompt_tokens_details":{"cached_tokens":-7},"completion_tokens_details":{"reasoning_tokens":1e30}}`)}, 0, 0, "27"},
		{"parts not numbers", stream, map[string]any{"raw_usage": raw(`{"prompt_tokens":7,"completion_tokens":10,
			"prompt_tokens_details":{"cached_tokens":"5"},"completion_tokens_details":{"reasoning_tokens":[4]}}`)}, 0, 0, "27"},
	}
	spent := credits.Amount{}
	for _, c := range cases {
		c.stub["answer"] = 10
		extra := map[string]any{"max_completion_tokens": 10, "x_stub": c.stub}
		for k, v := range c.extra {
			extra[k] = v
		}
		st, _, b := g.do("POST", chatEndpoint, u.key, chatJSON("test/cache", extra))
		if st != 200 {
			t.Fatalf("%s: %d %s", c.name, st, short(b))
		}
		if c.extra["stream"] == true {
			if _, done := sseEvents(t, b); !done {
				t.Fatalf("%s: stream not finished: %s", c.name, short(b))
			}
		}
		r := records(t, s, u.id)[0]
		want := must(credits.ParseAmount(c.want))
		if !r.Cost.Equal(want) || r.CachedPromptTokens != c.cached || r.ReasoningTokens != c.reasoning || r.PromptTokens != 7 ||
			r.CompletionTokens != 10 || r.ErrorType != "" {
			t.Fatalf("%s: record %+v, want cost %s, cached %d, reasoning %d", c.name, r, want, c.cached, c.reasoning)
		}
		spent = spent.Add(r.Cost)
	}
	acct, err := s.kl.Credits.Account(ctx, u.id)
	if err != nil {
		t.Fatal(err)
	}
	if want := must(credits.ParseAmount("1050")).Sub(spent); !acct.Balance.Equal(want) || !acct.Held.IsZero() {
		t.Fatalf("ledger: balance %s held %s, want %s and nothing held", acct.Balance, acct.Held, want)
	}
	rows, err := s.kl.Usage.Summary(ctx, usage.SummaryQuery{AccountID: u.id,
		From: time.Now().UTC().AddDate(0, 0, -1).Format(time.DateOnly), To: time.Now().UTC().AddDate(0, 0, 1).Format(time.DateOnly)})
	if err != nil || len(rows) != 1 || !rows[0].Cost.Equal(spent) || rows[0].CachedPromptTokens != 5+5+5+7+7 || rows[0].ReasoningTokens != 4+4+4+10+10 {
		t.Fatalf("summary %+v %v", rows, err)
	}
	// The usage API shows the parts.
	day := time.Now().In(must(time.LoadLocation("Asia/Kolkata"))).Format(time.DateOnly)
	st, _, b := g.do("GET", "/v1/accounts/"+u.id+"/usage?start="+day+"&end="+day, u.token, nil)
	var body struct {
		Data []struct {
			Cached    int64 `json:"cached_prompt_tokens"`
			Reasoning int64 `json:"reasoning_tokens"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &body); st != 200 || err != nil || len(body.Data) != 1 || body.Data[0].Cached != 29 || body.Data[0].Reasoning != 32 {
		t.Fatalf("usage API: %d %s", st, short(b))
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A catalog with the new optional prices and dated versions loads; one
// without them prices exactly as before; a dated version needs its time.
func TestCatalogPricesAndVersions(t *testing.T) {
	cf, err := parseCatalog([]byte(`{"models":[{"id":"m","prompt_inr_per_1m":330,"completion_inr_per_1m":350,
	  "cached_prompt_inr_per_1m":82.5,"cache_write_inr_per_1m":"412.5","reasoning_inr_per_1m":350,"request_fee_inr":0.01,
	  "prices":[{"effective_from":"2027-01-01T00:00:00+05:30","prompt_inr_per_1m":300,"completion_inr_per_1m":350}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := newCatalog(cf)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Date(2026, 12, 31, 18, 29, 59, 0, time.UTC) // one second before midnight in India
	rec := usage.Record{Model: "m", PromptTokens: 1_000_000, CompletionTokens: 1_000_000, CachedPromptTokens: 400_000,
		CacheWriteTokens: 100_000, ReasoningTokens: 500_000, CreatedAt: before}
	// 500,000×330 + 400,000×82.5 + 100,000×412.5 + 1,000,000×350, per million, + 0.01.
	if got := must(c.prices.Cost(rec)); !got.Equal(must(credits.ParseAmount("589.26"))) {
		t.Fatalf("before the new price: %s", got)
	}
	// From the new version (optional prices unset: plain ones): 1,000,000×300 + 1,000,000×350.
	rec.CreatedAt = before.Add(time.Second)
	if got := must(c.prices.Cost(rec)); !got.Equal(must(credits.ParseAmount("650"))) {
		t.Fatalf("after the new price: %s", got)
	}
	for _, bad := range []string{
		`{"models":[{"id":"m","prompt_inr_per_1m":1,"completion_inr_per_1m":1,"prices":[{"prompt_inr_per_1m":2,"completion_inr_per_1m":2}]}]}`,
		`{"models":[{"id":"m","prompt_inr_per_1m":1,"completion_inr_per_1m":1,"cached_prompt_inr_per_1m":-1}]}`,
		`{"models":[{"id":"m","prompt_inr_per_1m":1,"completion_inr_per_1m":1,"prices":[{"effective_from":"2027-01-01T00:00:00Z","prompt_inr_per_1m":1,"completion_inr_per_1m":1},{"effective_from":"2027-01-01T00:00:00Z","prompt_inr_per_1m":2,"completion_inr_per_1m":2}]}]}`,
	} {
		cf, err := parseCatalog([]byte(bad))
		if err == nil {
			_, err = newCatalog(cf)
		}
		if !errors.Is(err, errCatalog) {
			t.Errorf("%s: %v, want errCatalog", bad, err)
		}
	}
	// The built-in catalog's prices are unchanged: the Forii example.
	def, err := newCatalog(defaultCatalog())
	if err != nil {
		t.Fatal(err)
	}
	if got := must(def.prices.Cost(usage.Record{Model: "forii/deepseek-v3", PromptTokens: 1_250_000, CompletionTokens: 340_000})); !got.Equal(must(credits.ParseAmount("531.50"))) {
		t.Fatalf("built-in catalog: %s, want 531.50", got)
	}
}
