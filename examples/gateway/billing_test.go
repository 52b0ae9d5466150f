package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
)

// buy creates a ₹amount order and returns its id.
func (g *gw) buy(u user, amount string) string {
	g.t.Helper()
	o := g.must(201, "POST", "/v1/accounts/"+u.id+"/credits", u.token, `{"amount_inr":`+amount+`}`)
	if o["currency"] != "INR" || o["key_id"] != defaultRazorpayKeyID || !num(g.t, o["amount_inr"]).Equal(decimal.RequireFromString(amount)) {
		g.t.Fatalf("order: %v", o)
	}
	return o["order_id"].(string)
}

func verifyBody(orderID, paymentID, secret string) map[string]string {
	return map[string]string{"razorpay_order_id": orderID, "razorpay_payment_id": paymentID,
		"razorpay_signature": razorpay.SignPayment(orderID, paymentID, secret)}
}

func TestRazorpayOrderVerifyInvoice(t *testing.T) {
	g := startGateway(t)
	u := g.signup("Buyer")
	orderID := g.buy(u, "500")

	// A bad signature is 400 and credits nothing.
	bad := verifyBody(orderID, "pay_29QQoUBi66xm2f", "not-the-secret")
	g.must(400, "POST", "/v1/accounts/"+u.id+"/credits/verify", u.token, bad)

	good := verifyBody(orderID, "pay_29QQoUBi66xm2f", defaultRazorpaySecret)
	v := g.must(200, "POST", "/v1/accounts/"+u.id+"/credits/verify", u.token, good)
	if num(t, v["credits_inr"]).String() != "550" || v["transaction_id"] == nil {
		t.Fatalf("verify: %v", v)
	}
	// A replay credits once and answers the same transaction.
	v2 := g.must(200, "POST", "/v1/accounts/"+u.id+"/credits/verify", u.token, good)
	if v2["transaction_id"] != v["transaction_id"] || num(t, v2["credits_inr"]).String() != "550" {
		t.Fatalf("replay: %v", v2)
	}
	entries := g.ledger(u)
	if len(entries) != 2 || entries[0]["type"] != "purchase" || entries[0]["reference"] != orderID {
		t.Fatalf("ledger: %v", entries)
	}

	inv := g.must(200, "GET", "/v1/accounts/"+u.id+"/invoices", u.token, nil)["data"].([]any)
	if len(inv) != 1 {
		t.Fatalf("invoices: %v", inv)
	}
	i0 := inv[0].(map[string]any)
	// Prices include GST: ₹500 = ₹423.73 taxable + ₹76.27 GST.
	if !strings.HasPrefix(i0["number"].(string), "INV/") || num(t, i0["amount_inr"]).String() != "500" ||
		num(t, i0["taxable_inr"]).String() != "423.73" || num(t, i0["tax_inr"]).String() != "76.27" {
		t.Fatalf("invoice: %v", i0)
	}
	st, h, pdf := g.do("GET", i0["url"].(string), u.token, nil)
	if st != 200 || h.Get("Content-Type") != "application/pdf" || !bytes.HasPrefix(pdf, []byte("%PDF-")) {
		t.Fatalf("pdf: %d %s %.40q", st, h.Get("Content-Type"), pdf)
	}

	// Another account can neither verify this order nor read the invoice.
	o := g.signup("Other")
	g.must(404, "POST", "/v1/accounts/"+o.id+"/credits/verify", o.token, good)
	g.must(404, "GET", "/v1/accounts/"+o.id+"/invoices/"+i0["id"].(string), o.token, nil)
}

// webhook delivers a signed payment.captured event for an order.
func (g *gw) webhook(orderID, paymentID string, paise razorpay.Paise, secret string) (int, []byte) {
	g.t.Helper()
	ev := razorpay.NewPaymentCapturedEvent(razorpay.Payment{ID: paymentID, Entity: "payment", Amount: paise, Currency: "INR",
		Status: razorpay.PaymentCaptured, OrderID: orderID, Captured: true, CreatedAt: time.Now().Unix()}, time.Now())
	body, err := json.Marshal(ev)
	if err != nil {
		g.t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", g.base+"/v1/webhooks/razorpay", bytes.NewReader(body))
	req.Header.Set("X-Razorpay-Signature", razorpay.SignWebhook(body, secret))
	g.logs.HarvestRequest(req, body)
	resp, err := g.c.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(resp.Body)
	return resp.StatusCode, out.Bytes()
}

func TestWebhookThenVerifyCreditsOnce(t *testing.T) {
	g := startGateway(t)
	u := g.signup("Hook")
	orderID := g.buy(u, "100.50")

	if st, b := g.webhook(orderID, "pay_29QQoUBi66xm2f", 10050, "wrong secret"); st != 400 {
		t.Fatalf("bad webhook signature: %d %s", st, b)
	}
	if st, b := g.webhook(orderID, "pay_29QQoUBi66xm2f", 999, defaultRazorpayWebhookSecret); st != 400 {
		t.Fatalf("amount mismatch: %d %s", st, b)
	}
	if st, b := g.webhook("order_EKwxwAgItmmXdp", "pay_29QQoUBi66xm2f", 100, defaultRazorpayWebhookSecret); st != 200 || !strings.Contains(string(b), "ignored") {
		t.Fatalf("unknown order: %d %s", st, b)
	}
	if len(g.ledger(u)) != 1 {
		t.Fatal("a refused webhook credited")
	}

	// Webhook and verify race (and repeat): one purchase, one invoice.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if st, b := g.webhook(orderID, "pay_29QQoUBi66xm2f", 10050, defaultRazorpayWebhookSecret); st != 200 {
				t.Errorf("webhook: %d %s", st, b)
			}
		})
		wg.Go(func() {
			if st, _, b := g.do("POST", "/v1/accounts/"+u.id+"/credits/verify", u.token, verifyBody(orderID, "pay_29QQoUBi66xm2f", defaultRazorpaySecret)); st != 200 {
				t.Errorf("verify: %d %s", st, b)
			}
		})
	}
	wg.Wait()
	entries := g.ledger(u)
	if len(entries) != 2 || num(t, entries[0]["amount_inr"]).String() != "100.5" || num(t, entries[0]["balance_inr"]).String() != "150.5" {
		t.Fatalf("ledger: %v", entries)
	}
	if inv := g.must(200, "GET", "/v1/accounts/"+u.id+"/invoices", u.token, nil)["data"].([]any); len(inv) != 1 {
		t.Fatalf("invoices: %v", inv)
	}
}

