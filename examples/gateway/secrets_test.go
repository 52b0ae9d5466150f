package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
	"github.com/keyledger/keyledger/examples/internal/e2e"
)

// TestSecretsNeverLogged runs every secret-handling path of the gateway,
// the failing ones included (wrong password, forged, revoked and rotated
// keys, bad checkout and webhook signatures, a leaked-key report), with
// logs at debug level, and fails if a password, session token, raw key,
// Razorpay secret or signature appears in them (e2e.Logs checks at
// cleanup). The e2e suites do the same over HTTP.
func TestSecretsNeverLogged(t *testing.T) {
	logs := e2e.NewLogs(t)
	g := newInproc(t, logs)
	logs.Secret("Razorpay key secret", defaultRazorpaySecret)
	logs.Secret("Razorpay webhook secret", defaultRazorpayWebhookSecret)
	do := func(method, path, bearer string, body []byte, headers ...string) map[string]any {
		auth := ""
		if bearer != "" {
			auth = "Bearer " + bearer
			logs.Secret(method+" "+path+" bearer", bearer)
		}
		logs.Harvest(method+" "+path+" request", body)
		for i := 0; i+1 < len(headers); i += 2 {
			logs.Secret(headers[i], headers[i+1])
		}
		rec := g.serve(method, path, "", auth, body, headers...)
		logs.Harvest(method+" "+path+" response", rec.Body.Bytes())
		var m map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &m)
		return m
	}
	pw := "correct horse battery staple"
	acct := do("POST", "/v1/accounts", "", []byte(`{"name":"Sec","email":"sec@example.com","password":"`+pw+`"}`))
	id, _ := acct["id"].(string)
	do("POST", "/v1/sessions", "", []byte(`{"email":"sec@example.com","password":"wrong `+pw+`"}`))
	sess := do("POST", "/v1/sessions", "", []byte(`{"email":"sec@example.com","password":"`+pw+`"}`))
	tok, _ := sess["token"].(string)
	if id == "" || tok == "" {
		t.Fatalf("signup %v login %v", acct, sess)
	}
	base := "/v1/accounts/" + id
	k := do("POST", base+"/apiKeys", tok, []byte(`{"name":"prod"}`))
	key, keyID := k["key"].(string), k["id"].(string)
	chat := []byte(`{"model":"forii/deepseek-v3","messages":[{"role":"user","content":"Hi"}],"max_tokens":4}`)
	do("POST", chatEndpoint, key, chat)
	do("POST", chatEndpoint, key, []byte(`{"model":"forii/deepseek-v3","stream":true,"messages":[{"role":"user","content":"Hi"}]}`))
	do("POST", chatEndpoint, key[:len(key)-1]+"x", chat) // forged: bad checksum
	r := do("POST", base+"/apiKeys/"+keyID+"/rotate", tok, []byte(`{"grace_seconds":0}`))
	newKey, _ := r["key"].(string)
	do("POST", chatEndpoint, key, chat) // the old secret, rotated away
	do("POST", chatEndpoint, newKey, chat)
	do("GET", base+"/apiKeys", tok, nil)

	// Payments: a bad and a good checkout signature, a bad and a good
	// webhook signature.
	o := do("POST", base+"/credits", tok, []byte(`{"amount_inr":100}`))
	orderID, _ := o["order_id"].(string)
	payID := "pay_" + strings.TrimPrefix(orderID, "order_")
	bad, _ := json.Marshal(verifyBody(orderID, payID, "not-the-secret"))
	do("POST", base+"/credits/verify", tok, bad)
	good, _ := json.Marshal(verifyBody(orderID, payID, defaultRazorpaySecret))
	if v := do("POST", base+"/credits/verify", tok, good); v["invoice_id"] == nil {
		t.Fatalf("verify: %v", v)
	}
	o2 := do("POST", base+"/credits", tok, []byte(`{"amount_inr":200}`))
	order2, _ := o2["order_id"].(string)
	hook, sig := signedWebhook(order2, "pay_"+strings.TrimPrefix(order2, "order_"), 20000)
	do("POST", "/v1/webhooks/razorpay", "", hook, "X-Razorpay-Signature", razorpay.SignWebhook(hook, "wrong-webhook-secret"))
	do("POST", "/v1/webhooks/razorpay", "", hook, "X-Razorpay-Signature", sig)

	// A leaked-key report disables the key; then it is refused, revoked,
	// and the session logged out and refused.
	do("POST", "/v1/leaked-keys", "", []byte(`[{"token":"`+newKey+`","type":"forii_api_key","url":"https://github.com/x/y"}]`))
	do("POST", chatEndpoint, newKey, chat)
	do("DELETE", base+"/apiKeys/"+keyID, tok, nil)
	do("DELETE", "/v1/sessions", tok, nil)
	do("GET", base, tok, nil)
	if logs.Secrets() < 10 {
		t.Fatalf("only %d secrets recorded", logs.Secrets())
	}
	if !strings.Contains(logs.String(), "level=") {
		t.Fatalf("nothing was logged: %q", logs.String())
	}
}
