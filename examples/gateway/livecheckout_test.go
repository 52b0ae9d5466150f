package main

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay/razorpaytest"
)

// liveCheckoutForm asks the dashboard to buy amount and returns the
// Razorpay Checkout form it renders: its action and hidden fields.
func liveCheckoutForm(t *testing.T, b *formClient, amount string) (string, url.Values) {
	t.Helper()
	st, body, _ := b.submit("/dashboard/credits", "/dashboard/credits", url.Values{"amount": {amount}})
	m := regexp.MustCompile(`(?s)<form method="post" action="([^"]+)" class="stack" id="checkout">(.*?)</form>`).FindStringSubmatch(body)
	if st != http.StatusOK || m == nil {
		t.Fatalf("checkout page: %d\n%s", st, body)
	}
	fields := url.Values{}
	for _, h := range hiddenRe.FindAllStringSubmatch(m[2], -1) {
		fields.Set(html.UnescapeString(h[1]), html.UnescapeString(h[2]))
	}
	if fields.Has("csrf") {
		t.Fatal("the dashboard's CSRF token is posted to Razorpay")
	}
	return html.UnescapeString(m[1]), fields
}

func balanceOf(t *testing.T, b *formClient) string {
	t.Helper()
	m := regexp.MustCompile(`id="balance">([0-9.,]+) `).FindStringSubmatch(b.get("/dashboard/balance", http.StatusOK))
	if m == nil {
		t.Fatal("no balance on the balance page")
	}
	return m[1]
}

