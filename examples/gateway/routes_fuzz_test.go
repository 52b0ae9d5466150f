package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
	"github.com/keyledger/keyledger/examples/internal/e2e"
)

// routeSeeds are well-formed bodies and queries per route ("METHOD
// pattern"), the starting points of FuzzRoutes.
func routeSeeds(t tenant) map[string][]string {
	verify, _ := json.Marshal(verifyBody(t.openOrderID, "pay_"+strings.TrimPrefix(t.openOrderID, "order_"), "00"))
	hook, _ := signedWebhook(t.openOrderID, "pay_"+strings.TrimPrefix(t.openOrderID, "order_"), 25000)
	chat := `{"model":"forii/deepseek-v3","messages":[{"role":"user","content":"Hello"}],"max_tokens":4}`
	return map[string][]string{
		"POST /v1/accounts":                              {`{"name":"Zed","email":"zed@example.com","password":"correct horse battery"}`},
		"POST /v1/sessions":                              {`{"email":"fuzz@example.com","password":"` + t.password + `"}`},
		"POST /v1/accounts/{id}/apiKeys":                 {`{"name":"ci","type":"api","models":["forii/deepseek-v3"],"expires":"2099-01-01T00:00:00Z"}`},
		"GET /v1/accounts/{id}/apiKeys":                  {"limit=1", "cursor=abc&limit=500"},
		"PATCH /v1/accounts/{id}/apiKeys/{key_id}":       {`{"name":"renamed","models":["forii/llama-3.1-8b"]}`},
		"POST /v1/accounts/{id}/apiKeys/{key_id}/rotate": {`{"grace_seconds":60}`, ``},
		"GET /v1/accounts/{id}/usage":                    {"start=2025-01-01&end=2025-01-31&group_by=model,key", "group_by=date"},
		"POST /v1/accounts/{id}/credits":                 {`{"amount_inr":100.50}`},
		"POST /v1/accounts/{id}/credits/verify":          {string(verify)},
		"POST /v1/webhooks/razorpay":                     {string(hook), `{"entity":"event","event":"order.paid","payload":{}}`},
		"PUT /v1/accounts/{id}/auto_recharge":            {`{"enabled":true,"threshold_inr":10,"amount_inr":100}`},
		"GET /v1/accounts/{id}/transactions":             {"limit=2&type=debit,grant", "cursor=zz"},
		"PUT /v1/accounts/{id}/billing_details":          {`{"legal_name":"Acme LLP","gstin":"27AAPFU0939F1ZV","address":"1 Road","state_code":"27"}`, `{"state_code":"29"}`},
		"GET /v1/accounts/{id}/payments":                 {"limit=5"},
		"POST /v1/accounts/{id}/webhooks":                {`{"url":"https://93.184.216.34/hook","description":"alerts"}`, `{"url":"http://127.0.0.1:1/x"}`},
		"PUT /v1/accounts/{id}/alert_thresholds":         {`{"low_balance_inr":["100","10.50"]}`, `{"low_balance_inr":[]}`},
		"GET /v1/accounts/{id}/webhooks/deliveries":      {"limit=3"},
		"GET /v1/accounts/{id}/audit":                    {"limit=3&action=key.*&actor=session", "since=2026-01-01T00:00:00Z&until=2027-01-01T00:00:00Z&cursor=a1"},
		"POST /v1/verify-email":                          {`{"token":"klt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`},
		"GET /v1/verify-email":                           {"token=klt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
		"POST /v1/password/forgot":                       {`{"email":"nobody@example.com"}`},
		"POST /v1/password/reset":                        {`{"token":"klt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","password":"new password 1"}`},
		"POST /v1/accounts/{id}/password":                {`{"current_password":"wrong","new_password":"new password 1"}`},
		"DELETE /v1/accounts/{id}":                       {`{"password":"wrong"}`},
		"PATCH /v1/admin/accounts/{id}":                  {`{"plan":"pro"}`},
		"POST /v1/leaked-keys":                           {`[{"token":"` + t.spareKey + `","type":"forii_api_key","url":"https://github.com/x/y","source":"content"}]`},
		"POST /inference/v1/chat/completions": {chat,
			`{"model":"forii/llama-3.1-8b","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"Be brief"},{"role":"user","content":[{"type":"text","text":"Hi"}]}],"temperature":0.5,"stop":["\n"]}`},
	}
}

// FuzzRoutes drives every route of the gateway's router (the routes()
// table, management and inference alike) through its real handler with a
// fuzzed body, query string, path parameter and credential. An empty
// credential means the valid one: the tenant's session token on
// /v1/accounts/{id}/… (a spare session for logout), its API key on
// /inference/…, and on the webhook a correct signature over the fuzzed
// body, so the handlers are reached past authentication. An empty
// parameter means the tenant's own key (the spare one, so that revoke and
// rotate leave the primary key working) or invoice. The gateway must never
// answer 5xx, and every error must be a JSON error body.
func FuzzRoutes(f *testing.F) {
	g := newInproc(f, io.Discard)
	t := g.newTenant(f, "Fuzz")
	routes := g.s.routes()
	seeds := routeSeeds(t)
	for i, rt := range routes {
		e2e.AddRouteSeeds(f, i, "limit=abc&start=2025-02-30&group_by=color&type=refund,,x&cursor=%zz", "Bearer forii_sk_forged", `{"name":`,
			seeds[rt.method+" "+rt.pattern])
	}
	ids := map[string]string{"id": t.id, "key_id": t.spareKeyID, "invoice_id": t.invoiceID}
	f.Fuzz(func(tt *testing.T, ri uint8, param, query, cred string, body []byte) {
		rt := routes[int(ri)%len(routes)]
		path := e2e.FillPattern(rt.pattern, param, ids, "id")
		auth := cred
		var headers []string
		if cred == "" {
			switch {
			case rt.pattern == "/v1/sessions" && rt.method == "DELETE":
				auth = "Bearer " + t.spareToken
			case strings.HasPrefix(rt.pattern, "/v1/accounts/{id}"):
				auth = "Bearer " + t.token
			case strings.HasPrefix(rt.pattern, "/inference/"):
				auth = "Bearer " + t.key
			case rt.pattern == "/v1/webhooks/razorpay":
				headers = append(headers, "X-Razorpay-Signature", razorpay.SignWebhook(body, defaultRazorpayWebhookSecret))
			}
		}
		rec := g.serve(rt.method, path, query, auth, body, headers...)
		e2e.CheckAnswer(tt, rt.method+" "+path+"?"+query, rec)
	})
}

// globalRoutes are the routes without path parameters and why another
// tenant's ids cannot reach them: they act on the caller's own credential
// or on no account at all. A new route must either take {id} (and is then
// tested by TestCrossTenantIDsAreNotFound) or be listed here.
var globalRoutes = map[string]string{
	"GET /openapi.json":                   "public document",
	"POST /v1/accounts":                   "signup: creates a new account",
	"POST /v1/sessions":                   "login: email and password",
	"DELETE /v1/sessions":                 "logout of the presented session only",
	"POST /v1/webhooks/razorpay":          "signed by Razorpay; credits the order's own account",
	"POST /v1/leaked-keys":                "acts on the raw keys presented",
	"GET /v1/verify-email":                "acts on the account of the mailed token only",
	"POST /v1/verify-email":               "acts on the account of the mailed token only",
	"POST /v1/password/forgot":            "mails the address's owner only; answers the same for every address",
	"POST /v1/password/reset":             "acts on the account of the mailed token only",
	"GET /inference/v1/models":            "the caller's key only",
	"POST /inference/v1/chat/completions": "the caller's key only",
}

// validBodies are bodies each tenant route accepts, so that a 404 comes
// from the ownership check, not from body validation.
var validBodies = map[string]string{
	"POST /v1/accounts/{id}/apiKeys":                 `{"name":"x"}`,
	"PATCH /v1/accounts/{id}/apiKeys/{key_id}":       `{"name":"x"}`,
	"POST /v1/accounts/{id}/credits":                 `{"amount_inr":100}`,
	"PUT /v1/accounts/{id}/auto_recharge":            `{"enabled":false,"threshold_inr":0,"amount_inr":0}`,
	"PUT /v1/accounts/{id}/billing_details":          `{"state_code":"29"}`,
	"POST /v1/accounts/{id}/credits/verify":          `{}`, // see the order cases below
	"POST /v1/accounts/{id}/apiKeys/{key_id}/rotate": ``,
}

// TestCrossTenantIDsAreNotFound enumerates the router's table: every route
// under /v1/accounts/{id} called by tenant A with B's account id, and every
// route with a second id called with A's account and B's key or invoice,
// is 404 and changes nothing of B's. Payment verification with B's order
// (an id in the body) is 404 too. A route outside both groups must be in
// globalRoutes.
func TestCrossTenantIDsAreNotFound(t *testing.T) {
	g := newInproc(t, io.Discard)
	a, b := g.newTenant(t, "Alice"), g.newTenant(t, "Bob")
	var patterns, nested []string
	for _, rt := range g.s.routes() {
		p := rt.method + " " + rt.pattern
		patterns = append(patterns, p)
		// Operator routes (/v1/admin/…) take any account's id by design; to
		// a tenant's session they are 404, which CrossTenant checks below.
		if strings.Contains(rt.pattern, "{") && !strings.HasPrefix(rt.pattern, "/v1/accounts/{id}") && !strings.HasPrefix(rt.pattern, "/v1/admin/") {
			t.Errorf("%s: a route with ids outside /v1/accounts/{id} needs its own cross-tenant case", p)
		}
		if len(e2e.PathParams(rt.pattern)) > 1 {
			nested = append(nested, p)
		}
	}
	asA := func(method, pattern, path string) *httptest.ResponseRecorder {
		var body []byte
		if s := validBodies[method+" "+pattern]; s != "" {
			body = []byte(s)
		}
		return g.serve(method, path, "", "Bearer "+a.token, body)
	}
	// A's session, B's account (and B's key or invoice).
	bHook := g.must(t, 201, "POST", "/v1/accounts/"+b.id+"/webhooks", b.token, `{"url":"https://93.184.216.34/hook"}`)
	bIDs := map[string]string{"id": b.id, "key_id": b.spareKeyID, "invoice_id": b.invoiceID, "webhook_id": bHook["id"].(string)}
	if n := e2e.CrossTenant(t, patterns, globalRoutes, bIDs, asA); n < 15 {
		t.Fatalf("only %d tenant routes found", n)
	}
	// A's session and account, B's key or invoice.
	bIDs["id"] = a.id
	if n := e2e.CrossTenant(t, nested, globalRoutes, bIDs, asA); n < 4 {
		t.Fatalf("only %d routes with two ids found", n)
	}
	// Orders are named in the body: B's paid and open orders are not A's.
	for _, o := range []string{b.paidOrderID, b.openOrderID} {
		vb, _ := json.Marshal(verifyBody(o, "pay_"+strings.TrimPrefix(o, "order_"), defaultRazorpaySecret))
		e2e.NotFound(t, "A verifying B's order "+o, g.serve("POST", "/v1/accounts/"+a.id+"/credits/verify", "", "Bearer "+a.token, vb))
	}
	// A's lists show none of B's records.
	for _, p := range []string{"/apiKeys", "/transactions", "/invoices", "/usage?group_by=key"} {
		rec := g.serve("GET", "/v1/accounts/"+a.id+strings.Split(p, "?")[0], strings.TrimPrefix(p, strings.Split(p, "?")[0]+"?"), "Bearer "+a.token, nil)
		for _, id := range []string{b.id, b.keyID, b.spareKeyID, b.invoiceID, b.paidOrderID, b.openOrderID} {
			if strings.Contains(rec.Body.String(), id) {
				t.Errorf("A's %s shows B's %s: %s", p, id, rec.Body)
			}
		}
	}
	// B is untouched: both keys active and unrotated, balance as granted
	// plus the paid order, one order still open.
	keys := g.must(t, 200, "GET", "/v1/accounts/"+b.id+"/apiKeys", b.token, "")["data"].([]any)
	for _, k := range keys {
		if k := k.(map[string]any); k["status"] != "active" || k["name"] != "k" || k["grace_until"] != nil {
			t.Errorf("B's key changed: %v", k)
		}
	}
	for _, raw := range []string{b.key, b.spareKey} {
		g.must(t, 200, "GET", "/inference/v1/models", raw, "")
	}
	if bal := g.must(t, 200, "GET", "/v1/accounts/"+b.id+"/balance", b.token, "")["credits_inr"]; num(t, bal).String() != "100100" {
		t.Errorf("B's balance %v, want 100100", bal)
	}
	ar := g.must(t, 200, "GET", "/v1/accounts/"+b.id+"/auto_recharge", b.token, "")
	if ar["enabled"] != false {
		t.Errorf("B's auto-recharge changed: %v", ar)
	}
}

// Requests the router has no route for — an unknown path, a method a path
// does not serve, an id holding an escaped "/" (found by FuzzRoutes) — are
// JSON 404s like every other error, over a real connection too, in the
// OpenAI envelope under /inference/.
func TestUnroutedRequestsAreJSONErrors(t *testing.T) {
	g := newInproc(t, io.Discard)
	u := g.newTenant(t, "Unrouted")
	srv := httptest.NewServer(g.h)
	defer srv.Close()
	for _, c := range []struct{ method, path string }{
		{"GET", "/nope"},
		{"PUT", "/v1/sessions"},
		{"GET", "/v1/accounts/" + u.id + "/invoices/%2F"},
		{"DELETE", "/v1/accounts/" + u.id + "/apiKeys/a%2Fb"},
		{"GET", "/inference/v1/nope"},
		{"POST", "/inference/v1/models"},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		req.Header.Set("Authorization", "Bearer "+u.token)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		rec.Code = resp.StatusCode
		for k, v := range resp.Header {
			rec.Header()[k] = v
		}
		_, _ = rec.Body.ReadFrom(resp.Body)
		resp.Body.Close()
		if rec.Code != 404 {
			t.Errorf("%s %s: %d %s, want 404", c.method, c.path, rec.Code, rec.Body)
			continue
		}
		e2e.CheckAnswer(t, c.method+" "+c.path, rec)
		if inf := strings.HasPrefix(c.path, "/inference/"); inf != strings.Contains(rec.Body.String(), `"type"`) {
			t.Errorf("%s %s: wrong error envelope: %s", c.method, c.path, rec.Body)
		}
	}
}
