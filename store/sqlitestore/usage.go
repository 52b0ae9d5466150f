package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

// Usage metering on SQLite.
//
// MeterUsage is the group commit of usage.Service: a batch of meter
// requests in one write transaction, each request inside its own SAVEPOINT.
// A request runs usage.ApplyMeter on a usageTx — the ledger's ledgerTx plus
// the usage tables — so its record, its rollup and its ledger charge commit
// together. A request that fails (an expected failure such as insufficient
// funds, or a system failure of its own) is rolled back to its savepoint,
// and the in-memory ledger state of its account is restored to what it was
// before the request, so its batch mates commit unaffected.
//
// Rollup rows are read-modify-written once per batch and distinct
// (account, zone, day, model, key, endpoint): the batch's requests add to
// them in memory, and the sums (costs are exact decimal TEXT) are written
// just before the commit.

var _ usage.GroupCommitter = (*Store)(nil)

// UsageGroupCommit implements usage.GroupCommitter: on SQLite the commit
// dominates a meter request, so the usage Service batches them.
func (s *Store) UsageGroupCommit() bool { return true }

// Prepared usage statements on the writer, by index.
const (
	uClaim = iota
	uOp
	uRecord
	uInsertRecord
	uUpsertRollup
	uSavepoint
	uRelease
	uRollback
	nUsageStmts
)

const recordColumns = `account_id, created_at, id, key_id, auth_source, endpoint, method, model, status_code, response_time,
	request_bytes, response_bytes, prompt_tokens, completion_tokens, units, cached_units, upstream_cost, cost,
	error_type, error_message, metadata`

const rollupColumns = `account_id, tz, day, model, key_id, endpoint, requests, errors, prompt_tokens,
	completion_tokens, units, cached_units, cost_units, cost_atto`

