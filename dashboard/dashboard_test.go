package dashboard

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"html"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
)

func TestSignUpSignInSignOut(t *testing.T) {
	e := newEnv(t)
	anon := e.browser()
	r := anon.get("/dashboard/usage?group=key")
	if r.status != http.StatusSeeOther || r.location != "/dashboard/signin?next="+url.QueryEscape("/dashboard/usage?group=key") {
		t.Fatalf("unauthenticated page: %d %q", r.status, r.location)
	}
	anon.mustGet("/dashboard/signin", http.StatusOK)
	anon.mustGet("/dashboard/signup", http.StatusOK)

	b, a := e.signup("Asha")
	if a.TimeZone != "Asia/Kolkata" || a.Name != "Asha" {
		t.Fatalf("account %+v", a)
	}
	home := b.mustGet("/dashboard/", http.StatusOK)
	if !strings.Contains(home.body, "50.00") || !strings.Contains(home.body, a.Email) {
		t.Fatalf("overview lacks the signup grant or email:\n%s", home.body)
	}
	b.mustGet("/dashboard/keys?done=welcome", http.StatusOK)
	if !strings.Contains(b.last, "Welcome!") {
		t.Fatal("no welcome notice")
	}

	// Cookies: HttpOnly, SameSite=Lax, scoped to the mount, not Secure on
	// plain HTTP.
	fresh := e.browser()
	r = fresh.submit("/dashboard/signin", "/dashboard/signin", url.Values{"email": {a.Email}, "password": {testPassword}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("sign in: %d", r.status)
	}
	set := r.header.Values("Set-Cookie")
	if len(set) == 0 {
		t.Fatal("no session cookie set")
	}
	for _, c := range set {
		if !strings.Contains(c, "HttpOnly") || !strings.Contains(c, "SameSite=Lax") || !strings.Contains(c, "Path=/dashboard/") || strings.Contains(c, "Secure") {
			t.Errorf("cookie %q", c)
		}
	}

	// Wrong password: 401 with a message, no session.
	other := e.browser()
	r = other.submit("/dashboard/signin", "/dashboard/signin", url.Values{"email": {a.Email}, "password": {"wrong password"}})
	if r.status != http.StatusUnauthorized || !strings.Contains(r.body, "Invalid email or password.") {
		t.Fatalf("wrong password: %d\n%s", r.status, r.body)
	}
	// Sign in returns to the page asked for, never to another site.
	r = other.submit("/dashboard/signin?next=%2Fdashboard%2Fbalance", "/dashboard/signin",
		url.Values{"email": {a.Email}, "password": {testPassword}, "next": {"/dashboard/balance"}})
	if r.status != http.StatusSeeOther || r.location != "/dashboard/balance" {
		t.Fatalf("next: %d %q", r.status, r.location)
	}
	evil := e.browser()
	r = evil.submit("/dashboard/signin", "/dashboard/signin", url.Values{"email": {a.Email}, "password": {testPassword}, "next": {"//evil.example/dashboard/x"}})
	if r.location != "/dashboard/keys" {
		t.Fatalf("open redirect: %q", r.location)
	}
	// A signed-in browser visiting sign-in goes on.
	if r := evil.get("/dashboard/signin"); r.status != http.StatusSeeOther {
		t.Fatalf("signin while signed in: %d", r.status)
	}

	// Duplicate email: 400 with a message.
	dup := e.browser()
	r = dup.submit("/dashboard/signup", "/dashboard/signup", url.Values{"name": {"X"}, "email": {a.Email}, "password": {testPassword}})
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "already exists") {
		t.Fatalf("duplicate signup: %d\n%s", r.status, r.body)
	}
	r = dup.submit("/dashboard/signup", "/dashboard/signup", url.Values{"name": {"X"}, "email": {"x@example.com"}, "password": {"short"}})
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "at least 8") {
		t.Fatalf("short password: %d\n%s", r.status, r.body)
	}

	// Sign out ends the session on the server, not only the cookie.
	r = b.submit("/dashboard/keys", "/dashboard/signout", nil)
	if r.status != http.StatusSeeOther || r.location != "/dashboard/signin" {
		t.Fatalf("sign out: %d %q", r.status, r.location)
	}
	if r := b.get("/dashboard/keys"); r.status != http.StatusSeeOther {
		t.Fatalf("after sign out: %d", r.status)
	}
}

func TestSessionExpiry(t *testing.T) {
	e := newEnv(t)
	b, _ := e.signup("Ravi")
	b.mustGet("/dashboard/keys", http.StatusOK)
	e.clock.Advance(25 * time.Hour)
	if r := b.get("/dashboard/keys"); r.status != http.StatusSeeOther || !strings.HasPrefix(r.location, "/dashboard/signin") {
		t.Fatalf("expired session: %d %q", r.status, r.location)
	}
}

