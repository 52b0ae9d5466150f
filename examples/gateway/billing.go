package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/keyledger/keyledger/auditlog"
	"net/http"
	"strings"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/gateway/internal/invoice"
	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
	"github.com/keyledger/keyledger/internal/id"
)

// demoSupplier is the supplier printed on invoices.
func demoSupplier() invoice.Supplier {
	return invoice.Supplier{
		Name: "Forii Demo Gateway (keyledger example)", Address: "12 MG Road\nBengaluru 560001, Karnataka",
		GSTIN: "29AAGCG6253J1Z8", Email: "billing@example.com",
	}
}

func inr(p razorpay.Paise) openai.Decimal { return openai.NewDecimal(p.INR()) }

// POST /v1/accounts/{id}/credits {amount_inr}: a Razorpay order for the
// amount. Prices include GST: the credits bought equal the amount paid, and
// the invoice shows the 18% GST inside it.
func (s *server) createOrder(w http.ResponseWriter, r *http.Request, acct string) error {
	var in struct {
		AmountINR *openai.Decimal `json:"amount_inr"`
	}
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	if in.AmountINR == nil {
		return badRequest("amount_inr is required.")
	}
	paise, err := razorpay.CheckAmount(in.AmountINR.Decimal, 0)
	if err != nil {
		return err
	}
	o, err := s.newOrder(r.Context(), acct, paise, "")
	if err != nil {
		return err
	}
	s.appendAudit(r.Context(), acct, "credits.order_create", auditlog.Target{Type: "order", ID: o.ID},
		auditlog.Change{Field: "amount_inr", After: inr(o.Amount).String()})
	out := map[string]any{
		"order_id": o.ID, "amount_inr": inr(o.Amount), "amount": int64(o.Amount), "currency": razorpay.Currency, "key_id": s.rzpKeyID,
	}
	if s.live != nil { // Checkout options that save a recurring token for auto-recharge
		out["customer_id"], out["recurring"] = o.CustomerID, "1"
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *server) newOrder(ctx context.Context, acct string, paise razorpay.Paise, receipt string) (order, error) {
	req := razorpay.OrderRequest{Amount: paise, Currency: razorpay.Currency, Receipt: receipt, Notes: map[string]string{"account_id": acct}}
	var creator razorpay.OrderCreator = s.rzpSim
	if s.live != nil {
		c, err := s.customerFor(ctx, acct)
		if err != nil {
			return order{}, err
		}
		req.CustomerID, req.PaymentCapture, creator = c.CustomerID, true, s.live
	}
	ro, err := creator.CreateOrder(ctx, req)
	if err != nil {
		return order{}, err
	}
	o := order{ID: ro.ID, AccountID: acct, Amount: ro.Amount, Currency: ro.Currency, Receipt: receipt, Status: "created",
		CreatedAt: s.now(), CustomerID: req.CustomerID}
	return o, s.bill.createOrder(ctx, o)
}

// POST /v1/accounts/{id}/credits/verify {razorpay_order_id, razorpay_payment_id, razorpay_signature}
func (s *server) verifyPayment(w http.ResponseWriter, r *http.Request, acct string) error {
	var in razorpay.CheckoutResponse
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	e, inv, err := s.completeCheckout(r.Context(), acct, in)
	if err != nil {
		return err
	}
	bal, err := s.kl.Credits.Balance(r.Context(), acct)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"credits_inr": s.kl.Credits.Unit().Display(bal), "transaction_id": e.ID, "invoice_id": inv.ID,
	})
	return nil
}

// completeCheckout verifies a checkout response of an account's order and
// credits the order once: the API's verify route and the dashboard's
// checkout both end here. Another account's order is errNotFound. With a
// real Razorpay account the payment is also fetched from Razorpay: it must
// be this order's, for its amount, and captured (confirmPayment).
func (s *server) completeCheckout(ctx context.Context, acct string, in razorpay.CheckoutResponse) (credits.Entry, invoiceRow, error) {
	if !razorpay.ValidOrderID(in.OrderID) || !razorpay.ValidPaymentID(in.PaymentID) {
		return credits.Entry{}, invoiceRow{}, badRequest("razorpay_order_id and razorpay_payment_id must be Razorpay ids.")
	}
	o, err := s.bill.order(ctx, in.OrderID)
	if err != nil || o.AccountID != acct {
		return credits.Entry{}, invoiceRow{}, errNotFound
	}
	// The signature is checked against the order id the gateway stored.
	if err := razorpay.VerifyPaymentSignature(o.ID, in.PaymentID, in.Signature, s.rzpSecret); err != nil {
		return credits.Entry{}, invoiceRow{}, err
	}
	if s.live != nil && o.Status != "paid" {
		if _, err := s.confirmPayment(ctx, o, in.PaymentID); err != nil {
			return credits.Entry{}, invoiceRow{}, err
		}
	}
	return s.creditOrder(ctx, o, in.PaymentID)
}

