package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/apikey"
)

// Forii API keys (forii_…) manage their own account's keys; SDK keys
// (forii_sk_…) stay inference-only; a key made by an API key dies with it.
func TestAPIKeysOnTheManagementAPI(t *testing.T) {
	g := newInproc(t, io.Discard)
	a, b := g.newTenant(t, "Owner"), g.newTenant(t, "Other")
	ctx := context.Background()
	apiRaw, apiKey, err := g.s.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.id, Name: "automation", Type: "api"})
	if err != nil {
		t.Fatal(err)
	}
	api := apiRaw.Reveal()
	base := "/v1/accounts/" + a.id
	list := g.must(t, 200, "GET", base+"/apiKeys", api, "")
	if n := len(list["data"].([]any)); n != 3 {
		t.Fatalf("API key lists %d keys, want 3", n)
	}
	g.must(t, 200, "GET", base+"/balance", api, "")
	// Another account's resources are 404 to it, as to a session.
	g.must(t, 404, "GET", "/v1/accounts/"+b.id+"/apiKeys", api, "")
	g.must(t, 404, "DELETE", "/v1/accounts/"+b.id+"/apiKeys/"+b.spareKeyID, api, "")
	// The SDK key is refused on every management route.
	for _, rt := range []struct{ method, path, body string }{
		{"GET", base + "/apiKeys", ""},
		{"POST", base + "/apiKeys", `{"name":"x"}`},
		{"DELETE", base + "/apiKeys/" + a.spareKeyID, ""},
		{"GET", base, ""},
	} {
		rec := g.serve(rt.method, rt.path, "", "Bearer "+a.key, []byte(rt.body))
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "inference only") {
			t.Fatalf("SDK key on %s %s: %d %s", rt.method, rt.path, rec.Code, rec.Body)
		}
	}
	// An API key without the manage scope is refused too.
	ro, _, err := g.s.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.id, Name: "read-only", Type: "api", Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	g.must(t, 403, "GET", base+"/apiKeys", ro.Reveal(), "")
	// A key made by the API key is its child: revoking the parent revokes it.
	child := g.must(t, 201, "POST", base+"/apiKeys", api, `{"name":"made by automation","type":"sdk"}`)
	childKey := child["key"].(string)
	g.must(t, 200, "GET", "/inference/v1/models", childKey, "")
	g.must(t, 200, "DELETE", base+"/apiKeys/"+apiKey.ID, a.token, "")
	rec := g.serve("GET", "/inference/v1/models", "", "Bearer "+childKey, nil)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("child of a revoked API key: %d %s", rec.Code, rec.Body)
	}
	// And the revoked API key no longer manages anything.
	g.must(t, 401, "GET", base+"/apiKeys", api, "")
	// A well-formed key this gateway never issued is a 401, not a 500.
	other := newInproc(t, io.Discard)
	ot := other.newTenant(t, "Elsewhere")
	foreign, _, err := other.s.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: ot.id, Name: "foreign", Type: "api"})
	if err != nil {
		t.Fatal(err)
	}
	rec = g.serve("GET", base+"/apiKeys", "", "Bearer "+foreign.Reveal(), nil)
	if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), "invalid_api_key") {
		t.Fatalf("unknown key on the management API: %d %s", rec.Code, rec.Body)
	}
}
