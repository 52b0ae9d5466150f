package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay/razorpaytest"
)

// Credentials of the live-mode tests: a real-looking key id switches the
// gateway from the simulator to Razorpay's REST API, here the fake.
const (
	liveKeyID   = "rzp_test_fakeapi0001"
	liveSecret  = "live-test-key-secret"
	liveWebhook = "live-test-webhook-secret"
)

// startLive runs the gateway against a fake Razorpay API.
func startLive(t *testing.T, extra ...string) (*gw, *razorpaytest.Fake) {
	t.Helper()
	f := razorpaytest.New(t, liveKeyID, liveSecret)
	args := append([]string{"-razorpay-key-id", liveKeyID, "-razorpay-secret", liveSecret,
		"-razorpay-webhook-secret", liveWebhook, "-razorpay-api", f.URL()}, extra...)
	return startGateway(t, args...), f
}

// liveOrder creates a ₹amount order and checks the Checkout options.
func (g *gw) liveOrder(u user, amount string) map[string]any {
	g.t.Helper()
	o := g.must(201, "POST", "/v1/accounts/"+u.id+"/credits", u.token, `{"amount_inr":`+amount+`}`)
	if o["key_id"] != liveKeyID || o["recurring"] != "1" || !strings.HasPrefix(o["customer_id"].(string), "cust_") {
		g.t.Fatalf("live order: %v", o)
	}
	return o
}

// sendWebhook posts a signed event.
func (g *gw) sendWebhook(ev razorpay.WebhookEvent, secret string) (int, []byte) {
	g.t.Helper()
	body, _ := json.Marshal(ev)
	req, _ := http.NewRequest("POST", g.base+"/v1/webhooks/razorpay", bytes.NewReader(body))
	req.Header.Set("X-Razorpay-Signature", razorpay.SignWebhook(body, secret))
	resp, err := g.c.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes()
}

