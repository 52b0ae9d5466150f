package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/usage"
)

// The API reports what the price book charges, not a number of its own,
// and judges key expiry on the injected clock. The clock runs in 2020 and
// the tools cost 5 and 2 credits, so neither time.Now nor hard-coded
// prices can pass.
func TestPricesAndClockAreInjected(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(time.Date(2020, 6, 1, 12, 0, 0, 0, time.UTC))
	quiet := slog.New(slog.DiscardHandler)
	prof, err := profiles.Get(profiles.ToolAPI)
	if err != nil {
		t.Fatal(err)
	}
	opts := prof.Options(clk.Now, quiet)
	if opts.Prices, err = usage.NewPriceBook(nil, []usage.OperationPrice{
		{Operation: profiles.OpInspectDomain, PerUnit: decimal.NewFromInt(5)},
		{Operation: profiles.OpKeywordVolume, PerUnit: decimal.NewFromInt(2)},
	}); err != nil {
		t.Fatal(err)
	}
	kl, err := keyledger.New(memstore.New(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl.Close(ctx) })
	a, err := kl.Signup(ctx, account.CreateParams{Name: "Ada", Email: "ada@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k", ExpiresAt: clk.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	s := &api{kl: kl, log: quiet, now: clk.Now, upstream: simulated{}, creditsPerUSD: 100}
	h := s.routes()
	call := func(method, path, body string) map[string]any {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+raw.Reveal())
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var m map[string]any
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &m) != nil {
			t.Fatalf("%s %s: %d %s", method, path, w.Code, w.Body)
		}
		return m
	}
	for _, c := range []struct {
		path, body string
		want       float64
	}{
		{profiles.OpInspectDomain, `{"domain":"example.com"}`, 5},
		{profiles.OpKeywordVolume, `{"keyword":"go ledger"}`, 2},
	} {
		before, _ := kl.Credits.Balance(ctx, a.ID)
		m := call("POST", c.path, c.body)
		after, _ := kl.Credits.Balance(ctx, a.ID)
		charged := before.Sub(after)
		if m["credits_charged"] != c.want || charged.String() != decimal.NewFromFloat(c.want).String() {
			t.Fatalf("%s: credits_charged %v, ledger charged %s; want %v", c.path, m["credits_charged"], charged, c.want)
		}
	}
	creds := call("GET", "/v1/me/api-credentials", "")["data"].([]any)
	if len(creds) != 1 || creds[0].(map[string]any)["is_active"] != true {
		t.Fatalf("a key expiring in an hour of the injected clock reads inactive: %v", creds)
	}
}
