package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSeedAccountFlow(t *testing.T) {
	g := startGateway(t)
	st, _, body := g.do("POST", "/v1/accounts", "", `{"name":"Asha","email":"asha@example.com","password":"correct horse battery"}`)
	if st != 201 {
		t.Fatalf("signup: %d %s", st, body)
	}
	// credits_inr is the number 50.00, not a string.
	if !bytes.Contains(body, []byte(`"credits_inr":50.00`)) || !bytes.Contains(body, []byte(`"plan":"free"`)) {
		t.Fatalf("signup body: %s", body)
	}
	g.must(409, "POST", "/v1/accounts", "", `{"name":"Asha","email":"ASHA@example.com","password":"correct horse battery"}`)
	g.must(401, "POST", "/v1/sessions", "", `{"email":"asha@example.com","password":"wrong password"}`)
	sess := g.must(201, "POST", "/v1/sessions", "", `{"email":"asha@example.com","password":"correct horse battery"}`)
	tok, id := sess["token"].(string), sess["account_id"].(string)
	if sess["expires"] == nil {
		t.Fatalf("session: %v", sess)
	}
	a := g.must(200, "GET", "/v1/accounts/"+id, tok, nil)
	if a["email"] != "asha@example.com" || a["name"] != "Asha" || a["created"] == nil {
		t.Fatalf("account: %v", a)
	}
	_, _, b := g.do("GET", "/v1/accounts/"+id+"/balance", tok, nil)
	if strings.TrimSpace(string(b)) != `{"credits_inr":50.00,"plan":"free"}` {
		t.Fatalf("balance: %s", b)
	}

	// Keys: sdk by default, api on request, masked in lists.
	sdk := g.must(201, "POST", "/v1/accounts/"+id+"/apiKeys", tok, `{"name":"prod-api"}`)
	if k := sdk["key"].(string); !strings.HasPrefix(k, "forii_sk_") || sdk["status"] != "active" {
		t.Fatalf("sdk key: %v", sdk)
	}
	api := g.must(201, "POST", "/v1/accounts/"+id+"/apiKeys", tok, `{"name":"mgmt","type":"api","models":["forii/deepseek-v3"]}`)
	if k := api["key"].(string); !strings.HasPrefix(k, "forii_") || strings.HasPrefix(k, "forii_sk_") {
		t.Fatalf("api key: %v", api)
	}
	g.must(400, "POST", "/v1/accounts/"+id+"/apiKeys", tok, `{"name":"x","type":"admin"}`)
	g.must(400, "POST", "/v1/accounts/"+id+"/apiKeys", tok, `{"name":"x","models":["nope/model"]}`)
	_, _, lb := g.do("GET", "/v1/accounts/"+id+"/apiKeys", tok, nil)
	if bytes.Contains(lb, []byte(sdk["key"].(string))) || bytes.Contains(lb, []byte(api["key"].(string))) || bytes.Contains(lb, []byte(`"key"`)) {
		t.Fatalf("list shows a raw key: %s", lb)
	}
	list := g.must(200, "GET", "/v1/accounts/"+id+"/apiKeys", tok, nil)
	if n := len(list["data"].([]any)); n != 2 {
		t.Fatalf("list: %d keys", n)
	}
	first := list["data"].([]any)[0].(map[string]any)
	if first["prefix"] != sdk["prefix"] || !strings.HasPrefix(first["prefix"].(string), "forii_sk_") || first["type"] != "sdk" || first["last_used"] != nil {
		t.Fatalf("masked key: %v", first)
	}
	up := g.must(200, "PATCH", "/v1/accounts/"+id+"/apiKeys/"+api["id"].(string), tok, `{"name":"renamed","models":[]}`)
	if up["name"] != "renamed" || len(up["models"].([]any)) != 0 {
		t.Fatalf("patch: %v", up)
	}
	rot := g.must(200, "POST", "/v1/accounts/"+id+"/apiKeys/"+sdk["id"].(string)+"/rotate", tok, `{"grace_seconds":60}`)
	if rot["key"] == sdk["key"] || rot["id"] != sdk["id"] || rot["grace_until"] == nil {
		t.Fatalf("rotate: %v", rot)
	}
	del := g.must(200, "DELETE", "/v1/accounts/"+id+"/apiKeys/"+api["id"].(string), tok, nil)
	if del["status"] != "revoked" || del["id"] != api["id"] {
		t.Fatalf("delete: %v", del)
	}

	// Logout ends the session.
	g.must(204, "DELETE", "/v1/sessions", tok, nil)
	g.must(401, "GET", "/v1/accounts/"+id, tok, nil)
}

