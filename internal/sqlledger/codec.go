package sqlledger

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
	"github.com/keyledger/keyledger/internal/sqlrow"
	"github.com/keyledger/keyledger/usage"
	"github.com/keyledger/keyledger/usage/meter"
)

// Row codecs shared by the SQL backends. Money is exact decimal text
// (credits.Amount.String) in both; times are unix nanoseconds, NULL for
// the zero time where a column may be empty; booleans scan from BOOLEAN or
// from INTEGER 0/1 (database/sql converts).

// The column lists of the ledger tables, the same in every backend.
const (
	AccountColumns = `account_id, unit, balance, held, seq, version, overdraft, monthly_cap, time_zone,
	recharge_enabled, recharge_threshold, recharge_amount, recharge_armed, recharges,
	month_start, month_end, month_spent, opened_at, updated_at`
	EntryColumns = `account_id, seq, id, type, amount, balance_after, reference, description, idem_key, hold_id, expires_at, created_at`
	HoldColumns  = `id, account_id, amount, state, reference, idem_key, created_at, expires_at, resolved_at,
	actual, charged, entry_id, entry_seq, settle_fp, key_id, key_epoch`
	RecordColumns = `account_id, created_at, id, key_id, auth_source, endpoint, method, model, status_code, response_time,
	request_bytes, response_bytes, prompt_tokens, completion_tokens, units, cached_units, upstream_cost, cost,
	error_type, error_message, metadata, cached_prompt_tokens, cache_write_tokens, reasoning_tokens, price_from`
)

// ParseAmount reads stored decimal text. A database may return a NUMERIC
// with the scale it was computed at ("1.0"); trailing zeros are dropped so
// that values read back equal the ones written.
func ParseAmount(s string) (credits.Amount, error) {
	if strings.IndexByte(s, '.') >= 0 {
		s = strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
	}
	d, err := decimal.NewFromString(s)
	return credits.NewAmount(d), err
}

// Amounts parses several stored amounts and keeps the first error.
type Amounts struct{ Err error }

// Parse parses s (see ParseAmount).
func (a *Amounts) Parse(s string) credits.Amount {
	v, err := ParseAmount(s)
	if err != nil && a.Err == nil {
		a.Err = fmt.Errorf("stored amount %q: %w", s, err)
	}
	return v
}

// Nanos is t as stored.
func Nanos(t time.Time) int64 { return t.UnixNano() }

// Time is a stored time.
func Time(n int64) time.Time { return time.Unix(0, n).UTC() }

// NullTime is a stored time that may be NULL.
func NullTime(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return Time(n.Int64)
}

// NullNanos is t as stored in a column that may be NULL.
func NullNanos(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}
}

// KeyLimits is the key_limits column of an account: its keys' spend
// limits and counters as JSON, "" when it has none.
func KeyLimits(st *ledger.AccountState) (string, error) {
	if len(st.Keys) == 0 {
		return "", nil
	}
	b, err := json.Marshal(st.Keys)
	if err != nil {
		return "", fmt.Errorf("key limits of %s: %w", st.ID, err)
	}
	return string(b), nil
}

// ScanRow scans an account row: AccountColumns, then lots, hold_due and
// key_limits.
func ScanRow(row sqlrow.Scanner) (Row, error) {
	var (
		r                                         Row
		st                                        = &r.St
		bal, held, od, limit, thr, ramt, spent    string
		monthStart, monthEnd, openedAt, updatedAt int64
		enabled, armed                            bool
		keys                                      string
	)
	if err := row.Scan(&st.ID, &st.Unit, &bal, &held, &st.Seq, &st.Version, &od, &limit, &st.Policy.TimeZone,
		&enabled, &thr, &ramt, &armed, &st.Recharges, &monthStart, &monthEnd, &spent, &openedAt, &updatedAt,
		&r.Lots, &r.HoldDue, &keys); err != nil {
		return r, err
	}
	if keys != "" {
		if err := json.Unmarshal([]byte(keys), &st.Keys); err != nil {
			return r, fmt.Errorf("stored key limits of %s: %w", st.ID, err)
		}
	}
	var p Amounts
	st.Balance, st.Held, st.MonthSpent = p.Parse(bal), p.Parse(held), p.Parse(spent)
	st.Policy.Overdraft, st.Policy.MonthlyCap = p.Parse(od), p.Parse(limit)
	st.Policy.AutoRecharge = credits.AutoRecharge{Enabled: enabled, Threshold: p.Parse(thr), Amount: p.Parse(ramt)}
	st.RechargeArmed = armed
	st.MonthStart, st.MonthEnd = Time(monthStart), Time(monthEnd)
	st.OpenedAt, st.UpdatedAt = Time(openedAt), Time(updatedAt)
	return r, p.Err
}

// ScanEntry scans EntryColumns.
func ScanEntry(row sqlrow.Scanner) (credits.Entry, error) {
	var (
		e             credits.Entry
		amt, bal, typ string
		expires       sql.NullInt64
		created       int64
	)
	if err := row.Scan(&e.AccountID, &e.Seq, &e.ID, &typ, &amt, &bal, &e.Reference, &e.Description,
		&e.IdempotencyKey, &e.HoldID, &expires, &created); err != nil {
		return e, err
	}
	var p Amounts
	e.Type, e.Amount, e.BalanceAfter = credits.EntryType(typ), p.Parse(amt), p.Parse(bal)
	e.ExpiresAt, e.CreatedAt = NullTime(expires), Time(created)
	return e, p.Err
}

