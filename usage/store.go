package usage

import (
	"context"
	"time"

	"github.com/keyledger/keyledger/credits"
)

// MeterRequest is one validated Meter call as a Store receives it: the
// record complete (ID, CreatedAt and the cost to charge filled in), its
// rollup day, and the ledger spend that charges it, built by the credits
// Service.
type MeterRequest struct {
	Record Record
	// TimeZone and Day place the record in its daily rollup: Day is
	// Record.CreatedAt's date ("2006-01-02") in TimeZone.
	TimeZone, Day string
	// IdempotencyKey scopes the request per account; Fingerprint
	// identifies the request for replays.
	IdempotencyKey string
	Fingerprint    [32]byte
	// Spend is the ledger spend (debit, settle or release) to apply in the
	// same transaction; its Kind is 0 when nothing is charged or released.
	Spend credits.SpendRequest
}

// MeterOutcome is the result of one MeterRequest.
type MeterOutcome struct {
	Record             Record        // as stored (Cost = what was charged)
	Entry              credits.Entry // the debit entry, "" ID when none
	Charged, Shortfall credits.Amount
	Replayed           bool
	// Spend is the ledger result, for credits.Service.AfterSpend after
	// commit (zero when the request had no spend or was replayed).
	Spend credits.SpendResult
	// Err is the request's expected failure (a sentinel of this package or
	// of credits); nil on success. A failed request writes nothing.
	Err error
}

// Rollup is one daily rollup row: the totals of an account's records of
// one local day (in TimeZone), model, key and endpoint.
type Rollup struct {
	AccountID, TimeZone, Day, Model, KeyID, Endpoint string
	Requests, Errors                                 int64
	PromptTokens, CompletionTokens                   int64
	Units, CachedUnits                               int64
	// CachedPromptTokens, CacheWriteTokens and ReasoningTokens are parts of
	// PromptTokens and CompletionTokens, as in Record.
	CachedPromptTokens, CacheWriteTokens, ReasoningTokens int64
	Cost                                                  credits.Amount
}

// Rollup returns the empty rollup row that r belongs to in time zone tz
// on day ("2006-01-02").
func (r *Record) Rollup(tz, day string) Rollup {
	return Rollup{AccountID: r.AccountID, TimeZone: tz, Day: day, Model: r.Model, KeyID: r.KeyID, Endpoint: r.Endpoint}
}

// Add adds r's totals to the row.
func (ro *Rollup) Add(r *Record) {
	ro.Requests++
	if !r.Billable() {
		ro.Errors++
	}
	ro.PromptTokens += r.PromptTokens
	ro.CompletionTokens += r.CompletionTokens
	ro.Units += r.Units
	ro.CachedUnits += r.CachedUnits
	ro.CachedPromptTokens += r.CachedPromptTokens
	ro.CacheWriteTokens += r.CacheWriteTokens
	ro.ReasoningTokens += r.ReasoningTokens
	if !r.Cost.IsZero() {
		ro.Cost = ro.Cost.Add(r.Cost)
	}
}

// Merge adds o's totals to the row.
func (ro *Rollup) Merge(o *Rollup) {
	ro.Requests += o.Requests
	ro.Errors += o.Errors
	ro.PromptTokens += o.PromptTokens
	ro.CompletionTokens += o.CompletionTokens
	ro.Units += o.Units
	ro.CachedUnits += o.CachedUnits
	ro.CachedPromptTokens += o.CachedPromptTokens
	ro.CacheWriteTokens += o.CacheWriteTokens
	ro.ReasoningTokens += o.ReasoningTokens
	if !o.Cost.IsZero() {
		ro.Cost = ro.Cost.Add(o.Cost)
	}
}

// RecordQuery selects an account's records, newest first: ordered by
// CreatedAt descending, then ID descending.
type RecordQuery struct {
	AccountID string
	// Optional equality filters.
	KeyID, Model, Endpoint string
	// From and To bound CreatedAt to [From, To); zero: unbounded.
	From, To time.Time
	// After, when AfterID is set, continues below the position (AfterTime,
	// AfterID) of the previous page's last record.
	AfterTime time.Time
	AfterID   string
	// Limit bounds the result (> 0); a scan ignores it.
	Limit int
}

// RollupQuery selects an account's rollup rows of one time zone over an
// inclusive day range.
type RollupQuery struct {
	AccountID, TimeZone string
	FromDay, ToDay      string // "2006-01-02", inclusive
	// Optional equality filters.
	KeyID, Model, Endpoint string
	// Grouped says the caller adds up the rows that differ only in the
	// dimensions (day, model, key, endpoint) its Keep does not name. A store
	// may then return those sums itself: one row per combination of the
	// kept dimensions, the others empty (AccountID and TimeZone as
	// queried). Returning the raw rows is just as correct.
	Grouped bool
	Keep    Grouping
}

// Grouping names the rollup dimensions a summary keeps.
type Grouping struct{ Day, Model, Key, Endpoint bool }

// Store is what the usage Service needs from a backend. Implementations
// are safe for concurrent use, receive values the Service has validated,
// and run each meter request with usage/meter.ApplyMeter inside their
// transaction.
//
// A store whose commit is expensive may also have a method
// UsageGroupCommit() bool that returns true; the Service's Recorder then
// coalesces concurrent Meter calls into one MeterUsage call per
// transaction. Stores without it receive one request per call.
type Store interface {
	// MeterUsage applies reqs in order with meter.ApplyMeter and stores each
	// outcome in res[i] (len(res) == len(reqs)). Each request is
	// all-or-nothing on its own: a request whose outcome has Err set wrote
	// nothing (the backend rolls back what ApplyMeter wrote for it) and
	// does not affect the others, and a request's own system failure is
	// reported in its res[i].Err the same way. A non-nil error means a
	// system failure for which no request of the call was applied.
	MeterUsage(ctx context.Context, now time.Time, reqs []MeterRequest, res []MeterOutcome) error
	// UsageRecords returns up to q.Limit records matching q, newest first.
	UsageRecords(ctx context.Context, q RecordQuery) ([]Record, error)
	// ScanUsage calls fn for every record matching q (q.Limit ignored), in
	// no particular order, from one snapshot; an error from fn stops the
	// scan and is returned.
	ScanUsage(ctx context.Context, q RecordQuery, fn func(*Record) error) error
	// UsageRollups returns the rollup rows matching q (in no particular
	// order; summed over the dimensions q.Keep drops if q.Grouped and the
	// store chooses to) and whether the account has rows of another time
	// zone between the day before q.FromDay and the day after q.ToDay, in
	// which case the rows of q.TimeZone do not cover every record of the
	// range.
	UsageRollups(ctx context.Context, q RollupQuery) (rows []Rollup, otherZones bool, err error)
	// DeleteUsageBefore deletes every raw record created before t, of all
	// accounts, keeping rollups and idempotency records, and returns how
	// many it deleted.
	DeleteUsageBefore(ctx context.Context, t time.Time) (int, error)
}