func TestRazorpayLiveCheckout(t *testing.T) {
	g, f := startLive(t)
	u := g.signup("Live")
	base := "/v1/accounts/" + u.id

	// order → checkout → verify: signature and the fetched payment.
	o := g.liveOrder(u, "500")
	if f.Calls(razorpaytest.RouteCreateOrder) != 1 || f.Calls(razorpaytest.RouteCreateCustomer) != 1 {
		t.Fatal("the order was not created through the Orders API")
	}
	orderID := o["order_id"].(string)
	resp, _, err := f.Pay(orderID, razorpay.PaymentAuthorized)
	if err != nil {
		t.Fatal(err)
	}
	forged := map[string]string{"razorpay_order_id": orderID, "razorpay_payment_id": resp.PaymentID, "razorpay_signature": razorpay.SignPayment(orderID, resp.PaymentID, "wrong")}
	g.must(400, "POST", base+"/credits/verify", u.token, forged)
	v := g.must(200, "POST", base+"/credits/verify", u.token, map[string]string{
		"razorpay_order_id": orderID, "razorpay_payment_id": resp.PaymentID, "razorpay_signature": resp.Signature})
	if num(t, v["credits_inr"]).String() != "550" {
		t.Fatalf("verify: %v", v)
	}
	if p, _ := f.Payment(resp.PaymentID); p.Status != razorpay.PaymentCaptured || f.Calls(razorpaytest.RouteFetchPayment) < 1 || f.Calls(razorpaytest.RouteCapture) != 1 {
		t.Fatalf("the authorized payment was not fetched and captured: %+v", p)
	}
	ar := g.must(200, "GET", base+"/auto_recharge", u.token, nil)
	if ar["payment_method_saved"] != true {
		t.Fatalf("the first purchase saved no token: %v", ar)
	}
	// A second order reuses the customer.
	o2 := g.liveOrder(u, "100")
	if o2["customer_id"] != o["customer_id"] || f.Calls(razorpaytest.RouteCreateCustomer) != 1 {
		t.Fatalf("customer: %v vs %v", o2, o)
	}

	// A correctly signed payment of another amount: the fetch catches it.
	o3 := g.liveOrder(u, "200")["order_id"].(string)
	other := g.liveOrder(u, "300")["order_id"].(string)
	r3, _, _ := f.Pay(other, razorpay.PaymentCaptured)
	g.must(400, "POST", base+"/credits/verify", u.token, map[string]string{
		"razorpay_order_id": o3, "razorpay_payment_id": r3.PaymentID, "razorpay_signature": razorpay.SignPayment(o3, r3.PaymentID, liveSecret)})

	// A failed payment is 402 with Razorpay's reason, recorded, credits nothing.
	o4 := g.liveOrder(u, "250")["order_id"].(string)
	r4, _, _ := f.Pay(o4, razorpay.PaymentFailed)
	st, _, body := g.do("POST", base+"/credits/verify", u.token, map[string]string{
		"razorpay_order_id": o4, "razorpay_payment_id": r4.PaymentID, "razorpay_signature": r4.Signature})
	if st != 402 || !strings.Contains(string(body), "payment_failed") || !strings.Contains(string(body), "declined") {
		t.Fatalf("failed payment: %d %s", st, body)
	}
	evs := g.must(200, "GET", base+"/payments", u.token, nil)["data"].([]any)
	if len(evs) != 1 || evs[0].(map[string]any)["type"] != "payment_failed" || evs[0].(map[string]any)["payment_id"] != r4.PaymentID {
		t.Fatalf("payments: %v", evs)
	}

	// Razorpay 5xx, then a timeout: 503, nothing credited; then it works.
	o5 := g.liveOrder(u, "150")["order_id"].(string)
	r5, _, _ := f.Pay(o5, razorpay.PaymentCaptured)
	ok5 := map[string]string{"razorpay_order_id": o5, "razorpay_payment_id": r5.PaymentID, "razorpay_signature": r5.Signature}
	f.FailNext(razorpaytest.RouteFetchPayment, 500, "SERVER_ERROR", "We are facing some trouble")
	if st, _, b := g.do("POST", base+"/credits/verify", u.token, ok5); st != 503 || !strings.Contains(string(b), "payment_provider_unavailable") {
		t.Fatalf("5xx: %d %s", st, b)
	}
	f.FailNext(razorpaytest.RouteCreateOrder, 502, "GATEWAY_ERROR", "bad gateway")
	if st, _, b := g.do("POST", base+"/credits", u.token, `{"amount_inr":100}`); st != 503 {
		t.Fatalf("order on 5xx: %d %s", st, b)
	}
	f.FailNext(razorpaytest.RouteCreateOrder, 400, "BAD_REQUEST_ERROR", "Order amount exceeds the maximum")
	if st, _, b := g.do("POST", base+"/credits", u.token, `{"amount_inr":100}`); st != 502 || !strings.Contains(string(b), "payment_provider_error") {
		t.Fatalf("order on 400: %d %s", st, b)
	}
	if bal := num(t, g.must(200, "GET", base+"/balance", u.token, nil)["credits_inr"]).String(); bal != "550" {
		t.Fatalf("balance after failures: %s", bal)
	}
	v5 := g.must(200, "POST", base+"/credits/verify", u.token, ok5)
	if num(t, v5["credits_inr"]).String() != "700" {
		t.Fatalf("verify after recovery: %v", v5)
	}

	// Webhook first: payment.captured credits an order nobody verified;
	// the later verify is a replay.
	o6 := g.liveOrder(u, "50")["order_id"].(string)
	r6, p6, _ := f.Pay(o6, razorpay.PaymentCaptured)
	if st, b := g.sendWebhook(razorpay.NewEvent(razorpay.EventPaymentCaptured, p6, nil, time.Now()), liveWebhook); st != 200 {
		t.Fatalf("webhook: %d %s", st, b)
	}
	v6 := g.must(200, "POST", base+"/credits/verify", u.token, map[string]string{
		"razorpay_order_id": o6, "razorpay_payment_id": r6.PaymentID, "razorpay_signature": r6.Signature})
	if num(t, v6["credits_inr"]).String() != "750" {
		t.Fatalf("webhook then verify: %v", v6)
	}

	// refund.processed takes ₹20 back once, however often it is delivered.
	rf := razorpay.Refund{ID: "rfnd_FP8QHiV938haTz", Entity: "refund", Amount: 2000, Currency: "INR", PaymentID: p6.ID, Status: "processed"}
	for range 2 {
		if st, b := g.sendWebhook(razorpay.NewEvent(razorpay.EventRefundProcessed, p6, &rf, time.Now()), liveWebhook); st != 200 {
			t.Fatalf("refund webhook: %d %s", st, b)
		}
	}
	if bal := num(t, g.must(200, "GET", base+"/balance", u.token, nil)["credits_inr"]).String(); bal != "730" {
		t.Fatalf("balance after the refund: %s", bal)
	}
	evs = g.must(200, "GET", base+"/payments", u.token, nil)["data"].([]any)
	if len(evs) != 2 || evs[0].(map[string]any)["type"] != "refund" || evs[0].(map[string]any)["transaction_id"] == nil {
		t.Fatalf("payments after the refund: %v", evs)
	}
	// payment.failed by webhook is recorded too.
	o7 := g.liveOrder(u, "75")["order_id"].(string)
	_, p7, _ := f.Pay(o7, razorpay.PaymentFailed)
	if st, b := g.sendWebhook(razorpay.NewEvent(razorpay.EventPaymentFailed, p7, nil, time.Now()), liveWebhook); st != 200 {
		t.Fatalf("failed webhook: %d %s", st, b)
	}
	if evs := g.must(200, "GET", base+"/payments", u.token, nil)["data"].([]any); len(evs) != 3 {
		t.Fatalf("payments after payment.failed: %v", evs)
	}
}

