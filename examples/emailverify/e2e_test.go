package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/e2e"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/examples/internal/subscription"
	"github.com/keyledger/keyledger/store/sqlitestore"
)

// fakeDNS answers MX lookups from a table. "slow.test" waits for the
// context, "hang.test" ignores it until the test ends.
type fakeDNS struct {
	hang chan struct{}
	mu   sync.Mutex
	hits map[string]int
}

func newFakeDNS(t *testing.T) *fakeDNS {
	f := &fakeDNS{hang: make(chan struct{}), hits: map[string]int{}}
	t.Cleanup(func() { close(f.hang) })
	return f
}

func (f *fakeDNS) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	f.mu.Lock()
	f.hits[name]++
	f.mu.Unlock()
	switch name {
	case "example.com", "mailinator.com", "corp.com":
		return []*net.MX{{Host: "mx1." + name + ".", Pref: 10}, {Host: "mx2." + name + ".", Pref: 20}}, nil
	case "nomx.com":
		return nil, nil
	case "nullmx.com":
		return []*net.MX{{Host: ".", Pref: 0}}, nil
	case "slow.test":
		<-ctx.Done()
		return nil, ctx.Err()
	case "hang.test":
		<-f.hang
		return nil, nil
	case "servfail.com":
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (f *fakeDNS) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[name]
}

type env struct {
	srv *e2e.Server
	kl  *keyledger.KeyLedger // a second handle on the server's file, as keyctl
	dns *fakeDNS
}

func start(t *testing.T) *env {
	t.Helper()
	db := filepath.Join(t.TempDir(), "ev.db")
	dns := newFakeDNS(t)
	runFake := func(ctx context.Context, args []string, stdout, logs io.Writer) error {
		c, err := parseFlags(args, stdout)
		if err != nil {
			return err
		}
		c.resolver, c.logs = dns, logs
		return runConfig(ctx, c, stdout)
	}
	// The logs are searched for every key the test handles at cleanup.
	srv := e2e.StartLogged(t, runFake, "-db", db, "-dns-timeout", "200ms")
	st, err := sqlitestore.Open(context.Background(), db, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	prof, _ := profiles.Get(profiles.EmailVerify)
	kl, err := keyledger.New(st, prof.Options(nil, slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl.Close(context.Background()); st.Close() })
	return &env{srv: srv, kl: kl, dns: dns}
}

// user creates an account on plan with balance credits (the month's
// grant adjusted) and a live key.
func (e *env) user(t *testing.T, email, plan, balance string) (account.Account, string) {
	t.Helper()
	ctx := context.Background()
	a, err := e.kl.Signup(ctx, account.CreateParams{Name: "Ada Lovelace", Email: email, Plan: plan})
	if err != nil {
		t.Fatal(err)
	}
	// The month's grant first (the server ensures it again on the first
	// request: a replay), then the adjustment to the balance wanted.
	prof, _ := profiles.Get(profiles.EmailVerify)
	subs, err := subscription.New(e.kl, prof.MonthlyGrants, nil)
	if err == nil {
		err = subs.Ensure(ctx, a)
	}
	if err != nil {
		t.Fatal(err)
	}
	want, _ := credits.ParseAmount(balance)
	bal, _ := e.kl.Credits.Balance(ctx, a.ID)
	if d := want.Sub(bal); !d.IsZero() {
		if _, err := e.kl.Credits.Adjust(ctx, credits.CreditParams{AccountID: a.ID, Amount: d, IdempotencyKey: "test-adjust"}); err != nil {
			t.Fatal(err)
		}
	}
	raw, _, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "Production"})
	if err != nil {
		t.Fatal(err)
	}
	return a, raw.Reveal()
}

