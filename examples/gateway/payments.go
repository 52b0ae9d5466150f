package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
)

// paymentsAPI is Razorpay's REST API as the gateway uses it when it runs
// with a real key id (razorpay.Client; tests point it at razorpaytest).
// In demo mode it is nil and the Simulator plays Razorpay.
type paymentsAPI interface {
	razorpay.OrderCreator
	FetchPayment(ctx context.Context, paymentID string) (razorpay.Payment, error)
	CapturePayment(ctx context.Context, paymentID string, amount razorpay.Paise, currency string) (razorpay.Payment, error)
	CreateCustomer(ctx context.Context, req razorpay.CustomerRequest) (razorpay.Customer, error)
	CreateRecurringPayment(ctx context.Context, req razorpay.RecurringRequest) (razorpay.CheckoutResponse, error)
}

var _ paymentsAPI = (*razorpay.Client)(nil)

// Errors of the payment flows.
var (
	errPaymentPending  = errors.New("gateway: payment not captured yet")
	errNoPaymentMethod = errors.New("gateway: no saved payment method")
)

// paymentFailedError is a payment Razorpay reports failed; its message is
// Razorpay's description for the customer.
type paymentFailedError struct{ code, description string }

func (e *paymentFailedError) Error() string {
	return "gateway: payment failed: " + e.code + ": " + e.description
}

// customerFor returns the account's Razorpay customer, creating it (with
// fail_existing=0, so a lost answer is not a duplicate) on first use.
func (s *server) customerFor(ctx context.Context, acct string) (customerRow, error) {
	c, err := s.bill.customer(ctx, acct)
	if err == nil && c.CustomerID != "" || err != nil && !errors.Is(err, errNotFound) {
		return c, err
	}
	a, err := s.kl.Accounts.Get(ctx, acct)
	if err != nil {
		return c, err
	}
	cu, err := s.live.CreateCustomer(ctx, razorpay.CustomerRequest{Name: a.Name, Email: a.Email, FailExisting: "0",
		Notes: map[string]string{"account_id": acct}})
	if err != nil {
		return c, err
	}
	return s.bill.saveCustomer(ctx, acct, cu.ID)
}

// confirmPayment checks a payment of order o with Razorpay itself, whatever
// the browser or a signature said: the payment must be of this order, for
// its amount and currency, and captured (an authorized payment is captured
// here). A failed payment is recorded and returned as a
// *paymentFailedError. A payment that saved a recurring token saves it for
// auto-recharge.
func (s *server) confirmPayment(ctx context.Context, o order, paymentID string) (razorpay.Payment, error) {
	p, err := s.live.FetchPayment(ctx, paymentID)
	if err != nil {
		return p, err
	}
	if err := p.Matches(o.razorpay()); err != nil {
		return p, err
	}
	switch p.Status {
	case razorpay.PaymentCaptured:
	case razorpay.PaymentAuthorized:
		cp, err := s.live.CapturePayment(ctx, p.ID, p.Amount, p.Currency)
		if err != nil && errors.Is(err, razorpay.ErrRejected) {
			// Captured meanwhile (auto-capture, another instance)? Ask again.
			if again, ferr := s.live.FetchPayment(ctx, paymentID); ferr == nil && again.Status == razorpay.PaymentCaptured {
				cp, err = again, nil
			}
		}
		if err != nil {
			return p, err
		}
		if cp.Status != razorpay.PaymentCaptured {
			return p, errPaymentPending
		}
		p = cp
	case razorpay.PaymentFailed:
		return p, s.paymentFailed(ctx, o, p)
	default: // created: the customer has not finished
		return p, errPaymentPending
	}
	if p.TokenID != "" && p.CustomerID != "" {
		if err := s.bill.saveToken(ctx, o.AccountID, p.CustomerID, p.TokenID); err != nil {
			return p, err
		}
	}
	return p, nil
}