func TestRazorpayLiveAutoRecharge(t *testing.T) {
	g, f := startLive(t, "-models", pricyCatalog(t, "1000000", ""))
	u := g.signup("Recur")
	base := "/v1/accounts/" + u.id
	g.must(200, "PUT", base+"/auto_recharge", u.token, `{"enabled":true,"threshold_inr":45,"amount_inr":100}`)

	// No saved token yet: the crossing charges nothing and says why.
	spend := func(n int) {
		for range n {
			g.must(200, "POST", "/inference/v1/chat/completions", u.key, chatBody("test/pricy", 5, false))
		}
	}
	spend(3) // ₹50 → ₹35: crosses ₹45
	ar := waitFailure(t, g, u, "no saved payment method")
	if ar["payment_method_saved"] != false || f.Calls(razorpaytest.RouteCreateRecurring) != 0 {
		t.Fatalf("auto_recharge: %v", ar)
	}

	// The first purchase saves the token.
	o := g.liveOrder(u, "10")["order_id"].(string)
	r, _, _ := f.Pay(o, razorpay.PaymentCaptured)
	g.must(200, "POST", base+"/credits/verify", u.token, map[string]string{
		"razorpay_order_id": o, "razorpay_payment_id": r.PaymentID, "razorpay_signature": r.Signature})
	// ₹35 + ₹10 = ₹45, then spending crosses ₹45 again: a recurring charge.
	spend(2)
	waitFor(t, func() bool { return f.Calls(razorpaytest.RouteCreateRecurring) == 1 })
	waitFor(t, func() bool {
		for _, e := range g.must(200, "GET", base+"/transactions?type=purchase", u.token, nil)["data"].([]any) {
			if strings.HasPrefix(e.(map[string]any)["description"].(string), "Auto-recharge") {
				return true
			}
		}
		return false
	})
	ar = g.must(200, "GET", base+"/auto_recharge", u.token, nil)
	if ar["last_failure"] != nil || ar["payment_method_saved"] != true {
		t.Fatalf("after a successful recharge: %v", ar)
	}
	if inv := g.must(200, "GET", base+"/invoices", u.token, nil)["data"].([]any); len(inv) != 2 {
		t.Fatalf("invoices: %v", inv)
	}

	// A declined recurring payment is surfaced and credits nothing.
	f.SetRecurringOutcome(razorpay.PaymentFailed)
	for range 40 { // spend until the balance (₹135 or so) crosses ₹45 again
		st, _, b := g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("test/pricy", 5, false))
		if st == 402 || f.Calls(razorpaytest.RouteCreateRecurring) == 2 {
			break // the (asynchronous) recharge may not have run before the balance ran out
		}
		if st != 200 {
			t.Fatalf("chat: %d %s", st, b)
		}
	}
	waitFailure(t, g, u, "declined")
	purchases := 0
	for _, e := range g.ledger(u) {
		if e["type"] == "purchase" {
			purchases++
		}
	}
	if purchases != 2 {
		t.Fatalf("a declined recharge was credited: %d purchases", purchases)
	}
}

// waitFailure waits until the account's auto-recharge reports a failure
// containing want.
func waitFailure(t *testing.T, g *gw, u user, want string) map[string]any {
	t.Helper()
	var ar map[string]any
	waitFor(t, func() bool {
		ar = g.must(200, "GET", "/v1/accounts/"+u.id+"/auto_recharge", u.token, nil)
		lf, _ := ar["last_failure"].(map[string]any)
		return lf != nil && strings.Contains(lf["message"].(string), want)
	})
	return ar
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A real key id needs its own secrets; a bad -razorpay-api is refused at
// start.
func TestRazorpayLiveFlags(t *testing.T) {
	if _, err := parseFlags([]string{"-razorpay-key-id", liveKeyID}, io.Discard); err == nil || !strings.Contains(err.Error(), "-razorpay-secret") {
		t.Fatalf("a real key id with the demo secrets: %v", err)
	}
	c, err := parseFlags([]string{"-razorpay-key-id", liveKeyID, "-razorpay-secret", liveSecret, "-razorpay-webhook-secret", liveWebhook,
		"-razorpay-api", "ftp://nowhere", "-db", filepath.Join(t.TempDir(), "gw.db")}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := newServer(context.Background(), c, slog.New(slog.DiscardHandler), time.Now, nil); err == nil || !strings.Contains(err.Error(), "-razorpay-api") {
		t.Fatalf("-razorpay-api ftp://: %v", err)
	}
}