func usageStatements() [nUsageStmts]string {
	return [nUsageStmts]string{
		uClaim: `INSERT INTO usage_ops (account_id, key, fingerprint, record_id, hold_id, created_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		uOp:     `SELECT fingerprint, record_id, hold_id, created_at FROM usage_ops WHERE key = ?2 AND account_id = ?1`,
		uRecord: `SELECT ` + recordColumns + ` FROM usage_records WHERE account_id = ? AND created_at = ? AND id = ?`,
		uInsertRecord: `INSERT INTO usage_records (` + recordColumns + `)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		uUpsertRollup: `INSERT INTO usage_rollups (` + rollupColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, errors = errors + excluded.errors,
			prompt_tokens = prompt_tokens + excluded.prompt_tokens,
			completion_tokens = completion_tokens + excluded.completion_tokens,
			units = units + excluded.units, cached_units = cached_units + excluded.cached_units,
			cost_units = cost_units + excluded.cost_units + (cost_atto + excluded.cost_atto) / 1000000000000000000,
			cost_atto = (cost_atto + excluded.cost_atto) % 1000000000000000000`,
		uSavepoint: `SAVEPOINT meter`,
		uRelease:   `RELEASE meter`,
		uRollback:  `ROLLBACK TO meter`,
	}
}

type usageStmts [nUsageStmts]*sql.Stmt

func (s *Store) prepareUsage(ctx context.Context) error {
	s.uw = new(usageStmts)
	for i, q := range usageStatements() {
		var err error
		if s.uw[i], err = s.w.PrepareContext(ctx, q); err != nil {
			return fmt.Errorf("sqlitestore: prepare usage statement %d: %w", i, err)
		}
	}
	return nil
}

func (s *Store) closeUsage() error {
	if s.uw == nil {
		return nil
	}
	var errs []error
	for _, st := range s.uw {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// usageTx is a usage.Tx on one write transaction.
type usageTx struct {
	*ledgerTx
	src   *usageStmts
	bound usageStmts
	// item is the rollup contribution of the request being applied; rolls
	// the contributions of the requests applied so far.
	item    usage.Rollup
	hasItem bool
	rolls   map[usage.Rollup]*usage.Rollup // key: the row's dimensions only
}

func (t *usageTx) stmt(i int) *sql.Stmt {
	if t.bound[i] == nil {
		t.bound[i] = t.tx.StmtContext(t.ctx, t.src[i])
	}
	return t.bound[i]
}

// ClaimMeter implements usage.Tx.
func (t *usageTx) ClaimMeter(ctx context.Context, accountID, key string, op usage.MeterOp) (usage.MeterOp, bool, error) {
	res, err := t.stmt(uClaim).ExecContext(ctx, accountID, key, op.Fingerprint[:], op.RecordID, op.HoldID, toNanos(op.CreatedAt))
	if err != nil {
		return op, false, wrap("claim meter key", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return op, n == 1, wrap("claim meter key", err)
	}
	var prev usage.MeterOp
	var fp []byte
	var created int64
	err = t.stmt(uOp).QueryRowContext(ctx, accountID, key).Scan(&fp, &prev.RecordID, &prev.HoldID, &created)
	if err != nil {
		return prev, false, wrap("meter key", err)
	}
	copy(prev.Fingerprint[:], fp)
	prev.CreatedAt = fromNanos(created)
	return prev, false, nil
}

// UsageRecord implements usage.Tx.
func (t *usageTx) UsageRecord(ctx context.Context, accountID, id string, createdAt time.Time) (usage.Record, bool, error) {
	r, err := scanRecord(t.stmt(uRecord).QueryRowContext(ctx, accountID, toNanos(createdAt), id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	return r, err == nil, wrap("usage record", err)
}

// AddUsage implements usage.Tx: the record now, its rollup at the end of
// the batch.
func (t *usageTx) AddUsage(ctx context.Context, r *usage.Record, tz, day string) error {
	var meta sql.NullString
	if len(r.Metadata) > 0 {
		b, err := json.Marshal(r.Metadata)
		if err != nil {
			return wrap("add usage", err)
		}
		meta = sql.NullString{String: string(b), Valid: true}
	}
	_, err := t.stmt(uInsertRecord).ExecContext(ctx, r.AccountID, toNanos(r.CreatedAt), r.ID, r.KeyID, r.AuthSource,
		r.Endpoint, r.Method, r.Model, r.StatusCode, int64(r.ResponseTime), r.RequestBytes, r.ResponseBytes, r.PromptTokens,
		r.CompletionTokens, r.Units, r.CachedUnits, r.UpstreamCost.String(), r.Cost.String(), r.ErrorType, r.ErrorMessage, meta)
	if isUnique(err) {
		return usage.ErrDuplicateRecord
	}
	if err != nil {
		return wrap("add usage", err)
	}
	t.item = usage.RollupFor(r, tz, day)
	t.item.Add(r)
	t.hasItem = true
	return nil
}

// keep adds the applied request's rollup contribution to the batch's.
func (t *usageTx) keep() {
	if !t.hasItem {
		return
	}
	t.hasItem = false
	k := t.item
	k.Requests, k.Errors, k.PromptTokens, k.CompletionTokens, k.Units, k.CachedUnits, k.Cost = 0, 0, 0, 0, 0, 0, credits.Amount{}
	if r, ok := t.rolls[k]; ok {
		r.Merge(&t.item)
		return
	}
	v := t.item
	t.rolls[k] = &v
}

// flushRollups writes the batch's rollup sums.
func (t *usageTx) flushRollups(ctx context.Context) error {
	for _, r := range t.rolls {
		if err := t.addRollup(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

func (t *usageTx) addRollup(ctx context.Context, r *usage.Rollup) error {
	units, atto, err := splitCost(r.Cost)
	if err != nil {
		return wrap("write rollup", err)
	}
	_, err = t.stmt(uUpsertRollup).ExecContext(ctx, r.AccountID, r.TimeZone, r.Day, r.Model, r.KeyID, r.Endpoint,
		r.Requests, r.Errors, r.PromptTokens, r.CompletionTokens, r.Units, r.CachedUnits, units, atto)
	return wrap("write rollup", err)
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

// acctSnap is the in-memory ledger state of one account before a request,
// for the rollback to its savepoint.
type acctSnap struct {
	id      string
	present bool
	a       txAcct
	order   int
	rep     credits.ExpiryReport
}

func (t *usageTx) snapshot(id string) acctSnap {
	sn := acctSnap{id: id, order: len(t.order), rep: t.rep}
	if a, ok := t.accts[id]; ok {
		sn.present, sn.a = true, *a
		sn.a.st = a.st.Clone()
	}
	return sn
}

func (t *usageTx) restore(sn acctSnap) {
	t.rep = sn.rep
	t.hasItem = false
	if !sn.present {
		delete(t.accts, sn.id)
		t.order = t.order[:sn.order]
		return
	}
	*t.accts[sn.id] = sn.a
}

// MeterUsage implements usage.Store.
func (s *Store) MeterUsage(ctx context.Context, now time.Time, reqs []usage.MeterRequest, res []usage.MeterOutcome) error {
	return s.write(ctx, "meter usage", func(tx *sql.Tx) error {
		ut := &usageTx{ledgerTx: s.newLedgerTx(ctx, tx, now), src: s.uw, rolls: make(map[usage.Rollup]*usage.Rollup, 16)}
		if len(reqs) > 1 {
			spends := make([]credits.SpendRequest, 0, len(reqs))
			for i := range reqs {
				if sp := &reqs[i].Spend; sp.Kind == credits.SpendDebit {
					spends = append(spends, *sp)
				}
			}
			if err := ut.prefetch(ctx, spends); err != nil {
				return err
			}
		}
		for i := range reqs {
			r := &reqs[i]
			sn := ut.snapshot(r.Record.AccountID)
			if _, err := ut.stmt(uSavepoint).ExecContext(ctx); err != nil {
				return wrap("savepoint", err)
			}
			out, err := usage.ApplyMeter(ctx, ut, now, r)
			if err == nil && out.Err == nil {
				if _, err := ut.stmt(uRelease).ExecContext(ctx); err != nil {
					return wrap("release savepoint", err)
				}
				ut.keep()
				res[i] = out
				continue
			}
			if err != nil {
				out = usage.MeterOutcome{Err: err}
			}
			if _, err := ut.stmt(uRollback).ExecContext(ctx); err != nil {
				return wrap("rollback to savepoint", err)
			}
			if _, err := ut.stmt(uRelease).ExecContext(ctx); err != nil {
				return wrap("release savepoint", err)
			}
			ut.restore(sn)
			res[i] = out
		}
		if err := ut.flushRollups(ctx); err != nil {
			return err
		}
		return ut.flush(ctx)
	})
}

func scanRecord(row scanner) (usage.Record, error) {
	var (
		r              usage.Record
		rt, created    int64
		upstream, cost string
		meta           sql.NullString
	)
	err := row.Scan(&r.AccountID, &created, &r.ID, &r.KeyID, &r.AuthSource, &r.Endpoint, &r.Method, &r.Model, &r.StatusCode,
		&rt, &r.RequestBytes, &r.ResponseBytes, &r.PromptTokens, &r.CompletionTokens, &r.Units, &r.CachedUnits, &upstream,
		&cost, &r.ErrorType, &r.ErrorMessage, &meta)
	if err != nil {
		return r, err
	}
	var p amountScanner
	r.UpstreamCost, r.Cost = p.parse(upstream), p.parse(cost)
	r.ResponseTime, r.CreatedAt = time.Duration(rt), fromNanos(created)
	if meta.Valid {
		if err := json.Unmarshal([]byte(meta.String), &r.Metadata); err != nil {
			return r, fmt.Errorf("stored metadata: %w", err)
		}
	}
	return r, p.err
}

// recordWhere builds the WHERE clause of a record query.
func recordWhere(q *usage.RecordQuery) (string, []any) {
	var w strings.Builder
	args := []any{q.AccountID}
	w.WriteString(`account_id = ?`)
	for _, f := range []struct{ col, v string }{{"key_id", q.KeyID}, {"model", q.Model}, {"endpoint", q.Endpoint}} {
		if f.v != "" {
			w.WriteString(` AND ` + f.col + ` = ?`)
			args = append(args, f.v)
		}
	}
	if !q.From.IsZero() {
		w.WriteString(` AND created_at >= ?`)
		args = append(args, toNanos(q.From))
	}
	if !q.To.IsZero() {
		w.WriteString(` AND created_at < ?`)
		args = append(args, toNanos(q.To))
	}
	return w.String(), args
}

// UsageRecords implements usage.Store.
func (s *Store) UsageRecords(ctx context.Context, q usage.RecordQuery) ([]usage.Record, error) {
	where, args := recordWhere(&q)
	if q.AfterID != "" {
		where += ` AND (created_at, id) < (?, ?)`
		args = append(args, toNanos(q.AfterTime), q.AfterID)
	}
	args = append(args, q.Limit)
	st, err := s.rstmt.get(ctx, s.r, `SELECT `+recordColumns+` FROM usage_records WHERE `+where+
		` ORDER BY created_at DESC, id DESC LIMIT ?`)
	if err != nil {
		return nil, wrap("usage records", err)
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, wrap("usage records", err)
	}
	defer rows.Close()
	var out []usage.Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, wrap("usage records", err)
		}
		out = append(out, r)
	}
	return out, wrap("usage records", rows.Err())
}

// ScanUsage implements usage.Store.
func (s *Store) ScanUsage(ctx context.Context, q usage.RecordQuery, fn func(*usage.Record) error) error {
	where, args := recordWhere(&q)
	rows, err := s.r.QueryContext(ctx, `SELECT `+recordColumns+` FROM usage_records WHERE `+where, args...)
	if err != nil {
		return wrap("scan usage", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return wrap("scan usage", err)
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	return wrap("scan usage", rows.Err())
}

// UsageRollups implements usage.Store: one read transaction, so the rows
// and the check for other zones see the same snapshot.
func (s *Store) UsageRollups(ctx context.Context, q usage.RollupQuery) ([]usage.Rollup, bool, error) {
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return nil, false, wrap("usage rollups", err)
	}
	defer tx.Rollback()
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM usage_rollups WHERE account_id = ? AND tz <> ? AND day BETWEEN ? AND ? LIMIT 1`,
		q.AccountID, q.TimeZone, dayAround(q.FromDay, -1), dayAround(q.ToDay, 1)).Scan(&one)
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
			&r.PromptTokens, &r.CompletionTokens, &r.Units, &r.CachedUnits, &units, &attos); err != nil {
			return nil, false, wrap("usage rollups", err)
		}
		r.Cost = joinCost(units, attos)
		out = append(out, r)
	}
	return out, false, wrap("usage rollups", rows.Err())
}

