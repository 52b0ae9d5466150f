package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
)

// A kw_test_ key can never create, list or revoke live keys; a key without
// the manage scope cannot manage keys at all; a key created over the API
// dies with its creator.
func TestKeyManagementScopes(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	a, live := e.user(t, "scopes@example.com", "professional", "100")
	testRaw, _, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "Sandbox", Type: "test"})
	if err != nil {
		t.Fatal(err)
	}
	test := testRaw.Reveal()
	if code := failure(t, e.srv.Do(t, "POST", "/v1/api-keys", test, map[string]string{"name": "escalate", "environment": "live"}), 403); code != "permission_denied" {
		t.Fatalf("test key creating a live key: %s", code)
	}
	keys := data(t, e.srv.Do(t, "GET", "/v1/api-keys", test, nil), 200)["keys"].([]any)
	if len(keys) != 1 || keys[0].(map[string]any)["name"] != "Sandbox" {
		t.Fatalf("a test key lists %v, want only test keys", keys)
	}
	liveKeys := data(t, e.srv.Do(t, "GET", "/v1/api-keys", live, nil), 200)["keys"].([]any)
	liveID := ""
	for _, k := range liveKeys {
		if k := k.(map[string]any); k["name"] == "Production" {
			liveID = k["key_id"].(string)
		}
	}
	failure(t, e.srv.Do(t, "DELETE", "/v1/api-keys/"+liveID, test, nil), 403)
	data(t, e.srv.Do(t, "GET", "/v1/account", live, nil), 200) // still working
	d := data(t, e.srv.Do(t, "POST", "/v1/api-keys", test, map[string]string{"name": "more sandbox", "environment": "test"}), 201)
	if d["environment"] != "test" {
		t.Fatalf("test child: %v", d)
	}

	// Without the manage scope: no key management at all.
	narrow, _, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "Verifier", Scopes: []string{"inference"}})
	if err != nil {
		t.Fatal(err)
	}
	failure(t, e.srv.Do(t, "POST", "/v1/api-keys", narrow.Reveal(), map[string]string{"name": "x"}), 403)
	failure(t, e.srv.Do(t, "GET", "/v1/api-keys", narrow.Reveal(), nil), 403)
	failure(t, e.srv.Do(t, "DELETE", "/v1/api-keys/"+liveID, narrow.Reveal(), nil), 403)

	// A child of the live key is revoked with it.
	child := data(t, e.srv.Do(t, "POST", "/v1/api-keys", live, map[string]string{"name": "child"}), 201)["key"].(string)
	data(t, e.srv.Do(t, "DELETE", "/v1/api-keys/"+liveID, live, nil), 200)
	failure(t, e.srv.Do(t, "GET", "/v1/account", child, nil), 401)
}

// Test traffic takes the plan's request limit like live traffic and is
// never charged; batch jobs are capped per account.
func TestTestTrafficIsRateLimitedAndJobsCapped(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	a, _ := e.user(t, "sandbox@example.com", "professional", "100")
	rpm := account.Limits{RequestsPerMinute: 3}
	if _, err := e.kl.UpdateAccount(ctx, a.ID, account.UpdateParams{Limits: &rpm}); err != nil {
		t.Fatal(err)
	}
	raw, _, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "Sandbox", Type: "test"})
	if err != nil {
		t.Fatal(err)
	}
	test := raw.Reveal()
	for i := range 3 {
		data(t, e.srv.Do(t, "POST", "/v1/verify", test, map[string]string{"email": fmt.Sprintf("a%d@example.com", i)}), 200)
	}
	r := e.srv.Do(t, "POST", "/v1/verify", test, map[string]string{"email": "more@example.com"})
	if code := failure(t, r, 429); code != "rate_limit_exceeded" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("4th test request in a minute: %s %v", code, r.Header)
	}
	failure(t, e.srv.Do(t, "POST", "/v1/verify/batch", test, map[string]any{"emails": []string{"b@example.com"}}), 429)
	if got := e.balance(t, a.ID); got != "100" {
		t.Fatalf("test traffic charged: balance %s", got)
	}

	// Jobs: an account keeps at most maxJobsPerAccount.
	b, _ := e.user(t, "jobs@example.com", "professional", "100")
	braw, _, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: b.ID, Name: "Sandbox", Type: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for range maxJobsPerAccount {
		batch(t, e, braw.Reveal(), []string{"c@example.com"})
	}
	r = e.srv.Do(t, "POST", "/v1/verify/batch", braw.Reveal(), map[string]any{"emails": []string{"c@example.com"}})
	if code := failure(t, r, 429); code != "too_many_jobs" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("job over the cap: %s", code)
	}
}