func (e *env) balance(t *testing.T, id string) string {
	t.Helper()
	b, err := e.kl.Credits.Balance(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// data checks the success envelope and returns its data.
func data(t *testing.T, r e2e.Response, status int) map[string]any {
	t.Helper()
	m := r.JSON(t)
	if r.Status != status || m["success"] != true {
		t.Fatalf("want %d success, got %d %s", status, r.Status, r.Body)
	}
	d, _ := m["data"].(map[string]any)
	return d
}

// failure checks the error envelope and returns its code.
func failure(t *testing.T, r e2e.Response, status int) string {
	t.Helper()
	m := r.JSON(t)
	e, ok := m["error"].(map[string]any)
	if r.Status != status || m["success"] != false || !ok || e["message"] == "" {
		t.Fatalf("want %d error envelope, got %d %s", status, r.Status, r.Body)
	}
	return e["code"].(string)
}

func TestAccountAndKeys(t *testing.T) {
	e := start(t)
	a, key := e.user(t, "ada@example.com", "professional", "24500")
	d := data(t, e.srv.Do(t, "GET", "/v1/account", key, nil), 200)
	u := d["user"].(map[string]any)
	if u["user_id"] != a.ID || !strings.HasPrefix(a.ID, "usr_") || u["email"] != "ada@example.com" || u["name"] != "Ada Lovelace" ||
		u["plan"] != "professional" || u["status"] != "active" || u["created_at"] == nil {
		t.Fatalf("user %v", u)
	}
	c := d["credits"].(map[string]any)
	if c["balance"] != 24500.0 || c["used_this_month"] != 0.0 || c["monthly_limit"] != 25000.0 {
		t.Fatalf("credits %v", c)
	}
	for _, f := range []string{"verifications_today", "verifications_this_month", "cache_hit_rate"} {
		if _, ok := d["usage"].(map[string]any)[f]; !ok {
			t.Fatalf("usage lacks %s: %v", f, d["usage"])
		}
	}

	// Create live and test keys.
	d = data(t, e.srv.Do(t, "POST", "/v1/api-keys", key, map[string]string{"name": "Mobile App"}), 201)
	if !strings.HasPrefix(d["key"].(string), "kw_live_") || d["prefix"] != d["key"].(string)[:12] || !strings.HasPrefix(d["key_id"].(string), "key_") || d["name"] != "Mobile App" || d["created_at"] == nil {
		t.Fatalf("create: %v", d)
	}
	mobile, mobileID := d["key"].(string), d["key_id"].(string)
	d = data(t, e.srv.Do(t, "POST", "/v1/api-keys", key, map[string]string{"name": "Dev", "environment": "test"}), 201)
	if !strings.HasPrefix(d["key"].(string), "kw_test_") {
		t.Fatalf("test key: %v", d)
	}
	for _, c := range []struct {
		name string
		body any
		want int
	}{
		{"no name", map[string]string{"name": " "}, 400},
		{"bad env", map[string]string{"name": "x", "environment": "prod"}, 400},
		{"unknown field", `{"name":"x","scopes":["a"]}`, 400},
		{"wrong type", `{"name":true}`, 400},
		{"malformed", `{`, 400},
		{"too large", `{"name":"` + strings.Repeat("n", 1<<20) + `"}`, 413},
	} {
		r := e.srv.Do(t, "POST", "/v1/api-keys", key, c.body)
		if code := failure(t, r, c.want); code == "" {
			t.Errorf("%s: no code", c.name)
		}
	}

	// List: three keys, masked.
	r := e.srv.Do(t, "GET", "/v1/api-keys", key, nil)
	keys := data(t, r, 200)["keys"].([]any)
	if len(keys) != 3 || strings.Contains(string(r.Body), mobile) {
		t.Fatalf("list: %s", r.Body)
	}
	k0 := keys[0].(map[string]any)
	for _, f := range []string{"key_id", "name", "prefix", "created_at", "last_used_at", "status"} {
		if _, ok := k0[f]; !ok {
			t.Fatalf("key item lacks %s: %v", f, k0)
		}
	}

	// Tenant isolation and revocation.
	_, other := e.user(t, "bob@example.com", "free", "100")
	if code := failure(t, e.srv.Do(t, "DELETE", "/v1/api-keys/"+mobileID, other, nil), 404); code != "not_found" {
		t.Fatalf("cross-account delete: %s", code)
	}
	d = data(t, e.srv.Do(t, "DELETE", "/v1/api-keys/"+mobileID, key, nil), 200)
	if d["message"] != "API key revoked successfully" {
		t.Fatalf("delete: %v", d)
	}
	if code := failure(t, e.srv.Do(t, "GET", "/v1/account", mobile, nil), 401); code != "invalid_api_key" {
		t.Fatalf("revoked key: %s", code)
	}
	failure(t, e.srv.Do(t, "POST", "/v1/verify", mobile, map[string]string{"email": "a@example.com"}), 401)
	failure(t, e.srv.Do(t, "DELETE", "/v1/api-keys/key_nope", key, nil), 404)
	failure(t, e.srv.Do(t, "GET", "/v1/account", "", nil), 401)
	failure(t, e.srv.Do(t, "GET", "/v1/account", "kw_live_forged", nil), 401)
	failure(t, e.srv.Do(t, "GET", "/v1/unknown", key, nil), 404)
	keys = data(t, e.srv.Do(t, "GET", "/v1/api-keys", key, nil), 200)["keys"].([]any)
	if keys[1].(map[string]any)["status"] != "revoked" {
		t.Fatalf("revoked key status: %v", keys[1])
	}
}

func TestVerify(t *testing.T) {
	e := start(t)
	a, key := e.user(t, "ada@example.com", "professional", "100")
	verify := func(email string) map[string]any {
		t.Helper()
		return data(t, e.srv.Do(t, "POST", "/v1/verify", key, map[string]string{"email": email}), 200)
	}
	for _, c := range []struct {
		email, result, reason string
		charged               float64
	}{
		{"Jane.Doe@Example.com", Deliverable, "mx_records_found", 1},
		{"jane.doe@example.com", Deliverable, "mx_records_found", 0.5}, // cached
		{"x@mailinator.com", Risky, "disposable_domain", 1},
		{"info@corp.com", Risky, "role_account", 1},
		{"a@nomx.com", Undeliverable, "no_mx_records", 1},
		{"a@nullmx.com", Undeliverable, "null_mx", 1},
		{"a@nowhere.com", Undeliverable, "domain_not_found", 1},
		{"not-an-address", Undeliverable, "invalid_syntax", 1},
		{"a..b@example.com", Undeliverable, "invalid_syntax", 1},
		{"a@slow.test", Unknown, "dns_timeout", 0},
		{"a@hang.test", Unknown, "dns_timeout", 0},
		{"a@servfail.com", Unknown, "dns_error", 0},
		{"a@servfail.com", Unknown, "dns_error", 0}, // unknown is never cached
	} {
		d := verify(c.email)
		if d["result"] != c.result || d["reason"] != c.reason || d["credits_charged"] != c.charged {
			t.Errorf("%s: %v", c.email, d)
		}
	}
	if n := e.dns.count("example.com"); n != 1 {
		t.Errorf("example.com looked up %d times, want 1 (cached)", n)
	}
	if n := e.dns.count("servfail.com"); n != 2 {
		t.Errorf("servfail.com looked up %d times, want 2 (failures not cached)", n)
	}
	// 1 + 0.5 + 7×1 = 8.5
	if b := e.balance(t, a.ID); b != "91.5" {
		t.Fatalf("balance %s, want 91.5", b)
	}
	for _, body := range []any{`{"email":1}`, `{}`, `{"email":"a@b.com","x":1}`, `[]`, ``} {
		failure(t, e.srv.Do(t, "POST", "/v1/verify", key, body), 400)
	}
	if b := e.balance(t, a.ID); b != "91.5" {
		t.Fatalf("bad requests charged: %s", b)
	}

	// Test keys: deterministic, free, no DNS.
	d := data(t, e.srv.Do(t, "POST", "/v1/api-keys", key, map[string]string{"name": "t", "environment": "test"}), 201)
	test := d["key"].(string)
	for email, want := range map[string]string{"someone@anything.org": Deliverable, "undeliverable@x.org": Undeliverable, "risky@x.org": Risky, "unknown@x.org": Unknown, "bad": Undeliverable} {
		for range 2 {
			d := data(t, e.srv.Do(t, "POST", "/v1/verify", test, map[string]string{"email": email}), 200)
			if d["result"] != want || d["credits_charged"] != 0.0 {
				t.Errorf("test key %s: %v", email, d)
			}
		}
	}
	if e.dns.count("anything.org") != 0 || e.balance(t, a.ID) != "91.5" {
		t.Fatal("test key used DNS or credits")
	}
}

// TestFractionalBalance: 3 cached verifications from 2.0 credits leave
// 0.5; then concurrent cached calls at the edge never overspend.
func TestFractionalBalance(t *testing.T) {
	e := start(t)
	a, key := e.user(t, "ada@example.com", "professional", "3")
	v := func() e2e.Response {
		return e.srv.Do(t, "POST", "/v1/verify", key, map[string]string{"email": "a@example.com"})
	}
	data(t, v(), 200)
	if b := e.balance(t, a.ID); b != "2" {
		t.Fatalf("balance %s, want 2", b)
	}
	for range 3 {
		if d := data(t, v(), 200); d["cached"] != true || d["credits_charged"] != 0.5 {
			t.Fatalf("cached: %v", d)
		}
	}
	if b := e.balance(t, a.ID); b != "0.5" {
		t.Fatalf("balance %s, want 0.5", b)
	}
	// 0.5 left: of 8 concurrent cached calls exactly one succeeds.
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 8 {
		wg.Go(func() {
			r := v()
			mu.Lock()
			codes[r.Status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[200] != 1 || codes[402] != 7 {
		t.Fatalf("codes %v, want 1×200 7×402", codes)
	}
	if code := failure(t, v(), 402); code != "insufficient_credits" {
		t.Fatalf("code %s", code)
	}
	if b := e.balance(t, a.ID); b != "0" {
		t.Fatalf("balance %s, want 0", b)
	}
	acct := data(t, e.srv.Do(t, "GET", "/v1/account", key, nil), 200)
	if c := acct["credits"].(map[string]any); c["balance"] != 0.0 || c["used_this_month"] != 3.0 {
		t.Fatalf("account credits %v", c)
	}
}

func batch(t *testing.T, e *env, key string, emails []string) string {
	t.Helper()
	d := data(t, e.srv.Do(t, "POST", "/v1/verify/batch", key, map[string]any{"emails": emails}), 202)
	if d["status"] != JobProcessing || d["total"] != float64(len(emails)) || !strings.HasPrefix(d["job_id"].(string), "job_") {
		t.Fatalf("submit: %v", d)
	}
	return d["job_id"].(string)
}

func waitJob(t *testing.T, e *env, key, id string) map[string]any {
	t.Helper()
	d := data(t, e.srv.Do(t, "GET", "/v1/verify/batch/"+id+"?wait=20s", key, nil), 200)
	if d["status"] != JobCompleted {
		t.Fatalf("job not completed: %v", d)
	}
	return d
}

func TestBatch(t *testing.T) {
	e := start(t)
	a, key := e.user(t, "ada@example.com", "professional", "10")
	id := batch(t, e, key, []string{"a@example.com", "b@nowhere.com", "c@slow.test", "bad"})
	d := waitJob(t, e, key, id)
	res := d["results"].([]any)
	if d["total"] != 4.0 || d["processed"] != 4.0 || len(res) != 4 || d["credits_charged"] != 3.0 ||
		res[0].(map[string]any)["result"] != Deliverable || res[2].(map[string]any)["result"] != Unknown {
		t.Fatalf("job %v", d)
	}
	if b := e.balance(t, a.ID); b != "7" {
		t.Fatalf("balance %s, want 7", b)
	}
	acct, _ := e.kl.Credits.Account(context.Background(), a.ID)
	if !acct.Held.IsZero() {
		t.Fatalf("held %s after the job", acct.Held)
	}
	// The batch populated the cache: a single verification is now 0.5.
	if d := data(t, e.srv.Do(t, "POST", "/v1/verify", key, map[string]string{"email": "a@example.com"}), 200); d["credits_charged"] != 0.5 {
		t.Fatalf("after batch: %v", d)
	}
	// More emails than credits: 402, nothing held or charged.
	many := make([]string, 8)
	for i := range many {
		many[i] = fmt.Sprintf("u%d@example.com", i)
	}
	if code := failure(t, e.srv.Do(t, "POST", "/v1/verify/batch", key, map[string]any{"emails": many}), 402); code != "insufficient_credits" {
		t.Fatalf("code %s", code)
	}
	acct, _ = e.kl.Credits.Account(context.Background(), a.ID)
	if acct.Balance.String() != "6.5" || !acct.Held.IsZero() {
		t.Fatalf("after refused batch: balance %s held %s", acct.Balance, acct.Held)
	}
	// Bad input, status checks are free, other accounts see 404.
	for _, body := range []any{`{"emails":[]}`, `{"emails":"a@b.com"}`, `{"emails":[1]}`, `{}`, map[string]any{"emails": make([]string, 1001)}} {
		failure(t, e.srv.Do(t, "POST", "/v1/verify/batch", key, body), 400)
	}
	failure(t, e.srv.Do(t, "GET", "/v1/verify/batch/"+id+"?wait=forever", key, nil), 400)
	for range 3 {
		data(t, e.srv.Do(t, "GET", "/v1/verify/batch/"+id, key, nil), 200)
	}
	if b := e.balance(t, a.ID); b != "6.5" {
		t.Fatalf("balance %s, want 6.5", b)
	}
	_, other := e.user(t, "bob@example.com", "free", "100")
	failure(t, e.srv.Do(t, "GET", "/v1/verify/batch/"+id, other, nil), 404)
	failure(t, e.srv.Do(t, "GET", "/v1/verify/batch/job_nope", key, nil), 404)

	// Test keys: free, deterministic.
	test := data(t, e.srv.Do(t, "POST", "/v1/api-keys", key, map[string]string{"name": "t", "environment": "test"}), 201)["key"].(string)
	tid := batch(t, e, test, []string{"x@y.org", "undeliverable@y.org"})
	d = waitJob(t, e, test, tid)
	if d["credits_charged"] != 0.0 || d["results"].([]any)[1].(map[string]any)["result"] != Undeliverable {
		t.Fatalf("test batch %v", d)
	}
	if b := e.balance(t, a.ID); b != "6.5" {
		t.Fatalf("test batch charged: %s", b)
	}
}

// TestConcurrentBatches: two batches of 3 against 5 credits: one is
// accepted, the other refused whole.
func TestConcurrentBatches(t *testing.T) {
	e := start(t)
	a, key := e.user(t, "ada@example.com", "professional", "5")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var jobs []string
	refused := 0
	for i := range 2 {
		wg.Go(func() {
			r := e.srv.Do(t, "POST", "/v1/verify/batch", key, map[string]any{"emails": []string{
				fmt.Sprintf("a%d@example.com", i), fmt.Sprintf("b%d@example.com", i), fmt.Sprintf("c%d@example.com", i)}})
			mu.Lock()
			defer mu.Unlock()
			switch r.Status {
			case 202:
				jobs = append(jobs, r.JSON(t)["data"].(map[string]any)["job_id"].(string))
			case 402:
				refused++
			default:
				t.Errorf("status %d %s", r.Status, r.Body)
			}
		})
	}
	wg.Wait()
	if len(jobs) != 1 || refused != 1 {
		t.Fatalf("accepted %d refused %d", len(jobs), refused)
	}
	waitJob(t, e, key, jobs[0])
	if b := e.balance(t, a.ID); b != "2" {
		t.Fatalf("balance %s, want 2", b)
	}
}

// TestMonthlyLimit: the free plan's 100-credit month; spending past it is
// monthly_limit_exceeded with nothing charged, though credits remain.
func TestMonthlyLimit(t *testing.T) {
	e := start(t)
	a, key := e.user(t, "ada@example.com", "free", "150")
	emails := make([]string, 100)
	for i := range emails {
		emails[i] = fmt.Sprintf("u%d@example.com", i)
	}
	waitJob(t, e, key, batch(t, e, key, emails))
	if code := failure(t, e.srv.Do(t, "POST", "/v1/verify", key, map[string]string{"email": "new@example.com"}), 402); code != "monthly_limit_exceeded" {
		t.Fatalf("code %s", code)
	}
	if code := failure(t, e.srv.Do(t, "POST", "/v1/verify/batch", key, map[string]any{"emails": []string{"z@example.com"}}), 402); code != "monthly_limit_exceeded" {
		t.Fatalf("batch code %s", code)
	}
	if b := e.balance(t, a.ID); b != "50" {
		t.Fatalf("balance %s, want 50", b)
	}
	c := data(t, e.srv.Do(t, "GET", "/v1/account", key, nil), 200)["credits"].(map[string]any)
	if c["used_this_month"] != 100.0 || c["monthly_limit"] != 100.0 || c["balance"] != 50.0 {
		t.Fatalf("credits %v", c)
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{{"-postgres", "postgres://x"}, {"-dns-timeout", "0s"}, {"extra"}, {"-nope"}} {
		if err := run(context.Background(), append([]string{"-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "x.db")}, args...), io.Discard); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
