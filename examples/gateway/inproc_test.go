package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
	"github.com/keyledger/keyledger/examples/internal/e2e"
)

// inproc is a gateway built in-process (newServer on a SQLite file in a
// temporary directory) and driven through its http.Handler, without a
// listener: the harness of the route fuzz targets, the cross-tenant test
// and the load test.
type inproc struct {
	s *server
	h http.Handler
}

// newInproc builds the gateway with its defaults (simulated model, built-in
// catalog, the documented Razorpay test secrets), logging to logs at debug
// level. It closes at cleanup, flushing usage.
func newInproc(tb testing.TB, logs io.Writer) *inproc {
	tb.Helper()
	return newInprocAt(tb, logs, time.Now)
}

// newInprocAt is newInproc on a clock (rate limits and throttles follow
// it; a fake clock keeps their budgets from refilling while a test runs).
func newInprocAt(tb testing.TB, logs io.Writer, now func() time.Time) *inproc {
	tb.Helper()
	c := config{db: filepath.Join(tb.TempDir(), "gw.db"), rzpKeyID: defaultRazorpayKeyID,
		rzpSecret: defaultRazorpaySecret, rzpWebhook: defaultRazorpayWebhookSecret}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, closeAll, err := newServer(context.Background(), c, log, now, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := closeAll(context.Background()); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return &inproc{s: s, h: s.handler()}
}

// serve sends one request to the handler (see e2e.Serve).
func (g *inproc) serve(method, path, rawQuery, auth string, body []byte, headers ...string) *httptest.ResponseRecorder {
	return e2e.Serve(g.h, method, path, rawQuery, auth, body, headers...)
}

// must sends a request with a bearer credential and a JSON body, checks
// the status and decodes the JSON answer.
func (g *inproc) must(tb testing.TB, want int, method, path, bearer, body string) map[string]any {
	tb.Helper()
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	auth := ""
	if bearer != "" {
		auth = "Bearer " + bearer
	}
	rec := g.serve(method, path, "", auth, b)
	if rec.Code != want {
		tb.Fatalf("%s %s: %d, want %d: %s", method, path, rec.Code, want, rec.Body)
	}
	var m map[string]any
	dec := json.NewDecoder(rec.Body)
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		tb.Fatalf("%s %s: %v: %s", method, path, err, rec.Body)
	}
	return m
}

// tenant is an account with everything the management routes act on: two
// sessions, two keys, a paid order with its invoice and an unpaid order.
type tenant struct {
	id, password, token, spareToken   string
	key, keyID, spareKey, spareKeyID  string
	paidOrderID, paymentID, invoiceID string
	openOrderID                       string
}

// newTenant signs up an Enterprise account (no rate limits) with ₹100,000
// of credits and creates its sessions, keys, orders and invoice.
func (g *inproc) newTenant(tb testing.TB, name string) tenant {
	tb.Helper()
	ctx := context.Background()
	t := tenant{password: "pw-" + name + "-correct horse battery"}
	email := strings.ToLower(name) + "@example.com"
	a, err := g.s.kl.Signup(ctx, account.CreateParams{Name: name, Email: email, Password: account.Secret(t.password),
		Plan: "enterprise", TimeZone: accountTimeZone})
	if err != nil {
		tb.Fatal(err)
	}
	t.id = a.ID
	if _, err := g.s.kl.Credits.Grant(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.AmountFromInt(100_000),
		IdempotencyKey: "test-grant"}); err != nil {
		tb.Fatal(err)
	}
	for _, tok := range []*string{&t.token, &t.spareToken} {
		s, _, err := g.s.kl.Accounts.Login(ctx, email, account.Secret(t.password))
		if err != nil {
			tb.Fatal(err)
		}
		*tok = s.Reveal()
	}
	for _, k := range []struct{ raw, id *string }{{&t.key, &t.keyID}, {&t.spareKey, &t.spareKeyID}} {
		raw, key, err := g.s.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k", Type: "sdk"})
		if err != nil {
			tb.Fatal(err)
		}
		*k.raw, *k.id = raw.Reveal(), key.ID
	}
	base := "/v1/accounts/" + t.id
	t.paidOrderID = g.must(tb, 201, "POST", base+"/credits", t.token, `{"amount_inr":100}`)["order_id"].(string)
	t.paymentID = "pay_" + strings.TrimPrefix(t.paidOrderID, "order_") // a valid id, unique per order
	vb, _ := json.Marshal(verifyBody(t.paidOrderID, t.paymentID, defaultRazorpaySecret))
	t.invoiceID = g.must(tb, 200, "POST", base+"/credits/verify", t.token, string(vb))["invoice_id"].(string)
	t.openOrderID = g.must(tb, 201, "POST", base+"/credits", t.token, `{"amount_inr":250}`)["order_id"].(string)
	return t
}

// signedWebhook is a payment.captured event for an order, signed with the
// webhook secret.
func signedWebhook(orderID, paymentID string, paise razorpay.Paise) (body []byte, signature string) {
	ev := razorpay.NewPaymentCapturedEvent(razorpay.Payment{ID: paymentID, Entity: "payment", Amount: paise, Currency: "INR",
		Status: razorpay.PaymentCaptured, OrderID: orderID, Captured: true, CreatedAt: time.Now().Unix()}, time.Now())
	body, _ = json.Marshal(ev)
	return body, razorpay.SignWebhook(body, defaultRazorpayWebhookSecret)
}