func TestCSRFRejected(t *testing.T) {
	e := newEnv(t)
	b, a := e.signup("Asha")
	b2, _ := e.signup("Bala")
	_, keyID := b.createKey("prod", nil)
	ctx := context.Background()

	b2.mustGet("/dashboard/keys", http.StatusOK)
	otherToken := b2.token() // a valid token of another browser and account
	b.mustGet("/dashboard/keys", http.StatusOK)
	own := b.token()

	cases := []struct {
		name, path string
		form       url.Values
	}{
		{"create without token", "/dashboard/keys", url.Values{"name": {"x"}, "type": {"sdk"}}},
		{"create with a forged token", "/dashboard/keys", url.Values{"name": {"x"}, "type": {"sdk"}, "csrf": {"AAAA"}}},
		{"create with another browser's token", "/dashboard/keys", url.Values{"name": {"x"}, "type": {"sdk"}, "csrf": {otherToken}}},
		{"revoke without token", "/dashboard/keys/" + keyID + "/revoke", nil},
		{"rotate with another browser's token", "/dashboard/keys/" + keyID + "/rotate", url.Values{"grace": {"0"}, "csrf": {otherToken}}},
		{"update without token", "/dashboard/keys/" + keyID, url.Values{"name": {"hacked"}}},
		{"buy without token", "/dashboard/credits", url.Values{"amount": {"500"}}},
		{"complete without token", "/dashboard/credits/complete", url.Values{"order_id": {"order_001"}}},
		{"auto-recharge without token", "/dashboard/auto-recharge", url.Values{"enabled": {"1"}, "threshold": {"10"}, "amount": {"100"}}},
		{"sign out without token", "/dashboard/signout", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := b.post(c.path, c.form)
			if r.status != http.StatusForbidden || !strings.Contains(r.body, "came from another site") {
				t.Fatalf("status %d\n%s", r.status, r.body)
			}
		})
	}
	// Nothing changed.
	p, _ := e.kl.Keys.List(ctx, a.ID, apikey.ListParams{})
	if len(p.Keys) != 1 || p.Keys[0].Name != "prod" || p.Keys[0].Status != apikey.StatusActive {
		t.Fatalf("keys changed: %+v", p.Keys)
	}
	if r := b.get("/dashboard/keys"); r.status != http.StatusOK {
		t.Fatalf("still signed in? %d", r.status)
	}

	// A token from before sign-in does not work for the account.
	anon := e.browser()
	anon.mustGet("/dashboard/signin", http.StatusOK)
	preLogin := anon.token()
	if r := anon.post("/dashboard/signin", url.Values{"email": {a.Email}, "password": {testPassword}, "csrf": {preLogin}}); r.status != http.StatusSeeOther {
		t.Fatalf("sign in: %d", r.status)
	}
	if r := anon.post("/dashboard/keys", url.Values{"name": {"x"}, "type": {"sdk"}, "csrf": {preLogin}}); r.status != http.StatusForbidden {
		t.Fatalf("pre-login token accepted: %d", r.status)
	}
	// Sign-in and sign-up need a token too (login CSRF).
	fresh := e.browser()
	if r := fresh.post("/dashboard/signin", url.Values{"email": {a.Email}, "password": {testPassword}}); r.status != http.StatusForbidden {
		t.Fatalf("sign in without token: %d", r.status)
	}
	if r := fresh.post("/dashboard/signup", url.Values{"name": {"E"}, "email": {"eve@example.com"}, "password": {testPassword}}); r.status != http.StatusForbidden {
		t.Fatalf("sign up without token: %d", r.status)
	}
	// The own token still works.
	if r := b.post("/dashboard/keys/"+keyID, url.Values{"name": {"renamed"}, "csrf": {own}}); r.status != http.StatusSeeOther {
		t.Fatalf("own token refused: %d\n%s", r.status, r.body)
	}
}