// dayAround returns the day n days from day ("2006-01-02"), or day itself
// if it does not parse.
func dayAround(day string, n int) string {
	t, err := time.Parse(time.DateOnly, day)
	if err != nil {
		return day
	}
	return t.AddDate(0, 0, n).Format(time.DateOnly)
}

// deleteChunk bounds the records one retention transaction deletes, so
// that the writer is never held for long.
const deleteChunk = 5000

// DeleteUsageBefore implements usage.Store. It deletes in transactions of
// at most 5,000 records, so that the writer is never held for long; each
// transaction finds its rows with a scan of the records table (there is no
// index by time alone, to keep inserts cheap), which suits a daily job.
func (s *Store) DeleteUsageBefore(ctx context.Context, t time.Time) (int, error) {
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
func (s *Store) ImportUsage(ctx context.Context, recs []usage.Record, tz string) error {
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
			ut := &usageTx{ledgerTx: s.newLedgerTx(ctx, tx, time.Now()), src: s.uw, rolls: make(map[usage.Rollup]*usage.Rollup)}
			for i := range part {
				r := &part[i]
				if r.ID == "" || r.AccountID == "" || r.CreatedAt.IsZero() {
					return fmt.Errorf("%w: import needs ID, AccountID and CreatedAt", usage.ErrInvalidRecord)
				}
				if err := ut.AddUsage(ctx, r, tz, usage.Day(r.CreatedAt, loc)); err != nil {
					return err
				}
				ut.keep()
			}
			return ut.flushRollups(ctx)
		})
		if err != nil {
			return err
		}
	}
	return nil
}
