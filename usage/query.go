package usage

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyledger/keyledger/credits"
)

// ListQuery selects a page of an account's records, newest first.
type ListQuery struct {
	AccountID string
	// Optional equality filters.
	KeyID, Model, Endpoint string
	// From and To bound CreatedAt to [From, To); zero: unbounded.
	From, To time.Time
	// Cursor is the NextCursor of the previous page ("" for the first).
	Cursor string
	// Limit is clamped to 1..500: 0 and negative values give 1, larger
	// values 500 (OpenRush's rule for an explicit limit). A host whose
	// client sent no limit passes DefaultListLimit.
	Limit int
}

// RecordPage is one page of records, newest first.
type RecordPage struct {
	Records    []Record `json:"data"`
	NextCursor string   `json:"next_cursor,omitempty"` // "" on the last page
}

// clampLimit applies List's page size rule: 1..500.
func clampLimit(n int) int {
	return min(max(n, 1), MaxListLimit)
}

// List returns a page of the account's records matching q, newest first
// (by CreatedAt, then ID). Paging with NextCursor visits every record that
// existed when the first page was read exactly once, however many records
// are inserted meanwhile. It returns ErrInvalidQuery or ErrInvalidCursor.
func (s *Service) List(ctx context.Context, q ListQuery) (RecordPage, error) {
	if q.AccountID == "" || !printable(q.AccountID, maxIDLen) {
		return RecordPage{}, fmt.Errorf("%w: account ID", ErrInvalidQuery)
	}
	for _, f := range []string{q.KeyID, q.Model, q.Endpoint} {
		if len(f) > maxFieldLen || !utf8.ValidString(f) {
			return RecordPage{}, fmt.Errorf("%w: filter", ErrInvalidQuery)
		}
	}
	rq := RecordQuery{AccountID: q.AccountID, KeyID: q.KeyID, Model: q.Model, Endpoint: q.Endpoint, From: q.From, To: q.To}
	if q.Cursor != "" {
		t, id, err := decodeCursor(q.Cursor)
		if err != nil {
			return RecordPage{}, err
		}
		rq.AfterTime, rq.AfterID = t, id
	}
	limit := clampLimit(q.Limit)
	rq.Limit = limit + 1
	recs, err := s.store.UsageRecords(ctx, rq)
	if err != nil {
		return RecordPage{}, err
	}
	pg := RecordPage{Records: recs}
	if len(recs) > limit {
		pg.Records = recs[:limit]
		last := recs[limit-1]
		pg.NextCursor = encodeCursor(last.CreatedAt, last.ID)
	}
	if pg.Records == nil {
		pg.Records = []Record{}
	}
	return pg, nil
}