// TestDashboardLiveRazorpayCheckout: with a real key id the dashboard's
// purchase creates the order through Razorpay's Orders API (the fake) and
// renders Razorpay's hosted checkout form; Razorpay's callback is verified
// by signature and by fetching (and capturing) the payment, credits the
// order's own account once, and failures credit nothing.
func TestDashboardLiveRazorpayCheckout(t *testing.T) {
	g, f := startLive(t, "-public-url", "https://forii.test/")
	b := newFormClient(t, g.base)
	if st, _, _ := b.submit("/dashboard/signup", "/dashboard/signup", url.Values{"name": {"Asha"}, "email": {"asha@example.com"}, "password": {"correct horse battery"}}); st != http.StatusSeeOther {
		t.Fatalf("sign up: %d", st)
	}
	before := balanceOf(t, b)

	action, fields := liveCheckoutForm(t, b, "500")
	orderID := fields.Get("order_id")
	if action != f.URL()+razorpay.HostedCheckoutPath || fields.Get("key_id") != liveKeyID || fields.Get("amount") != "50000" ||
		fields.Get("currency") != "INR" || !strings.HasPrefix(orderID, "order_") || fields.Get("prefill[email]") != "asha@example.com" ||
		fields.Get("callback_url") != "https://forii.test/dashboard/razorpay/callback" || fields.Get("cancel_url") != "https://forii.test/dashboard/credits" ||
		!strings.HasPrefix(fields.Get("customer_id"), "cust_") || fields.Get("recurring") != "1" {
		t.Fatalf("checkout form: %s %v", action, fields)
	}
	if f.Calls(razorpaytest.RouteCreateOrder) != 1 || f.Calls(razorpaytest.RouteCreateCustomer) != 1 {
		t.Fatal("the order was not created through the Orders API")
	}

	// The customer pays on Razorpay's page; Razorpay posts back (a
	// cross-site POST: a fresh client, no cookies).
	resp, _, err := f.Pay(orderID, razorpay.PaymentAuthorized)
	if err != nil {
		t.Fatal(err)
	}
	razorpayPost := func(form url.Values) (int, string, string) {
		t.Helper()
		st, body, hd := newFormClient(t, g.base).send("POST", checkoutCallbackPath, form)
		return st, body, hd.Get("Location")
	}
	good := url.Values{"razorpay_order_id": {orderID}, "razorpay_payment_id": {resp.PaymentID}, "razorpay_signature": {resp.Signature}}
	forged := url.Values{"razorpay_order_id": {orderID}, "razorpay_payment_id": {resp.PaymentID}, "razorpay_signature": {razorpay.SignPayment(orderID, resp.PaymentID, "wrong")}}
	if st, body, _ := razorpayPost(forged); st != http.StatusBadRequest || !strings.Contains(body, "not signed by Razorpay") {
		t.Fatalf("forged signature: %d\n%s", st, body)
	}
	if got := balanceOf(t, b); got != before {
		t.Fatalf("balance %s after a forged callback, want %s", got, before)
	}
	// Razorpay unavailable when the payment is fetched: nothing credited,
	// the customer is told; the same callback later succeeds.
	f.FailNext(razorpaytest.RouteFetchPayment, http.StatusInternalServerError, "SERVER_ERROR", "down")
	if st, body, _ := razorpayPost(good); st < 500 || !strings.Contains(body, "Razorpay was unavailable") {
		t.Fatalf("callback with Razorpay down: %d\n%s", st, body)
	}
	if st, _, loc := razorpayPost(good); st != http.StatusSeeOther || loc != "/dashboard/balance?done=purchased" {
		t.Fatalf("callback: %d %q", st, loc)
	}
	if p, _ := f.Payment(resp.PaymentID); p.Status != razorpay.PaymentCaptured || f.Calls(razorpaytest.RouteFetchPayment) < 2 || f.Calls(razorpaytest.RouteCapture) != 1 {
		t.Fatalf("the payment was not fetched and captured: %+v", p)
	}
	if got := balanceOf(t, b); got != "550.00" {
		t.Fatalf("balance %s after paying 500 on a %s balance", got, before)
	}
	// A replay (the browser's back button, a second tab) credits nothing more.
	if st, _, loc := razorpayPost(good); st != http.StatusSeeOther || loc != "/dashboard/balance?done=purchased" {
		t.Fatalf("replayed callback: %d %q", st, loc)
	}
	if got := balanceOf(t, b); got != "550.00" {
		t.Fatalf("balance %s after a replayed callback", got)
	}

	// A declined card: Razorpay posts error fields; the page shows
	// Razorpay's own reason (fetched), never the posted text.
	_, fields = liveCheckoutForm(t, b, "250")
	failed := fields.Get("order_id")
	r2, _, _ := f.Pay(failed, razorpay.PaymentFailed)
	st, body, _ := razorpayPost(url.Values{"error[code]": {"BAD_REQUEST_ERROR"}, "error[description]": {"<script>alert(1)</script> call +1-555"},
		"error[metadata][order_id]": {failed}, "error[metadata][payment_id]": {r2.PaymentID}})
	if st != http.StatusPaymentRequired || !strings.Contains(body, "declined") || strings.Contains(body, "555") || strings.Contains(body, "<script>") {
		t.Fatalf("failed payment: %d\n%s", st, body)
	}
	if got := balanceOf(t, b); got != "550.00" {
		t.Fatalf("balance %s after a failed payment", got)
	}

	// Error fields posted for a payment Razorpay reports captured (the
	// browser lost the success): the fetched payment decides, credited once.
	_, fields = liveCheckoutForm(t, b, "100")
	late := fields.Get("order_id")
	r3, _, _ := f.Pay(late, razorpay.PaymentCaptured)
	lost := url.Values{"error[code]": {"GATEWAY_ERROR"}, "error[metadata][order_id]": {late}, "error[metadata][payment_id]": {r3.PaymentID}}
	for range 2 {
		if st, _, loc := razorpayPost(lost); st != http.StatusSeeOther || loc != "/dashboard/balance?done=purchased" {
			t.Fatalf("captured payment behind error fields: %d %q", st, loc)
		}
	}
	if got := balanceOf(t, b); got != "650.00" {
		t.Fatalf("balance %s after a captured payment reported as an error, want 650.00", got)
	}

	// Another customer's order paid with Asha's payment: the signature
	// binds the payment to its order, so the post is refused.
	eve := newFormClient(t, g.base)
	eve.submit("/dashboard/signup", "/dashboard/signup", url.Values{"name": {"Eve"}, "email": {"eve@example.com"}, "password": {"correct horse battery"}})
	_, ef := liveCheckoutForm(t, eve, "100")
	if st, _, _ := razorpayPost(url.Values{"razorpay_order_id": {ef.Get("order_id")}, "razorpay_payment_id": {resp.PaymentID}, "razorpay_signature": {resp.Signature}}); st != http.StatusBadRequest {
		t.Fatalf("Asha's payment posted for Eve's order: %d, want 400", st)
	}
	if got := balanceOf(t, eve); got != "50.00" {
		t.Fatalf("Eve's balance %s", got)
	}
	if st, _, _ := razorpayPost(url.Values{"razorpay_order_id": {"order_Nope0000000000"}, "razorpay_payment_id": {resp.PaymentID}, "razorpay_signature": {resp.Signature}}); st != http.StatusNotFound {
		t.Fatalf("unknown order: %d, want 404", st)
	}
}

