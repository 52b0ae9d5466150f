package main

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/dashboard"
	"github.com/keyledger/keyledger/examples/gateway/internal/invoice"
	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
	"github.com/keyledger/keyledger/ratelimit"
)

// dashboardPath is where the gateway mounts the customer dashboard.
const dashboardPath = "/dashboard"

// newDashboard is the customer dashboard of the gateway: keyledger
// sessions, Forii branding, the catalog's models, and buying credits and
// invoices through the gateway's Razorpay orders and GST invoices. An
// empty csrfSecret gives a random one (one instance); secureCookies marks
// its cookies Secure on plain HTTP too (behind a TLS-terminating proxy).
func (s *server) newDashboard(csrfSecret []byte, secureCookies bool) (*dashboard.Handler, error) {
	db := &dashBilling{s: s}
	o := &dashboard.Options{
		BasePath: dashboardPath, ProductName: "Forii", Currency: "INR", TimeZone: accountTimeZone,
		Payments: db, Invoices: db, BillingDetails: db, Now: s.now, Logger: s.log, SecureCookies: secureCookies,
		Throttle: s.throttle, ClientAddr: s.clientAddr, VerifySignups: s.verify,
		Slots: dashSlots{b: s.bill}, // a new key's page works on any instance
		KeyTypeNotes: map[string]string{
			"sdk": "forii_sk_… keys for inference only",
			"api": "forii_… keys for inference and for managing the account through the API",
		},
	}
	if len(csrfSecret) > 0 {
		o.CSRFSecret = csrfSecret
	}
	return dashboard.New(s.kl, o)
}

// dashBilling adapts the gateway's Razorpay orders and invoices to the
// dashboard's hooks.
type dashBilling struct{ s *server }

var (
	_ dashboard.Payments = (*dashBilling)(nil)
	_ dashboard.Invoices = (*dashBilling)(nil)
)

// CheckAmount applies Razorpay's limits (₹1 to ₹5,00,000 in whole paise).
func (d *dashBilling) CheckAmount(a credits.Amount) error {
	_, err := razorpay.CheckAmount(a.Decimal(), 0)
	return publicError(err)
}

// publicError turns the errors a person can fix into dashboard messages;
// a *requestError of the API (a 400) becomes a *dashboard.UserError too.
func publicError(err error) error {
	if err == nil {
		return nil
	}
	var re *requestError
	switch e := classify(err); {
	case errors.As(err, &re):
		return &dashboard.UserError{Message: re.msg}
	case errors.Is(err, errNotFound):
		return dashboard.ErrNotFound
	case e.status == http.StatusBadRequest:
		if errors.Is(err, razorpay.ErrAmountTooSmall) || errors.Is(err, razorpay.ErrAmountTooLarge) || errors.Is(err, razorpay.ErrInvalidAmount) {
			return &dashboard.UserError{Message: "The amount must be from 1.00 to 500000.00 INR, in whole paise."}
		}
		return &dashboard.UserError{Message: e.message}
	}
	return err
}

// StartPurchase creates a Razorpay order. With a real key id (live mode)
// the order is created through Razorpay's REST API and the form posts to
// Razorpay's hosted checkout, which returns the payment to
// checkoutCallback. In demo mode the checkout is simulated: the Simulator
// "pays" the order and the form carries the signed checkout response that
// Razorpay Checkout would post, which CompletePurchase verifies on the
// production path.
func (d *dashBilling) StartPurchase(ctx context.Context, acct string, a credits.Amount) (dashboard.Checkout, error) {
	if d.s.live != nil {
		return d.liveCheckout(ctx, acct, a)
	}
	paise, err := razorpay.CheckAmount(a.Decimal(), 0)
	if err != nil {
		return dashboard.Checkout{}, publicError(err)
	}
	o, err := d.s.newOrder(ctx, acct, paise, "")
	if err != nil {
		return dashboard.Checkout{}, err
	}
	resp, _, err := d.s.rzpSim.Pay(ctx, o.razorpay())
	if err != nil {
		return dashboard.Checkout{}, err
	}
	return dashboard.Checkout{
		OrderID: o.ID, Amount: credits.NewAmount(o.Amount.INR()),
		Fields: []dashboard.Field{
			{Name: "razorpay_order_id", Value: resp.OrderID},
			{Name: "razorpay_payment_id", Value: resp.PaymentID},
			{Name: "razorpay_signature", Value: resp.Signature},
		},
		Button: "Pay with Razorpay",
		Note:   "Test mode: Razorpay Checkout is simulated (key " + d.s.rzpKeyID + "); no card is charged. The payment is verified by its signature as in production.",
	}, nil
}

