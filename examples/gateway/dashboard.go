package main

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/dashboard"
	"github.com/keyledger/keyledger/examples/gateway/internal/invoice"
	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
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

// StartPurchase creates a Razorpay order. The gateway's checkout is
// simulated: the Simulator "pays" the order and the form carries the signed
// checkout response that Razorpay Checkout would post, which
// CompletePurchase verifies on the production path.
func (d *dashBilling) StartPurchase(ctx context.Context, acct string, a credits.Amount) (dashboard.Checkout, error) {
	if d.s.rzpSim == nil {
		return dashboard.Checkout{}, &dashboard.UserError{Message: "Buy credits with Razorpay Checkout through the API: POST /v1/accounts/{id}/credits, then POST …/credits/verify with Checkout's response. The dashboard's checkout is the demo's simulated one."}
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
