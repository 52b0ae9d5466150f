package dashboard

import (
	"errors"
	"net/http"
	"strings"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/events"
)

// webhookRow is an endpoint as the page shows it (never its secret).
type webhookRow struct {
	ID, URL, Description, Created string
}

// deliveryRow is one delivery attempt.
type deliveryRow struct {
	At, EventType, EventID, Target, Result string
	Attempt                                int
	OK                                     bool
}

// webhooksData is the webhooks page.
type webhooksData struct {
	Endpoints  []webhookRow
	Deliveries []deliveryRow
	FormURL    string
	FormDesc   string
	Thresholds string
	Secret     string // the new endpoint's secret, on the page that shows it once
	New        webhookRow
}

func (h *Handler) webhooksPage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	return h.showWebhooks(w, r, v, http.StatusOK, webhooksData{}, "")
}

func (h *Handler) showWebhooks(w http.ResponseWriter, r *http.Request, v *viewer, status int, d webhooksData, errMsg string) error {
	ctx := r.Context()
	svc := h.kl.Webhooks()
	eps, err := svc.Endpoints(ctx, v.Account.ID)
	if err != nil {
		return err
	}
	names := map[string]string{events.HookTarget: "host hook"}
	for _, e := range eps {
		d.Endpoints = append(d.Endpoints, webhookRow{ID: e.ID, URL: e.URL, Description: e.Description, Created: e.CreatedAt.In(v.loc).Format(timeLayout)})
		names[e.ID] = e.URL
	}
	ds, err := svc.Deliveries(ctx, v.Account.ID, 20)
	if err != nil {
		return err
	}
	for _, x := range ds {
		row := deliveryRow{At: x.At.In(v.loc).Format(timeLayout), EventType: string(x.EventType), EventID: x.EventID,
			Target: names[x.EndpointID], Attempt: x.Attempt, OK: x.Error == ""}
		if row.Target == "" {
			row.Target = "deleted endpoint"
		}
		switch {
		case x.Error != "":
			row.Result = x.Error
		case x.StatusCode != 0:
			row.Result = http.StatusText(x.StatusCode)
		default:
			row.Result = "delivered"
		}
		d.Deliveries = append(d.Deliveries, row)
	}
	if d.Thresholds == "" && status == http.StatusOK {
		th, err := svc.AlertThresholds(ctx, v.Account.ID)
		if err != nil {
			return err
		}
		parts := make([]string, len(th))
		for i, t := range th {
			parts[i] = t.String()
		}
		d.Thresholds = strings.Join(parts, ", ")
	}
	return h.renderWithError(w, r, v, status, "webhooks", "Webhooks", d, errMsg)
}

// webhookError turns a refused endpoint or threshold into a message for
// the form, or "" for errors that are not the person's input.
func webhookError(err error) string {
	switch {
	case errors.Is(err, events.ErrInvalidURL):
		return "The URL must start with https:// and name a host that resolves."
	case errors.Is(err, events.ErrBlockedAddress):
		return "That host is (or resolves to) a private, loopback, link-local or metadata address; webhooks go to public addresses only."
	case errors.Is(err, events.ErrTooManyEndpoints):
		return "An account has at most 10 webhook endpoints: delete one first."
	case errors.Is(err, events.ErrInvalidThreshold):
		return "Enter at most 5 different positive amounts, separated by commas."
	}
	return ""
}

func (h *Handler) createWebhook(w http.ResponseWriter, r *http.Request, v *viewer) error {
	d := webhooksData{FormURL: strings.TrimSpace(r.PostFormValue("url")), FormDesc: strings.TrimSpace(r.PostFormValue("description"))}
	e, err := h.kl.Webhooks().CreateEndpoint(r.Context(), v.Account.ID, d.FormURL, d.FormDesc)
	if err != nil {
		if msg := webhookError(err); msg != "" {
			return h.showWebhooks(w, r, v, http.StatusBadRequest, d, msg)
		}
		return err
	}
	id, err := h.putSecret(r.Context(), v.Account.ID, slotSecret{Raw: e.Secret, KeyID: e.ID})
	if err != nil {
		return err
	}
	h.redirect(w, r, "/webhooks/new?slot="+id)
	return nil
}

// newWebhookPage shows a new endpoint's signing secret once.
func (h *Handler) newWebhookPage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	s, err := h.takeSecret(r.Context(), v.Account.ID, r.URL.Query().Get("slot"))
	if errors.Is(err, ErrNotFound) {
		h.redirect(w, r, "/webhooks?done=webhook-shown")
		return nil
	}
	if err != nil {
		return err
	}
	d := webhooksData{Secret: s.Raw, New: webhookRow{ID: s.KeyID}}
	eps, err := h.kl.Webhooks().Endpoints(r.Context(), v.Account.ID)
	if err != nil {
		return err
	}
	for _, e := range eps {
		if e.ID == s.KeyID {
			d.New.URL = e.URL
		}
	}
	return h.render(w, r, v, http.StatusOK, "newwebhook", "New webhook", d)
}

func (h *Handler) deleteWebhook(w http.ResponseWriter, r *http.Request, v *viewer) error {
	err := h.kl.Webhooks().DeleteEndpoint(r.Context(), v.Account.ID, r.PathValue("id"))
	if err != nil && !errors.Is(err, events.ErrNotFound) { // a double submit finds it gone
		return err
	}
	h.redirect(w, r, "/webhooks?done=webhook-deleted")
	return nil
}

func (h *Handler) saveThresholds(w http.ResponseWriter, r *http.Request, v *viewer) error {
	text := strings.TrimSpace(r.PostFormValue("thresholds"))
	var ds []decimal.Decimal
	for f := range strings.SplitSeq(text, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := decimal.NewFromString(f)
		if err != nil || len(ds) >= 5 {
			return h.showWebhooks(w, r, v, http.StatusBadRequest, webhooksData{Thresholds: text}, webhookError(events.ErrInvalidThreshold))
		}
		ds = append(ds, d)
	}
	if _, err := h.kl.Webhooks().SetAlertThresholds(r.Context(), v.Account.ID, ds); err != nil {
		if msg := webhookError(err); msg != "" {
			return h.showWebhooks(w, r, v, http.StatusBadRequest, webhooksData{Thresholds: text}, msg)
		}
		return err
	}
	h.redirect(w, r, "/webhooks?done=thresholds")
	return nil
}