// checkoutCallbackPath is where Razorpay's hosted checkout returns the
// browser with the payment (live mode).
const checkoutCallbackPath = dashboardPath + "/razorpay/callback"

// liveCheckout creates the order through Razorpay's Orders API (with the
// account's Razorpay customer, so that the payment saves a token for
// auto-recharge) and returns the hosted checkout form.
func (d *dashBilling) liveCheckout(ctx context.Context, acct string, a credits.Amount) (dashboard.Checkout, error) {
	if d.s.publicURL == "" {
		return dashboard.Checkout{}, &dashboard.UserError{Message: "Buying credits here needs the gateway's -public-url, where Razorpay Checkout returns; meanwhile buy through the API: POST /v1/accounts/{id}/credits, then POST …/credits/verify with Checkout's response."}
	}
	paise, err := razorpay.CheckAmount(a.Decimal(), 0)
	if err != nil {
		return dashboard.Checkout{}, publicError(err)
	}
	o, err := d.s.newOrder(ctx, acct, paise, "")
	if err != nil {
		return dashboard.Checkout{}, err
	}
	ac, err := d.s.kl.Accounts.Get(ctx, acct)
	if err != nil {
		return dashboard.Checkout{}, err
	}
	f := []dashboard.Field{
		{Name: "key_id", Value: d.s.rzpKeyID},
		{Name: "order_id", Value: o.ID},
		{Name: "amount", Value: strconv.FormatInt(int64(o.Amount), 10)},
		{Name: "currency", Value: o.Currency},
		{Name: "name", Value: "Forii"},
		{Name: "description", Value: "Forii credits"},
		{Name: "prefill[name]", Value: ac.Name},
		{Name: "prefill[email]", Value: ac.Email},
		{Name: "callback_url", Value: d.s.publicURL + checkoutCallbackPath},
		{Name: "cancel_url", Value: d.s.publicURL + dashboardPath + "/credits"},
	}
	if o.CustomerID != "" { // saves a token for auto-recharge
		f = append(f, dashboard.Field{Name: "customer_id", Value: o.CustomerID}, dashboard.Field{Name: "recurring", Value: "1"})
	}
	return dashboard.Checkout{
		OrderID: o.ID, Amount: credits.NewAmount(o.Amount.INR()), Action: d.s.rzpCheckout, Fields: f,
		Button: "Pay with Razorpay",
		Note:   "You pay on Razorpay's page; the credits are added when the gateway has checked the payment with Razorpay.",
	}, nil
}

