package dashboard

import (
	"encoding/csv"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

// usageQuery is a parsed usage page request.
type usageQuery struct {
	Range dateRange
	Group usage.GroupField
	KeyID string // optional filter, checked to be the account's
}

// readUsageQuery parses and checks the usage page's parameters; a key
// filter naming another account's key is ErrNotFound.
func (h *Handler) readUsageQuery(r *http.Request, v *viewer) (usageQuery, error) {
	q := r.URL.Query()
	var uq usageQuery
	var err error
	if uq.Range, err = parseDateRange(q.Get("from"), q.Get("to"), v.loc, h.o.Now()); err != nil {
		return uq, err
	}
	if uq.Group, err = parseGroup(q.Get("group")); err != nil {
		return uq, err
	}
	if uq.KeyID = q.Get("key"); uq.KeyID != "" {
		if _, err := h.kl.Keys.Get(r.Context(), v.Account.ID, uq.KeyID); err != nil {
			return uq, err
		}
	}
	return uq, nil
}

// usageRow is one row of the usage table.
type usageRow struct {
	Label                                string
	Requests, Errors, Prompt, Completion int64
	Cached, Reasoning                    int64 // parts of Prompt and Completion
	Total                                int64
	Cost                                 credits.Amount
	KeyID                                string // the key's filter link (group by key)
	Model, Date                          string
}

// usageData is the usage page.
type usageData struct {
	From, To, Group, KeyID string
	GroupLabel             string
	Rows                   []usageRow
	Totals                 usageRow
	Chart                  chart
	CSVHref                string
	Keys                   []keyRow // the key filter's choices
}

func groupLabel(g usage.GroupField) string {
	switch g {
	case usage.GroupKey:
		return "Key"
	case usage.GroupDate:
		return "Date"
	}
	return "Model"
}

// keyNames maps the account's key IDs to their names.
func (h *Handler) keyNames(r *http.Request, v *viewer) (map[string]string, []apikey.APIKey, error) {
	keys, err := h.allKeys(r, v)
	if err != nil {
		return nil, nil, err
	}
	names := make(map[string]string, len(keys))
	for _, k := range keys {
		names[k.ID] = k.Name
	}
	return names, keys, nil
}

// summary returns the rows of the account's usage grouped by g.
func (h *Handler) summary(r *http.Request, v *viewer, uq usageQuery, group ...usage.GroupField) ([]usage.SummaryRow, error) {
	return h.kl.Usage.Summary(r.Context(), usage.SummaryQuery{
		AccountID: v.Account.ID, From: uq.Range.From, To: uq.Range.To, GroupBy: group,
		TimeZone: v.loc.String(), KeyID: uq.KeyID,
	})
}

func toRow(s usage.SummaryRow, label string) usageRow {
	return usageRow{Label: label, Requests: s.Requests, Errors: s.Errors, Prompt: s.PromptTokens, Completion: s.CompletionTokens,
		Cached: s.CachedPromptTokens, Reasoning: s.ReasoningTokens, Total: s.TotalTokens, Cost: s.Cost, KeyID: s.KeyID, Model: s.Model, Date: s.Date}
}

// rowLabel names a summary row's group for people.
func rowLabel(s usage.SummaryRow, g usage.GroupField, names map[string]string) string {
	switch g {
	case usage.GroupKey:
		if n, ok := names[s.KeyID]; ok {
			return n
		}
		if s.KeyID == "" {
			return "(no key)"
		}
		return s.KeyID
	case usage.GroupDate:
		return s.Date
	}
	if s.Model == "" {
		return "(no model)"
	}
	return s.Model
}

func (h *Handler) usagePage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	uq, err := h.readUsageQuery(r, v)
	if err != nil {
		return err
	}
	names, keys, err := h.keyNames(r, v)
	if err != nil {
		return err
	}
	daily, err := h.summary(r, v, uq, usage.GroupDate)
	if err != nil {
		return err
	}
	rows := daily
	if uq.Group != usage.GroupDate {
		if rows, err = h.summary(r, v, uq, uq.Group); err != nil {
			return err
		}
	}
	d := usageData{From: uq.Range.From, To: uq.Range.To, Group: string(uq.Group), KeyID: uq.KeyID, GroupLabel: groupLabel(uq.Group),
		Chart: buildChart(uq.Range.Days, daily, h.kl.Credits.Unit(), h.o.Currency)}
	d.Totals.Label = "Total"
	for _, s := range rows {
		row := toRow(s, rowLabel(s, uq.Group, names))
		d.Rows = append(d.Rows, row)
		d.Totals.Requests += row.Requests
		d.Totals.Errors += row.Errors
		d.Totals.Prompt += row.Prompt
		d.Totals.Completion += row.Completion
		d.Totals.Cached += row.Cached
		d.Totals.Reasoning += row.Reasoning
		d.Totals.Total += row.Total
		d.Totals.Cost = d.Totals.Cost.Add(row.Cost)
	}
	cq := url.Values{"from": {uq.Range.From}, "to": {uq.Range.To}, "group": {string(uq.Group)}}
	if uq.KeyID != "" {
		cq.Set("key", uq.KeyID)
	}
	d.CSVHref = h.base + "/usage.csv?" + cq.Encode()
	for _, k := range keys {
		d.Keys = append(d.Keys, keyRow{ID: k.ID, Name: k.Name})
	}
	return h.render(w, r, v, http.StatusOK, "usage", "Usage", d)
}

