package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/e2e"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/examples/internal/server"
)

// inproc is the API built in-process on a SQLite file in a temporary
// directory and driven through its http.Handler.
type inproc struct {
	s *api
	h http.Handler
}

func newInproc(tb testing.TB, logs io.Writer) *inproc {
	tb.Helper()
	env, err := server.Open(context.Background(), server.Config{Profile: profiles.ToolAPI,
		DB: filepath.Join(tb.TempDir(), "toolapi.db"), LogLevel: "debug", Stderr: logs})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = env.Close(context.Background()) })
	s := &api{kl: env.KL, log: env.Log, upstream: simulated{}, creditsPerUSD: 100, now: time.Now}
	return &inproc{s: s, h: s.routes()}
}

// tenant is an account with two keys (the spare one for revoke), a
// million credits, no effective rate limit, and usage records.
type tenant struct {
	id, key, keyID, spareKey, spareKeyID string
	usageCursor                          string
}

func (g *inproc) newTenant(tb testing.TB, name string) tenant {
	tb.Helper()
	ctx := context.Background()
	a, err := g.s.kl.Signup(ctx, account.CreateParams{Name: name, Email: strings.ToLower(name) + "@example.com"})
	if err != nil {
		tb.Fatal(err)
	}
	unlimited := account.Limits{RequestsPerMinute: account.MaxPerMinute}
	if _, err := g.s.kl.UpdateAccount(ctx, a.ID, account.UpdateParams{Limits: &unlimited}); err != nil {
		tb.Fatal(err)
	}
	if _, err := g.s.kl.Credits.Adjust(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.AmountFromInt(1_000_000), IdempotencyKey: "test-adjust"}); err != nil {
		tb.Fatal(err)
	}
	t := tenant{id: a.ID}
	for _, k := range []struct{ raw, id *string }{{&t.key, &t.keyID}, {&t.spareKey, &t.spareKeyID}} {
		raw, key, err := g.s.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k"})
		if err != nil {
			tb.Fatal(err)
		}
		*k.raw, *k.id = raw.Reveal(), key.ID
	}
	for _, kw := range []string{"shoes", "boots", "hats"} {
		rec := e2e.Serve(g.h, "POST", "/v1/tools/keyword_volume", "", "Bearer "+t.key, []byte(`{"keyword":"`+kw+`"}`))
		if rec.Code != 200 {
			tb.Fatalf("keyword_volume: %d %s", rec.Code, rec.Body)
		}
	}
	var page struct {
		NextCursor string `json:"next_cursor"`
	}
	rec := e2e.Serve(g.h, "GET", "/v1/me/usage", "limit=1", "Bearer "+t.key, nil)
	if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil || page.NextCursor == "" {
		tb.Fatalf("usage: %d %s", rec.Code, rec.Body)
	}
	t.usageCursor = page.NextCursor
	return t
}