// paymentFailed records a failed payment of o and returns the error the
// customer sees.
func (s *server) paymentFailed(ctx context.Context, o order, p razorpay.Payment) error {
	code, desc := p.ErrorCode, p.ErrorDescription
	if desc == "" {
		desc = "The payment failed."
	}
	if err := s.bill.recordFailure(ctx, paymentFailure{PaymentID: p.ID, OrderID: o.ID, AccountID: o.AccountID,
		Code: truncate(code, 64), Description: truncate(desc, 300), CreatedAt: s.now()}); err != nil {
		return err
	}
	return &paymentFailedError{code: code, description: truncate(desc, 300)}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// rechargeLive charges the account's saved token through Razorpay's
// recurring payments: a new order (the crossing's idempotency key is its
// receipt, so a repeated call reuses it), the recurring payment, and the
// payment confirmed with Razorpay. A failure is recorded for the customer
// (GET /v1/accounts/{id}/auto_recharge shows it) and returned, so the
// ledger counts the recharge as failed and credits nothing.
func (s *server) rechargeLive(ctx context.Context, req credits.RechargeRequest) (order, error) {
	o, err := s.chargeSaved(ctx, req)
	if err != nil {
		msg := "Auto-recharge failed: " + customerMessage(err)
		if rerr := s.bill.setRechargeError(ctx, req.AccountID, msg, s.now()); rerr != nil {
			return o, errors.Join(err, rerr)
		}
		return o, err
	}
	return o, s.bill.setRechargeError(ctx, req.AccountID, "", s.now())
}

func (s *server) chargeSaved(ctx context.Context, req credits.RechargeRequest) (order, error) {
	c, err := s.bill.customer(ctx, req.AccountID)
	if errors.Is(err, errNotFound) || (err == nil && c.TokenID == "") {
		return order{}, errNoPaymentMethod
	}
	if err != nil {
		return order{}, err
	}
	o, err := s.bill.orderByReceipt(ctx, req.AccountID, req.IdempotencyKey)
	if errors.Is(err, errNotFound) {
		paise, perr := razorpay.CheckAmount(req.Amount.Decimal(), 0)
		if perr != nil {
			return order{}, perr
		}
		o, err = s.newOrder(ctx, req.AccountID, paise, req.IdempotencyKey)
	}
	if err != nil || o.Status == "paid" {
		return o, err
	}
	a, err := s.kl.Accounts.Get(ctx, req.AccountID)
	if err != nil {
		return o, err
	}
	resp, err := s.live.CreateRecurringPayment(ctx, razorpay.RecurringRequest{Email: a.Email, Amount: o.Amount, Currency: o.Currency,
		OrderID: o.ID, CustomerID: c.CustomerID, Token: c.TokenID, Description: "Forii auto-recharge"})
	if err != nil {
		return o, err
	}
	p, err := s.confirmPayment(ctx, o, resp.PaymentID)
	if err != nil {
		return o, err
	}
	if err := s.bill.markPaid(ctx, o.ID, p.ID, "", s.now()); err != nil {
		return o, err
	}
	o.Status, o.PaymentID = "paid", p.ID
	return o, nil
}

// customerMessage is what a customer is told about a failed charge.
func customerMessage(err error) string {
	var pf *paymentFailedError
	switch {
	case errors.As(err, &pf):
		return pf.description
	case errors.Is(err, errNoPaymentMethod):
		return "no saved payment method: buy credits once with Razorpay Checkout to save one."
	case errors.Is(err, errPaymentPending):
		return "the payment is pending with the bank; it is credited when Razorpay confirms it."
	case errors.Is(err, razorpay.ErrUnavailable):
		return "Razorpay was unavailable; the next threshold crossing retries."
	case errors.Is(err, razorpay.ErrRejected):
		return "Razorpay declined the charge of the saved payment method."
	}
	return "internal error."
}

// refund takes back the credits of a processed refund, once per refund id
// (the ledger entry's idempotency key). Credits already spent make the
// adjustment fail with credits.ErrInsufficientFunds beyond the overdraft;
// the refund is then recorded without an entry and logged for an operator.
func (s *server) refund(ctx context.Context, o order, rf razorpay.Refund) error {
	row := refundRow{RefundID: rf.ID, PaymentID: rf.PaymentID, OrderID: o.ID, AccountID: o.AccountID, Amount: rf.Amount, CreatedAt: s.now()}
	e, err := s.kl.Credits.Adjust(ctx, credits.CreditParams{AccountID: o.AccountID, Amount: credits.NewAmount(rf.Amount.INR().Neg()),
		Reference: rf.ID, Description: "Razorpay refund " + rf.ID + " of payment " + rf.PaymentID, IdempotencyKey: "razorpay-refund:" + rf.ID})
	switch {
	case errors.Is(err, credits.ErrInsufficientFunds):
		s.log.WarnContext(ctx, "razorpay refund exceeds the remaining credits; recorded without a ledger entry",
			"account_id", o.AccountID, "refund_id", rf.ID)
	case err != nil:
		return err
	default:
		row.EntryID = e.ID
	}
	return s.bill.recordRefund(ctx, row)
}

// GET /v1/accounts/{id}/payments: failed payments and refunds, newest
// first (purchases are the ledger's purchase entries and the invoices).
func (s *server) listPayments(w http.ResponseWriter, r *http.Request, acct string) error {
	limit, err := parseLimit(r.URL.Query().Get("limit"))
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = 100
	}
	evs, err := s.bill.paymentEvents(r.Context(), acct, limit)
	if err != nil {
		return err
	}
	type evJSON struct {
		Type        string         `json:"type"`
		ID          string         `json:"id"`
		PaymentID   string         `json:"payment_id"`
		OrderID     string         `json:"order_id"`
		AmountINR   openai.Decimal `json:"amount_inr"`
		ErrorCode   string         `json:"error_code,omitempty"`
		Description string         `json:"description,omitempty"`
		EntryID     string         `json:"transaction_id,omitempty"`
		Created     string         `json:"created"`
	}
	out := struct {
		Data []evJSON `json:"data"`
	}{Data: make([]evJSON, 0, len(evs))}
	for _, e := range evs {
		out.Data = append(out.Data, evJSON{Type: e.Type, ID: e.ID, PaymentID: e.PaymentID, OrderID: e.OrderID, AmountINR: inr(e.Amount),
			ErrorCode: e.Code, Description: e.Description, EntryID: e.EntryID, Created: rfc3339(e.CreatedAt)})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// checkLiveFlags refuses a real key id with the demo secrets.
func checkLiveFlags(keyID, secret, webhook string) error {
	if keyID == defaultRazorpayKeyID {
		return nil
	}
	same := func(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
	if same(secret, defaultRazorpaySecret) || same(webhook, defaultRazorpayWebhookSecret) {
		return fmt.Errorf("-razorpay-key-id %s needs its own -razorpay-secret and -razorpay-webhook-secret", keyID)
	}
	return nil
}