// creditOrder credits a paid order once: the purchase's idempotency key is
// the order id, so verify, webhook and their replays all land on the same
// ledger entry, and the order gets one invoice.
func (s *server) creditOrder(ctx context.Context, o order, paymentID string) (credits.Entry, invoiceRow, error) {
	e, err := s.kl.Credits.Purchase(ctx, purchaseOf(o))
	if err != nil {
		return e, invoiceRow{}, err
	}
	if err := s.bill.markPaid(ctx, o.ID, paymentID, e.ID, s.now()); err != nil {
		return e, invoiceRow{}, err
	}
	inv, err := s.issueInvoice(ctx, o, paymentID)
	return e, inv, err
}

// purchaseOf is the ledger purchase that pays for an order. Every path
// that credits an order — verify, webhook and auto-recharge (through
// RechargeResult) — writes exactly this, so they all land on one entry.
func purchaseOf(o order) credits.CreditParams {
	desc := "Credit purchase, Razorpay order " + o.ID
	if strings.HasPrefix(o.Receipt, "auto-recharge:") {
		desc = "Auto-recharge, Razorpay order " + o.ID
	}
	return credits.CreditParams{
		AccountID: o.AccountID, Amount: credits.NewAmount(o.Amount.INR()), Reference: o.ID,
		Description: desc, IdempotencyKey: "razorpay:" + o.ID,
	}
}

// issueInvoice creates the order's invoice unless it exists.
func (s *server) issueInvoice(ctx context.Context, o order, paymentID string) (invoiceRow, error) {
	a, err := s.kl.Accounts.Get(ctx, o.AccountID)
	if err != nil {
		return invoiceRow{}, err
	}
	bd, err := s.bill.billingDetailsOf(ctx, o.AccountID)
	if err != nil {
		return invoiceRow{}, err
	}
	return s.bill.ensureInvoice(ctx, invoiceRow{
		ID: id.NewGenerator(s.now).New("inv_"), AccountID: o.AccountID, OrderID: o.ID, PaymentID: paymentID,
		Amount: o.Amount, CustomerName: a.Name, CustomerEmail: a.Email, CreatedAt: s.now(), Buyer: bd,
	})
}

// POST /v1/webhooks/razorpay: X-Razorpay-Signature over the raw body;
// payment.captured (or order.paid) credits the order once, saving the
// recurring token it carries; payment.failed records the failure;
// refund.processed takes the refunded credits back once.
func (s *server) razorpayWebhook(w http.ResponseWriter, r *http.Request) error {
	raw, err := readBody(r)
	if err != nil {
		return err
	}
	if err := razorpay.VerifyWebhookSignature(raw, r.Header.Get("X-Razorpay-Signature"), s.rzpWebhookSecret); err != nil {
		return err
	}
	ev, err := razorpay.ParseWebhook(raw)
	if err != nil {
		return err
	}
	p, ok := ev.CapturedPayment()
	if !ok {
		return s.otherWebhook(w, r, ev)
	}
	o, err := s.bill.order(r.Context(), p.OrderID)
	if errors.Is(err, errNotFound) { // not an order of this gateway
		s.log.WarnContext(r.Context(), "razorpay webhook for an unknown order", "order_id", p.OrderID)
		writeJSON(w, http.StatusOK, map[string]string{"status": "ignored"})
		return nil
	}
	if err != nil {
		return err
	}
	if err := p.Matches(o.razorpay()); err != nil {
		return err
	}
	if p.TokenID != "" && p.CustomerID != "" {
		if err := s.bill.saveToken(r.Context(), o.AccountID, p.CustomerID, p.TokenID); err != nil {
			return err
		}
	}
	if _, _, err := s.creditOrder(r.Context(), o, p.ID); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "processed"})
	return nil
}

