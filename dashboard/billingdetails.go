package dashboard

import (
	"context"
	"errors"
	"net/http"
)

// BillingDetails are a customer's tax details, printed on its invoices
// (for India's GST: the GSTIN, the registered legal name, the billing
// address and the state, which is the place of supply).
type BillingDetails struct {
	LegalName, TaxID, Address, StateCode string
}

// BillingDetailsStore is the host's hook behind SectionBillingDetails.
type BillingDetailsStore interface {
	// BillingDetails returns the account's saved details (zero if none).
	BillingDetails(ctx context.Context, accountID string) (BillingDetails, error)
	// SaveBillingDetails validates and saves them; a *UserError's message
	// (an invalid GSTIN, say) is shown on the form.
	SaveBillingDetails(ctx context.Context, accountID string, d BillingDetails) error
}

func (h *Handler) billingDetailsPage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	d, err := h.o.BillingDetails.BillingDetails(r.Context(), v.Account.ID)
	if err != nil {
		return err
	}
	return h.render(w, r, v, http.StatusOK, "billingdetails", "Billing details", d)
}

func (h *Handler) saveBillingDetails(w http.ResponseWriter, r *http.Request, v *viewer) error {
	f := r.PostForm
	d := BillingDetails{LegalName: f.Get("legal_name"), TaxID: f.Get("tax_id"), Address: f.Get("address"), StateCode: f.Get("state_code")}
	err := h.o.BillingDetails.SaveBillingDetails(r.Context(), v.Account.ID, d)
	var ue *UserError
	if errors.As(err, &ue) {
		return h.renderWithError(w, r, v, http.StatusBadRequest, "billingdetails", "Billing details", d, ue.Message)
	}
	if err != nil {
		return err
	}
	h.redirect(w, r, "/billing-details?done=billing")
	return nil
}
