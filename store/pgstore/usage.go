package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyledger/keyledger/internal/sqlledger"
	"github.com/keyledger/keyledger/internal/sqlrow"
	"github.com/keyledger/keyledger/usage"
	"github.com/keyledger/keyledger/usage/meter"
)

// Usage metering on PostgreSQL: the SQL side of sqlledger.Engine's
// MeterUsage (see credits.go). The prefetch reads the batch's meter keys
// and record IDs in the lock's round trip; the flush writes records and
// meter keys with multi-row INSERT … SELECT FROM unnest, and the batch's
// rollup sums with INSERT … ON CONFLICT DO UPDATE, in key order so that
// concurrent batches lock rollup rows in one order. Meter keys of requests
// that charge nothing are not covered by an account lock: they are claimed
// optimistically, and if a concurrent transaction claimed one first the
// unique violation rolls the batch back and it runs again, now seeing (and
// replaying) that claim.

const rollupColumns = `account_id, tz, day, model, key_id, endpoint, requests, errors, prompt_tokens,
	completion_tokens, units, cached_units, cost, cached_prompt_tokens, cache_write_tokens, reasoning_tokens`

// db group-commits meter requests (sqlledger.Engine.UsageGroupCommit).
var _ interface{ UsageGroupCommit() bool } = (*db)(nil)

// Meter implements sqlledger.Conn.
func (c *ledgerConn) Meter(ctx context.Context, k sqlledger.OpKey) (meter.MeterOp, bool, error) {
	op, err := sqlledger.ScanMeter(c.tx.QueryRow(ctx, `SELECT fingerprint, record_id, hold_id, created_at FROM usage_ops
		WHERE key = $1 AND account_id = $2`, k.Key, k.Acct), nil)
	if errors.Is(err, pgx.ErrNoRows) {
		return op, false, nil
	}
	return op, err == nil, wrap("meter key", err)
}

// Record implements sqlledger.Conn.
func (c *ledgerConn) Record(ctx context.Context, acct, id string, createdAt time.Time) (usage.Record, bool, error) {
	r, err := sqlledger.ScanRecord(c.tx.QueryRow(ctx, `SELECT `+sqlledger.RecordColumns+` FROM usage_records
		WHERE account_id = $1 AND created_at = $2 AND id = $3`, acct, toNanos(createdAt), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false, nil
	}
	return r, err == nil, wrap("usage record", err)
}

// RecordExists implements sqlledger.Conn.
func (c *ledgerConn) RecordExists(ctx context.Context, k sqlledger.RecKey) (bool, error) {
	var one int
	err := c.tx.QueryRow(ctx, `SELECT 1 FROM usage_records WHERE account_id = $1 AND id = $2`, k.Acct, k.ID).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, wrap("add usage", err)
}

// queueUsagePrefetch queues the lookups of f's meter keys and record IDs.
func queueUsagePrefetch(b *pgx.Batch, f *sqlledger.Fetch) {
	if len(f.Meters) > 0 {
		keys, accts := splitKeys(f.Meters)
		b.Queue(`SELECT o.account_id, o.key, o.fingerprint, o.record_id, o.hold_id, o.created_at
			FROM usage_ops o JOIN unnest($1::text[], $2::text[]) AS u(key, account_id)
			ON o.key = u.key AND o.account_id = u.account_id`, keys, accts).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var k sqlledger.OpKey
				op, err := sqlledger.ScanMeter(rows, &k)
				if err != nil {
					return err
				}
				f.FoundMeter(k, op)
			}
			return rows.Err()
		})
	}
	if n := len(f.Records); n > 0 {
		accts, ids := make([]string, n), make([]string, n)
		for i, k := range f.Records {
			accts[i], ids[i] = k.Acct, k.ID
		}
		b.Queue(`SELECT r.account_id, r.id FROM usage_records r
			JOIN unnest($1::text[], $2::text[]) AS u(account_id, id)
			ON r.account_id = u.account_id AND r.id = u.id`, accts, ids).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var k sqlledger.RecKey
				if err := rows.Scan(&k.Acct, &k.ID); err != nil {
					return err
				}
				f.FoundRecord(k)
			}
			return rows.Err()
		})
	}
}

// queueUsage queues the writes of t's meter keys, records and rollup sums,
// adding their result checks to checks.
func queueUsage(b *pgx.Batch, t *sqlledger.Tx, checks *[]func(pgx.BatchResults) error) error {
	if n := len(t.Meters); n > 0 {
		keys, accts, recs, holds := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		fps, created := make([][]byte, n), make([]int64, n)
		for i, m := range t.Meters {
			fp := m.Op.Fingerprint
			keys[i], accts[i], fps[i], recs[i], holds[i], created[i] = m.K.Key, m.K.Acct, fp[:], m.Op.RecordID, m.Op.HoldID, toNanos(m.Op.CreatedAt)
		}
		b.Queue(`INSERT INTO usage_ops (key, account_id, fingerprint, record_id, hold_id, created_at)
			SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::bigint[])`,
			keys, accts, fps, recs, holds, created)
		*checks = append(*checks, execOK)
	}
	if len(t.Records) == 0 {
		return nil
	}
	if err := queueRecords(b, t.Records); err != nil {
		return err
	}
	queueRollups(b, t.Rollups())
	*checks = append(*checks, execOK, execOK)
	return nil
}