func TestKeysLifecycle(t *testing.T) {
	e := newEnv(t)
	b, a := e.signup("Asha")
	ctx := context.Background()

	r := b.mustGet("/dashboard/keys", http.StatusOK)
	for _, want := range []string{`name="name"`, `<option value="sdk" selected>`, `<option value="api"`, `value="forii/deepseek-v3"`, `name="expires" inputmode="numeric"`, `placeholder="YYYY-MM-DD"`, `>Overview</a>`, "No keys yet"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("create form lacks %s", want)
		}
	}

	raw, id := b.createKey("prod-api", url.Values{"models": {"forii/deepseek-v3"}, "expires": {"2026-12-31"}, "type": {"api"}})
	if !strings.HasPrefix(raw, "forii_") || strings.HasPrefix(raw, "forii_sk_") {
		t.Fatalf("type api: %q", raw)
	}
	k, err := e.kl.Keys.Get(ctx, a.ID, id)
	if err != nil {
		t.Fatal(err)
	}
	kol, _ := time.LoadLocation("Asia/Kolkata")
	if k.Name != "prod-api" || len(k.Models) != 1 || k.Models[0] != "forii/deepseek-v3" || !k.ExpiresAt.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, kol)) {
		t.Fatalf("key %+v", k)
	}

	// The list shows the masked key, never the secret; the new-key page
	// is not cached.
	list := b.mustGet("/dashboard/keys", http.StatusOK)
	if strings.Contains(list.body, raw) || !strings.Contains(list.body, k.Hint+"…") || !strings.Contains(list.body, "never") {
		t.Fatalf("list:\n%s", list.body)
	}
	if list.header.Get("Cache-Control") != "no-store" {
		t.Error("pages must not be cached")
	}

	// Last used shows after a request.
	e.use(raw, "forii/deepseek-v3", 10, 5, 200)
	if err := e.kl.Keys.FlushLastUsed(ctx); err != nil {
		t.Fatal(err)
	}
	if list := b.mustGet("/dashboard/keys", http.StatusOK); !strings.Contains(list.body, "2026-03-10 10:00 IST") {
		t.Fatalf("last used not shown:\n%s", list.body)
	}

	// Edit name and models (no model checked: all models).
	b.mustGet("/dashboard/keys/"+id, http.StatusOK)
	if !strings.Contains(b.last, `value="forii/deepseek-v3" checked`) {
		t.Fatal("edit form does not show the key's models")
	}
	r = b.submit("/dashboard/keys/"+id, "/dashboard/keys/"+id, url.Values{"name": {"renamed"}})
	if r.status != http.StatusSeeOther || r.location != "/dashboard/keys?done=updated" {
		t.Fatalf("update: %d %q\n%s", r.status, r.location, r.body)
	}
	k, _ = e.kl.Keys.Get(ctx, a.ID, id)
	if k.Name != "renamed" || len(k.Models) != 0 {
		t.Fatalf("after update %+v", k)
	}
	r = b.submit("/dashboard/keys/"+id, "/dashboard/keys/"+id, url.Values{"name": {"renamed"}, "models": {"forii/llama-3.1-8b", "nope"}})
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "Unknown model") {
		t.Fatalf("unknown model on update: %d", r.status)
	}

	// Rotate: a confirmation page, then the new secret once; the old one
	// works for the grace period.
	b.mustGet("/dashboard/keys/"+id+"/rotate", http.StatusOK)
	r = b.submit("/dashboard/keys/"+id+"/rotate", "/dashboard/keys/"+id+"/rotate", url.Values{"grace": {"1h"}})
	if r.status != http.StatusSeeOther || !strings.HasPrefix(r.location, "/dashboard/keys/new?slot=") {
		t.Fatalf("rotate: %d %q\n%s", r.status, r.location, r.body)
	}
	slotPage := r.location
	r = b.get(slotPage)
	if r.status != http.StatusOK || !strings.Contains(r.body, "It will not be shown again") || !strings.Contains(r.body, "previous secret keeps working until") {
		t.Fatalf("rotated key page: %d\n%s", r.status, r.body)
	}
	// A reload shows nothing again and rotates nothing.
	if again := b.get(slotPage); again.status != http.StatusSeeOther || again.location != "/dashboard/keys?done=shown" || strings.Contains(again.body, "readonly value=") {
		t.Fatalf("reloaded key page: %d %q", again.status, again.location)
	}
	newRaw := regexp.MustCompile(`readonly value="([^"]+)"`).FindStringSubmatch(r.body)[1]
	if newRaw == raw {
		t.Fatal("rotation kept the secret")
	}
	for _, s := range []string{raw, newRaw} {
		if _, err := e.kl.Keys.Verify(ctx, apikey.RawKey(s)); err != nil {
			t.Fatalf("secret during grace: %v", err)
		}
	}
	r = b.submit("/dashboard/keys/"+id+"/rotate", "/dashboard/keys/"+id+"/rotate", url.Values{"grace": {"1000h"}})
	if r.status != http.StatusBadRequest {
		t.Fatalf("unknown grace: %d", r.status)
	}

	// Revoke: confirmation page first; the GET changes nothing.
	conf := b.mustGet("/dashboard/keys/"+id+"/revoke", http.StatusOK)
	if !strings.Contains(conf.body, "cannot be undone") {
		t.Fatal("no confirmation text")
	}
	if _, err := e.kl.Keys.Verify(ctx, apikey.RawKey(newRaw)); err != nil {
		t.Fatalf("GET revoked the key: %v", err)
	}
	r = b.submit("/dashboard/keys/"+id+"/revoke", "/dashboard/keys/"+id+"/revoke", nil)
	if r.status != http.StatusSeeOther || r.location != "/dashboard/keys?done=revoked" {
		t.Fatalf("revoke: %d %q", r.status, r.location)
	}
	if _, err := e.kl.Keys.Verify(ctx, apikey.RawKey(newRaw)); !errors.Is(err, apikey.ErrRevoked) {
		t.Fatalf("after revoke: %v", err)
	}
	list = b.mustGet("/dashboard/keys?done=revoked", http.StatusOK)
	if !strings.Contains(list.body, `data-status="revoked"`) || strings.Contains(list.body, "/keys/"+id+"/revoke") || !strings.Contains(list.body, "Requests with it now fail") {
		t.Fatalf("revoked key still offers actions:\n%s", list.body)
	}
	// Rotated within its grace period, then revoked: neither secret works,
	// so the list no longer mentions the old one.
	if strings.Contains(list.body, "old secret until") {
		t.Fatalf("a revoked key still shows its old secret's grace:\n%s", list.body)
	}
	if _, err := e.kl.Keys.Verify(ctx, apikey.RawKey(raw)); err == nil {
		t.Fatal("the old secret of a revoked key still works")
	}
	// Rotating a revoked key is a conflict.
	r = b.submit("/dashboard/keys", "/dashboard/keys/"+id+"/rotate", url.Values{"grace": {"0"}})
	if r.status != http.StatusConflict {
		t.Fatalf("rotate revoked: %d", r.status)
	}
}

func TestKeyFormValidation(t *testing.T) {
	e := newEnv(t)
	b, a := e.signup("Asha")
	cases := []struct {
		name string
		form url.Values
		msg  string
	}{
		{"empty name", url.Values{"name": {"  "}, "type": {"sdk"}}, "1 to 120 characters"},
		{"long name", url.Values{"name": {strings.Repeat("n", 121)}, "type": {"sdk"}}, "1 to 120 characters"},
		{"unknown type", url.Values{"name": {"x"}, "type": {"root"}}, "key type"},
		{"unknown model", url.Values{"name": {"x"}, "type": {"sdk"}, "models": {"gpt-9"}}, "Unknown model"},
		{"past expiry", url.Values{"name": {"x"}, "type": {"sdk"}, "expires": {"2026-03-09"}}, "today or later"},
		{"bad expiry", url.Values{"name": {"x"}, "type": {"sdk"}, "expires": {"31/12/2026"}}, "a date like"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := b.submit("/dashboard/keys", "/dashboard/keys", c.form)
			if r.status != http.StatusBadRequest || !strings.Contains(html.UnescapeString(r.body), c.msg) {
				t.Fatalf("status %d, want 400 with %q\n%s", r.status, c.msg, r.body)
			}
			// The form keeps what was typed.
			if n := c.form.Get("name"); strings.TrimSpace(n) != "" && !strings.Contains(r.body, `value="`+n+`"`) {
				t.Error("the name typed is lost")
			}
		})
	}
	// Today is still allowed: the key expires at the end of the day.
	if _, id := b.createKey("today", url.Values{"expires": {"2026-03-10"}}); id == "" {
		t.Fatal("no key")
	}
	p, _ := e.kl.Keys.List(context.Background(), a.ID, apikey.ListParams{})
	if len(p.Keys) != 1 {
		t.Fatalf("%d keys, want only the valid one", len(p.Keys))
	}
}