// otherWebhook handles payment.failed and refund.processed; other events
// are acknowledged and ignored.
func (s *server) otherWebhook(w http.ResponseWriter, r *http.Request, ev razorpay.WebhookEvent) error {
	p, failed := ev.FailedPayment()
	rf, rp, refunded := ev.ProcessedRefund()
	if refunded {
		p = rp
	}
	if !failed && !refunded {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ignored"})
		return nil
	}
	o, err := s.bill.order(r.Context(), p.OrderID)
	if errors.Is(err, errNotFound) {
		s.log.WarnContext(r.Context(), "razorpay webhook for an unknown order", "order_id", p.OrderID, "event", ev.Event)
		writeJSON(w, http.StatusOK, map[string]string{"status": "ignored"})
		return nil
	}
	if err != nil {
		return err
	}
	if refunded {
		if rf.Currency != o.Currency || rf.Amount > o.Amount || (o.PaymentID != "" && o.PaymentID != rf.PaymentID) {
			return razorpay.ErrOrderMismatch
		}
		err = s.refund(r.Context(), o, rf)
	} else {
		var pf *paymentFailedError
		if err = s.paymentFailed(r.Context(), o, p); errors.As(err, &pf) {
			err = nil
		}
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "processed"})
	return nil
}

// recharge is the ledger's Recharger: it charges the saved payment method
// of the account — Razorpay's recurring payment of the token saved at the
// first purchase (rechargeLive), or in demo mode the simulated Razorpay
// (an order paid at once) — and invoices it. The receipt is the crossing's idempotency key, so
// a repeated call charges once. The ledger writes the purchase with the
// order's own key (purchaseOf), so Razorpay's payment.captured webhook for
// the same order replays that purchase instead of crediting it again.
func (s *server) recharge(ctx context.Context, req credits.RechargeRequest) (credits.RechargeResult, error) {
	var o order
	var err error
	if s.live != nil {
		if o, err = s.rechargeLive(ctx, req); err != nil {
			return credits.RechargeResult{}, err
		}
	} else if o, err = s.bill.orderByReceipt(ctx, req.AccountID, req.IdempotencyKey); errors.Is(err, errNotFound) {
		paise, perr := razorpay.CheckAmount(req.Amount.Decimal(), 0)
		if perr != nil {
			return credits.RechargeResult{}, perr
		}
		o, err = s.newOrder(ctx, req.AccountID, paise, req.IdempotencyKey)
	}
	if err != nil {
		return credits.RechargeResult{}, err
	}
	if o.Status != "paid" && s.rzpSim == nil { // live mode: rechargeLive returns paid orders only
		return credits.RechargeResult{}, fmt.Errorf("recharge %s: order %s is %s", req.IdempotencyKey, o.ID, o.Status)
	}
	if o.Status != "paid" {
		_, payment, err := s.rzpSim.Pay(ctx, o.razorpay())
		if err != nil {
			return credits.RechargeResult{}, err
		}
		if err := s.bill.markPaid(ctx, o.ID, payment.ID, "", s.now()); err != nil {
			return credits.RechargeResult{}, err
		}
		o.PaymentID = payment.ID
	}
	if _, err := s.issueInvoice(ctx, o, o.PaymentID); err != nil {
		return credits.RechargeResult{}, err
	}
	p := purchaseOf(o)
	if !p.Amount.Equal(req.Amount) {
		return credits.RechargeResult{}, fmt.Errorf("recharge %s: order %s is for %s, not %s", req.IdempotencyKey, o.ID, p.Amount, req.Amount)
	}
	return credits.RechargeResult{Reference: p.Reference, IdempotencyKey: p.IdempotencyKey, Description: p.Description}, nil
}

type autoRechargeJSON struct {
	Enabled      *bool           `json:"enabled"`
	ThresholdINR *openai.Decimal `json:"threshold_inr"`
	AmountINR    *openai.Decimal `json:"amount_inr"`
	// Read-only: whether a recurring token is saved (always true in demo
	// mode) and the last failed auto-recharge, until one succeeds.
	PaymentMethodSaved *bool        `json:"payment_method_saved,omitempty"`
	LastFailure        *failureJSON `json:"last_failure,omitempty"`
}

type failureJSON struct {
	Message string `json:"message"`
	At      string `json:"at"`
}

// withPaymentMethod adds the read-only fields of an account's auto-recharge.
func (s *server) withPaymentMethod(ctx context.Context, acct string, v autoRechargeJSON) (autoRechargeJSON, error) {
	saved := s.live == nil
	c, err := s.bill.customer(ctx, acct)
	if err != nil && !errors.Is(err, errNotFound) {
		return v, err
	}
	if err == nil {
		saved = saved || c.TokenID != ""
		if c.RechargeError != "" {
			v.LastFailure = &failureJSON{Message: c.RechargeError, At: rfc3339(c.RechargeErrorAt)}
		}
	}
	v.PaymentMethodSaved = &saved
	return v, nil
}

func autoRechargeView(a credits.AutoRecharge) autoRechargeJSON {
	th, am := openai.NewDecimal(a.Threshold.Decimal()), openai.NewDecimal(a.Amount.Decimal())
	return autoRechargeJSON{Enabled: &a.Enabled, ThresholdINR: &th, AmountINR: &am}
}