func queueRecords(b *pgx.Batch, recs []sqlledger.Record) error {
	n := len(recs)
	var (
		acct, id, key, auth, endpoint, method, model, upstream, cost, errType, errMsg = make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n)
		created, rt, reqB, respB, prompt, completion, units, cached = make([]int64, n), make([]int64, n), make([]int64, n),
			make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		status                              = make([]int32, n)
		meta                                = make([]*string, n)
		cachedPrompt, cacheWrite, reasoning = make([]int64, n), make([]int64, n), make([]int64, n)
		priceFrom                           = make([]*int64, n)
	)
	for i := range recs {
		r := recs[i].R
		acct[i], created[i], id[i], key[i], auth[i], endpoint[i], method[i], model[i] = r.AccountID, toNanos(r.CreatedAt),
			r.ID, r.KeyID, r.AuthSource, r.Endpoint, r.Method, r.Model
		status[i], rt[i], reqB[i], respB[i], prompt[i], completion[i], units[i], cached[i] = int32(r.StatusCode),
			int64(r.ResponseTime), r.RequestBytes, r.ResponseBytes, r.PromptTokens, r.CompletionTokens, r.Units, r.CachedUnits
		upstream[i], cost[i], errType[i], errMsg[i] = r.UpstreamCost.String(), r.Cost.String(), r.ErrorType, r.ErrorMessage
		cachedPrompt[i], cacheWrite[i], reasoning[i] = r.CachedPromptTokens, r.CacheWriteTokens, r.ReasoningTokens
		if !r.PriceFrom.IsZero() {
			from := toNanos(r.PriceFrom)
			priceFrom[i] = &from
		}
		m, err := sqlledger.Metadata(r)
		if err != nil {
			return wrap("add usage", err)
		}
		if m.Valid {
			meta[i] = &m.String
		}
	}
	b.Queue(`INSERT INTO usage_records (`+sqlledger.RecordColumns+`)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
			$9::integer[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[],
			$17::text[]::numeric[], $18::text[]::numeric[], $19::text[], $20::text[], $21::text[], $22::bigint[], $23::bigint[],
			$24::bigint[], $25::bigint[])`,
		acct, created, id, key, auth, endpoint, method, model, status, rt, reqB, respB, prompt, completion, units, cached,
		upstream, cost, errType, errMsg, meta, cachedPrompt, cacheWrite, reasoning, priceFrom)
	return nil
}

// queueRollups upserts the batch's rollup sums (in key order).
func queueRollups(b *pgx.Batch, sums []usage.Rollup) {
	n := len(sums)
	var (
		acct, tz, day, model, key, endpoint, cost = make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		reqs, errs, prompt, completion, units, cached = make([]int64, n), make([]int64, n), make([]int64, n),
			make([]int64, n), make([]int64, n), make([]int64, n)
		cachedPrompt, cacheWrite, reasoning = make([]int64, n), make([]int64, n), make([]int64, n)
	)
	for i, ro := range sums {
		acct[i], tz[i], day[i], model[i], key[i], endpoint[i] = ro.AccountID, ro.TimeZone, ro.Day, ro.Model, ro.KeyID, ro.Endpoint
		reqs[i], errs[i], prompt[i], completion[i], units[i], cached[i], cost[i] = ro.Requests, ro.Errors, ro.PromptTokens,
			ro.CompletionTokens, ro.Units, ro.CachedUnits, ro.Cost.String()
		cachedPrompt[i], cacheWrite[i], reasoning[i] = ro.CachedPromptTokens, ro.CacheWriteTokens, ro.ReasoningTokens
	}
	b.Queue(`INSERT INTO usage_rollups AS r (`+rollupColumns+`)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[],
			$9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[]::numeric[], $14::bigint[], $15::bigint[],
			$16::bigint[])
		ON CONFLICT (account_id, tz, day, model, key_id, endpoint) DO UPDATE SET
			requests = r.requests + excluded.requests, errors = r.errors + excluded.errors,
			prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,
			completion_tokens = r.completion_tokens + excluded.completion_tokens,
			units = r.units + excluded.units, cached_units = r.cached_units + excluded.cached_units,
			cost = r.cost + excluded.cost,
			cached_prompt_tokens = r.cached_prompt_tokens + excluded.cached_prompt_tokens,
			cache_write_tokens = r.cache_write_tokens + excluded.cache_write_tokens,
			reasoning_tokens = r.reasoning_tokens + excluded.reasoning_tokens`,
		acct, tz, day, model, key, endpoint, reqs, errs, prompt, completion, units, cached, cost, cachedPrompt, cacheWrite, reasoning)
}