func TestOtherTenantIDsAre404(t *testing.T) {
	e := newEnv(t)
	alice, _ := e.signup("Alice")
	bob, bobAcct := e.signup("Bob")
	bobRaw, bobKey := bob.createKey("bob-key", nil)
	// Bob buys credits, so he has an order and an invoice.
	r := bob.submit("/dashboard/credits", "/dashboard/credits", url.Values{"amount": {"100"}})
	if r.status != http.StatusOK {
		t.Fatalf("buy: %d", r.status)
	}
	r = bob.submit("/dashboard/credits", "/dashboard/credits/complete", url.Values{"order_id": {"order_001"}, "signature": {"sig-order_001"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("complete: %d\n%s", r.status, r.body)
	}

	for _, p := range []string{
		"/dashboard/keys/" + bobKey, "/dashboard/keys/" + bobKey + "/rotate", "/dashboard/keys/" + bobKey + "/revoke",
		"/dashboard/usage?key=" + bobKey, "/dashboard/usage.csv?key=" + bobKey, "/dashboard/requests?key=" + bobKey,
		"/dashboard/invoices/inv_order_001/pdf", "/dashboard/keys/key_does_not_exist",
	} {
		if r := alice.get(p); r.status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, r.status)
		}
	}
	for _, p := range []string{"/dashboard/keys/" + bobKey, "/dashboard/keys/" + bobKey + "/rotate", "/dashboard/keys/" + bobKey + "/revoke"} {
		if r := alice.submit("/dashboard/keys", p, url.Values{"name": {"mine"}, "grace": {"0"}}); r.status != http.StatusNotFound {
			t.Errorf("POST %s: %d, want 404", p, r.status)
		}
	}
	// Completing Bob's order from Alice's account credits nobody.
	if r := alice.submit("/dashboard/credits", "/dashboard/credits/complete", url.Values{"order_id": {"order_001"}, "signature": {"sig-order_001"}}); r.status != http.StatusNotFound {
		t.Errorf("complete another's order: %d", r.status)
	}
	k, err := e.kl.Keys.Get(context.Background(), bobAcct.ID, bobKey)
	if err != nil || k.Name != "bob-key" || k.Status != apikey.StatusActive {
		t.Fatalf("Bob's key changed: %+v %v", k, err)
	}
	if _, err := e.kl.Keys.Verify(context.Background(), apikey.RawKey(bobRaw)); err != nil {
		t.Fatal(err)
	}
	// Alice's pages never show Bob's data.
	for _, p := range []string{"/dashboard/keys", "/dashboard/usage", "/dashboard/requests", "/dashboard/balance", "/dashboard/invoices"} {
		if r := alice.mustGet(p, http.StatusOK); strings.Contains(r.body, "bob-key") || strings.Contains(r.body, "order_001") {
			t.Errorf("%s shows Bob's data", p)
		}
	}
}