// Without -public-url a live gateway's dashboard sells no credits (there is
// no address for Razorpay to return to) and says so.
func TestDashboardLiveCheckoutNeedsPublicURL(t *testing.T) {
	g, f := startLive(t)
	b := newFormClient(t, g.base)
	b.submit("/dashboard/signup", "/dashboard/signup", url.Values{"name": {"Asha"}, "email": {"asha@example.com"}, "password": {"correct horse battery"}})
	st, body, _ := b.submit("/dashboard/credits", "/dashboard/credits", url.Values{"amount": {"500"}})
	if st != http.StatusBadRequest || !strings.Contains(body, "-public-url") || f.Calls(razorpaytest.RouteCreateOrder) != 0 {
		t.Fatalf("purchase without -public-url: %d\n%s", st, body)
	}
}

// TestDashboardUnsignedCallbackThrottled: the callback's unsigned failure
// posts make the gateway ask Razorpay about the payment, and anyone who
// knows an order id can send them; past unsignedCallbacksPerHour from one
// address they are refused (429) without a call to Razorpay, and nothing is
// credited either way.
func TestDashboardUnsignedCallbackThrottled(t *testing.T) {
	g, f := startLive(t, "-public-url", "https://forii.test/")
	b := newFormClient(t, g.base)
	if st, _, _ := b.submit("/dashboard/signup", "/dashboard/signup", url.Values{"name": {"Asha"}, "email": {"asha@example.com"}, "password": {"correct horse battery"}}); st != http.StatusSeeOther {
		t.Fatalf("sign up: %d", st)
	}
	before := balanceOf(t, b)
	_, fields := liveCheckoutForm(t, b, "250")
	order := fields.Get("order_id")
	r, _, err := f.Pay(order, razorpay.PaymentFailed)
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"error[code]": {"BAD_REQUEST_ERROR"}, "error[metadata][order_id]": {order}, "error[metadata][payment_id]": {r.PaymentID}}
	attacker := newFormClient(t, g.base)
	refusedAt := 0
	for i := 1; i <= unsignedCallbacksPerHour+5; i++ {
		st, body, _ := attacker.send("POST", checkoutCallbackPath, form)
		if st == http.StatusTooManyRequests {
			if !strings.Contains(body, "at most 30 an hour") {
				t.Fatalf("refusal page does not name the limit:\n%s", body)
			}
			refusedAt = i
			break
		}
		if st != http.StatusPaymentRequired {
			t.Fatalf("post %d: %d\n%s", i, st, body)
		}
	}
	if refusedAt == 0 || refusedAt > unsignedCallbacksPerHour+1 {
		t.Fatalf("unsigned callbacks refused at post %d, want by %d", refusedAt, unsignedCallbacksPerHour+1)
	}
	fetches := f.Calls(razorpaytest.RouteFetchPayment)
	for range 5 {
		if st, _, _ := attacker.send("POST", checkoutCallbackPath, form); st != http.StatusTooManyRequests {
			t.Fatalf("post past the limit: %d, want 429", st)
		}
	}
	if got := f.Calls(razorpaytest.RouteFetchPayment); got != fetches {
		t.Fatalf("refused posts still asked Razorpay: %d fetches, then %d", fetches, got)
	}
	if fetches > unsignedCallbacksPerHour {
		t.Fatalf("%d fetches for unsigned posts, want at most %d", fetches, unsignedCallbacksPerHour)
	}
	if got := balanceOf(t, b); got != before {
		t.Fatalf("balance %s after declined-payment posts, want %s", got, before)
	}
}