func TestAutoRecharge(t *testing.T) {
	g := startGateway(t, "-models", pricyCatalog(t, "1000000", ""))
	u := g.signup("Auto")
	ar := g.must(200, "GET", "/v1/accounts/"+u.id+"/auto_recharge", u.token, nil)
	if ar["enabled"] != false {
		t.Fatalf("default: %v", ar)
	}
	g.must(400, "PUT", "/v1/accounts/"+u.id+"/auto_recharge", u.token, `{"enabled":true}`)
	g.must(400, "PUT", "/v1/accounts/"+u.id+"/auto_recharge", u.token, `{"enabled":true,"threshold_inr":45,"amount_inr":0.5}`)
	ar = g.must(200, "PUT", "/v1/accounts/"+u.id+"/auto_recharge", u.token, `{"enabled":true,"threshold_inr":45,"amount_inr":100}`)
	if ar["enabled"] != true || num(t, ar["threshold_inr"]).String() != "45" || num(t, ar["amount_inr"]).String() != "100" {
		t.Fatalf("put: %v", ar)
	}
	// ₹5 then ₹5: the second debit crosses ₹45 and recharges ₹100 once.
	g.must(200, "POST", "/inference/v1/chat/completions", u.key, chatBody("test/pricy", 5, false))
	g.must(200, "POST", "/inference/v1/chat/completions", u.key, chatBody("test/pricy", 5, false))
	g.must(200, "POST", "/inference/v1/chat/completions", u.key, chatBody("test/pricy", 5, false))

	// Shutdown waits for running recharges; a restart on the same file
	// sees the purchase and its invoice.
	g.stop()
	g = startGatewayOn(t, g.db, "-models", pricyCatalog(t, "1000000", ""))
	entries := g.ledger(u)
	purchases := 0
	for _, e := range entries {
		if e["type"] == "purchase" {
			purchases++
			if num(t, e["amount_inr"]).String() != "100" || !strings.HasPrefix(e["reference"].(string), "order_") {
				t.Fatalf("purchase: %v", e)
			}
		}
	}
	if purchases != 1 {
		t.Fatalf("%d recharges: %v", purchases, entries)
	}
	if inv := g.must(200, "GET", "/v1/accounts/"+u.id+"/invoices", u.token, nil)["data"].([]any); len(inv) != 1 {
		t.Fatalf("invoices: %v", inv)
	}

	// Razorpay's payment.captured webhook for the recharge's order lands on
	// the same purchase: the balance rises once.
	var orderID string
	for _, e := range entries {
		if e["type"] == "purchase" {
			orderID = e["reference"].(string)
		}
	}
	before := num(t, entries[0]["balance_inr"])
	if st, b := g.webhook(orderID, "pay_29QQoUBi66xm2f", 10000, defaultRazorpayWebhookSecret); st != 200 {
		t.Fatalf("webhook: %d %s", st, b)
	}
	after := g.ledger(u)
	if len(after) != len(entries) || !num(t, after[0]["balance_inr"]).Equal(before) {
		t.Fatalf("the webhook credited the recharge again: %v", after)
	}
	if inv := g.must(200, "GET", "/v1/accounts/"+u.id+"/invoices", u.token, nil)["data"].([]any); len(inv) != 1 {
		t.Fatalf("invoices: %v", inv)
	}
}

func TestLeakedKeys(t *testing.T) {
	g := startGateway(t)
	u := g.signup("Leak")
	g.must(200, "POST", "/inference/v1/chat/completions", u.key, chatBody("forii/deepseek-v3", 1, false))
	st, _, b := g.do("POST", "/v1/leaked-keys", "", []map[string]string{
		{"token": u.key, "type": "forii_sdk_key", "url": "https://github.com/x/y/blob/main/.env", "source": "content"},
		{"token": "forii_sk_notours", "type": "forii_sdk_key", "url": "https://github.com/x/y"},
	})
	var res []map[string]string
	if st != 200 || json.Unmarshal(b, &res) != nil || len(res) != 2 {
		t.Fatalf("leaked: %d %s", st, b)
	}
	sum := sha256.Sum256([]byte(u.key))
	if res[0]["label"] != "true_positive" || res[0]["token_hash"] != hex.EncodeToString(sum[:]) || res[1]["label"] != "false_positive" {
		t.Fatalf("leaked: %s", b)
	}
	if st, _, b := g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("forii/deepseek-v3", 1, false)); st != 401 || !strings.Contains(string(b), "disabled") {
		t.Fatalf("leaked key still works: %d %s", st, b)
	}
	keys := g.must(200, "GET", "/v1/accounts/"+u.id+"/apiKeys", u.token, nil)["data"].([]any)
	if keys[0].(map[string]any)["status"] != "disabled" {
		t.Fatalf("keys: %v", keys)
	}
	g.must(400, "POST", "/v1/leaked-keys", "", `{"token":"x"}`)
}
