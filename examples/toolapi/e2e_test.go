package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/e2e"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/store/sqlitestore"
)

// admin opens the server's SQLite file a second time, as keyctl does, to
// create accounts and move balances while the server runs.
func admin(t *testing.T, db string) *keyledger.KeyLedger {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), db, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	prof, err := profiles.Get(profiles.ToolAPI)
	if err != nil {
		t.Fatal(err)
	}
	kl, err := keyledger.New(st, prof.Options(nil, slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl.Close(context.Background()); st.Close() })
	return kl
}

// signup creates an account with a key and sets its balance.
func signup(t *testing.T, kl *keyledger.KeyLedger, email string, balance int64) (account.Account, string) {
	t.Helper()
	ctx := context.Background()
	a, err := kl.Signup(ctx, account.CreateParams{Name: "Other", Email: email})
	if err != nil {
		t.Fatal(err)
	}
	if d := balance - profiles.ToolAPISignupGrant; d != 0 {
		if _, err := kl.Credits.Adjust(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.AmountFromInt(d), IdempotencyKey: "test-adjust"}); err != nil {
			t.Fatal(err)
		}
	}
	raw, _, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	return a, raw.Reveal()
}

func start(t *testing.T) (*e2e.Server, string, string) {
	db := filepath.Join(t.TempDir(), "toolapi.db")
	runLogged := func(ctx context.Context, args []string, stdout, logs io.Writer) error {
		c, err := parseFlags(args, stdout)
		if err != nil {
			return err
		}
		c.logs = logs
		return runConfig(ctx, c, stdout)
	}
	// The logs are searched for every key the test handles at cleanup.
	srv := e2e.StartLogged(t, runLogged, "-db", db, "-bootstrap-email", "owner@example.com")
	var key string
	for _, l := range srv.Lines {
		if _, rest, ok := strings.Cut(l, " key "); ok && strings.HasPrefix(l, "bootstrap account acct_") {
			key = rest
		}
	}
	if !strings.HasPrefix(key, "or_") {
		t.Fatalf("no bootstrap key in %q", srv.Lines)
	}
	return srv, db, key
}

func balance(t *testing.T, srv *e2e.Server, key string) float64 {
	t.Helper()
	r := srv.Do(t, "GET", "/v1/me/credits", key, nil)
	if r.Status != 200 {
		t.Fatalf("credits: %d %s", r.Status, r.Body)
	}
	return r.JSON(t)["balance"].(float64)
}

func errCode(t *testing.T, r e2e.Response) string {
	t.Helper()
	e, ok := r.JSON(t)["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object in %s", r.Body)
	}
	return e["code"].(string)
}

