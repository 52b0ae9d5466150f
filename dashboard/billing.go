package dashboard

import (
	"context"
	"errors"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keyledger/keyledger/credits"
)

// Payments sells credits through the host's payment provider (the example
// gateway: Razorpay orders). The dashboard shows an amount form; on submit
// it calls StartPurchase and renders the returned Checkout as a form the
// person submits to pay; the payment provider's answer (or, for a checkout
// posting back to the dashboard, that form) reaches CompletePurchase,
// which verifies the payment and credits the ledger once.
//
// Errors that are *UserError are shown to the person; ErrNotFound is 404
// (an order of another account).
type Payments interface {
	// CheckAmount refuses amounts the provider cannot charge (too small,
	// too large), for purchases and for auto-recharge; nil accepts.
	CheckAmount(amount credits.Amount) error
	// StartPurchase creates a payment for amount and says how the browser
	// pays it.
	StartPurchase(ctx context.Context, accountID string, amount credits.Amount) (Checkout, error)
	// CompletePurchase receives the fields of a Checkout posted back to the
	// dashboard (Checkout.Action ""), verifies the payment and credits it,
	// exactly once however often it is called for one payment.
	CompletePurchase(ctx context.Context, accountID string, form url.Values) (Purchase, error)
}

// Checkout is the form that pays a started purchase.
type Checkout struct {
	// OrderID is shown to the person with the amount.
	OrderID string
	Amount  credits.Amount
	// Action is the absolute https URL of the provider's hosted checkout
	// the form posts to (http only on a loopback host: a local fake); "" posts to the dashboard, which passes the
	// fields to Payments.CompletePurchase.
	Action string
	// Fields are the form's hidden fields.
	Fields []Field
	// Button is the submit button's label ("Pay" by default); Note is
	// shown above it (e.g. "Test mode: no card is charged.").
	Button, Note string
}

// Field is one hidden form field of a Checkout.
type Field struct {
	Name, Value string
}

// Purchase is a completed purchase.
type Purchase struct {
	Amount        credits.Amount
	TransactionID string // the ledger entry
	InvoiceID     string // "" if the host issues none
}

// Invoices lists an account's invoices and serves their PDFs.
type Invoices interface {
	// ListInvoices returns the account's invoices, newest first.
	ListInvoices(ctx context.Context, accountID string) ([]Invoice, error)
	// InvoicePDF returns an invoice's file name and PDF, or ErrNotFound if
	// the account has no invoice with that ID.
	InvoicePDF(ctx context.Context, accountID, invoiceID string) (filename string, pdf []byte, err error)
}

// Invoice is one line of the invoices page.
type Invoice struct {
	ID, Number  string
	Date        time.Time
	Amount      credits.Amount // total, taxes included
	Description string
}

// ledgerData is the balance page.
type ledgerData struct {
	HasLedger                          bool
	Balance, Held, Available, UsedThis string
	MonthlyCap, Overdraft              string
	Entries                            []entryRow
	NextHref                           string
	First                              bool
	BuyLink                            bool
}

type entryRow struct {
	Time, Type, Description, Reference string
	Amount, BalanceAfter               credits.Amount
	Credit                             bool
}

func (h *Handler) balancePage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	ctx := r.Context()
	cursor := r.URL.Query().Get("cursor")
	d := ledgerData{First: cursor == "", BuyLink: h.sections[SectionCredits]}
	a, err := h.kl.Credits.Account(ctx, v.Account.ID)
	if errors.Is(err, credits.ErrUnknownAccount) {
		return h.render(w, r, v, http.StatusOK, "balance", "Balance", d)
	}
	if err != nil {
		return err
	}
	u := h.kl.Credits.Unit()
	d.HasLedger = true
	d.Balance, d.Held, d.Available, d.UsedThis = u.Format(a.Balance), u.Format(a.Held), u.Format(a.Available), u.Format(a.UsedThisMonth)
	if a.Policy.MonthlyCap.IsPositive() {
		d.MonthlyCap = u.Format(a.Policy.MonthlyCap)
	}
	if a.Policy.Overdraft.IsPositive() {
		d.Overdraft = u.Format(a.Policy.Overdraft)
	}
	p, err := h.kl.Credits.Entries(ctx, v.Account.ID, credits.EntryFilter{}, cursor, 50)
	if err != nil {
		return err
	}
	if p.NextCursor != "" {
		d.NextHref = h.base + "/balance?" + url.Values{"cursor": {p.NextCursor}}.Encode()
	}
	for _, e := range p.Entries {
		d.Entries = append(d.Entries, entryRow{Time: e.CreatedAt.In(v.loc).Format(timeLayout), Type: string(e.Type), Description: e.Description,
			Reference: e.Reference, Amount: e.Amount, BalanceAfter: e.BalanceAfter, Credit: e.Amount.IsPositive()})
	}
	return h.render(w, r, v, http.StatusOK, "balance", "Balance", d)
}