// checkoutCallback receives the browser back from Razorpay's hosted
// checkout. It has no session (the POST is cross-site) and needs none: the
// signature proves Razorpay signed this order's payment with the key
// secret, the payment is fetched from Razorpay and must be this order's,
// for its amount and captured, and the credits go to the order's own
// account, once (a replay or a forged post changes nothing). Success goes
// on to the balance page; a failure is a short page that says why.
func (s *server) checkoutCallback(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.writeCallbackPage(w, r, http.StatusBadRequest, "The payment response could not be read.")
		return
	}
	f := r.PostForm
	in := razorpay.CheckoutResponse{OrderID: f.Get("razorpay_order_id"), PaymentID: f.Get("razorpay_payment_id"), Signature: f.Get("razorpay_signature")}
	if in.PaymentID == "" && f.Get("error[code]") != "" {
		// Unsigned: the failure is taken from Razorpay itself when the
		// payment is known (and recorded), never from the form's text.
		in.OrderID, in.PaymentID = f.Get("error[metadata][order_id]"), f.Get("error[metadata][payment_id]")
		msg := "The payment was not completed."
		o, err := s.bill.order(r.Context(), in.OrderID)
		if err == nil && o.Status == "paid" && o.PaymentID != "" && o.PaymentID == in.PaymentID { // credited already
			http.Redirect(w, r, dashboardPath+"/balance?done=purchased", http.StatusSeeOther)
			return
		}
		if err == nil && razorpay.ValidPaymentID(in.PaymentID) && o.Status != "paid" {
			// Unsigned, so anyone who knows an order id can post it: each
			// such post costs a call to Razorpay, bounded per address.
			if wait, terr := s.throttleUnsignedCallback(r); terr != nil || wait > 0 {
				s.writeCallbackPage(w, r, http.StatusTooManyRequests, unsignedCallbackRefusal(wait, terr))
				return
			}
			_, err := s.confirmPayment(r.Context(), o, in.PaymentID)
			if err == nil { // Razorpay says it was captured after all: credit it (once, as the webhook would)
				if _, _, err = s.creditOrder(r.Context(), o, in.PaymentID); err == nil {
					http.Redirect(w, r, dashboardPath+"/balance?done=purchased", http.StatusSeeOther)
					return
				}
			}
			msg = "The payment was not completed: " + customerMessage(err)
		}
		s.writeCallbackPage(w, r, http.StatusPaymentRequired, msg)
		return
	}
	if !razorpay.ValidOrderID(in.OrderID) {
		s.writeCallbackPage(w, r, http.StatusBadRequest, "The payment response names no order.")
		return
	}
	o, err := s.bill.order(r.Context(), in.OrderID)
	if err == nil {
		_, _, err = s.completeCheckout(r.Context(), o.AccountID, in)
	}
	if err == nil {
		http.Redirect(w, r, dashboardPath+"/balance?done=purchased", http.StatusSeeOther)
		return
	}
	e := classify(err)
	if e.status >= 500 {
		s.log.ErrorContext(r.Context(), "razorpay checkout callback failed", "order_id", in.OrderID, "error", err)
	}
	msg := e.message
	switch {
	case errors.Is(err, errNotFound):
		msg = "No such order."
	case errors.Is(err, razorpay.ErrInvalidSignature):
		msg = "The payment response is not signed by Razorpay."
	case e.status == http.StatusPaymentRequired || e.status >= 500 || errors.Is(err, errPaymentPending):
		msg = customerMessage(err)
	}
	s.writeCallbackPage(w, r, e.status, msg)
}