// csvCell defuses spreadsheet formulas in text a person chose (key names):
// a cell starting with = + - @ or a control character gets a leading '.
func csvCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// usageCSV exports the usage table by day and the chosen group.
func (h *Handler) usageCSV(w http.ResponseWriter, r *http.Request, v *viewer) error {
	uq, err := h.readUsageQuery(r, v)
	if err != nil {
		return err
	}
	names, _, err := h.keyNames(r, v)
	if err != nil {
		return err
	}
	group := []usage.GroupField{usage.GroupDate}
	if uq.Group != usage.GroupDate {
		group = append(group, uq.Group)
	}
	rows, err := h.summary(r, v, uq, group...)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="usage-`+uq.Range.From+`-`+uq.Range.To+`.csv"`)
	w.Header().Set("Cache-Control", "no-store")
	cw := csv.NewWriter(w)
	head := []string{"date"}
	switch uq.Group {
	case usage.GroupKey:
		head = append(head, "key_id", "key_name")
	case usage.GroupModel:
		head = append(head, "model")
	}
	head = append(head, "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_"+strings.ToLower(h.kl.Credits.Unit().Code),
		"cached_prompt_tokens", "cache_write_tokens", "reasoning_tokens")
	_ = cw.Write(head)
	for _, s := range rows {
		rec := []string{s.Date}
		switch uq.Group {
		case usage.GroupKey:
			rec = append(rec, s.KeyID, csvCell(names[s.KeyID]))
		case usage.GroupModel:
			rec = append(rec, csvCell(s.Model))
		}
		rec = append(rec, strconv.FormatInt(s.Requests, 10), strconv.FormatInt(s.Errors, 10), strconv.FormatInt(s.PromptTokens, 10),
			strconv.FormatInt(s.CompletionTokens, 10), strconv.FormatInt(s.TotalTokens, 10), s.Cost.Decimal().String(),
			strconv.FormatInt(s.CachedPromptTokens, 10), strconv.FormatInt(s.CacheWriteTokens, 10), strconv.FormatInt(s.ReasoningTokens, 10))
		_ = cw.Write(rec)
	}
	cw.Flush()
	return nil
}

// requestRow is one line of the request log.
type requestRow struct {
	Time, Key, KeyID, What, Error string
	Status                        int
	LatencyMS                     int64
	Prompt, Completion            int64
	Cached, Reasoning             int64
	Cost                          credits.Amount
	Failed                        bool
}

// requestsData is the request log page.
type requestsData struct {
	Rows                   []requestRow
	NextHref, KeyID, Model string
	First                  bool
	Keys                   []keyRow
}

func (h *Handler) requestsPage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	q := r.URL.Query()
	keyID, model, cursor := q.Get("key"), q.Get("model"), q.Get("cursor")
	if keyID != "" {
		if _, err := h.kl.Keys.Get(r.Context(), v.Account.ID, keyID); err != nil {
			return err
		}
	}
	if len(model) > maxModelLen {
		return userErrorf("Model names are at most %d characters.", maxModelLen)
	}
	names, keys, err := h.keyNames(r, v)
	if err != nil {
		return err
	}
	p, err := h.kl.Usage.List(r.Context(), usage.ListQuery{AccountID: v.Account.ID, KeyID: keyID, Model: model, Cursor: cursor, Limit: usage.DefaultListLimit})
	if err != nil {
		return err
	}
	d := requestsData{KeyID: keyID, Model: model, First: cursor == ""}
	if p.NextCursor != "" {
		nq := url.Values{"cursor": {p.NextCursor}}
		if keyID != "" {
			nq.Set("key", keyID)
		}
		if model != "" {
			nq.Set("model", model)
		}
		d.NextHref = h.base + "/requests?" + nq.Encode()
	}
	for _, rec := range p.Records {
		row := requestRow{Time: rec.CreatedAt.In(v.loc).Format("2006-01-02 15:04:05"), KeyID: rec.KeyID, Key: names[rec.KeyID],
			What: rec.Model, Status: rec.StatusCode, LatencyMS: rec.ResponseTime.Milliseconds(),
			Prompt: rec.PromptTokens, Completion: rec.CompletionTokens, Cached: rec.CachedPromptTokens, Reasoning: rec.ReasoningTokens,
			Cost: rec.Cost, Failed: !rec.Billable()}
		if row.What == "" {
			row.What = strings.TrimSpace(rec.Method + " " + rec.Endpoint)
		}
		if row.Key == "" {
			row.Key = rec.KeyID
		}
		row.Error = strings.TrimSpace(strings.TrimSpace(rec.ErrorType + ": " + rec.ErrorMessage))
		row.Error = strings.Trim(row.Error, ": ")
		d.Rows = append(d.Rows, row)
	}
	for _, k := range keys {
		d.Keys = append(d.Keys, keyRow{ID: k.ID, Name: k.Name})
	}
	return h.render(w, r, v, http.StatusOK, "requests", "Requests", d)
}