// UsageRecords implements usage.Store.
func (s *db) UsageRecords(ctx context.Context, q usage.RecordQuery) ([]usage.Record, error) {
	query, args := sqlledger.RecordsQuery(&q, true)
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, wrap("usage records", err)
	}
	defer rows.Close()
	out, err := sqlrow.Collect(rows, sqlledger.ScanRecord)
	return out, wrap("usage records", err)
}

// ScanUsage implements usage.Store: one query, so one snapshot.
func (s *db) ScanUsage(ctx context.Context, q usage.RecordQuery, fn func(*usage.Record) error) error {
	query, args := sqlledger.ScanQuery(q, true)
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return wrap("scan usage", err)
	}
	defer rows.Close()
	return sqlledger.EachRecord(rows, fn, wrap)
}

// UsageRollups implements usage.Store: one read-only snapshot, so the rows
// and the check for other zones agree.
func (s *db) UsageRollups(ctx context.Context, q usage.RollupQuery) ([]usage.Rollup, bool, error) {
	var (
		out   []usage.Rollup
		other bool
	)
	err := s.read(ctx, "usage rollups", func(tx pgx.Tx) error {
		out, other = nil, false
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM usage_rollups WHERE account_id = $1 AND tz <> $2 AND day BETWEEN $3 AND $4 LIMIT 1`,
			q.AccountID, q.TimeZone, sqlledger.DayAround(q.FromDay, -1), sqlledger.DayAround(q.ToDay, 1)).Scan(&one)
		switch {
		case err == nil:
			other = true
			return nil
		case !errors.Is(err, pgx.ErrNoRows):
			return wrap("usage rollups", err)
		}
		where := `account_id = $1 AND tz = $2 AND day BETWEEN $3 AND $4`
		args := []any{q.AccountID, q.TimeZone, q.FromDay, q.ToDay}
		for _, f := range []struct{ col, v string }{{"key_id", q.KeyID}, {"model", q.Model}, {"endpoint", q.Endpoint}} {
			if f.v != "" {
				args = append(args, f.v)
				where += fmt.Sprintf(` AND %s = $%d`, f.col, len(args))
			}
		}
		query := `SELECT ` + rollupColumns + ` FROM usage_rollups WHERE ` + where
		if q.Grouped {
			query = groupedRollupQuery(q.Keep, where)
		}
		rows, err := tx.Query(ctx, query, args...)
		if err != nil {
			return wrap("usage rollups", err)
		}
		defer rows.Close()
		var p sqlledger.Amounts
		for rows.Next() {
			var r usage.Rollup
			var cost string
			if err := rows.Scan(&r.AccountID, &r.TimeZone, &r.Day, &r.Model, &r.KeyID, &r.Endpoint, &r.Requests, &r.Errors,
				&r.PromptTokens, &r.CompletionTokens, &r.Units, &r.CachedUnits, &cost,
				&r.CachedPromptTokens, &r.CacheWriteTokens, &r.ReasoningTokens); err != nil {
				return wrap("usage rollups", err)
			}
			r.Cost = p.Parse(cost)
			out = append(out, r)
		}
		return wrap("usage rollups", errors.Join(rows.Err(), p.Err))
	})
	if other {
		return nil, true, err
	}
	return out, false, err
}

// groupedRollupQuery sums the rollup rows in SQL (NUMERIC sums are exact),
// one row per combination of the dimensions keep names, the others empty;
// the columns are rollupColumns'.
func groupedRollupQuery(keep usage.Grouping, where string) string {
	sel, group := sqlledger.GroupBy(keep)
	sel, group = append([]string{"account_id", "tz"}, sel...), append([]string{"account_id", "tz"}, group...)
	return `SELECT ` + strings.Join(sel, ", ") + `, SUM(requests)::bigint, SUM(errors)::bigint, SUM(prompt_tokens)::bigint,
		SUM(completion_tokens)::bigint, SUM(units)::bigint, SUM(cached_units)::bigint, SUM(cost)::text,
		SUM(cached_prompt_tokens)::bigint, SUM(cache_write_tokens)::bigint, SUM(reasoning_tokens)::bigint
		FROM usage_rollups WHERE ` + where + ` GROUP BY ` + strings.Join(group, ", ")
}

// DeleteUsageBefore implements usage.Store: one statement. Unlike SQLite,
// a long delete blocks no writer here, so it is not chunked.
func (s *db) DeleteUsageBefore(ctx context.Context, t time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM usage_records WHERE created_at < $1`, toNanos(t))
	return int(tag.RowsAffected()), wrap("delete usage", err)
}