func TestUsagePageChartAndCSV(t *testing.T) {
	e := newEnv(t)
	b, _ := e.signup("Asha")
	raw, keyID := b.createKey("prod", nil)
	raw2, _ := b.createKey("=cmd|' /C calc'!A0", nil) // a formula-looking name
	e.clock.Advance(-48 * time.Hour)                  // two days ago
	e.use(raw, "forii/llama-3.1-8b", 50, 50, 500)
	e.clock.Advance(48 * time.Hour)
	e.use(raw, "forii/deepseek-v3", 1000, 200, 200)
	e.use(raw, "forii/deepseek-v3", 1000, 200, 200)
	e.use(raw2, "forii/llama-3.1-8b", 400, 100, 200)

	r := b.mustGet("/dashboard/usage", http.StatusOK)
	for _, want := range []string{`id="usage-chart"`, `data-day="2026-03-10"`, "forii/deepseek-v3", "forii/llama-3.1-8b", `value="2026-02-09"`, `value="2026-03-10"`, "2,400", "0.093"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("usage page lacks %q", want)
		}
	}
	// Today's bar has height; a day without usage has none.
	bar := regexp.MustCompile(`data-day="2026-03-10" x="[0-9.]+" y="[0-9.]+" width="[0-9.]+" height="([0-9.]+)"`).FindStringSubmatch(r.body)
	if bar == nil || bar[1] == "0" {
		t.Fatalf("today's bar: %v", bar)
	}
	if !strings.Contains(r.body, `data-day="2026-03-09" x=`) || !regexp.MustCompile(`data-day="2026-03-09"[^>]*height="0"`).MatchString(r.body) {
		t.Error("a day without usage should be drawn with zero height")
	}
	if !strings.Contains(r.body, "<polyline") {
		t.Error("no token line")
	}

	// Group by key shows names; filter by key.
	r = b.mustGet("/dashboard/usage?group=key&from=2026-03-01&to=2026-03-10", http.StatusOK)
	if !strings.Contains(r.body, ">prod</a>") {
		t.Fatalf("group by key:\n%s", r.body)
	}
	r = b.mustGet("/dashboard/usage?group=date&key="+keyID, http.StatusOK)
	if !strings.Contains(r.body, "2026-03-08") || strings.Contains(r.body, "llama-3.1-8b</a>") {
		t.Fatalf("group by date for one key:\n%s", r.body)
	}

	// CSV: day × group, formula-looking names defused.
	r = b.mustGet("/dashboard/usage.csv?group=key&from=2026-03-01&to=2026-03-10", http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Fatalf("content type %q", ct)
	}
	if cd := r.header.Get("Content-Disposition"); cd != `attachment; filename="usage-2026-03-01-2026-03-10.csv"` {
		t.Fatalf("disposition %q", cd)
	}
	lines := strings.Split(strings.TrimSpace(r.body), "\n")
	if lines[0] != "date,key_id,key_name,requests,errors,prompt_tokens,completion_tokens,total_tokens,cost_inr,cached_prompt_tokens,cache_write_tokens,reasoning_tokens" || len(lines) != 4 {
		t.Fatalf("csv:\n%s", r.body)
	}
	if !strings.Contains(r.body, `'=cmd|' /C calc'!A0`) {
		t.Fatalf("formula not defused:\n%s", r.body)
	}
	r = b.mustGet("/dashboard/usage.csv", http.StatusOK)
	if !strings.Contains(r.body, "2026-03-10,forii/deepseek-v3,2,0,2000,400,2400,0.09,0,0,0") {
		t.Fatalf("csv by model:\n%s", r.body)
	}

	for _, q := range []string{"from=2026-13-01", "from=2026-03-10&to=2026-03-01", "group=endpoint", "from=2020-01-01&to=2026-01-01"} {
		if r := b.get("/dashboard/usage?" + q); r.status != http.StatusBadRequest {
			t.Errorf("usage?%s: %d, want 400", q, r.status)
		}
	}
}

func TestRequestsPagination(t *testing.T) {
	e := newEnv(t)
	b, _ := e.signup("Asha")
	raw, keyID := b.createKey("prod", nil)
	for i := range 55 {
		e.clock.Advance(time.Second)
		status := 200
		if i == 0 {
			status = 503
		}
		e.use(raw, "forii/llama-3.1-8b", 10, 10, status)
	}
	r := b.mustGet("/dashboard/requests", http.StatusOK)
	if n := strings.Count(r.body, "<tr"); n != 51 { // header + 50
		t.Fatalf("first page has %d rows", n-1)
	}
	next := regexp.MustCompile(`href="([^"]+)" rel="next"`).FindStringSubmatch(r.body)
	if next == nil {
		t.Fatal("no next link")
	}
	r = b.mustGet(html.UnescapeString(next[1]), http.StatusOK)
	if n := strings.Count(r.body, "<tr"); n != 6 {
		t.Fatalf("second page has %d rows", n-1)
	}
	if !strings.Contains(r.body, `class="failed"`) || !strings.Contains(r.body, "upstream_error: model overloaded") || !strings.Contains(r.body, ">503<") || !strings.Contains(r.body, ">120<") {
		t.Fatalf("the failed request is not shown:\n%s", r.body)
	}
	if strings.Contains(r.body, `rel="next"`) || !strings.Contains(r.body, ">Newest<") {
		t.Error("last page links")
	}
	b.mustGet("/dashboard/requests?key="+keyID+"&model=forii/llama-3.1-8b", http.StatusOK)
	if r := b.get("/dashboard/requests?cursor=garbage"); r.status != http.StatusBadRequest {
		t.Fatalf("bad cursor: %d", r.status)
	}
}

func TestBalanceCreditsAndInvoices(t *testing.T) {
	e := newEnv(t)
	b, a := e.signup("Asha")
	r := b.mustGet("/dashboard/balance", http.StatusOK)
	if !strings.Contains(r.body, "50.00") || !strings.Contains(r.body, "Free plan signup grant") {
		t.Fatalf("balance:\n%s", r.body)
	}
	b.mustGet("/dashboard/invoices", http.StatusOK)
	if !strings.Contains(b.last, "No invoices yet") {
		t.Fatal("invoices page")
	}

	for _, bad := range []string{"", "abc", "-5", "0.5", "1e3", "12.345", "600000"} {
		r := b.submit("/dashboard/credits", "/dashboard/credits", url.Values{"amount": {bad}})
		if r.status != http.StatusBadRequest || !strings.Contains(r.body, `class="error"`) {
			t.Errorf("amount %q: %d", bad, r.status)
		}
	}
	r = b.submit("/dashboard/credits", "/dashboard/credits", url.Values{"amount": {"₹1,500.50"}})
	if r.status != http.StatusOK || !strings.Contains(r.body, `<input type="hidden" name="order_id" value="order_001">`) || !strings.Contains(r.body, "1500.50") || !strings.Contains(r.body, "Test mode.") {
		t.Fatalf("checkout:\n%s", r.body)
	}
	// The checkout form posts back with its own CSRF token.
	tok := csrfRe.FindStringSubmatch(r.body)[1]
	form := url.Values{"order_id": {"order_001"}, "signature": {"sig-order_001"}, "csrf": {tok}}
	r = b.post("/dashboard/credits/complete", form)
	if r.status != http.StatusSeeOther || r.location != "/dashboard/balance?done=purchased" {
		t.Fatalf("complete: %d %q\n%s", r.status, r.location, r.body)
	}
	b.post("/dashboard/credits/complete", form) // a replay credits once
	bal, _ := e.kl.Credits.Balance(context.Background(), a.ID)
	if bal.String() != "1550.5" {
		t.Fatalf("balance %s", bal)
	}
	r = b.mustGet("/dashboard/balance?done=purchased", http.StatusOK)
	if !strings.Contains(r.body, "1550.50") || !strings.Contains(r.body, "Payment received") || !strings.Contains(r.body, "Purchase order_001") {
		t.Fatalf("balance after purchase:\n%s", r.body)
	}
	// A bad signature is the provider's user error.
	b.submit("/dashboard/credits", "/dashboard/credits", url.Values{"amount": {"10"}})
	if r := b.submit("/dashboard/credits", "/dashboard/credits/complete", url.Values{"order_id": {"order_002"}, "signature": {"forged"}}); r.status != http.StatusBadRequest || !strings.Contains(r.body, "signature does not match") {
		t.Fatalf("forged: %d", r.status)
	}

	r = b.mustGet("/dashboard/invoices", http.StatusOK)
	if !strings.Contains(r.body, "INV/order_001") || !strings.Contains(r.body, `href="/dashboard/invoices/inv_order_001/pdf"`) {
		t.Fatalf("invoices:\n%s", r.body)
	}
	r = b.mustGet("/dashboard/invoices/inv_order_001/pdf", http.StatusOK)
	if r.header.Get("Content-Type") != "application/pdf" || !strings.HasPrefix(r.body, "%PDF") || !strings.Contains(r.header.Get("Content-Disposition"), "INV-inv_order_001.pdf") {
		t.Fatalf("pdf: %v %q", r.header, r.body)
	}
}