// GET /v1/accounts/{id}/auto_recharge
func (s *server) getAutoRecharge(w http.ResponseWriter, r *http.Request, acct string) error {
	a, err := s.kl.Credits.Account(r.Context(), acct)
	if err != nil {
		return err
	}
	v, err := s.withPaymentMethod(r.Context(), acct, autoRechargeView(a.Policy.AutoRecharge))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// PUT /v1/accounts/{id}/auto_recharge {enabled, threshold_inr, amount_inr}
func (s *server) putAutoRecharge(w http.ResponseWriter, r *http.Request, acct string) error {
	var in autoRechargeJSON
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	if in.Enabled == nil || in.ThresholdINR == nil || in.AmountINR == nil {
		return badRequest("enabled, threshold_inr and amount_inr are required.")
	}
	ar := credits.AutoRecharge{Enabled: *in.Enabled, Threshold: credits.NewAmount(in.ThresholdINR.Decimal), Amount: credits.NewAmount(in.AmountINR.Decimal)}
	if ar.Threshold.IsNegative() || !ar.Threshold.MultipleOf(credits.AmountFromMinor(1, 2)) {
		return badRequest("threshold_inr must be zero or positive with at most 2 decimals.")
	}
	if ar.Enabled || !ar.Amount.IsZero() {
		if _, err := razorpay.CheckAmount(in.AmountINR.Decimal, 0); err != nil {
			return err
		}
	}
	cur, err := s.kl.Credits.Account(r.Context(), acct)
	if err != nil {
		return err
	}
	p := cur.Policy
	p.AutoRecharge = ar
	a, err := s.kl.Credits.SetPolicy(r.Context(), acct, p)
	if err != nil {
		return err
	}
	v, err := s.withPaymentMethod(r.Context(), acct, autoRechargeView(a.Policy.AutoRecharge))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// txnJSON is one ledger entry. Amounts are exact (per-token debits can be
// fractions of a paisa) with at least 2 decimals, so a statement adds up.
type txnJSON struct {
	ID          string         `json:"id"`
	Type        string         `json:"type"`
	AmountINR   openai.Decimal `json:"amount_inr"`
	BalanceINR  openai.Decimal `json:"balance_inr"`
	Created     string         `json:"created"`
	Description string         `json:"description"`
	Reference   string         `json:"reference"`
}

// parseEntryTypes parses the type filter: a comma-separated list of ledger
// entry types.
func parseEntryTypes(s string) ([]credits.EntryType, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > 6 {
		return nil, badRequest("type lists at most 6 entry types.")
	}
	out := make([]credits.EntryType, 0, len(parts))
	for _, p := range parts {
		t := credits.EntryType(strings.TrimSpace(p))
		if !t.Valid() {
			return nil, badRequest("type must be grant, purchase, debit, refund, adjustment or expiry.")
		}
		out = append(out, t)
	}
	return out, nil
}

// GET /v1/accounts/{id}/transactions?limit&cursor&type
func (s *server) listTransactions(w http.ResponseWriter, r *http.Request, acct string) error {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		return err
	}
	types, err := parseEntryTypes(q.Get("type"))
	if err != nil {
		return err
	}
	page, err := s.kl.Credits.Entries(r.Context(), acct, credits.EntryFilter{Types: types}, q.Get("cursor"), limit)
	if err != nil {
		return err
	}
	out := struct {
		Data       []txnJSON `json:"data"`
		NextCursor *string   `json:"next_cursor"`
	}{Data: make([]txnJSON, 0, len(page.Entries))}
	for _, e := range page.Entries {
		out.Data = append(out.Data, txnJSON{ID: e.ID, Type: string(e.Type), AmountINR: openai.NewDecimal(e.Amount.Decimal()),
			BalanceINR: openai.NewDecimal(e.BalanceAfter.Decimal()), Created: rfc3339(e.CreatedAt), Description: e.Description, Reference: e.Reference})
	}
	if page.NextCursor != "" {
		out.NextCursor = &page.NextCursor
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// invoiceDoc is the printable invoice of a stored row.
func (s *server) invoiceDoc(v invoiceRow) invoice.Invoice {
	return invoice.Invoice{
		Number: v.Number, Date: v.CreatedAt, Supplier: s.supplier,
		Customer:     buyer(v),
		Items:        []invoice.Item{{Description: "Prepaid inference credits (Forii API)", Amount: v.Amount.INR()}},
		TaxInclusive: true,
		Reference:    "Razorpay payment " + v.PaymentID + ", order " + v.OrderID,
	}
}

// GET /v1/accounts/{id}/invoices
func (s *server) listInvoices(w http.ResponseWriter, r *http.Request, acct string) error {
	rows, err := s.bill.invoices(r.Context(), acct)
	if err != nil {
		return err
	}
	type invJSON struct {
		ID         string         `json:"id"`
		Number     string         `json:"number"`
		OrderID    string         `json:"order_id"`
		PaymentID  string         `json:"payment_id"`
		AmountINR  openai.Decimal `json:"amount_inr"`
		TaxableINR openai.Decimal `json:"taxable_inr"`
		TaxINR     openai.Decimal `json:"tax_inr"`
		Created    string         `json:"created"`
		URL        string         `json:"url"`
		GSTIN      string         `json:"gstin,omitempty"`
		POS        string         `json:"place_of_supply"`
		InterState bool           `json:"inter_state"`
	}
	out := struct {
		Data []invJSON `json:"data"`
	}{Data: make([]invJSON, 0, len(rows))}
	for _, v := range rows {
		t, err := invoice.Compute(s.invoiceDoc(v))
		if err != nil {
			return err
		}
		out.Data = append(out.Data, invJSON{ID: v.ID, Number: v.Number, OrderID: v.OrderID, PaymentID: v.PaymentID,
			AmountINR: openai.NewDecimal(t.Total), TaxableINR: openai.NewDecimal(t.Taxable), TaxINR: openai.NewDecimal(t.Tax),
			Created: rfc3339(v.CreatedAt), URL: "/v1/accounts/" + acct + "/invoices/" + v.ID,
			GSTIN: v.Buyer.GSTIN, POS: t.PlaceOfSupply, InterState: t.InterState})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// GET /v1/accounts/{id}/invoices/{invoice_id}: the GST tax invoice PDF,
// rendered from the stored row (rendering is deterministic).
func (s *server) getInvoice(w http.ResponseWriter, r *http.Request, acct string) error {
	name, pdf, err := s.invoicePDF(r.Context(), acct, r.PathValue("invoice_id"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/pdf")
	w.Header().Set("Content-Disposition", `inline; filename="`+name+`"`)
	_, _ = w.Write(pdf)
	return nil
}

// invoicePDF renders an account's invoice and names its file; another
// account's invoice is errNotFound.
func (s *server) invoicePDF(ctx context.Context, acct, invoiceID string) (string, []byte, error) {
	v, err := s.bill.invoice(ctx, acct, invoiceID)
	if err != nil {
		return "", nil, err
	}
	pdf, err := invoice.Render(s.invoiceDoc(v), nil)
	if err != nil {
		return "", nil, err
	}
	return strings.ReplaceAll(v.Number, "/", "-") + ".pdf", pdf, nil
}

// leakedToken is one entry of a GitHub secret-scanning report.
type leakedToken struct {
	Token  string `json:"token"`
	Type   string `json:"type"`
	URL    string `json:"url"`
	Source string `json:"source"`
}

// maxLeakedTokens bounds one report.
const maxLeakedTokens = 1000

// POST /v1/leaked-keys [{token, type, url, source?}]: disables every key
// found (GitHub secret-scanning partner style) and answers, per token, its
// SHA-256 and whether it was one of ours (true_positive) or not
// (false_positive). Whoever holds a raw key may have it disabled, so the
// route needs no other authentication.
//
// With -github-keys or -github-keys-url a report must carry GitHub's
// signature (401 otherwise); without, reports are throttled per client
// address (checkLeakedReport).
func (s *server) leakedKeys(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var in []leakedToken
	if err := unmarshalStrict(body, &in, false); err != nil {
		return err
	}
	if len(in) > maxLeakedTokens {
		return badRequest("At most 1000 tokens per report.")
	}
	if err := s.checkLeakedReport(r, body, len(in)); err != nil {
		return err
	}
	type result struct {
		TokenHash string `json:"token_hash"`
		TokenType string `json:"token_type"`
		Label     string `json:"label"`
	}
	out := make([]result, 0, len(in))
	for _, t := range in {
		sum := sha256.Sum256([]byte(t.Token))
		res := result{TokenHash: hex.EncodeToString(sum[:]), TokenType: t.Type, Label: "false_positive"}
		_, known, err := s.kl.Keys.DisableLeaked(r.Context(), apikey.RawKey(t.Token))
		if err != nil && !errors.Is(err, apikey.ErrMalformed) {
			return err
		}
		if known {
			res.Label = "true_positive"
			s.log.WarnContext(r.Context(), "leaked API key disabled", "url", t.URL, "type", t.Type)
		}
		out = append(out, res)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