func TestTenantIsolation(t *testing.T) {
	g := startGateway(t)
	a, b := g.signup("Alice"), g.signup("Bob")
	for _, p := range []struct{ method, path, body string }{
		{"GET", "/v1/accounts/" + b.id, ""},
		{"GET", "/v1/accounts/" + b.id + "/balance", ""},
		{"GET", "/v1/accounts/" + b.id + "/apiKeys", ""},
		{"POST", "/v1/accounts/" + b.id + "/apiKeys", `{"name":"x"}`},
		{"PATCH", "/v1/accounts/" + b.id + "/apiKeys/" + b.keyID, `{"name":"x"}`},
		{"DELETE", "/v1/accounts/" + b.id + "/apiKeys/" + b.keyID, ""},
		{"POST", "/v1/accounts/" + b.id + "/apiKeys/" + b.keyID + "/rotate", ""},
		{"GET", "/v1/accounts/" + b.id + "/usage", ""},
		{"POST", "/v1/accounts/" + b.id + "/credits", `{"amount_inr":100}`},
		{"POST", "/v1/accounts/" + b.id + "/credits/verify", `{}`},
		{"GET", "/v1/accounts/" + b.id + "/auto_recharge", ""},
		{"PUT", "/v1/accounts/" + b.id + "/auto_recharge", `{}`},
		{"GET", "/v1/accounts/" + b.id + "/transactions", ""},
		{"GET", "/v1/accounts/" + b.id + "/billing_details", ""},
		{"PUT", "/v1/accounts/" + b.id + "/billing_details", `{"state_code":"29"}`},
		{"GET", "/v1/accounts/" + b.id + "/payments", ""},
		{"GET", "/v1/accounts/" + b.id + "/invoices", ""},
		{"GET", "/v1/accounts/" + b.id + "/invoices/inv_x", ""},
		// B's key under A's own account id is not found either.
		{"PATCH", "/v1/accounts/" + a.id + "/apiKeys/" + b.keyID, `{"name":"x"}`},
		{"DELETE", "/v1/accounts/" + a.id + "/apiKeys/" + b.keyID, ""},
		{"POST", "/v1/accounts/" + a.id + "/apiKeys/" + b.keyID + "/rotate", ""},
	} {
		var body any
		if p.body != "" {
			body = p.body
		}
		st, _, out := g.do(p.method, p.path, a.token, body)
		if st != 404 {
			t.Errorf("%s %s as A: %d %s", p.method, p.path, st, out)
		}
	}
	// B's key still works.
	g.must(200, "POST", "/inference/v1/chat/completions", b.key, chatBody("forii/deepseek-v3", 4, false))
}

func TestBadInput(t *testing.T) {
	g := startGateway(t)
	u := g.signup("Chen")
	for _, c := range []struct {
		method, path, token, body string
		want                      int
	}{
		{"POST", "/v1/accounts", "", `{"name":"x"`, 400},
		{"POST", "/v1/accounts", "", `{"name":"x","email":"x@example.com","password":"correct horse","admin":true}`, 400},
		{"POST", "/v1/accounts", "", `{"name":5,"email":"x@example.com","password":"correct horse"}`, 400},
		{"POST", "/v1/accounts", "", `{"name":"x","email":"x@example.com","password":"correct horse"} {}`, 400},
		{"POST", "/v1/accounts", "", ``, 400},
		{"POST", "/v1/accounts", "", `{"name":"x","email":"not-an-email","password":"correct horse"}`, 400},
		{"POST", "/v1/accounts", "", `{"name":"x","email":"x@example.com","password":"short"}`, 400},
		{"POST", "/v1/accounts/" + u.id + "/apiKeys", u.token, `{"name":["x"]}`, 400},
		{"POST", "/v1/accounts/" + u.id + "/apiKeys/" + u.keyID + "/rotate", u.token, `{"grace_seconds":-1}`, 400},
		{"POST", "/v1/accounts/" + u.id + "/credits", u.token, `{"amount_inr":"lots"}`, 400},
		{"POST", "/v1/accounts/" + u.id + "/credits", u.token, `{"amount_inr":0.001}`, 400},
		{"GET", "/v1/accounts/" + u.id + "/transactions?limit=0", u.token, ``, 400},
		{"GET", "/v1/accounts/" + u.id + "/transactions?type=bogus", u.token, ``, 400},
		{"GET", "/v1/accounts/" + u.id + "/transactions?cursor=zz", u.token, ``, 400},
		{"GET", "/v1/accounts/" + u.id + "/usage?start=2025-13-01", u.token, ``, 400},
		{"GET", "/v1/accounts/" + u.id + "/usage?group_by=color", u.token, ``, 400},
		{"POST", "/inference/v1/chat/completions", u.key, `{"model":`, 400},
		{"POST", "/inference/v1/chat/completions", u.key, `{"model":"forii/deepseek-v3","messages":"hi"}`, 400},
		{"GET", "/v1/accounts/" + u.id, "", ``, 401},
		{"GET", "/v1/accounts/" + u.id, "kls_forged", ``, 401},
	} {
		var body any
		if c.body != "" {
			body = c.body
		}
		st, h, out := g.do(c.method, c.path, c.token, body)
		if st != c.want || !strings.HasPrefix(h.Get("Content-Type"), "application/json") || !bytes.Contains(out, []byte(`"error"`)) {
			t.Errorf("%s %s %q: %d %s %s, want %d JSON error", c.method, c.path, c.body, st, h.Get("Content-Type"), out, c.want)
		}
	}
	big := `{"name":"` + strings.Repeat("x", maxBodyBytes) + `"}`
	for _, p := range []string{"/v1/accounts", "/v1/accounts/" + u.id + "/apiKeys", "/inference/v1/chat/completions", "/v1/webhooks/razorpay"} {
		tok := u.token
		if strings.HasPrefix(p, "/inference") {
			tok = u.key
		}
		st, _, out := g.do("POST", p, tok, big)
		if st != 413 || !bytes.Contains(out, []byte(`"error"`)) {
			t.Errorf("POST %s 1 MiB+: %d %.200s", p, st, out)
		}
	}
}