func TestAutoRecharge(t *testing.T) {
	e := newEnv(t)
	b, a := e.signup("Asha")
	ctx := context.Background()
	r := b.submit("/dashboard/auto-recharge", "/dashboard/auto-recharge", url.Values{"enabled": {"1"}, "threshold": {"100"}, "amount": {"500"}})
	if r.status != http.StatusSeeOther || r.location != "/dashboard/auto-recharge?done=auto-recharge" {
		t.Fatalf("save: %d %q\n%s", r.status, r.location, r.body)
	}
	acct, _ := e.kl.Credits.Account(ctx, a.ID)
	if ar := acct.Policy.AutoRecharge; !ar.Enabled || ar.Threshold.String() != "100" || ar.Amount.String() != "500" {
		t.Fatalf("policy %+v", ar)
	}
	r = b.mustGet("/dashboard/auto-recharge", http.StatusOK)
	if !strings.Contains(r.body, `value="1" checked`) || !strings.Contains(r.body, `value="100"`) {
		t.Fatalf("page:\n%s", r.body)
	}
	for _, f := range []url.Values{
		{"enabled": {"1"}, "threshold": {"100"}, "amount": {"0.5"}},
		{"enabled": {"1"}, "threshold": {"x"}, "amount": {"500"}},
		{"enabled": {"1"}, "threshold": {"100"}, "amount": {"9999999"}},
	} {
		if r := b.submit("/dashboard/auto-recharge", "/dashboard/auto-recharge", f); r.status != http.StatusBadRequest {
			t.Errorf("%v: %d", f, r.status)
		}
	}
	// Turning it off with empty fields.
	if r := b.submit("/dashboard/auto-recharge", "/dashboard/auto-recharge", url.Values{"threshold": {""}, "amount": {""}}); r.status != http.StatusSeeOther {
		t.Fatalf("disable: %d\n%s", r.status, r.body)
	}
	acct, _ = e.kl.Credits.Account(ctx, a.ID)
	if acct.Policy.AutoRecharge.Enabled {
		t.Fatal("still enabled")
	}
}

// noInlineScript finds what a strict CSP would block: inline scripts,
// event handler attributes and style attributes.
var inlineRe = regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>[^<]|<script>|\son[a-z]+=|\sstyle=|javascript:`)

func TestSecurityHeadersAndNoInlineScript(t *testing.T) {
	e := newEnv(t)
	b, _ := e.signup("Asha")
	raw, id := b.createKey("prod", nil)
	e.use(raw, "forii/deepseek-v3", 10, 10, 200)
	pages := []string{"/dashboard/", "/dashboard/keys", "/dashboard/keys/" + id, "/dashboard/keys/" + id + "/rotate", "/dashboard/keys/" + id + "/revoke",
		"/dashboard/usage", "/dashboard/requests", "/dashboard/balance", "/dashboard/credits", "/dashboard/auto-recharge", "/dashboard/invoices", "/dashboard/nope"}
	for _, p := range pages {
		r := b.get(p)
		csp := r.header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", p, csp)
		}
		if r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", p)
		}
		if m := inlineRe.FindString(r.body); m != "" {
			t.Errorf("%s: inline script or style %q", p, m)
		}
	}
	anon := e.browser()
	for _, p := range []string{"/dashboard/signin", "/dashboard/signup"} {
		if m := inlineRe.FindString(anon.mustGet(p, http.StatusOK).body); m != "" {
			t.Errorf("%s: %q", p, m)
		}
	}
	// The assets are served with the right types.
	for p, ct := range map[string]string{"/dashboard/static/app.js": "javascript", "/dashboard/static/app.css": "text/css"} {
		r := anon.mustGet(p, http.StatusOK)
		if !strings.Contains(r.header.Get("Content-Type"), ct) {
			t.Errorf("%s: %q", p, r.header.Get("Content-Type"))
		}
	}
}

func TestSecureCookieOverTLS(t *testing.T) {
	e := newEnv(t)
	req := httptest.NewRequest(http.MethodGet, "https://example.com/dashboard/signin", nil)
	req.TLS = &tls.ConnectionState{}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	c := w.Header().Get("Set-Cookie")
	if !strings.Contains(c, "Secure") || !strings.Contains(c, "HttpOnly") || !strings.Contains(c, "SameSite=Lax") {
		t.Fatalf("cookie over TLS: %q", c)
	}
	e2 := newEnv(t, func(o *Options) { o.SecureCookies = true })
	w = httptest.NewRecorder()
	e2.h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/dashboard/signin", nil))
	if !strings.Contains(w.Header().Get("Set-Cookie"), "Secure") {
		t.Fatal("SecureCookies ignored")
	}
}

func TestOutputIsEscaped(t *testing.T) {
	e := newEnv(t)
	b, _ := e.signup("<b>Eve</b>")
	const evil = `<script>alert("x")</script>`
	_, id := b.createKey(evil, nil)
	for _, p := range []string{"/dashboard/keys", "/dashboard/keys/" + id, "/dashboard/keys/" + id + "/revoke", "/dashboard/usage"} {
		r := b.mustGet(p, http.StatusOK)
		if strings.Contains(r.body, evil) || !strings.Contains(r.body, "&lt;script&gt;") {
			t.Errorf("%s: name not escaped", p)
		}
	}
	// A model filter is echoed escaped.
	r := b.mustGet(`/dashboard/requests?model=`+url.QueryEscape(`"><script>x</script>`), http.StatusOK)
	if strings.Contains(r.body, `"><script>x</script>`) {
		t.Fatal("model filter not escaped")
	}
}

