package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/store/memstore"
)

// Key management over the API needs the manage scope, and a key created
// over the API dies with its creator: a leaked key cannot outlive its
// revocation through a child it made.
func TestCredentialRoutesNeedManageScope(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	prof, err := profiles.Get(profiles.ToolAPI)
	if err != nil {
		t.Fatal(err)
	}
	kl, err := keyledger.New(memstore.New(), prof.Options(nil, quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl.Close(ctx) })
	a, err := kl.Signup(ctx, account.CreateParams{Name: "Ada", Email: "ada@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	owner, _, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "owner"}) // keyctl's default: every scope
	if err != nil {
		t.Fatal(err)
	}
	tool, toolKey, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "tools only", Scopes: []string{"inference"}})
	if err != nil {
		t.Fatal(err)
	}
	h := (&api{kl: kl, log: quiet, now: time.Now, upstream: simulated{}, creditsPerUSD: 100}).routes()
	call := func(raw apikey.RawKey, method, path, body string) (int, map[string]any) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+raw.Reveal())
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var m map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &m)
		return w.Code, m
	}
	if st, m := call(tool, "POST", "/v1/me/api-credentials", `{"name":"escalate"}`); st != 403 {
		t.Fatalf("create with a key without manage: %d %v", st, m)
	}
	if st, m := call(tool, "POST", "/v1/me/api-credentials/"+toolKey.ID+"/revoke", ``); st != 403 {
		t.Fatalf("revoke with a key without manage: %d %v", st, m)
	}
	// The tool key still works for tools.
	if st, m := call(tool, "POST", "/v1/tools/inspect_domain", `{"domain":"example.com"}`); st != 200 {
		t.Fatalf("tool call: %d %v", st, m)
	}
	st, m := call(owner, "POST", "/v1/me/api-credentials", `{"name":"child"}`)
	if st != 201 {
		t.Fatalf("create with the owner key: %d %v", st, m)
	}
	child := apikey.RawKey(m["key"].(string))
	st, m = call(child, "POST", "/v1/me/api-credentials", `{"name":"grandchild"}`)
	if st != 201 {
		t.Fatalf("create with the child key: %d %v", st, m)
	}
	grandchild := apikey.RawKey(m["key"].(string))
	// Revoking the owner key (as after a leak) revokes what it made.
	ownerID := ""
	_, list := call(owner, "GET", "/v1/me/api-credentials", ``)
	for _, c := range list["data"].([]any) {
		if c := c.(map[string]any); c["name"] == "owner" {
			ownerID = c["id"].(string)
		}
	}
	if st, m := call(child, "POST", "/v1/me/api-credentials/"+ownerID+"/revoke", ``); st != 200 {
		t.Fatalf("revoke owner: %d %v", st, m)
	}
	for _, raw := range []apikey.RawKey{owner, child, grandchild} {
		if st, _ := call(raw, "GET", "/v1/me/credits", ``); st != 401 {
			t.Fatalf("a descendant of the revoked key still works: %d", st)
		}
	}
}
