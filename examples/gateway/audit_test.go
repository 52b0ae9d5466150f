package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/auditlog"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/sqlitestore"
)

// auditedRoutes maps every route that changes something to the audit
// action a successful call of it records. TestAuditTableCoversRoutes fails
// for a mutating route (POST, PUT, PATCH, DELETE, and the GETs listed in
// mutatingGETs) that has no row, so a new route must say what it records;
// TestAuditEveryMutatingRoute calls each one and fails for a row it did not
// see recorded. An empty action exempts a route, with the reason in
// auditExempt.
var auditedRoutes = map[string]string{
	"POST /v1/accounts":                              "account.create",
	"POST /v1/sessions":                              "session.create",
	"DELETE /v1/sessions":                            "session.revoke",
	"POST /v1/accounts/{id}/apiKeys":                 "key.create",
	"PATCH /v1/accounts/{id}/apiKeys/{key_id}":       "key.update",
	"DELETE /v1/accounts/{id}/apiKeys/{key_id}":      "key.revoke",
	"POST /v1/accounts/{id}/apiKeys/{key_id}/rotate": "key.rotate",
	"POST /v1/accounts/{id}/credits":                 "credits.order_create",
	"POST /v1/accounts/{id}/credits/verify":          "credits.purchase",
	"POST /v1/webhooks/razorpay":                     "credits.purchase",
	"PUT /v1/accounts/{id}/billing_details":          "billing_details.update",
	"PUT /v1/accounts/{id}/auto_recharge":            "credits.policy_change",
	"POST /v1/leaked-keys":                           "key.disable",
	"GET /v1/verify-email":                           "email.verify",
	"POST /v1/verify-email":                          "email.verify",
	"POST /v1/password/forgot":                       "password.reset_request",
	"POST /v1/password/reset":                        "password.change",
	"POST /v1/accounts/{id}/password":                "password.change",
	"DELETE /v1/accounts/{id}":                       "account.close",
	"PATCH /v1/admin/accounts/{id}":                  "plan.change",
	"POST /v1/accounts/{id}/webhooks":                "webhook.create",
	"DELETE /v1/accounts/{id}/webhooks/{webhook_id}": "webhook.delete",
	"PUT /v1/accounts/{id}/alert_thresholds":         "alerts.update",
	"POST /inference/v1/chat/completions":            "",
}

// auditExempt says why a mutating route records no audit entry.
var auditExempt = map[string]string{
	"POST /inference/v1/chat/completions": "a metered API call, recorded in the usage log, not a management action",
}

// mutatingGETs are the GET routes that change state (a link in a mail).
var mutatingGETs = []string{"GET /v1/verify-email"}

func mutating(method, pattern string) bool {
	switch method {
	case "POST", "PUT", "PATCH", "DELETE":
		return true
	}
	return slices.Contains(mutatingGETs, method+" "+pattern)
}

func TestAuditTableCoversRoutes(t *testing.T) {
	s := &server{} // routes() only builds handlers; nothing runs
	registered := map[string]bool{}
	for _, rt := range s.routes() {
		r := rt.method + " " + rt.pattern
		registered[r] = true
		if !mutating(rt.method, rt.pattern) {
			continue
		}
		action, ok := auditedRoutes[r]
		if !ok {
			t.Errorf("mutating route %s has no row in auditedRoutes: say which audit action it records (and record it)", r)
		}
		if ok && action == "" && auditExempt[r] == "" {
			t.Errorf("route %s is exempt from the audit log without a reason in auditExempt", r)
		}
	}
	for r := range auditedRoutes {
		if !registered[r] {
			t.Errorf("auditedRoutes lists %s, which is not a route", r)
		}
	}
}

// auditReader reads the gateway's audit log from its database file.
type auditReader struct {
	t   *testing.T
	svc *auditlog.Service
}