func TestAuthenticateHook(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.Authenticate = func(r *http.Request) (string, error) {
			if id := r.Header.Get("X-Test-Account"); id != "" {
				return id, nil
			}
			return "", ErrUnauthenticated
		}
		o.SignInURL = "https://host.example/login"
		o.SignOutURL = "https://host.example/logout"
	})
	ctx := context.Background()
	a, err := e.kl.Signup(ctx, account.CreateParams{Name: "Host User", Email: "host@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	get := func(path, acct string) resp {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
		if acct != "" {
			req.Header.Set("X-Test-Account", acct)
		}
		r := b.do(req)
		b.last = r.body
		return r
	}
	if r := get("/dashboard/keys", ""); r.status != http.StatusSeeOther || r.location != "https://host.example/login" {
		t.Fatalf("unauthenticated: %d %q", r.status, r.location)
	}
	if r := get("/dashboard/signin", a.ID); r.status != http.StatusNotFound {
		t.Fatalf("own sign-in page served: %d", r.status)
	}
	if r := get("/dashboard/keys", "acct_unknown"); r.status != http.StatusSeeOther {
		t.Fatalf("unknown account: %d", r.status)
	}
	r := get("/dashboard/keys", a.ID)
	if r.status != http.StatusOK || !strings.Contains(r.body, `href="https://host.example/logout"`) || strings.Contains(r.body, "/signout") {
		t.Fatalf("keys page: %d\n%s", r.status, r.body)
	}
	form := url.Values{"name": {"hosted"}, "type": {"sdk"}, "csrf": {b.token()}}
	post := func(acct string) resp {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/dashboard/keys", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Test-Account", acct)
		return b.do(req)
	}
	other, _ := e.kl.Signup(ctx, account.CreateParams{Name: "Other", Email: "other@example.com"})
	if r := post(other.ID); r.status != http.StatusForbidden {
		t.Fatalf("token of another account: %d", r.status)
	}
	if r := post(a.ID); r.status != http.StatusSeeOther {
		t.Fatalf("create: %d\n%s", r.status, r.body)
	}
	// Without SignInURL, unauthenticated is 401.
	e2 := newEnv(t, func(o *Options) {
		o.Authenticate = func(*http.Request) (string, error) { return "", ErrUnauthenticated }
	})
	if r := e2.browser().get("/dashboard/keys"); r.status != http.StatusUnauthorized {
		t.Fatalf("no SignInURL: %d", r.status)
	}
}

func TestMountingAndRouting(t *testing.T) {
	e := newEnv(t)
	b, _ := e.signup("Asha")
	// Behind http.StripPrefix the links keep the prefix.
	mux := http.NewServeMux()
	mux.Handle("/dashboard/", http.StripPrefix("/dashboard", e.h))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	u, _ := url.Parse(e.srv.URL)
	cookies := b.c.Jar.Cookies(&url.URL{Scheme: "http", Host: u.Host, Path: "/dashboard/"})
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/dashboard/keys", nil)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	r := b.do(req)
	if r.status != http.StatusOK || !strings.Contains(r.body, `href="/dashboard/usage"`) || !strings.Contains(r.body, `action="/dashboard/keys"`) {
		t.Fatalf("behind StripPrefix: %d\n%s", r.status, r.body)
	}

	if r := b.get("/dashboard/nope"); r.status != http.StatusNotFound || !strings.Contains(r.body, "Not found.") {
		t.Fatalf("unknown path: %d", r.status)
	}
	req, _ = http.NewRequest(http.MethodDelete, e.srv.URL+"/dashboard/keys", nil)
	if r := b.do(req); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE: %d", r.status)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/dashboard", nil))
	if w.Code != http.StatusMovedPermanently || w.Header().Get("Location") != "/dashboard/" {
		t.Fatalf("bare prefix: %d %q", w.Code, w.Header().Get("Location"))
	}
	// A body above the form limit is refused.
	big := url.Values{"name": {strings.Repeat("x", maxFormBytes)}}
	if r := b.post("/dashboard/keys", big); r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("large form: %d", r.status)
	}
}

