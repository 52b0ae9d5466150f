package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/events"
)

// webhookJSON is an endpoint as the API shows it; Secret only in the
// create response (shown once).
type webhookJSON struct {
	ID          string `json:"id"`
	URL         string `json:"url"`
	Description string `json:"description"`
	Secret      string `json:"secret,omitempty"`
	Created     string `json:"created"`
}

func webhookView(e events.Endpoint) webhookJSON {
	return webhookJSON{ID: e.ID, URL: e.URL, Description: e.Description, Secret: e.Secret, Created: rfc3339(e.CreatedAt)}
}

// GET /v1/accounts/{id}/webhooks
func (s *server) listWebhooks(w http.ResponseWriter, r *http.Request, acct string) error {
	eps, err := s.kl.Webhooks().Endpoints(r.Context(), acct)
	if err != nil {
		return err
	}
	out := struct {
		Data []webhookJSON `json:"data"`
	}{Data: make([]webhookJSON, 0, len(eps))}
	for _, e := range eps {
		out.Data = append(out.Data, webhookView(e))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// POST /v1/accounts/{id}/webhooks {url, description?} → 201 with the
// signing secret, shown this once.
func (s *server) createWebhook(w http.ResponseWriter, r *http.Request, acct string) error {
	var in struct {
		URL         string `json:"url"`
		Description string `json:"description"`
	}
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	if in.URL == "" {
		return badRequest("url is required: the https:// address that receives the events.")
	}
	e, err := s.kl.Webhooks().CreateEndpoint(r.Context(), acct, in.URL, in.Description)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, webhookView(e))
	return nil
}

// DELETE /v1/accounts/{id}/webhooks/{webhook_id}
func (s *server) deleteWebhook(w http.ResponseWriter, r *http.Request, acct string) error {
	id := r.PathValue("webhook_id")
	if err := s.kl.Webhooks().DeleteEndpoint(r.Context(), acct, id); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "deleted": true})
	return nil
}

// GET /v1/accounts/{id}/webhooks/deliveries?limit — the latest delivery
// attempts (no secrets, no response bodies).
func (s *server) listDeliveries(w http.ResponseWriter, r *http.Request, acct string) error {
	limit, err := parseLimit(r.URL.Query().Get("limit"))
	if err != nil {
		return err
	}
	ds, err := s.kl.Webhooks().Deliveries(r.Context(), acct, limit)
	if err != nil {
		return err
	}
	type delivery struct {
		EventID    string `json:"event_id"`
		EventType  string `json:"event_type"`
		WebhookID  string `json:"webhook_id"`
		Attempt    int    `json:"attempt"`
		StatusCode int    `json:"status_code"`
		Error      string `json:"error,omitempty"`
		DurationMS int64  `json:"duration_ms"`
		At         string `json:"at"`
	}
	out := struct {
		Data []delivery `json:"data"`
	}{Data: make([]delivery, 0, len(ds))}
	for _, d := range ds {
		out.Data = append(out.Data, delivery{EventID: d.EventID, EventType: string(d.EventType), WebhookID: d.EndpointID,
			Attempt: d.Attempt, StatusCode: d.StatusCode, Error: d.Error, DurationMS: d.Duration.Milliseconds(), At: rfc3339(d.At)})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type thresholdsJSON struct {
	LowBalanceINR []string `json:"low_balance_inr"`
}

func thresholdsView(ds []decimal.Decimal) thresholdsJSON {
	out := thresholdsJSON{LowBalanceINR: make([]string, 0, len(ds))}
	for _, d := range ds {
		out.LowBalanceINR = append(out.LowBalanceINR, d.StringFixed(2))
	}
	return out
}

// GET /v1/accounts/{id}/alert_thresholds
func (s *server) getThresholds(w http.ResponseWriter, r *http.Request, acct string) error {
	ds, err := s.kl.Webhooks().AlertThresholds(r.Context(), acct)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, thresholdsView(ds))
	return nil
}

// PUT /v1/accounts/{id}/alert_thresholds {low_balance_inr: ["100", "10"]}
// — up to five amounts; a balance.low event is sent each time the balance
// falls below one of them.
func (s *server) putThresholds(w http.ResponseWriter, r *http.Request, acct string) error {
	var in thresholdsJSON
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	if len(in.LowBalanceINR) > 5 {
		return badRequest("low_balance_inr takes at most 5 amounts.")
	}
	ds := make([]decimal.Decimal, 0, len(in.LowBalanceINR))
	for _, v := range in.LowBalanceINR {
		d, err := decimal.NewFromString(strings.TrimSpace(v))
		if err != nil || !d.IsPositive() || d.Exponent() < -2 || d.GreaterThan(decimal.NewFromInt(10_000_000)) {
			return badRequest(fmt.Sprintf("low_balance_inr: %q must be a positive INR amount of at most 10000000 with at most 2 decimals.", v))
		}
		ds = append(ds, d)
	}
	out, err := s.kl.Webhooks().SetAlertThresholds(r.Context(), acct, ds)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, thresholdsView(out))
	return nil
}

// parseAllow parses -webhook-allow: comma-separated IPs or CIDR prefixes.
func parseAllow(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("-webhook-allow: %q is not an IP address or CIDR prefix", f)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// startDispatcher runs the event dispatcher until the returned stop is
// called (at shutdown, before the KeyLedger closes).
func (s *server) startDispatcher(ctx context.Context) func(context.Context) error {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- s.kl.Dispatcher().Run(ctx) }()
	return func(wait context.Context) error {
		cancel()
		select {
		case err := <-done:
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		case <-wait.Done():
			return wait.Err()
		}
	}
}

// webhookPoll is how often an idle dispatcher looks for events.
const webhookPoll = 500 * time.Millisecond