// FuzzRoutes drives every route of routeTable through the real handler
// with a fuzzed body, query, credential and path id (or, on routes without
// one, Idempotency-Key header). An empty credential is the tenant's key and
// an empty id its spare key, so that handlers are reached past
// authentication and revoke leaves the primary key working. No 5xx, and
// every error is a JSON error body.
func FuzzRoutes(f *testing.F) {
	g := newInproc(f, io.Discard)
	t := g.newTenant(f, "Fuzz")
	routes := g.s.routeTable()
	seeds := map[string][]string{
		"POST /v1/me/credits/purchase":            {`{"amount_usd":10}`, `{"amount_usd":1e400}`},
		"POST /v1/me/api-credentials":             {`{"name":"ci","expires_at":"2099-01-01T00:00:00Z"}`},
		"GET /v1/me/usage":                        {"limit=2", "limit=1&cursor=" + t.usageCursor},
		"POST /v1/tools/inspect_domain":           {`{"domain":"example.com"}`, `{"domain":"fail.invalid"}`},
		"POST /v1/tools/keyword_volume":           {`{"keyword":"shoes"}`},
		"POST /v1/me/api-credentials/{id}/revoke": {``},
	}
	for i, rt := range routes {
		f.Add(uint8(i), "idem-1", "", "", []byte(nil))
		e2e.AddRouteSeeds(f, i, "limit=0&cursor=%zz", "Bearer or_forged", `{"x":`, seeds[rt.pattern])
	}
	ids := map[string]string{"id": t.spareKeyID}
	f.Fuzz(func(tt *testing.T, ri uint8, param, query, cred string, body []byte) {
		rt := routes[int(ri)%len(routes)]
		method, pattern, _ := strings.Cut(rt.pattern, " ")
		path := e2e.FillPattern(pattern, param, ids)
		var headers []string
		if !strings.Contains(pattern, "{") {
			idem := param
			if idem == "" {
				idem = "idem-1"
			}
			headers = append(headers, "Idempotency-Key", idem)
		}
		auth := cred
		if cred == "" {
			auth = "Bearer " + t.key
		}
		rec := e2e.Serve(g.h, method, path, query, auth, body, headers...)
		if req, err := parseInspectDomain(body); rec.Code == http.StatusBadGateway && err == nil && strings.HasSuffix(req.Domain, ".invalid") {
			return // the simulated provider fails for .invalid domains by design: not charged, 502
		}
		e2e.CheckAnswer(tt, rt.pattern+"?"+query, rec)
	})
}

// globalRoutes are the routes without path ids and why another tenant's
// ids cannot reach them: each acts on the account of the presented key.
var globalRoutes = map[string]string{
	"GET /v1/me/credits":            "the key's account",
	"POST /v1/me/credits/purchase":  "the key's account",
	"GET /v1/me/api-credentials":    "the key's account",
	"POST /v1/me/api-credentials":   "the key's account",
	"GET /v1/me/usage":              "the key's account (a foreign cursor is checked below)",
	"POST /v1/tools/inspect_domain": "charges the key's account",
	"POST /v1/tools/keyword_volume": "charges the key's account",
}

// TestCrossTenantIDsAreNotFound enumerates routeTable: every route with a
// path id called with A's key and B's id is 404 and leaves B's record as
// it was; a route without ids must be in globalRoutes. A's usage list
// with B's cursor shows none of B's records.
func TestCrossTenantIDsAreNotFound(t *testing.T) {
	g := newInproc(t, io.Discard)
	a, b := g.newTenant(t, "Alice"), g.newTenant(t, "Bob")
	var patterns []string
	for _, rt := range g.s.routeTable() {
		patterns = append(patterns, rt.pattern)
	}
	n := e2e.CrossTenant(t, patterns, globalRoutes, map[string]string{"id": b.spareKeyID}, func(method, _, path string) *httptest.ResponseRecorder {
		return e2e.Serve(g.h, method, path, "", "Bearer "+a.key, []byte(`{}`))
	})
	if n == 0 {
		t.Fatal("no routes with ids found")
	}
	rec := e2e.Serve(g.h, "GET", "/v1/me/usage", "limit=500&cursor="+b.usageCursor, "Bearer "+a.key, nil)
	if rec.Code != 200 && rec.Code != 400 {
		t.Fatalf("A with B's cursor: %d %s", rec.Code, rec.Body)
	}
	for _, id := range []string{b.id, b.keyID, b.spareKeyID} {
		if strings.Contains(rec.Body.String(), id) {
			t.Errorf("A's usage with B's cursor shows B's %s: %s", id, rec.Body)
		}
	}
	// B's spare key still works and is active.
	rec = e2e.Serve(g.h, "GET", "/v1/me/api-credentials", "", "Bearer "+b.spareKey, nil)
	if rec.Code != 200 || strings.Contains(rec.Body.String(), `"is_active":false`) {
		t.Fatalf("B's credentials: %d %s", rec.Code, rec.Body)
	}
}