// callbackPage is the page of a checkout that did not complete (rare: it
// is parsed when needed).
const callbackPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Payment — Forii</title></head>
<body><main><h1>Payment not completed</h1><p>{{.Message}}</p><p><a href="{{.Back}}">Back to Buy credits</a></p></main></body></html>
`

// unsignedCallbacksPerHour bounds, per client address, the unsigned
// failure posts of the checkout callback that make the gateway ask Razorpay
// about a payment (a customer retrying a declined card posts a few).
const unsignedCallbacksPerHour = 30

// throttleUnsignedCallback charges one unsigned callback to the client's
// address: the wait before the next is allowed, or 0.
func (s *server) throttleUnsignedCallback(r *http.Request) (time.Duration, error) {
	d, err := s.kl.Limiter.Allow(r.Context(), ratelimit.Request{
		Key: "rzp-callback:" + s.clientAddr(r), Limit: ratelimit.Limit{Rate: unsignedCallbacksPerHour, Period: time.Hour}, Cost: 1,
	})
	if err != nil {
		return 0, err
	}
	if d.Allowed {
		return 0, nil
	}
	return min(max(d.RetryAfter(), time.Second), time.Hour), nil
}

// unsignedCallbackRefusal is the page text of a throttled (or unthrottlable)
// unsigned callback.
func unsignedCallbackRefusal(wait time.Duration, err error) string {
	if err != nil {
		return "The payment's status could not be checked right now; your balance page shows it once Razorpay confirms it."
	}
	return fmt.Sprintf("Too many payment responses from your address (at most %d an hour); try again in %s. Your balance page shows the payment once Razorpay confirms it.",
		unsignedCallbacksPerHour, wait.Round(time.Second))
}

func (s *server) writeCallbackPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	t, err := template.New("callback").Parse(callbackPage)
	if err == nil {
		err = t.Execute(w, struct{ Message, Back string }{msg, dashboardPath + "/credits"})
	}
	if err != nil {
		s.log.DebugContext(r.Context(), "writing the checkout callback page failed", "error", err)
	}
}

// CompletePurchase verifies the checkout response and credits the order
// once, with its invoice.
func (d *dashBilling) CompletePurchase(ctx context.Context, acct string, form url.Values) (dashboard.Purchase, error) {
	in := razorpay.CheckoutResponse{OrderID: form.Get("razorpay_order_id"), PaymentID: form.Get("razorpay_payment_id"), Signature: form.Get("razorpay_signature")}
	e, inv, err := d.s.completeCheckout(ctx, acct, in)
	if err != nil {
		return dashboard.Purchase{}, publicError(err)
	}
	return dashboard.Purchase{Amount: e.Amount, TransactionID: e.ID, InvoiceID: inv.ID}, nil
}

// ListInvoices lists the account's GST invoices with their totals.
func (d *dashBilling) ListInvoices(ctx context.Context, acct string) ([]dashboard.Invoice, error) {
	rows, err := d.s.bill.invoices(ctx, acct)
	if err != nil {
		return nil, err
	}
	out := make([]dashboard.Invoice, 0, len(rows))
	for _, v := range rows {
		doc := d.s.invoiceDoc(v)
		t, err := invoice.Compute(doc)
		if err != nil {
			return nil, err
		}
		out = append(out, dashboard.Invoice{ID: v.ID, Number: v.Number, Date: v.CreatedAt, Amount: credits.NewAmount(t.Total),
			Description: doc.Items[0].Description + ", Razorpay payment " + v.PaymentID})
	}
	return out, nil
}

// InvoicePDF renders one of the account's invoices.
func (d *dashBilling) InvoicePDF(ctx context.Context, acct, id string) (string, []byte, error) {
	name, pdf, err := d.s.invoicePDF(ctx, acct, id)
	if errors.Is(err, errNotFound) {
		return "", nil, dashboard.ErrNotFound
	}
	return name, pdf, err
}

// BillingDetails returns the account's GST billing details.
func (d *dashBilling) BillingDetails(ctx context.Context, acct string) (dashboard.BillingDetails, error) {
	b, err := d.s.bill.billingDetailsOf(ctx, acct)
	return dashboard.BillingDetails{LegalName: b.LegalName, TaxID: b.GSTIN, Address: b.Address, StateCode: b.StateCode}, err
}

// SaveBillingDetails validates and saves them as PUT …/billing_details
// does; a validation message is shown on the form.
func (d *dashBilling) SaveBillingDetails(ctx context.Context, acct string, in dashboard.BillingDetails) error {
	b, err := billingDetails{LegalName: in.LegalName, GSTIN: in.TaxID, Address: in.Address, StateCode: in.StateCode}.normalize()
	if err != nil {
		return publicError(err)
	}
	return d.s.bill.saveBillingDetails(ctx, acct, b, d.s.now().UnixNano())
}
