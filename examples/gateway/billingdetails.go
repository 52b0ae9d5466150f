package main

import (
	"context"
	"database/sql"
	"errors"
	"github.com/keyledger/keyledger/auditlog"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/keyledger/keyledger/examples/gateway/internal/invoice"
)

// billingDetails are what a B2B customer's GST invoice carries: the legal
// name, the GSTIN, the billing address and the state (the place of
// supply, which decides IGST against CGST + SGST).
type billingDetails struct {
	LegalName string `json:"legal_name"`
	GSTIN     string `json:"gstin"`
	Address   string `json:"address"`
	StateCode string `json:"state_code"`
}

// normalize trims and upper-cases, then validates: a state code GST knows
// (required), a GSTIN of the documented format with its check character
// and of that state (optional: without one the invoice is B2C), a legal
// name (required with a GSTIN) and an address within the invoice's limits.
func (d billingDetails) normalize() (billingDetails, error) {
	d.LegalName, d.Address = strings.TrimSpace(d.LegalName), strings.TrimSpace(d.Address)
	d.GSTIN, d.StateCode = strings.ToUpper(strings.TrimSpace(d.GSTIN)), strings.TrimSpace(d.StateCode)
	switch {
	case !utf8.ValidString(d.LegalName) || utf8.RuneCountInString(d.LegalName) > 200:
		return d, badRequest("legal_name must be at most 200 characters.")
	case !utf8.ValidString(d.Address) || utf8.RuneCountInString(d.Address) > 500:
		return d, badRequest("address must be at most 500 characters.")
	case strings.ContainsFunc(d.LegalName, func(r rune) bool { return r < ' ' }):
		return d, badRequest("legal_name must be one line.")
	case strings.ContainsFunc(d.Address, func(r rune) bool { return r < ' ' && r != '\n' }):
		return d, badRequest("address must be text (line breaks allowed).")
	}
	if _, ok := invoice.StateName(d.StateCode); !ok {
		return d, badRequest("state_code must be a GST state code such as 29 (Karnataka) or 27 (Maharashtra).")
	}
	if d.GSTIN != "" {
		if err := invoice.ValidateGSTIN(d.GSTIN); err != nil {
			return d, badRequest("gstin is not a valid GSTIN (15 characters: state code, PAN, entity number, Z, check character).")
		}
		if d.GSTIN[:2] != d.StateCode {
			return d, badRequest("gstin is registered in state " + d.GSTIN[:2] + ", not " + d.StateCode + ".")
		}
		if d.LegalName == "" {
			return d, badRequest("legal_name is required with a GSTIN.")
		}
	}
	return d, nil
}

// billingDetailsOf returns an account's saved billing details (zero if
// none).
func (b *billing) billingDetailsOf(ctx context.Context, accountID string) (billingDetails, error) {
	var d billingDetails
	err := b.db.QueryRowContext(ctx, b.q(`SELECT legal_name, gstin, address, state_code FROM gw_billing_details WHERE account_id = ?`), accountID).
		Scan(&d.LegalName, &d.GSTIN, &d.Address, &d.StateCode)
	if errors.Is(err, sql.ErrNoRows) {
		return billingDetails{}, nil
	}
	return d, err
}

func (b *billing) saveBillingDetails(ctx context.Context, accountID string, d billingDetails, nanos int64) error {
	_, err := b.db.ExecContext(ctx, b.q(`INSERT INTO gw_billing_details(account_id, legal_name, gstin, address, state_code, updated_at) VALUES(?,?,?,?,?,?)
ON CONFLICT(account_id) DO UPDATE SET legal_name = excluded.legal_name, gstin = excluded.gstin, address = excluded.address,
	state_code = excluded.state_code, updated_at = excluded.updated_at`), accountID, d.LegalName, d.GSTIN, d.Address, d.StateCode, nanos)
	return err
}

// GET /v1/accounts/{id}/billing_details
func (s *server) getBillingDetails(w http.ResponseWriter, r *http.Request, acct string) error {
	d, err := s.bill.billingDetailsOf(r.Context(), acct)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

// PUT /v1/accounts/{id}/billing_details {legal_name, gstin, address,
// state_code}: later invoices carry them (issued invoices keep theirs).
func (s *server) putBillingDetails(w http.ResponseWriter, r *http.Request, acct string) error {
	var in billingDetails
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	d, err := in.normalize()
	if err != nil {
		return err
	}
	if err := s.bill.saveBillingDetails(r.Context(), acct, d, s.now().UnixNano()); err != nil {
		return err
	}
	s.appendAudit(r.Context(), acct, "billing_details.update", auditlog.Target{Type: "billing_details", ID: acct})
	writeJSON(w, http.StatusOK, d)
	return nil
}

// buyer is the invoice's customer: the saved legal name, address, GSTIN
// and state when there are any (place of supply from the GSTIN or state),
// else the account's name (B2C, place of supply the supplier's state).
func buyer(v invoiceRow) invoice.Customer {
	c := invoice.Customer{Name: v.CustomerName, Email: v.CustomerEmail}
	if b := v.Buyer; b != (billingDetails{}) {
		if b.LegalName != "" {
			c.Name = b.LegalName
		}
		c.Address, c.GSTIN, c.StateCode = b.Address, b.GSTIN, b.StateCode
	}
	return c
}
