// Package razorpaytest is a fake of Razorpay's REST API for tests: an
// httptest server that keeps orders, payments, customers and tokens in
// memory, answers with the documented entities and error envelope
// ({"error":{"code":"BAD_REQUEST_ERROR",…}}), checks Basic auth, and can be
// told to fail (4xx, 5xx) or stall (timeouts) on a route. Checkout itself
// is played by Pay, which signs the response as Razorpay does.
package razorpaytest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
)

// Routes, as passed to FailNext, Stall and Calls.
const (
	RouteCreateOrder     = "POST /v1/orders"
	RouteFetchPayment    = "GET /v1/payments/{id}"
	RouteCapture         = "POST /v1/payments/{id}/capture"
	RouteCreateCustomer  = "POST /v1/customers"
	RouteCreateRecurring = "POST /v1/payments/create/recurring"
)

type failure struct {
	status      int
	code, descr string
}

// Fake is the fake API. Its methods are safe for concurrent use.
type Fake struct {
	KeyID, Secret string
	srv           *httptest.Server

	mu        sync.Mutex
	orders    map[string]*razorpay.Order
	orderCust map[string]string
	payments  map[string]*razorpay.Payment
	customers map[string]razorpay.Customer // by email
	tokens    map[string]string            // token -> customer id
	fail      map[string][]failure
	stall     map[string]time.Duration
	calls     map[string]int
	recurring string // status of the next recurring payments
}

// New starts a fake for keyID/secret, closed at the test's end.
func New(tb testing.TB, keyID, secret string) *Fake {
	f := &Fake{KeyID: keyID, Secret: secret, orders: map[string]*razorpay.Order{}, orderCust: map[string]string{},
		payments: map[string]*razorpay.Payment{}, customers: map[string]razorpay.Customer{}, tokens: map[string]string{},
		fail: map[string][]failure{}, stall: map[string]time.Duration{}, calls: map[string]int{}, recurring: razorpay.PaymentCaptured}
	mux := http.NewServeMux()
	for route, h := range map[string]func(http.ResponseWriter, *http.Request) (int, any){
		RouteCreateOrder: f.createOrder, RouteFetchPayment: f.fetchPayment, RouteCapture: f.capture,
		RouteCreateCustomer: f.createCustomer, RouteCreateRecurring: f.createRecurring,
	} {
		mux.HandleFunc(route, f.wrap(route, h))
	}
	f.srv = httptest.NewServer(mux)
	tb.Cleanup(f.srv.Close)
	return f
}

// URL is the API base to pass as -razorpay-api.
func (f *Fake) URL() string { return f.srv.URL }

// FailNext makes the next call of route answer status with Razorpay's
// error envelope (code e.g. "BAD_REQUEST_ERROR", "SERVER_ERROR").
func (f *Fake) FailNext(route string, status int, code, description string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[route] = append(f.fail[route], failure{status, code, description})
}

// Stall makes every call of route wait d before answering (0 stops it).
func (f *Fake) Stall(route string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stall[route] = d
}

// Calls counts the calls of route.
func (f *Fake) Calls(route string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[route]
}

// SetRecurringOutcome sets the status of the next recurring payments:
// razorpay.PaymentCaptured (default) or razorpay.PaymentFailed.
func (f *Fake) SetRecurringOutcome(status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recurring = status
}

// Payment returns a stored payment.
func (f *Fake) Payment(id string) (razorpay.Payment, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.payments[id]
	if !ok {
		return razorpay.Payment{}, false
	}
	return *p, true
}

// Pay plays Checkout for an order: it stores a payment in status
// (captured, authorized or failed) and returns the signed checkout
// response. A payment of an order with a customer saves a token, as a
// recurring=1 checkout does.
func (f *Fake) Pay(orderID, status string) (razorpay.CheckoutResponse, razorpay.Payment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.orders[orderID]
	if !ok {
		return razorpay.CheckoutResponse{}, razorpay.Payment{}, fmt.Errorf("razorpaytest: no order %s", orderID)
	}
	p := f.newPayment(o, status)
	if cust := f.orderCust[orderID]; cust != "" && status != razorpay.PaymentFailed {
		tok := newID("token_")
		f.tokens[tok] = cust
		p.CustomerID, p.TokenID = cust, tok
	}
	return razorpay.CheckoutResponse{PaymentID: p.ID, OrderID: o.ID, Signature: razorpay.SignPayment(o.ID, p.ID, f.Secret)}, *p, nil
}

// newPayment stores a payment of o in status; f.mu is held.
func (f *Fake) newPayment(o *razorpay.Order, status string) *razorpay.Payment {
	p := &razorpay.Payment{ID: newID("pay_"), Entity: "payment", Amount: o.Amount, Currency: o.Currency, Status: status,
		OrderID: o.ID, Method: "card", Captured: status == razorpay.PaymentCaptured, CreatedAt: time.Now().Unix()}
	if status == razorpay.PaymentFailed {
		p.ErrorCode, p.ErrorReason, p.ErrorDescription = "BAD_REQUEST_ERROR", "payment_failed", "Payment failed because the card was declined."
	}
	o.Attempts++
	if status == razorpay.PaymentCaptured {
		o.Status, o.AmountPaid, o.AmountDue = razorpay.OrderPaid, o.Amount, 0
	} else {
		o.Status = razorpay.OrderAttempted
	}
	f.payments[p.ID] = p
	return p
}

