package main

import (
	"net/http"
	"net/url"
	"time"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/query"
	"github.com/keyledger/keyledger/usage"
)

// usageItem is OpenRush's activity item: every field of the seed.
type usageItem struct {
	ID             string         `json:"id"`
	AccountID      string         `json:"account_id"`
	CredentialID   string         `json:"credential_id"`
	AuthSource     string         `json:"auth_source"`
	Endpoint       string         `json:"endpoint"`
	Method         string         `json:"method"`
	StatusCode     int            `json:"status_code"`
	ResponseTimeMS int64          `json:"response_time_ms"`
	RequestBytes   int64          `json:"request_bytes"`
	ResponseBytes  int64          `json:"response_bytes"`
	UpstreamUSD    credits.Amount `json:"dataforseo_cost_usd"`
	CreditsCharged credits.Amount `json:"credits_charged"`
	ErrorType      *string        `json:"error_type"`
	ErrorMessage   *string        `json:"error_message"`
	CreatedAt      time.Time      `json:"created_at"`
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func item(r usage.Record) usageItem {
	return usageItem{
		ID: r.ID, AccountID: r.AccountID, CredentialID: r.KeyID, AuthSource: r.AuthSource,
		Endpoint: r.Endpoint, Method: r.Method, StatusCode: r.StatusCode, ResponseTimeMS: r.ResponseTime.Milliseconds(),
		RequestBytes: r.RequestBytes, ResponseBytes: r.ResponseBytes, UpstreamUSD: r.UpstreamCost, CreditsCharged: r.Cost,
		ErrorType: optString(r.ErrorType), ErrorMessage: optString(r.ErrorMessage), CreatedAt: stamp(r.CreatedAt),
	}
}

// parseUsageQuery reads limit (default 50, clamped to 1..500, an integer
// or 400) and cursor (the next_cursor of the previous page).
func parseUsageQuery(q url.Values) (limit int, cursor string, err error) {
	limit, err = query.Limit(q.Get("limit"))
	if err != nil {
		return 0, "", err
	}
	return limit, q.Get("cursor"), nil // usage.Service.List checks the cursor (ErrInvalidCursor)
}

// GET /v1/me/usage?limit=N[&cursor=C] → {data:[items newest first], next_cursor}.
func (s *api) listUsage(w http.ResponseWriter, r *http.Request, v apikey.Verified) {
	limit, cursor, err := parseUsageQuery(r.URL.Query())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	pg, err := s.kl.Usage.List(r.Context(), usage.ListQuery{AccountID: v.AccountID, Limit: limit, Cursor: cursor})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	items := make([]usageItem, len(pg.Records))
	for i, rec := range pg.Records {
		items[i] = item(rec)
	}
	s.ok(w, http.StatusOK, map[string]any{"data": items, "next_cursor": optString(pg.NextCursor)})
}
