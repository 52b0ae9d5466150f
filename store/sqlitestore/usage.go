package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/sqlledger"
	"github.com/keyledger/keyledger/internal/sqlrow"
	"github.com/keyledger/keyledger/usage"
	"github.com/keyledger/keyledger/usage/meter"
)

// Usage metering on SQLite: the SQL side of sqlledger.Engine's MeterUsage
// (see credits.go). The prefetch looks up the batch's meter keys and
// record IDs with a few multi-row queries; the flush writes records and
// meter keys with multi-row statements and upserts the batch's rollup
// sums (costs are exact, as whole units and attounits) once per distinct
// (account, zone, day, model, key, endpoint).

// db group-commits meter requests (sqlledger.Engine.UsageGroupCommit).
var _ interface{ UsageGroupCommit() bool } = (*db)(nil)

const rollupColumns = `account_id, tz, day, model, key_id, endpoint, requests, errors, prompt_tokens,
	completion_tokens, units, cached_units, cost_units, cost_atto, cached_prompt_tokens, cache_write_tokens, reasoning_tokens`

// Meter implements sqlledger.Conn.
func (c *ledgerConn) Meter(_ context.Context, k sqlledger.OpKey) (meter.MeterOp, bool, error) {
	op, err := sqlledger.ScanMeter(c.stmt(sMeter).QueryRowContext(c.ctx, k.Acct, k.Key), nil)
	if errors.Is(err, sql.ErrNoRows) {
		return op, false, nil
	}
	return op, err == nil, wrap("meter key", err)
}