func (f *Fake) wrap(route string, h func(http.ResponseWriter, *http.Request) (int, any)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.calls[route]++
		d := f.stall[route]
		var fl *failure
		if q := f.fail[route]; len(q) > 0 {
			fl, f.fail[route] = &q[0], q[1:]
		}
		f.mu.Unlock()
		if d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if fl != nil {
			writeErr(w, fl.status, fl.code, fl.descr)
			return
		}
		if id, secret, ok := r.BasicAuth(); !ok || id != f.KeyID || subtle.ConstantTimeCompare([]byte(secret), []byte(f.Secret)) != 1 {
			writeErr(w, http.StatusUnauthorized, "BAD_REQUEST_ERROR", "Authentication failed")
			return
		}
		status, body := h(w, r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
}

func writeErr(w http.ResponseWriter, status int, code, descr string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": code, "description": descr, "source": "NA", "step": "NA", "reason": "NA", "metadata": map[string]any{}}})
}

func bad(descr, field string) (int, any) {
	return http.StatusBadRequest, map[string]any{"error": map[string]any{"code": "BAD_REQUEST_ERROR", "description": descr, "field": field}}
}

func (f *Fake) createOrder(_ http.ResponseWriter, r *http.Request) (int, any) {
	var in razorpay.OrderRequest
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		return bad("The request body is not valid JSON", "")
	}
	if in.Amount < razorpay.MinAmount {
		return bad("The amount must be atleast INR 1.00", "amount")
	}
	if in.Currency != razorpay.Currency {
		return bad("The currency is invalid", "currency")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if in.CustomerID != "" && !f.knownCustomer(in.CustomerID) {
		return bad("The id provided does not exist", "customer_id")
	}
	o := &razorpay.Order{ID: newID("order_"), Entity: "order", Amount: in.Amount, AmountDue: in.Amount, Currency: in.Currency,
		Receipt: in.Receipt, Status: razorpay.OrderCreated, Notes: in.Notes, CreatedAt: time.Now().Unix()}
	f.orders[o.ID] = o
	f.orderCust[o.ID] = in.CustomerID
	return http.StatusOK, o
}

func (f *Fake) knownCustomer(id string) bool {
	for _, c := range f.customers {
		if c.ID == id {
			return true
		}
	}
	return false
}

func (f *Fake) fetchPayment(_ http.ResponseWriter, r *http.Request) (int, any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.payments[r.PathValue("id")]
	if !ok {
		return bad("The id provided does not exist", "")
	}
	return http.StatusOK, p
}

func (f *Fake) capture(_ http.ResponseWriter, r *http.Request) (int, any) {
	var in struct {
		Amount   razorpay.Paise `json:"amount"`
		Currency string         `json:"currency"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		return bad("The request body is not valid JSON", "")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.payments[r.PathValue("id")]
	switch {
	case !ok:
		return bad("The id provided does not exist", "")
	case p.Status != razorpay.PaymentAuthorized:
		return bad("This payment has already been captured", "")
	case in.Amount != p.Amount || in.Currency != p.Currency:
		return bad("Capture amount must be equal to the amount authorized", "amount")
	}
	p.Status, p.Captured = razorpay.PaymentCaptured, true
	if o := f.orders[p.OrderID]; o != nil {
		o.Status, o.AmountPaid, o.AmountDue = razorpay.OrderPaid, o.Amount, 0
	}
	return http.StatusOK, p
}

func (f *Fake) createCustomer(_ http.ResponseWriter, r *http.Request) (int, any) {
	var in razorpay.CustomerRequest
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		return bad("The request body is not valid JSON", "")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.customers[in.Email]; ok {
		if in.FailExisting == "0" {
			return http.StatusOK, c
		}
		return bad("Customer already exists for the merchant", "")
	}
	c := razorpay.Customer{ID: newID("cust_"), Entity: "customer", Name: in.Name, Email: in.Email}
	f.customers[in.Email] = c
	return http.StatusOK, c
}

func (f *Fake) createRecurring(_ http.ResponseWriter, r *http.Request) (int, any) {
	var in razorpay.RecurringRequest
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		return bad("The request body is not valid JSON", "")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.orders[in.OrderID]
	switch {
	case !ok:
		return bad("The id provided does not exist", "order_id")
	case o.Status == razorpay.OrderPaid:
		return bad("Order has already been paid", "order_id")
	case !f.knownToken(in.Token, in.CustomerID):
		return bad("The token provided does not exist", "token")
	case in.Amount != o.Amount || in.Recurring != "1":
		return bad("The amount must match the order", "amount")
	}
	p := f.newPayment(o, f.recurring)
	p.CustomerID, p.TokenID = in.CustomerID, in.Token
	return http.StatusOK, map[string]string{"razorpay_payment_id": p.ID, "razorpay_order_id": o.ID,
		"razorpay_signature": razorpay.SignPayment(o.ID, p.ID, f.Secret)}
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func newID(prefix string) string {
	b := make([]byte, 14)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = base62[int(b[i])%62]
	}
	return prefix + string(b)
}

// knownToken reports whether token was saved for customer (compared in
// constant time, as a real API would compare secrets).
func (f *Fake) knownToken(token, customer string) bool {
	for t, c := range f.tokens {
		if subtle.ConstantTimeCompare([]byte(t), []byte(token)) == 1 {
			return c != "" && c == customer
		}
	}
	return false
}