func TestCredentialsAndCredits(t *testing.T) {
	srv, db, key := start(t)
	if got := balance(t, srv, key); got != 500 {
		t.Fatalf("new account balance %v, want 500", got)
	}
	// List: the bootstrap credential, masked.
	r := srv.Do(t, "GET", "/v1/me/api-credentials", key, nil)
	var list struct {
		Data []map[string]any `json:"data"`
	}
	r.Decode(t, &list)
	if r.Status != 200 || len(list.Data) != 1 {
		t.Fatalf("list: %d %s", r.Status, r.Body)
	}
	item := list.Data[0]
	for _, f := range []string{"id", "account_id", "name", "prefix", "is_active", "created_at", "last_used_at", "expires_at"} {
		if _, ok := item[f]; !ok {
			t.Errorf("credential item lacks %q: %v", f, item)
		}
	}
	if p := item["prefix"].(string); !strings.HasPrefix(p, "or_") || !strings.HasSuffix(p, "...") || len(p) != len("or_abc123...") || strings.Contains(string(r.Body), key) {
		t.Fatalf("prefix %q / raw key leaked", p)
	}
	if !strings.HasPrefix(item["id"].(string), "cred_") || !strings.HasPrefix(item["account_id"].(string), "acct_") || item["is_active"] != true {
		t.Fatalf("item %v", item)
	}

	// Create: 201, the raw key once; expires_at optional.
	exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	r = srv.Do(t, "POST", "/v1/me/api-credentials", key, map[string]any{"name": "Production server", "expires_at": exp})
	var created struct {
		Key           string         `json:"key"`
		APICredential map[string]any `json:"api_credential"`
	}
	r.Decode(t, &created)
	if r.Status != 201 || !strings.HasPrefix(created.Key, "or_") || created.APICredential["name"] != "Production server" ||
		created.APICredential["expires_at"] != exp.Format(time.RFC3339) || created.APICredential["last_used_at"] != nil {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	second := created.Key
	secondID := created.APICredential["id"].(string)
	if balance(t, srv, second) != 500 {
		t.Fatal("new key does not see the account's balance")
	}

	// Bad input.
	for _, c := range []struct {
		name string
		body any
		want int
	}{
		{"empty name", map[string]any{"name": ""}, 400},
		{"long name", map[string]any{"name": strings.Repeat("n", 121)}, 400},
		{"past expiry", map[string]any{"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, 400},
		{"bad time", map[string]any{"name": "x", "expires_at": "tomorrow"}, 400},
		{"malformed", `{"name":`, 400},
		{"unknown field", `{"name":"x","scopes":[]}`, 400},
		{"wrong type", `{"name":5}`, 400},
		{"trailing", `{"name":"x"} {}`, 400},
		{"no body", nil, 400},
		{"too large", `{"name":"` + strings.Repeat("x", 1<<20) + `"}`, 413},
	} {
		r := srv.Do(t, "POST", "/v1/me/api-credentials", key, c.body)
		if r.Status != c.want || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s", c.name, r.Status, r.Body)
		}
	}

	// Auth failures.
	for _, k := range []string{"", "or_notakey", "Bearer"} {
		if r := srv.Do(t, "GET", "/v1/me/credits", k, nil); r.Status != 401 || errCode(t, r) != "invalid_api_key" {
			t.Errorf("key %q: %d %s", k, r.Status, r.Body)
		}
	}
	if r := srv.Do(t, "GET", "/v1/nope", key, nil); r.Status != 404 {
		t.Errorf("unknown route: %d", r.Status)
	}

	// Tenant isolation: another account's credential is 404.
	kl := admin(t, db)
	_, otherKey := signup(t, kl, "other@example.com", 500)
	if r := srv.Do(t, "POST", "/v1/me/api-credentials/"+secondID+"/revoke", otherKey, nil); r.Status != 404 || errCode(t, r) != "not_found" {
		t.Fatalf("cross-account revoke: %d %s", r.Status, r.Body)
	}
	if r := srv.Do(t, "POST", "/v1/me/api-credentials/cred_nope/revoke", key, nil); r.Status != 404 {
		t.Fatalf("unknown revoke: %d %s", r.Status, r.Body)
	}

	// Revoke: is_active false, and the key stops working at once.
	r = srv.Do(t, "POST", "/v1/me/api-credentials/"+secondID+"/revoke", key, nil)
	var revoked struct {
		APICredential map[string]any `json:"api_credential"`
	}
	r.Decode(t, &revoked)
	if r.Status != 200 || revoked.APICredential["is_active"] != false || revoked.APICredential["id"] != secondID {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	if r := srv.Do(t, "GET", "/v1/me/credits", second, nil); r.Status != 401 {
		t.Fatalf("revoked key: %d %s", r.Status, r.Body)
	}
	if r := srv.Do(t, "POST", "/v1/tools/keyword_volume", second, map[string]string{"keyword": "x"}); r.Status != 401 {
		t.Fatalf("revoked key on a tool: %d %s", r.Status, r.Body)
	}
	r = srv.Do(t, "GET", "/v1/me/api-credentials", key, nil)
	r.Decode(t, &list)
	if len(list.Data) != 2 || list.Data[1]["is_active"] != false {
		t.Fatalf("list after revoke: %s", r.Body)
	}
}

func TestPurchase(t *testing.T) {
	srv, _, key := start(t)
	post := func(body any, idem string) e2e.Response {
		h := []string{}
		if idem != "" {
			h = append(h, "Idempotency-Key", idem)
		}
		return srv.Do(t, "POST", "/v1/me/credits/purchase", key, body, h...)
	}
	for _, c := range []struct {
		name, idem string
		body       any
	}{
		{"no key", "", map[string]any{"amount_usd": 10}},
		{"not a multiple", "a", map[string]any{"amount_usd": 15}},
		{"fraction", "a", map[string]any{"amount_usd": 10.5}},
		{"zero", "a", map[string]any{"amount_usd": 0}},
		{"negative", "a", map[string]any{"amount_usd": -10}},
		{"too much", "a", map[string]any{"amount_usd": 20000}},
		{"string", "a", `{"amount_usd":"10"}`},
		{"missing", "a", `{}`},
		{"unknown", "a", `{"amount_usd":10,"currency":"USD"}`},
	} {
		if r := post(c.body, c.idem); r.Status != 400 || errCode(t, r) != "invalid_request" {
			t.Errorf("%s: %d %s", c.name, r.Status, r.Body)
		}
	}
	if b := balance(t, srv, key); b != 500 {
		t.Fatalf("refused purchases changed the balance: %v", b)
	}
	r := post(map[string]any{"amount_usd": 20}, "order-1")
	first := r.JSON(t)
	if r.Status != 200 || first["credits_added"] != 2000.0 || first["balance"] != 2500.0 || first["amount_usd"] != 20.0 {
		t.Fatalf("purchase: %d %s", r.Status, r.Body)
	}
	r = post(map[string]any{"amount_usd": 20}, "order-1")
	if again := r.JSON(t); r.Status != 200 || again["transaction_id"] != first["transaction_id"] || again["balance"] != 2500.0 {
		t.Fatalf("replay: %d %s", r.Status, r.Body)
	}
	if r := post(map[string]any{"amount_usd": 30}, "order-1"); r.Status != 409 {
		t.Fatalf("reused key: %d %s", r.Status, r.Body)
	}
	if b := balance(t, srv, key); b != 2500 {
		t.Fatalf("balance %v, want 2500", b)
	}
}

func TestTools(t *testing.T) {
	srv, db, key := start(t)
	r := srv.Do(t, "POST", "/v1/tools/inspect_domain", key, map[string]string{"domain": "Example.COM"})
	if r.Status != 200 || r.JSON(t)["data"].(map[string]any)["domain"] != "example.com" || r.Header.Get("X-Ratelimit-Limit-Requests") != "600" {
		t.Fatalf("inspect_domain: %d %v %s", r.Status, r.Header, r.Body)
	}
	if b := balance(t, srv, key); b != 497 {
		t.Fatalf("balance %v, want 497", b)
	}
	if r := srv.Do(t, "POST", "/v1/tools/keyword_volume", key, map[string]string{"keyword": "running shoes"}); r.Status != 200 {
		t.Fatalf("keyword_volume: %d %s", r.Status, r.Body)
	}
	if b := balance(t, srv, key); b != 496 {
		t.Fatalf("balance %v, want 496", b)
	}
	// A failing upstream: 502, recorded, not charged.
	if r := srv.Do(t, "POST", "/v1/tools/inspect_domain", key, map[string]string{"domain": "down.invalid"}); r.Status != 502 || errCode(t, r) != "upstream_error" {
		t.Fatalf("failing upstream: %d %s", r.Status, r.Body)
	}
	// Bad input: 400, not recorded, not charged.
	for _, body := range []any{map[string]string{"domain": "not a domain"}, `{"domain":1}`, `{"domain":"a.com","x":1}`, `[`, map[string]string{"domain": "nodot"}} {
		if r := srv.Do(t, "POST", "/v1/tools/inspect_domain", key, body); r.Status != 400 {
			t.Errorf("%v: %d %s", body, r.Status, r.Body)
		}
	}
	if r := srv.Do(t, "POST", "/v1/tools/keyword_volume", key, map[string]string{"keyword": " "}); r.Status != 400 {
		t.Errorf("empty keyword: %d %s", r.Status, r.Body)
	}
	if r := srv.Do(t, "POST", "/v1/tools/inspect_domain", key, `{"domain":"`+strings.Repeat("a", 1<<20)+`.com"}`); r.Status != 413 {
		t.Errorf("huge body: %d", r.Status)
	}
	if r := srv.Do(t, "POST", "/v1/tools/inspect_domain", "", map[string]string{"domain": "a.com"}); r.Status != 401 {
		t.Errorf("no key: %d", r.Status)
	}
	if b := balance(t, srv, key); b != 496 {
		t.Fatalf("balance %v after refused calls, want 496", b)
	}
	checkUsage(t, srv, key)

	// Out of credits: 402 JSON error, nothing charged; the cheaper tool works.
	kl := admin(t, db)
	_, poor := signup(t, kl, "poor@example.com", 2)
	if r := srv.Do(t, "POST", "/v1/tools/inspect_domain", poor, map[string]string{"domain": "a.com"}); r.Status != 402 || errCode(t, r) != "insufficient_quota" {
		t.Fatalf("no credits: %d %s", r.Status, r.Body)
	}
	if r := srv.Do(t, "POST", "/v1/tools/keyword_volume", poor, map[string]string{"keyword": "k"}); r.Status != 200 {
		t.Fatalf("cheap tool: %d %s", r.Status, r.Body)
	}
	if b := balance(t, srv, poor); b != 1 {
		t.Fatalf("balance %v, want 1", b)
	}
}

// TestConcurrentEdgeOfBalance: 20 parallel 3-credit calls on 10 credits
// succeed exactly 3 times; the rest are 402 and the balance ends at 1.
func TestConcurrentEdgeOfBalance(t *testing.T) {
	srv, db, _ := start(t)
	kl := admin(t, db)
	_, key := signup(t, kl, "edge@example.com", 10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := range 20 {
		wg.Go(func() {
			r := srv.Do(t, "POST", "/v1/tools/inspect_domain", key, map[string]string{"domain": fmt.Sprintf("d%d.com", i)})
			mu.Lock()
			codes[r.Status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[200] != 3 || codes[402] != 17 {
		t.Fatalf("status counts %v, want 3×200 and 17×402", codes)
	}
	if b := balance(t, srv, key); b != 1 {
		t.Fatalf("balance %v, want 1", b)
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{{"-postgres", "postgres://x"}, {"-credits-per-usd", "0"}, {"extra"}, {"-nope"}} {
		if err := run(context.Background(), append([]string{"-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "x.db")}, args...), io.Discard); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	_ = http.StatusOK
}
