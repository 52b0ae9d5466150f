package main

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/usage"
)

// usageQuery is a parsed GET …/usage query.
type usageQuery struct {
	Start, End string   // inclusive days, YYYY-MM-DD, in the account's time zone
	GroupBy    []string // "date" always, plus "model" and/or "key"
}

// maxUsageDays bounds a usage query's range.
const maxUsageDays = 366

// parseUsageQuery parses start, end (inclusive, default: the last 30 days
// ending today in loc) and group_by (a comma list of model, key and date;
// default model). Rows are always per day.
func parseUsageQuery(q url.Values, today time.Time, loc *time.Location) (usageQuery, error) {
	day := func(name, s string, def time.Time) (time.Time, error) {
		if s == "" {
			return def, nil
		}
		t, err := time.ParseInLocation(time.DateOnly, s, loc)
		if err != nil {
			return t, badRequest(name + " must be a date YYYY-MM-DD.")
		}
		return t, nil
	}
	t0 := today.In(loc)
	todayDay := time.Date(t0.Year(), t0.Month(), t0.Day(), 0, 0, 0, 0, loc)
	end, err := day("end", q.Get("end"), todayDay)
	if err != nil {
		return usageQuery{}, err
	}
	start, err := day("start", q.Get("start"), end.AddDate(0, 0, -29))
	if err != nil {
		return usageQuery{}, err
	}
	if end.Before(start) {
		return usageQuery{}, badRequest("end must not be before start.")
	}
	if end.Sub(start) > maxUsageDays*24*time.Hour {
		return usageQuery{}, badRequest("The range may span at most 366 days.")
	}
	uq := usageQuery{Start: start.Format(time.DateOnly), End: end.Format(time.DateOnly), GroupBy: []string{"date"}}
	gb := q.Get("group_by")
	if gb == "" {
		gb = "model"
	}
	for _, g := range strings.Split(gb, ",") {
		switch g = strings.TrimSpace(g); g {
		case "date":
		case "model", "key":
			if !slices.Contains(uq.GroupBy, g) {
				uq.GroupBy = append(uq.GroupBy, g)
			}
		default:
			return usageQuery{}, badRequest("group_by must be model, key or date (or a comma list of them).")
		}
	}
	return uq, nil
}

// GET /v1/accounts/{id}/usage?start&end&group_by: rows per day of the
// account's time zone (Asia/Kolkata for accounts the gateway creates), from
// the usage rollups.
func (s *server) getUsage(w http.ResponseWriter, r *http.Request, acct string) error {
	a, err := s.kl.Accounts.Get(r.Context(), acct)
	if err != nil {
		return err
	}
	q, err := parseUsageQuery(r.URL.Query(), s.now(), a.Location())
	if err != nil {
		return err
	}
	gb := make([]usage.GroupField, len(q.GroupBy))
	for i, g := range q.GroupBy {
		gb[i] = usage.GroupField(g)
	}
	rows, err := s.kl.Usage.Summary(r.Context(), usage.SummaryQuery{AccountID: acct, From: q.Start, To: q.End, GroupBy: gb, TimeZone: a.Location().String()})
	if err != nil {
		return err
	}
	type rowJSON struct {
		Date             string `json:"date"`
		Model            string `json:"model,omitempty"`
		KeyID            string `json:"key_id,omitempty"`
		Requests         int64  `json:"requests"`
		PromptTokens     int64  `json:"prompt_tokens"`
		CompletionTokens int64  `json:"completion_tokens"`
		// Parts of the prompt and completion tokens, priced on their own.
		CachedPromptTokens int64          `json:"cached_prompt_tokens"`
		CacheWriteTokens   int64          `json:"cache_write_tokens"`
		ReasoningTokens    int64          `json:"reasoning_tokens"`
		TotalTokens        int64          `json:"total_tokens"`
		CostINR            openai.Decimal `json:"cost_inr"`
	}
	out := struct {
		Data []rowJSON `json:"data"`
	}{Data: make([]rowJSON, 0, len(rows))}
	for _, row := range rows {
		out.Data = append(out.Data, rowJSON{Date: row.Date, Model: row.Model, KeyID: row.KeyID, Requests: row.Requests,
			PromptTokens: row.PromptTokens, CompletionTokens: row.CompletionTokens, TotalTokens: row.TotalTokens,
			CachedPromptTokens: row.CachedPromptTokens, CacheWriteTokens: row.CacheWriteTokens, ReasoningTokens: row.ReasoningTokens,
			CostINR: openai.NewDecimal(row.Cost.Decimal())})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