func TestSections(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Sections = []Section{SectionKeys, SectionUsage} })
	b, _ := e.signup("Asha")
	r := b.mustGet("/dashboard/keys", http.StatusOK)
	if strings.Contains(r.body, `href="/dashboard/balance"`) || !strings.Contains(r.body, `href="/dashboard/usage"`) {
		t.Fatal("navigation does not follow Sections")
	}
	for _, p := range []string{"/dashboard/balance", "/dashboard/requests", "/dashboard/credits", "/dashboard/invoices"} {
		if r := b.get(p); r.status != http.StatusNotFound {
			t.Errorf("%s: %d", p, r.status)
		}
	}
	// Without hooks, their sections are hidden by default.
	e2 := newEnv(t, func(o *Options) { o.Payments, o.Invoices = nil, nil })
	b2, _ := e2.signup("Ravi")
	if r := b2.mustGet("/dashboard/keys", http.StatusOK); strings.Contains(r.body, "Buy credits") || strings.Contains(r.body, ">Invoices<") {
		t.Fatal("hook sections shown without hooks")
	}
	// DisableSignup removes the page and its link.
	e3 := newEnv(t, func(o *Options) { o.DisableSignup = true })
	anon := e3.browser()
	if r := anon.mustGet("/dashboard/signin", http.StatusOK); strings.Contains(r.body, "/signup") {
		t.Fatal("sign-up link shown")
	}
	if r := anon.get("/dashboard/signup"); r.status != http.StatusNotFound {
		t.Fatalf("sign-up page: %d", r.status)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	e := newEnv(t)
	for _, o := range []*Options{
		{BasePath: "dashboard"}, {BasePath: "/dashboard/"}, {BasePath: "/a//b"}, {BasePath: `/a"b`},
		{Sections: []Section{"nope"}}, {Sections: []Section{SectionCredits}}, {Sections: []Section{SectionInvoices}},
		{CSRFSecret: []byte("short")}, {TimeZone: "Mars/Olympus"}, {KeyTypes: []string{"root"}},
	} {
		if _, err := New(e.kl, o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%+v: %v", o, err)
		}
	}
	if _, err := New(nil, nil); !errors.Is(err, ErrInvalidOptions) {
		t.Error("nil KeyLedger")
	}
	if _, err := New(e.kl, nil); err != nil {
		t.Fatal(err)
	}
}

func TestUnexpectedErrorsAreLoggedNotShown(t *testing.T) {
	var logs bytes.Buffer
	e := newEnv(t, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	b, _ := e.signup("Asha")
	e.pay.failStart = errBoom
	r := b.submit("/dashboard/credits", "/dashboard/credits", url.Values{"amount": {"10"}})
	if r.status != http.StatusInternalServerError || strings.Contains(r.body, "boom") {
		t.Fatalf("internal error: %d\n%s", r.status, r.body)
	}
	if !strings.Contains(logs.String(), "error=boom") || strings.Contains(logs.String(), testPassword) || strings.Contains(logs.String(), "csrf") {
		t.Fatalf("logs: %s", logs.String())
	}
}

func TestFormattingHelpers(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1234: "-1,234"} {
		if got := formatInt(in); got != want {
			t.Errorf("formatInt(%d) = %q", in, got)
		}
	}
	for in, want := range map[string]string{"3": "3.00", "0.5": "0.50", "0.0000125": "0.0000125", "12.34": "12.34"} {
		a, _ := credits.ParseAmount(in)
		if got := exactAmount(a); got != want {
			t.Errorf("exactAmount(%s) = %q", in, got)
		}
	}
}

// hostedPayments sends the browser to an external hosted checkout.
type hostedPayments struct {
	*fakePayments
	action string
}

func (p hostedPayments) StartPurchase(ctx context.Context, acct string, a credits.Amount) (Checkout, error) {
	co, err := p.fakePayments.StartPurchase(ctx, acct, a)
	co.Action = p.action
	return co, err
}

func TestHostedCheckout(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.Payments = hostedPayments{fakePayments: o.Payments.(*fakePayments), action: "https://pay.example/checkout?x=1"}
	})
	b, _ := e.signup("Asha")
	r := b.submit("/dashboard/credits", "/dashboard/credits", url.Values{"amount": {"100"}})
	if r.status != http.StatusOK || !strings.Contains(r.body, `action="https://pay.example/checkout?x=1"`) {
		t.Fatalf("checkout: %d\n%s", r.status, r.body)
	}
	form := regexp.MustCompile(`(?s)<form method="post" action="https://pay.example[^>]*>(.*?)</form>`).FindStringSubmatch(r.body)
	if form == nil || strings.Contains(form[1], `name="csrf"`) {
		t.Fatal("the CSRF token must not leave for another site")
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' https://pay.example;") {
		t.Fatalf("CSP %q", csp)
	}
	e2 := newEnv(t, func(o *Options) {
		o.Payments = hostedPayments{fakePayments: o.Payments.(*fakePayments), action: "javascript:alert(1)"}
		o.Logger = slog.New(slog.DiscardHandler) // the refused action is logged as an internal error
	})
	b2, _ := e2.signup("Ravi")
	if r := b2.submit("/dashboard/credits", "/dashboard/credits", url.Values{"amount": {"100"}}); r.status != http.StatusInternalServerError {
		t.Fatalf("unsafe action: %d", r.status)
	}
}