// creditsData is the buy-credits page and its checkout step.
type creditsData struct {
	Amount   string
	Balance  string
	Checkout *checkoutView
}

type checkoutView struct {
	Checkout
	Own    bool // posts back to the dashboard (with a CSRF token)
	Action string
	Amount string
}

func (h *Handler) creditsPage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	d := creditsData{}
	if bal, err := h.kl.Credits.Balance(r.Context(), v.Account.ID); err == nil {
		d.Balance = h.kl.Credits.Unit().Format(bal)
	} else if !errors.Is(err, credits.ErrUnknownAccount) {
		return err
	}
	return h.render(w, r, v, http.StatusOK, "credits", "Buy credits", d)
}

// checkAmount parses an amount and lets the payment provider check it.
func (h *Handler) checkAmount(s string) (credits.Amount, error) {
	a, err := parseAmount(s, h.kl.Credits.Unit(), h.o.Currency)
	if err != nil {
		return a, err
	}
	if h.o.Payments != nil {
		if err := h.o.Payments.CheckAmount(a); err != nil {
			return a, err
		}
	}
	return a, nil
}

func (h *Handler) startPurchase(w http.ResponseWriter, r *http.Request, v *viewer) error {
	in := r.PostForm.Get("amount")
	a, err := h.checkAmount(in)
	var co Checkout
	if err == nil {
		co, err = h.o.Payments.StartPurchase(r.Context(), v.Account.ID, a)
	}
	var ue *UserError
	if errors.As(err, &ue) {
		return h.renderWithError(w, r, v, http.StatusBadRequest, "credits", "Buy credits", creditsData{Amount: in}, ue.Message)
	}
	if err != nil {
		return err
	}
	cv := &checkoutView{Checkout: co, Own: co.Action == "", Action: co.Action, Amount: h.kl.Credits.Unit().Format(co.Amount)}
	if cv.Own {
		cv.Action = h.base + "/credits/complete"
	} else {
		u, perr := url.Parse(co.Action)
		if perr != nil || !(u.Scheme == "https" || u.Scheme == "http" && loopback(u.Hostname())) || u.Host == "" {
			return errors.New("dashboard: Checkout.Action must be an absolute https URL (or http on a loopback host)")
		}
		setSecurityHeaders(w.Header(), u.Scheme+"://"+u.Host)
	}
	if cv.Button == "" {
		cv.Button = "Pay"
	}
	return h.render(w, r, v, http.StatusOK, "credits", "Pay", creditsData{Checkout: cv})
}

func (h *Handler) completePurchase(w http.ResponseWriter, r *http.Request, v *viewer) error {
	form := url.Values{}
	for k, vals := range r.PostForm {
		if k != "csrf" {
			form[k] = vals
		}
	}
	if _, err := h.o.Payments.CompletePurchase(r.Context(), v.Account.ID, form); err != nil {
		return err
	}
	if h.sections[SectionBalance] {
		h.redirect(w, r, "/balance?done=purchased")
	} else {
		h.redirect(w, r, "/credits?done=purchased")
	}
	return nil
}

// autoRechargeData is the auto-recharge page.
type autoRechargeData struct {
	HasLedger         bool
	Enabled           bool
	Threshold, Amount string
}