// ScanHold scans HoldColumns.
func ScanHold(row sqlrow.Scanner) (credits.Hold, error) {
	var (
		h                           credits.Hold
		amt, state, actual, charged string
		created, expires            int64
		resolved                    sql.NullInt64
		fp                          []byte
	)
	if err := row.Scan(&h.ID, &h.AccountID, &amt, &state, &h.Reference, &h.IdempotencyKey, &created, &expires,
		&resolved, &actual, &charged, &h.EntryID, &h.EntrySeq, &fp, &h.KeyID, &h.KeyEpoch); err != nil {
		return h, err
	}
	var p Amounts
	h.Amount, h.Actual, h.Charged = p.Parse(amt), p.Parse(actual), p.Parse(charged)
	h.State = credits.HoldState(state)
	h.CreatedAt, h.ExpiresAt, h.ResolvedAt = Time(created), Time(expires), NullTime(resolved)
	copy(h.SettleFingerprint[:], fp)
	return h, p.Err
}

// ScanLot scans id, expires_at, remaining.
func ScanLot(row sqlrow.Scanner) (ledger.Lot, error) {
	var (
		lot ledger.Lot
		exp int64
		rem string
	)
	if err := row.Scan(&lot.ID, &exp, &rem); err != nil {
		return lot, err
	}
	var p Amounts
	lot.ExpiresAt, lot.Remaining = Time(exp), p.Parse(rem)
	return lot, p.Err
}

// ScanDueHold scans id, amount, expires_at, key_id, key_epoch of an active
// hold of acct.
func ScanDueHold(row sqlrow.Scanner, acct string) (credits.Hold, error) {
	h := credits.Hold{AccountID: acct, State: credits.HoldActive}
	var (
		amt string
		exp int64
	)
	if err := row.Scan(&h.ID, &amt, &exp, &h.KeyID, &h.KeyEpoch); err != nil {
		return h, err
	}
	var p Amounts
	h.Amount, h.ExpiresAt = p.Parse(amt), Time(exp)
	return h, p.Err
}

// ScanOp scans key, account_id, kind, fingerprint, entry_seq, hold_id
// (the key columns only if k is set).
func ScanOp(row sqlrow.Scanner, k *OpKey) (ledger.OpRecord, error) {
	var (
		rec ledger.OpRecord
		fp  []byte
	)
	dest := []any{&rec.Kind, &fp, &rec.EntrySeq, &rec.HoldID}
	if k != nil {
		dest = append([]any{&k.Key, &k.Acct}, dest...)
	}
	err := row.Scan(dest...)
	copy(rec.Fingerprint[:], fp)
	return rec, err
}

// ScanMeter scans account_id, key, fingerprint, record_id, hold_id,
// created_at (the key columns only if k is set).
func ScanMeter(row sqlrow.Scanner, k *OpKey) (meter.MeterOp, error) {
	var (
		op      meter.MeterOp
		fp      []byte
		created int64
	)
	dest := []any{&fp, &op.RecordID, &op.HoldID, &created}
	if k != nil {
		dest = append([]any{&k.Acct, &k.Key}, dest...)
	}
	err := row.Scan(dest...)
	copy(op.Fingerprint[:], fp)
	op.CreatedAt = Time(created)
	return op, err
}

// ScanRecord scans RecordColumns.
func ScanRecord(row sqlrow.Scanner) (usage.Record, error) {
	var (
		r              usage.Record
		rt, created    int64
		status         int64
		upstream, cost string
		meta           sql.NullString
		priceFrom      sql.NullInt64
	)
	err := row.Scan(&r.AccountID, &created, &r.ID, &r.KeyID, &r.AuthSource, &r.Endpoint, &r.Method, &r.Model, &status,
		&rt, &r.RequestBytes, &r.ResponseBytes, &r.PromptTokens, &r.CompletionTokens, &r.Units, &r.CachedUnits, &upstream,
		&cost, &r.ErrorType, &r.ErrorMessage, &meta, &r.CachedPromptTokens, &r.CacheWriteTokens, &r.ReasoningTokens, &priceFrom)
	if err != nil {
		return r, err
	}
	r.PriceFrom = NullTime(priceFrom)
	var p Amounts
	r.StatusCode = int(status)
	r.UpstreamCost, r.Cost = p.Parse(upstream), p.Parse(cost)
	r.ResponseTime, r.CreatedAt = time.Duration(rt), Time(created)
	if meta.Valid {
		if err := json.Unmarshal([]byte(meta.String), &r.Metadata); err != nil {
			return r, fmt.Errorf("stored metadata: %w", err)
		}
	}
	return r, p.Err
}

// Metadata is a record's metadata as stored: JSON, or NULL if empty.
func Metadata(r *usage.Record) (sql.NullString, error) {
	if len(r.Metadata) == 0 {
		return sql.NullString{}, nil
	}
	b, err := json.Marshal(r.Metadata)
	if err != nil {
		return sql.NullString{}, fmt.Errorf("record metadata: %w", err)
	}
	return sql.NullString{String: string(b), Valid: true}, nil
}

// DayAround returns the day n days from day ("2006-01-02"), or day itself
// if it does not parse.
func DayAround(day string, n int) string {
	t, err := time.Parse(time.DateOnly, day)
	if err != nil {
		return day
	}
	return t.AddDate(0, 0, n).Format(time.DateOnly)
}