func openAuditReader(t *testing.T, db string) *auditReader {
	st, err := sqlitestore.Open(context.Background(), db, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	svc, err := auditlog.NewService(store.Driver(st), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &auditReader{t: t, svc: svc}
}

func (a *auditReader) entries(acct string) []auditlog.Entry {
	a.t.Helper()
	var all []auditlog.Entry
	q := auditlog.Query{AccountID: acct, Limit: 500}
	for {
		p, err := a.svc.List(context.Background(), q)
		if err != nil {
			a.t.Fatal(err)
		}
		all = append(all, p.Entries...)
		if p.NextCursor == "" {
			return all
		}
		q.Cursor = p.NextCursor
	}
}

// TestAuditEveryMutatingRoute calls every mutating route successfully and
// checks that each recorded its action on the account it acted on, with
// the actor and client the middleware set.
func TestAuditEveryMutatingRoute(t *testing.T) {
	const admin = "an-operator-token-of-at-least-32-bytes!"
	t.Setenv("GATEWAY_ADMIN_TOKEN", admin)
	mailDir := filepath.Join(t.TempDir(), "mail")
	g := startGateway(t, "-mail-dir", mailDir)
	g.logs.Secret("admin token", admin)
	ar := openAuditReader(t, g.db)
	seen := map[string]bool{}
	// call runs one route and checks that acct's log gained its action.
	call := func(route, acct string, run func()) auditlog.Entry {
		t.Helper()
		want, ok := auditedRoutes[route]
		if !ok || want == "" {
			t.Fatalf("%s has no audit action", route)
		}
		before := len(ar.entries(acct))
		run()
		es := ar.entries(acct)
		for _, e := range es[:len(es)-before] {
			if e.Action == want {
				seen[route] = true
				return e
			}
		}
		t.Fatalf("%s: no %s entry on %s; new entries: %v", route, want, acct, es[:len(es)-before])
		return auditlog.Entry{}
	}
	const pw = "correct horse battery"
	email := "audited@example.com"
	var tok, keyID, key2, hookSecret string
	// Sign-up: the account does not exist before, so look after.
	a := g.must(201, "POST", "/v1/accounts", "", map[string]string{"name": "Aud", "email": email, "password": pw})
	acct := a["id"].(string)
	if es := ar.entries(acct); len(es) == 0 || es[len(es)-1].Action != "account.create" {
		t.Fatalf("sign-up entries: %v", es)
	}
	seen["POST /v1/accounts"] = true

	e := call("POST /v1/sessions", acct, func() {
		tok = g.must(201, "POST", "/v1/sessions", "", map[string]string{"email": email, "password": pw})["token"].(string)
	})
	if e.Actor != (auditlog.Actor{Kind: auditlog.ActorSession, ID: acct}) || e.ClientIP != "127.0.0.1" || !strings.HasPrefix(e.UserAgent, "Go-http-client") {
		t.Errorf("login entry: %+v", e)
	}
	base := "/v1/accounts/" + acct
	e = call("POST /v1/accounts/{id}/apiKeys", acct, func() {
		keyID = g.must(201, "POST", base+"/apiKeys", tok, map[string]string{"name": "one", "type": "api"})["id"].(string)
	})
	if e.Target.ID != keyID || e.Actor.Kind != auditlog.ActorSession {
		t.Errorf("key.create entry: %+v", e)
	}
	call("PATCH /v1/accounts/{id}/apiKeys/{key_id}", acct, func() {
		g.must(200, "PATCH", base+"/apiKeys/"+keyID, tok, map[string]string{"name": "renamed"})
	})
	call("POST /v1/accounts/{id}/apiKeys/{key_id}/rotate", acct, func() {
		g.must(200, "POST", base+"/apiKeys/"+keyID+"/rotate", tok, map[string]any{"grace_seconds": 0})
	})
	// A PATCH that sets only the spend limit records key.spend_limit with
	// the limit before and after.
	before := len(ar.entries(acct))
	g.must(200, "PATCH", base+"/apiKeys/"+keyID, tok, `{"spend_limit":{"amount_inr":"5.00","period":"day"}}`)
	if es := ar.entries(acct); len(es) != before+1 || es[0].Action != "key.spend_limit" || es[0].Target.ID != keyID ||
		len(es[0].Changes) != 1 || es[0].Changes[0].Before != "" || es[0].Changes[0].After != "5 per day" {
		t.Errorf("spend limit entries: %+v", es[:len(es)-before])
	}
	var hookID string
	e = call("POST /v1/accounts/{id}/webhooks", acct, func() {
		h := g.must(201, "POST", base+"/webhooks", tok, map[string]string{"url": "https://93.184.216.34/hook", "description": "alerts"})
		hookID, hookSecret = h["id"].(string), h["secret"].(string)
	})
	if e.Target.ID != hookID || !strings.Contains(fmt.Sprint(e.Changes), "https://93.184.216.34/hook") {
		t.Errorf("webhook.create entry: %+v", e)
	}
	call("DELETE /v1/accounts/{id}/webhooks/{webhook_id}", acct, func() {
		g.must(200, "DELETE", base+"/webhooks/"+hookID, tok, nil)
	})
	e = call("PUT /v1/accounts/{id}/alert_thresholds", acct, func() {
		g.must(200, "PUT", base+"/alert_thresholds", tok, `{"low_balance_inr":["100","10"]}`)
	})
	if len(e.Changes) != 1 || e.Changes[0].After != "100,10" {
		t.Errorf("alerts.update entry: %+v", e)
	}
	call("DELETE /v1/accounts/{id}/apiKeys/{key_id}", acct, func() {
		g.must(200, "DELETE", base+"/apiKeys/"+keyID, tok, nil)
	})
	var order string
	call("POST /v1/accounts/{id}/credits", acct, func() { order = g.buy(user{id: acct, token: tok}, "100") })
	call("POST /v1/accounts/{id}/credits/verify", acct, func() {
		g.must(200, "POST", base+"/credits/verify", tok, verifyBody(order, "pay_29QQoUBi66xm2f", defaultRazorpaySecret))
	})
	order2 := g.buy(user{id: acct, token: tok}, "50")
	e = call("POST /v1/webhooks/razorpay", acct, func() {
		if st, b := g.webhook(order2, "pay_29QQoUBi66xm3g", 5000, defaultRazorpayWebhookSecret); st != 200 {
			t.Fatalf("webhook: %d %s", st, b)
		}
	})
	if e.Actor.Kind != auditlog.ActorSystem {
		t.Errorf("webhook purchase by %v, want the system", e.Actor)
	}
	call("PUT /v1/accounts/{id}/billing_details", acct, func() {
		g.must(200, "PUT", base+"/billing_details", tok, `{"legal_name":"Aud Pvt Ltd","gstin":"27AAPFU0939F1ZV","address":"Mumbai","state_code":"27"}`)
	})
	call("PUT /v1/accounts/{id}/auto_recharge", acct, func() {
		g.must(200, "PUT", base+"/auto_recharge", tok, `{"enabled":true,"threshold_inr":45,"amount_inr":100}`)
	})
	call("POST /v1/leaked-keys", acct, func() {
		key2 = g.must(201, "POST", base+"/apiKeys", tok, map[string]string{"name": "leaky"})["key"].(string)
		g.must(200, "POST", "/v1/leaked-keys", "", []map[string]string{{"token": key2, "type": "forii_sdk_key", "url": "https://github.com/x/y"}})
	})
	e = call("PATCH /v1/admin/accounts/{id}", acct, func() {
		g.must(200, "PATCH", "/v1/admin/accounts/"+acct, admin, map[string]string{"plan": "pro"})
	})
	if e.Actor != (auditlog.Actor{Kind: auditlog.ActorAdmin, ID: "admin-token"}) || len(e.Changes) != 1 || e.Changes[0].After != "pro" {
		t.Errorf("admin plan change: %+v", e)
	}
	call("POST /v1/password/forgot", acct, func() {
		g.must(202, "POST", "/v1/password/forgot", "", map[string]string{"email": email})
	})
	reset := mailToken(t, mailDir)
	g.logs.Secret("reset token", reset)
	call("POST /v1/password/reset", acct, func() {
		g.must(200, "POST", "/v1/password/reset", "", map[string]string{"token": reset, "password": "a brand new password"})
	})
	tok = g.must(201, "POST", "/v1/sessions", "", map[string]string{"email": email, "password": "a brand new password"})["token"].(string)
	call("POST /v1/accounts/{id}/password", acct, func() {
		tok = g.must(201, "POST", base+"/password", tok, map[string]string{"current_password": "a brand new password", "new_password": "third password"})["token"].(string)
	})
	call("DELETE /v1/sessions", acct, func() { g.must(204, "DELETE", "/v1/sessions", tok, nil) })
	tok = g.must(201, "POST", "/v1/sessions", "", map[string]string{"email": email, "password": "third password"})["token"].(string)
	call("DELETE /v1/accounts/{id}", acct, func() {
		g.must(200, "DELETE", base, tok, map[string]string{"password": "third password"})
	})

	// Email verification needs a gateway that mails (-smtp).
	sink := newSMTPSink(t)
	gv := startGateway(t, "-smtp", sink.ln.Addr().String(), "-smtp-from", "noreply@forii.example")
	av := openAuditReader(t, gv.db)
	for i, route := range []string{"GET /v1/verify-email", "POST /v1/verify-email"} {
		em := fmt.Sprintf("verify%d@example.com", i)
		gv.must(202, "POST", "/v1/accounts", "", map[string]string{"name": "V", "email": em, "password": pw})
		msgs := sink.all()
		vt := tokenRe.FindString(msgs[len(msgs)-1])
		gv.logs.Secret("verification token", vt)
		sess := gv.must(201, "POST", "/v1/sessions", "", map[string]string{"email": em, "password": pw})
		id := sess["account_id"].(string)
		if strings.HasPrefix(route, "GET") {
			gv.must(200, "GET", "/v1/verify-email?token="+url.QueryEscape(vt), "", nil)
		} else {
			gv.must(200, "POST", "/v1/verify-email", "", map[string]string{"token": vt})
		}
		if !slices.ContainsFunc(av.entries(id), func(e auditlog.Entry) bool { return e.Action == "email.verify" }) {
			t.Errorf("%s recorded no email.verify", route)
		}
		seen[route] = true
	}

	for route, action := range auditedRoutes {
		if action != "" && !seen[route] {
			t.Errorf("route %s (%s) was not exercised: add its call to this test", route, action)
		}
	}
	// No entry holds a secret.
	for _, e := range ar.entries(acct) {
		s := fmt.Sprintf("%+v", e)
		for _, secret := range []string{tok, key2, hookSecret, reset, pw, "third password", "a brand new password"} {
			if secret != "" && strings.Contains(s, secret) {
				t.Errorf("entry %s holds a secret", e.Action)
			}
		}
	}
}

// The audit route shows an account its own entries only, pages them,
// filters them, and answers bad input with a JSON 400 that names it.
func TestAuditRoute(t *testing.T) {
	g := startGateway(t)
	u := g.signup("Reader")
	o := g.signup("Other")
	base := "/v1/accounts/" + u.id + "/audit"
	for i := range 4 {
		g.must(201, "POST", "/v1/accounts/"+u.id+"/apiKeys", u.token, map[string]string{"name": fmt.Sprint("k", i)})
	}
	// With an API key of the account (manage scope), the actor is the key.
	mk := g.must(201, "POST", "/v1/accounts/"+u.id+"/apiKeys", u.token, map[string]string{"name": "mgmt", "type": "api"})
	g.must(201, "POST", "/v1/accounts/"+u.id+"/apiKeys", mk["key"].(string), map[string]string{"name": "by-key"})

	all := g.must(200, "GET", base, u.token, nil)["data"].([]any)
	// sign-up (account.create, credits.grant), login, 1+4+1+1 keys
	if len(all) != 10 {
		t.Fatalf("%d entries: %v", len(all), all)
	}
	first := all[0].(map[string]any)
	if first["action"] != "key.create" || first["actor"].(map[string]any)["kind"] != "key" || first["actor"].(map[string]any)["id"] != mk["id"] {
		t.Errorf("newest entry: %v", first)
	}
	// Paging: 3 at a time, each entry once, newest first.
	var ids []string
	q := "?limit=3"
	for pages := 0; ; pages++ {
		p := g.must(200, "GET", base+q, u.token, nil)
		for _, e := range p["data"].([]any) {
			ids = append(ids, e.(map[string]any)["id"].(string))
		}
		next, _ := p["next_cursor"].(string)
		if next == "" || pages > 10 {
			break
		}
		q = "?limit=3&cursor=" + url.QueryEscape(next)
	}
	if len(ids) != 10 || ids[0] != first["id"] {
		t.Fatalf("paged %d ids", len(ids))
	}
	for i, id := range ids {
		if all[i].(map[string]any)["id"] != id {
			t.Fatalf("page order differs at %d", i)
		}
	}
	// Filters.
	if got := g.must(200, "GET", base+"?action=key.create", u.token, nil)["data"].([]any); len(got) != 7 {
		t.Errorf("action filter: %d", len(got))
	}
	if got := g.must(200, "GET", base+"?action=credits.*", u.token, nil)["data"].([]any); len(got) != 1 {
		t.Errorf("action prefix filter: %d", len(got))
	}
	if got := g.must(200, "GET", base+"?actor=key:"+mk["id"].(string), u.token, nil)["data"].([]any); len(got) != 1 {
		t.Errorf("actor filter: %d", len(got))
	}
	if got := g.must(200, "GET", base+"?since=2000-01-01T00:00:00Z&until=2001-01-01T00:00:00Z", u.token, nil)["data"].([]any); len(got) != 0 {
		t.Errorf("time filter: %d", len(got))
	}
	// Another tenant's log is 404, with a session or a key.
	g.must(404, "GET", "/v1/accounts/"+o.id+"/audit", u.token, nil)
	g.must(404, "GET", "/v1/accounts/"+o.id+"/audit", mk["key"].(string), nil)
	g.must(401, "GET", base, "", nil)
	// Bad input: a JSON 400 naming the parameter.
	for q, word := range map[string]string{
		"?limit=0": "limit", "?limit=501": "limit", "?limit=x": "limit", "?cursor=zzz": "cursor",
		"?actor=root": "actor", "?since=yesterday": "since", "?until=2026-13-01": "until",
		"?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z": "since",
	} {
		st, h, b := g.do("GET", base+q, u.token, nil)
		if st != 400 || !strings.HasPrefix(h.Get("Content-Type"), "application/json") || !strings.Contains(string(b), word) {
			t.Errorf("GET %s: %d %s", q, st, b)
		}
	}
	// The other account's log holds none of these.
	for _, e := range g.must(200, "GET", "/v1/accounts/"+o.id+"/audit", o.token, nil)["data"].([]any) {
		if tgt := e.(map[string]any)["target"].(map[string]any); tgt["id"] == u.id {
			t.Errorf("other tenant sees %v", e)
		}
	}
}

// The client address is the connection's unless the peer is a trusted
// proxy; a forged X-Forwarded-For changes nothing; the user agent is
// truncated; refused changes record nothing.
func TestAuditClientAndRefusals(t *testing.T) {
	for _, c := range []struct {
		name   string
		args   []string
		wantIP string
	}{
		{"direct", nil, "127.0.0.1"},
		{"behind a trusted proxy", []string{"-trusted-proxies", "127.0.0.1"}, "203.0.113.50"},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := startGateway(t, c.args...)
			u := g.signup("Client")
			o := g.signup("Stranger")
			req, _ := http.NewRequest("POST", g.base+"/v1/accounts/"+u.id+"/apiKeys", strings.NewReader(`{"name":"via-proxy"}`))
			req.Header.Set("Authorization", "Bearer "+u.token)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Forwarded-For", "203.0.113.50")
			req.Header.Set("User-Agent", strings.Repeat("A", 2000))
			resp, err := g.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 201 {
				t.Fatalf("create key: %d", resp.StatusCode)
			}
			e := g.must(200, "GET", "/v1/accounts/"+u.id+"/audit?limit=1", u.token, nil)["data"].([]any)[0].(map[string]any)
			if e["action"] != "key.create" || e["client_ip"] != c.wantIP || len(e["user_agent"].(string)) != 256 {
				t.Fatalf("entry: %v", e)
			}
			count := func() int {
				return len(g.must(200, "GET", "/v1/accounts/"+u.id+"/audit?limit=500", u.token, nil)["data"].([]any))
			}
			n := count()
			// Refused: another tenant's key, a wrong password, bad settings, a bad name.
			g.must(404, "DELETE", "/v1/accounts/"+u.id+"/apiKeys/"+o.keyID, u.token, nil)
			g.must(404, "DELETE", "/v1/accounts/"+o.id+"/apiKeys/"+o.keyID, u.token, nil)
			g.must(401, "POST", "/v1/accounts/"+u.id+"/password", u.token, map[string]string{"current_password": "wrong one", "new_password": "another password"})
			g.must(400, "PUT", "/v1/accounts/"+u.id+"/auto_recharge", u.token, `{"enabled":true}`)
			g.must(400, "PATCH", "/v1/accounts/"+u.id+"/apiKeys/"+u.keyID, u.token, map[string]string{"name": ""})
			if got := count(); got != n {
				t.Fatalf("refused changes recorded: %d entries, was %d", got, n)
			}
			// The stranger's log is untouched by the attempts on its key.
			for _, e := range g.must(200, "GET", "/v1/accounts/"+o.id+"/audit", o.token, nil)["data"].([]any) {
				if a := e.(map[string]any)["action"]; a == "key.revoke" {
					t.Fatal("another tenant revoked a key")
				}
			}
		})
	}
}