// encodeCursor returns the opaque cursor of a list position: after the
// record created at t with ID id.
func encodeCursor(t time.Time, id string) string {
	b := strconv.AppendInt(nil, t.UnixNano(), 10)
	b = append(b, '.')
	b = append(b, id...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor parses a cursor made by encodeCursor, or returns
// ErrInvalidCursor.
func decodeCursor(c string) (time.Time, string, error) {
	if len(c) > 4*(maxIDLen+32)/3 {
		return time.Time{}, "", ErrInvalidCursor
	}
	for i := 0; i < len(c); i++ { // the decoder would skip newlines
		if ch := c[i]; !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			return time.Time{}, "", ErrInvalidCursor
		}
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(c)
	if err != nil {
		return time.Time{}, "", ErrInvalidCursor
	}
	ns, id, ok := strings.Cut(string(b), ".")
	if !ok || id == "" || !printable(id, maxIDLen) || ns == "" || ns[0] == '+' {
		return time.Time{}, "", ErrInvalidCursor
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil || strconv.FormatInt(n, 10) != ns {
		return time.Time{}, "", ErrInvalidCursor
	}
	return time.Unix(0, n).UTC(), id, nil
}

// GroupField is a dimension Summary can group by.
type GroupField string

// Summary dimensions.
const (
	GroupDate     GroupField = "date"
	GroupModel    GroupField = "model"
	GroupKey      GroupField = "key"
	GroupEndpoint GroupField = "endpoint"
)

// parseDate reads a calendar date "2006-01-02" (as in Forii's start and
// end parameters), or returns ErrInvalidQuery.
func parseDate(s string) (time.Time, error) {
	if len(s) != len(time.DateOnly) {
		return time.Time{}, fmt.Errorf("%w: date %q", ErrInvalidQuery, truncate(s, 16))
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil || t.Year() < 1970 || t.Year() > 9999 {
		return time.Time{}, fmt.Errorf("%w: date %q", ErrInvalidQuery, s)
	}
	return t, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// SummaryQuery selects an account's usage over whole local days.
type SummaryQuery struct {
	AccountID string
	// From and To are inclusive local days, "2025-01-15".
	From, To string
	// GroupBy lists the dimensions of the rows (each at most once); empty
	// gives one total row.
	GroupBy []GroupField
	// TimeZone is the IANA zone of the days ("UTC" if empty).
	TimeZone string
	// Optional equality filters.
	KeyID, Model, Endpoint string
	// Raw computes the summary from the raw records instead of the rollups
	// (slow, for verification; records deleted by retention are missing).
	Raw bool
}

// SummaryRow is one group of a summary. The dimensions not grouped by are
// empty.
type SummaryRow struct {
	Date             string `json:"date,omitempty"`
	Model            string `json:"model,omitempty"`
	KeyID            string `json:"key_id,omitempty"`
	Endpoint         string `json:"endpoint,omitempty"`
	Requests         int64  `json:"requests"`
	Errors           int64  `json:"errors"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TotalTokens      int64  `json:"total_tokens"`
	Units            int64  `json:"units"`
	CachedUnits      int64  `json:"cached_units"`
	// CachedPromptTokens, CacheWriteTokens and ReasoningTokens are parts of
	// PromptTokens and CompletionTokens.
	CachedPromptTokens int64          `json:"cached_prompt_tokens"`
	CacheWriteTokens   int64          `json:"cache_write_tokens"`
	ReasoningTokens    int64          `json:"reasoning_tokens"`
	Cost               credits.Amount `json:"cost"`
	// Rerated is what another price book would have charged and Difference
	// is Rerated − Cost; only Rerate fills them.
	Rerated    credits.Amount `json:"rerated,omitzero"`
	Difference credits.Amount `json:"difference,omitzero"`
}

// Summary totals the account's usage over the days From..To of TimeZone,
// grouped by q.GroupBy, rows sorted by date, model, key and endpoint. It
// reads the daily rollups, so its cost does not grow with the number of
// records. Rollups are kept per time zone given to Meter: when the account
// has rollups of another zone in or next to the range (its zone changed, or
// the query asks in another zone), Summary falls back to scanning the raw
// records of the range — correct but slower, and blind to records deleted
// by DeleteRecordsBefore. It returns ErrInvalidQuery or ErrInvalidTimeZone.
func (s *Service) Summary(ctx context.Context, q SummaryQuery) ([]SummaryRow, error) {
	if q.AccountID == "" || !printable(q.AccountID, maxIDLen) {
		return nil, fmt.Errorf("%w: account ID", ErrInvalidQuery)
	}
	from, err := parseDate(q.From)
	if err != nil {
		return nil, err
	}
	to, err := parseDate(q.To)
	if err != nil {
		return nil, err
	}
	if to.Before(from) || to.Sub(from) > maxDayRange*24*time.Hour {
		return nil, fmt.Errorf("%w: date range", ErrInvalidQuery)
	}
	var g Grouping
	for _, f := range q.GroupBy {
		switch f {
		case GroupDate:
			g.Day = true
		case GroupModel:
			g.Model = true
		case GroupKey:
			g.Key = true
		case GroupEndpoint:
			g.Endpoint = true
		default:
			return nil, fmt.Errorf("%w: group by %q", ErrInvalidQuery, truncate(string(f), 16))
		}
	}
	for _, f := range []string{q.KeyID, q.Model, q.Endpoint} {
		if len(f) > maxFieldLen || !utf8.ValidString(f) {
			return nil, fmt.Errorf("%w: filter", ErrInvalidQuery)
		}
	}
	tz, loc, err := s.zone(q.TimeZone)
	if err != nil {
		return nil, err
	}
	acc := make(map[Rollup]*Rollup)
	if !q.Raw {
		rows, other, err := s.store.UsageRollups(ctx, RollupQuery{
			AccountID: q.AccountID, TimeZone: tz, FromDay: q.From, ToDay: q.To,
			KeyID: q.KeyID, Model: q.Model, Endpoint: q.Endpoint, Grouped: true, Keep: g,
		})
		if err != nil {
			return nil, err
		}
		if !other {
			for i := range rows {
				g.add(acc, &rows[i])
			}
			return g.rows(acc), nil
		}
	}
	start := time.Date(from.Year(), from.Month(), from.Day(), 0, 0, 0, 0, loc)
	end := time.Date(to.Year(), to.Month(), to.Day()+1, 0, 0, 0, 0, loc)
	rq := RecordQuery{AccountID: q.AccountID, KeyID: q.KeyID, Model: q.Model, Endpoint: q.Endpoint, From: start, To: end}
	var one Rollup
	err = s.store.ScanUsage(ctx, rq, func(r *Record) error {
		one = r.Rollup(tz, Day(r.CreatedAt, loc))
		one.Add(r)
		g.add(acc, &one)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return g.rows(acc), nil
}

// add merges a rollup row into the group it belongs to.
func (g Grouping) add(acc map[Rollup]*Rollup, r *Rollup) {
	k := Rollup{}
	if g.Day {
		k.Day = r.Day
	}
	if g.Model {
		k.Model = r.Model
	}
	if g.Key {
		k.KeyID = r.KeyID
	}
	if g.Endpoint {
		k.Endpoint = r.Endpoint
	}
	t, ok := acc[k]
	if !ok {
		t = &Rollup{}
		acc[k] = t
	}
	t.Merge(r)
}

func (g Grouping) rows(acc map[Rollup]*Rollup) []SummaryRow {
	out := make([]SummaryRow, 0, len(acc))
	for k, t := range acc {
		out = append(out, SummaryRow{
			Date: k.Day, Model: k.Model, KeyID: k.KeyID, Endpoint: k.Endpoint,
			Requests: t.Requests, Errors: t.Errors, PromptTokens: t.PromptTokens, CompletionTokens: t.CompletionTokens,
			TotalTokens: t.PromptTokens + t.CompletionTokens, Units: t.Units, CachedUnits: t.CachedUnits, Cost: t.Cost,
			CachedPromptTokens: t.CachedPromptTokens, CacheWriteTokens: t.CacheWriteTokens, ReasoningTokens: t.ReasoningTokens,
		})
	}
	slices.SortFunc(out, func(a, b SummaryRow) int {
		return cmpStrings(a.Date, b.Date, a.Model, b.Model, a.KeyID, b.KeyID, a.Endpoint, b.Endpoint)
	})
	return out
}

func cmpStrings(pairs ...string) int {
	for i := 0; i+1 < len(pairs); i += 2 {
		if c := strings.Compare(pairs[i], pairs[i+1]); c != 0 {
			return c
		}
	}
	return 0
}

// CounterSet is the usage of one period.
type CounterSet struct {
	Requests    int64          `json:"requests"`
	Units       int64          `json:"units"`
	CachedUnits int64          `json:"cached_units"`
	Cost        credits.Amount `json:"cost"`
}

// Counters are an account's usage today and this calendar month, in one
// time zone: email-verify's verifications_today, verifications_this_month
// and cache_hit_rate.
type Counters struct {
	// Day is today's date and Month this month ("2006-01") in TimeZone.
	Day       string     `json:"day"`
	Month     string     `json:"month"`
	TimeZone  string     `json:"time_zone"`
	Today     CounterSet `json:"today"`
	ThisMonth CounterSet `json:"this_month"`
	// CacheHitRate is this month's CachedUnits / Units (0 with no units).
	CacheHitRate float64 `json:"cache_hit_rate"`
}

// Counters returns the account's usage today and this month in timeZone
// ("UTC" if empty), from the rollups (see Summary for other zones). It
// returns ErrInvalidQuery or ErrInvalidTimeZone.
func (s *Service) Counters(ctx context.Context, accountID, timeZone string) (Counters, error) {
	tz, loc, err := s.zone(timeZone)
	if err != nil {
		return Counters{}, err
	}
	now := s.opt.Now().In(loc)
	today := Day(now, loc)
	first := today[:8] + "01"
	rows, err := s.Summary(ctx, SummaryQuery{AccountID: accountID, From: first, To: today, GroupBy: []GroupField{GroupDate}, TimeZone: tz})
	if err != nil {
		return Counters{}, err
	}
	c := Counters{Day: today, Month: today[:7], TimeZone: tz}
	for _, r := range rows {
		set := CounterSet{Requests: r.Requests, Units: r.Units, CachedUnits: r.CachedUnits, Cost: r.Cost}
		c.ThisMonth.add(set)
		if r.Date == today {
			c.Today.add(set)
		}
	}
	if c.ThisMonth.Units > 0 {
		c.CacheHitRate = float64(c.ThisMonth.CachedUnits) / float64(c.ThisMonth.Units)
	}
	return c, nil
}

func (c *CounterSet) add(o CounterSet) {
	c.Requests += o.Requests
	c.Units += o.Units
	c.CachedUnits += o.CachedUnits
	c.Cost = c.Cost.Add(o.Cost)
}

// DeleteRecordsBefore is the retention of raw records: it deletes every
// record created before t, of all accounts, and returns how many. Rollups
// (so Summary and Counters over rollups) and idempotency keys are kept: a
// replay of a deleted record's key still returns its ID and charge without
// charging again. A host keeps N days with DeleteRecordsBefore(ctx,
// now.AddDate(0, 0, -N)), e.g. daily.
func (s *Service) DeleteRecordsBefore(ctx context.Context, t time.Time) (int, error) {
	if t.IsZero() {
		return 0, fmt.Errorf("%w: zero time", ErrInvalidQuery)
	}
	return s.store.DeleteUsageBefore(ctx, t)
}