func (h *Handler) autoRechargePage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	a, err := h.kl.Credits.Account(r.Context(), v.Account.ID)
	if errors.Is(err, credits.ErrUnknownAccount) {
		return h.render(w, r, v, http.StatusOK, "autorecharge", "Auto-recharge", autoRechargeData{})
	}
	if err != nil {
		return err
	}
	ar := a.Policy.AutoRecharge
	d := autoRechargeData{HasLedger: true, Enabled: ar.Enabled}
	if ar.Threshold.IsPositive() || ar.Enabled {
		d.Threshold = ar.Threshold.Decimal().String()
	}
	if ar.Amount.IsPositive() {
		d.Amount = ar.Amount.Decimal().String()
	}
	return h.render(w, r, v, http.StatusOK, "autorecharge", "Auto-recharge", d)
}

func (h *Handler) saveAutoRecharge(w http.ResponseWriter, r *http.Request, v *viewer) error {
	f := r.PostForm
	d := autoRechargeData{HasLedger: true, Enabled: f.Get("enabled") != "", Threshold: f.Get("threshold"), Amount: f.Get("amount")}
	ar, err := h.readAutoRecharge(d)
	if err == nil {
		var cur credits.Account
		if cur, err = h.kl.Credits.Account(r.Context(), v.Account.ID); err == nil {
			p := cur.Policy
			p.AutoRecharge = ar
			_, err = h.kl.Credits.SetPolicy(r.Context(), v.Account.ID, p)
		}
	}
	var ue *UserError
	if errors.As(err, &ue) {
		return h.renderWithError(w, r, v, http.StatusBadRequest, "autorecharge", "Auto-recharge", d, ue.Message)
	}
	if errors.Is(err, credits.ErrInvalidPolicy) {
		return h.renderWithError(w, r, v, http.StatusBadRequest, "autorecharge", "Auto-recharge", d, "These auto-recharge settings are not valid.")
	}
	if err != nil {
		return err
	}
	h.redirect(w, r, "/auto-recharge?done=auto-recharge")
	return nil
}

// readAutoRecharge checks the auto-recharge form. Disabled settings may
// leave both amounts empty.
func (h *Handler) readAutoRecharge(d autoRechargeData) (credits.AutoRecharge, error) {
	ar := credits.AutoRecharge{Enabled: d.Enabled}
	if !d.Enabled && strings.TrimSpace(d.Threshold) == "" && strings.TrimSpace(d.Amount) == "" {
		return ar, nil
	}
	if strings.TrimSpace(d.Threshold) == "0" {
		return ar, userErrorf("The threshold must be more than zero.")
	}
	th, err := parseAmount(d.Threshold, h.kl.Credits.Unit(), h.o.Currency)
	if err != nil {
		return ar, userErrorf("The threshold: %s", err.Error())
	}
	am, err := h.checkAmount(d.Amount)
	if err != nil {
		var ue *UserError
		if errors.As(err, &ue) {
			return ar, userErrorf("The recharge amount: %s", ue.Message)
		}
		return ar, err
	}
	ar.Threshold, ar.Amount = th, am
	return ar, nil
}

// invoicesData is the invoices page.
type invoicesData struct {
	Invoices []invoiceRow
}

type invoiceRow struct {
	ID, Number, Date, Description string
	Amount                        credits.Amount
}

func (h *Handler) invoicesPage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	list, err := h.o.Invoices.ListInvoices(r.Context(), v.Account.ID)
	if err != nil {
		return err
	}
	var d invoicesData
	for _, inv := range list {
		d.Invoices = append(d.Invoices, invoiceRow{ID: inv.ID, Number: inv.Number, Date: inv.Date.In(v.loc).Format(dateLayout),
			Description: inv.Description, Amount: inv.Amount})
	}
	return h.render(w, r, v, http.StatusOK, "invoices", "Invoices", d)
}

func (h *Handler) invoicePDF(w http.ResponseWriter, r *http.Request, v *viewer) error {
	name, pdf, err := h.o.Invoices.InvoicePDF(r.Context(), v.Account.ID, r.PathValue("id"))
	if err != nil {
		return err
	}
	if name == "" {
		name = "invoice.pdf"
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/pdf")
	hd.Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": name}))
	hd.Set("Cache-Control", "private, no-store")
	_, _ = w.Write(pdf)
	return nil
}

// loopback reports whether host is a loopback name or address: a payment
// provider's fake in tests and local development may be plain http there.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