// Record implements sqlledger.Conn.
func (c *ledgerConn) Record(_ context.Context, acct, id string, createdAt time.Time) (usage.Record, bool, error) {
	r, err := sqlledger.ScanRecord(c.stmt(sRecord).QueryRowContext(c.ctx, acct, toNanos(createdAt), id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	return r, err == nil, wrap("usage record", err)
}

// RecordExists implements sqlledger.Conn.
func (c *ledgerConn) RecordExists(_ context.Context, k sqlledger.RecKey) (bool, error) {
	var one int
	err := c.stmt(sRecordID).QueryRowContext(c.ctx, k.Acct, k.ID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, wrap("add usage", err)
}

// prefetchUsage looks up f's meter keys and record IDs.
func (c *ledgerConn) prefetchUsage(f *sqlledger.Fetch) error {
	args := c.args[:0]
	for _, k := range f.Meters {
		args = append(args, k.Key, k.Acct)
	}
	err := c.queryRows(c.ms.metersFind, args, func(rows *sql.Rows) error {
		var k sqlledger.OpKey
		op, err := sqlledger.ScanMeter(rows, &k)
		if err == nil {
			f.FoundMeter(k, op)
		}
		return err
	})
	if err != nil {
		return wrap("prefetch meter keys", err)
	}
	args = args[:0]
	for _, k := range f.Records {
		args = append(args, k.Acct, k.ID)
	}
	err = c.queryRows(c.ms.recordsFind, args, func(rows *sql.Rows) error {
		var k sqlledger.RecKey
		err := rows.Scan(&k.Acct, &k.ID)
		if err == nil {
			f.FoundRecord(k)
		}
		return err
	})
	c.args = args[:0]
	return wrap("prefetch record IDs", err)
}

// flushUsage writes the meter keys, records and rollup sums t staged.
func (c *ledgerConn) flushUsage(t *sqlledger.Tx) error {
	args := c.args[:0]
	for i := range t.Meters {
		m := &t.Meters[i]
		args = append(args, m.K.Acct, m.K.Key, m.Op.Fingerprint[:], m.Op.RecordID, m.Op.HoldID, toNanos(m.Op.CreatedAt))
	}
	if err := c.execRows(c.ms.meters, args, nil); err != nil {
		return wrap("claim meter keys", err)
	}
	args = args[:0]
	for i := range t.Records {
		r := t.Records[i].R
		meta, err := sqlledger.Metadata(r)
		if err != nil {
			return wrap("add usage", err)
		}
		args = append(args, r.AccountID, toNanos(r.CreatedAt), r.ID, r.KeyID, r.AuthSource, r.Endpoint, r.Method, r.Model,
			int64(r.StatusCode), int64(r.ResponseTime), r.RequestBytes, r.ResponseBytes, r.PromptTokens, r.CompletionTokens,
			r.Units, r.CachedUnits, r.UpstreamCost.String(), r.Cost.String(), r.ErrorType, r.ErrorMessage, meta,
			r.CachedPromptTokens, r.CacheWriteTokens, r.ReasoningTokens, sqlledger.NullNanos(r.PriceFrom))
	}
	if err := c.execRows(c.ms.records, args, nil); err != nil {
		if isUnique(err) {
			return fmt.Errorf("%w: %w", usage.ErrDuplicateRecord, err)
		}
		return wrap("add usage", err)
	}
	args = args[:0]
	for _, r := range t.Rollups() {
		units, atto, err := splitCost(r.Cost)
		if err != nil {
			return wrap("write rollup", err)
		}
		args = append(args, r.AccountID, r.TimeZone, r.Day, r.Model, r.KeyID, r.Endpoint,
			r.Requests, r.Errors, r.PromptTokens, r.CompletionTokens, r.Units, r.CachedUnits, units, atto,
			r.CachedPromptTokens, r.CacheWriteTokens, r.ReasoningTokens)
	}
	c.args = args[:0]
	return wrap("write rollups", c.execRows(c.ms.rollups, args, nil))
}

var atto = decimal.New(1, 18)

// splitCost returns a non-negative cost as whole units and attounits.
func splitCost(c credits.Amount) (int64, int64, error) {
	d := c.Decimal()
	if d.Sign() == 0 {
		return 0, 0, nil
	}
	whole := d.Truncate(0)
	frac := d.Sub(whole).Mul(atto)
	if d.Sign() < 0 || !frac.IsInteger() || !whole.LessThan(decimal.New(1, 18)) {
		return 0, 0, fmt.Errorf("rollup cost %s is negative, finer than 10^-18 or too large", c)
	}
	return whole.IntPart(), frac.IntPart(), nil
}

// joinCost is the inverse of splitCost.
func joinCost(units, attos int64) credits.Amount {
	if attos == 0 {
		return credits.AmountFromInt(units)
	}
	return credits.NewAmount(decimal.New(units, 0).Add(decimal.New(attos, -18)))
}

// UsageRecords implements usage.Store, with statements prepared once per
// shape of query.
func (s *db) UsageRecords(ctx context.Context, q usage.RecordQuery) ([]usage.Record, error) {
	query, args := sqlledger.RecordsQuery(&q, false)
	st, err := s.rstmt.get(ctx, s.r, query)
	if err != nil {
		return nil, wrap("usage records", err)
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, wrap("usage records", err)
	}
	out, err := sqlrow.Collect(rows, sqlledger.ScanRecord)
	return out, wrap("usage records", errors.Join(err, rows.Close()))
}

// ScanUsage implements usage.Store.
func (s *db) ScanUsage(ctx context.Context, q usage.RecordQuery, fn func(*usage.Record) error) error {
	query, args := sqlledger.ScanQuery(q, false)
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return wrap("scan usage", err)
	}
	err = sqlledger.EachRecord(rows, fn, wrap)
	if cerr := rows.Close(); err == nil && cerr != nil {
		return wrap("scan usage", cerr)
	}
	return err
}

// UsageRollups implements usage.Store: one read transaction, so the rows
// and the check for other zones see the same snapshot.
func (s *db) UsageRollups(ctx context.Context, q usage.RollupQuery) ([]usage.Rollup, bool, error) {
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return nil, false, wrap("usage rollups", err)
	}
	defer tx.Rollback()
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM usage_rollups WHERE account_id = ? AND tz <> ? AND day BETWEEN ? AND ? LIMIT 1`,
		q.AccountID, q.TimeZone, sqlledger.DayAround(q.FromDay, -1), sqlledger.DayAround(q.ToDay, 1)).Scan(&one)
	switch {
	case err == nil:
		return nil, true, nil
	case !errors.Is(err, sql.ErrNoRows):
		return nil, false, wrap("usage rollups", err)
	}
	where := `account_id = ? AND tz = ? AND day BETWEEN ? AND ?`
	args := []any{q.AccountID, q.TimeZone, q.FromDay, q.ToDay}
	for _, f := range []struct{ col, v string }{{"key_id", q.KeyID}, {"model", q.Model}, {"endpoint", q.Endpoint}} {
		if f.v != "" {
			where += ` AND ` + f.col + ` = ?`
			args = append(args, f.v)
		}
	}
	if q.Grouped {
		out, err := groupedRollups(ctx, tx, q, where, args)
		return out, false, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+rollupColumns+` FROM usage_rollups WHERE `+where, args...)
	if err != nil {
		return nil, false, wrap("usage rollups", err)
	}
	defer rows.Close()
	var out []usage.Rollup
	for rows.Next() {
		var r usage.Rollup
		var units, attos int64
		if err := rows.Scan(&r.AccountID, &r.TimeZone, &r.Day, &r.Model, &r.KeyID, &r.Endpoint, &r.Requests, &r.Errors,
			&r.PromptTokens, &r.CompletionTokens, &r.Units, &r.CachedUnits, &units, &attos,
			&r.CachedPromptTokens, &r.CacheWriteTokens, &r.ReasoningTokens); err != nil {
			return nil, false, wrap("usage rollups", err)
		}
		r.Cost = joinCost(units, attos)
		out = append(out, r)
	}
	return out, false, wrap("usage rollups", rows.Err())
}

// groupedRollups sums the rollup rows in SQL, one row per combination of
// the dimensions q.Keep names: a month of one account grouped by day and
// model reads 150 rows instead of thousands. Costs are summed exactly as
// four integer columns (whole units and attounits, each split at 10^9, so
// that no sum of fewer than 9·10^9 rows overflows) and joined in Go.
func groupedRollups(ctx context.Context, tx *sql.Tx, q usage.RollupQuery, where string, args []any) ([]usage.Rollup, error) {
	sel, group := sqlledger.GroupBy(q.Keep)
	query := `SELECT ` + strings.Join(sel, ", ") + `, SUM(requests), SUM(errors), SUM(prompt_tokens), SUM(completion_tokens),
		SUM(units), SUM(cached_units), SUM(cost_units / 1000000000), SUM(cost_units % 1000000000),
		SUM(cost_atto / 1000000000), SUM(cost_atto % 1000000000),
		SUM(cached_prompt_tokens), SUM(cache_write_tokens), SUM(reasoning_tokens)
		FROM usage_rollups WHERE ` + where
	if len(group) > 0 {
		query += ` GROUP BY ` + strings.Join(group, ", ")
	} else {
		query += ` HAVING count(*) > 0` // no rows: no total row
	}
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, wrap("usage rollups", err)
	}
	defer rows.Close()
	var out []usage.Rollup
	for rows.Next() {
		r := usage.Rollup{AccountID: q.AccountID, TimeZone: q.TimeZone}
		var cost [4]int64 // units / 10^9, units % 10^9, attos / 10^9, attos % 10^9
		if err := rows.Scan(&r.Day, &r.Model, &r.KeyID, &r.Endpoint, &r.Requests, &r.Errors, &r.PromptTokens,
			&r.CompletionTokens, &r.Units, &r.CachedUnits, &cost[0], &cost[1], &cost[2], &cost[3],
			&r.CachedPromptTokens, &r.CacheWriteTokens, &r.ReasoningTokens); err != nil {
			return nil, wrap("usage rollups", err)
		}
		d := decimal.New(cost[0], 9).Add(decimal.New(cost[1], 0))
		if cost[2] != 0 || cost[3] != 0 { // a whole sum keeps exponent 0 and stays a small Amount
			d = d.Add(decimal.New(cost[2], -9)).Add(decimal.New(cost[3], -18))
		}
		r.Cost = credits.NewAmount(d)
		out = append(out, r)
	}
	return out, wrap("usage rollups", rows.Err())
}

// deleteChunk bounds the records one retention transaction deletes, so
// that the writer is never held for long.
const deleteChunk = 5000

// DeleteUsageBefore implements usage.Store. It deletes in transactions of
// at most 5,000 records, so that the writer is never held for long; each
// transaction finds its rows with a scan of the records table (there is no
// index by time alone, to keep inserts cheap), which suits a daily job.
func (s *db) DeleteUsageBefore(ctx context.Context, t time.Time) (int, error) {
	total := 0
	for {
		var n int64
		err := s.write(ctx, "delete usage", func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `DELETE FROM usage_records WHERE (account_id, created_at, id) IN
				(SELECT account_id, created_at, id FROM usage_records WHERE created_at < ? LIMIT ?)`, toNanos(t), deleteChunk)
			if err != nil {
				return wrap("delete usage", err)
			}
			n, err = res.RowsAffected()
			return wrap("delete usage", err)
		})
		total += int(n)
		if err != nil || n < deleteChunk {
			return total, err
		}
	}
}

// ImportUsage writes records that were metered elsewhere (a migration from
// another system, or a benchmark's data set) with their rollups in zone tz,
// in transactions of up to 10,000 records. It charges nothing and claims no
// idempotency keys; records must be complete (ID, AccountID, CreatedAt) and
// their IDs new, else it returns usage.ErrDuplicateRecord for that chunk.
func (s *db) ImportUsage(ctx context.Context, recs []usage.Record, tz string) error {
	loc, err := usage.LoadZone(tz)
	if err != nil {
		return err
	}
	if tz == "" {
		tz = "UTC"
	}
	const chunk = 10_000
	for len(recs) > 0 {
		n := min(chunk, len(recs))
		part := recs[:n]
		recs = recs[n:]
		err := s.write(ctx, "import usage", func(tx *sql.Tx) error {
			ut := sqlledger.NewTx(s.newConn(ctx, tx), time.Now(), false)
			ut.Optimistic = true // record IDs are new; a duplicate fails the chunk
			for i := range part {
				r := &part[i]
				if r.ID == "" || r.AccountID == "" || r.CreatedAt.IsZero() {
					return fmt.Errorf("%w: import needs ID, AccountID and CreatedAt", usage.ErrInvalidRecord)
				}
				if err := ut.AddUsage(ctx, r, tz, usage.Day(r.CreatedAt, loc)); err != nil {
					return err
				}
			}
			return ut.Flush(ctx)
		})
		if err != nil {
			return err
		}
	}
	return nil
}
