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
	"github.com/keyledger/keyledger/internal/ledgerstage"
	"github.com/keyledger/keyledger/usage"
)

// Usage metering on SQLite.
//
// MeterUsage is the group commit of usage.Service: a batch of meter
// requests in one write transaction. It first loads the ledger accounts the
// batch charges and looks up, a few multi-row queries for the whole batch,
// the meter keys, ledger keys and record IDs the requests will check. Each
// request then runs usage.ApplyMeter on a usageTx — the ledger's ledgerTx
// plus the usage tables — whose writes are staged in memory: the stage is
// the savepoint of each request. A request that fails (an expected failure
// such as insufficient funds) is rolled back to its mark — its staged rows
// dropped, its account's ledger state restored — before anything reaches
// SQLite, so its batch mates commit unaffected. The batch's rows are then
// written with multi-row statements: records, meter keys, ledger entries
// and keys, one UPDATE for the accounts, and the batch's rollup sums (costs
// are exact) upserted once per distinct (account, zone, day, model, key,
// endpoint).
//
// The first attempt is optimistic: it claims keys and record IDs without
// looking them up (the batch's own claims excepted) and lets the primary
// keys check them at flush; a violation means a replay, and the batch runs
// again with the lookups. If a request fails with a system error, or a
// statement of the flush fails otherwise (a constraint no check foresaw),
// the transaction is rolled back and the requests run again one per
// transaction, so that only the request that fails alone fails.

var _ usage.GroupCommitter = (*Store)(nil)

// UsageGroupCommit implements usage.GroupCommitter: on SQLite the commit
// dominates a meter request, so the usage Service batches them.
func (s *Store) UsageGroupCommit() bool { return true }

// Prepared usage statements on the writer, by index.
const (
	uOp = iota
	uRecord
	uRecordID
	nUsageStmts
)

const recordColumns = `account_id, created_at, id, key_id, auth_source, endpoint, method, model, status_code, response_time,
	request_bytes, response_bytes, prompt_tokens, completion_tokens, units, cached_units, upstream_cost, cost,
	error_type, error_message, metadata`

const rollupColumns = `account_id, tz, day, model, key_id, endpoint, requests, errors, prompt_tokens,
	completion_tokens, units, cached_units, cost_units, cost_atto`

func usageStatements() [nUsageStmts]string {
	return [nUsageStmts]string{
		uOp:       `SELECT fingerprint, record_id, hold_id, created_at FROM usage_ops WHERE key = ?2 AND account_id = ?1`,
		uRecord:   `SELECT ` + recordColumns + ` FROM usage_records WHERE account_id = ? AND created_at = ? AND id = ?`,
		uRecordID: `SELECT 1 FROM usage_records WHERE account_id = ? AND id = ?`,
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

type recKey struct {
	acct string
	id   string // unique per account (migration 0005)
}

// meterSeen is a meter key looked up in this transaction.
type meterSeen struct {
	op    usage.MeterOp
	found bool
}

type stagedRecord struct {
	r       *usage.Record // the request's, alive until flush
	tz, day string
}

type stagedMeter struct {
	k  opKey
	op usage.MeterOp
}

// usageTx is a usage.Tx on one write transaction.
type usageTx struct {
	*ledgerTx
	src       *usageStmts
	bound     usageStmts
	meterSeen map[opKey]meterSeen
	recSeen   map[recKey]bool

	meters   []stagedMeter
	meterIdx map[opKey]int
	records  []stagedRecord
	recIdx   map[recKey]int
}

func (s *Store) newUsageTx(ctx context.Context, tx *sql.Tx, now time.Time) *usageTx {
	return &usageTx{
		ledgerTx: s.newLedgerTx(ctx, tx, now), src: s.uw,
		meterSeen: make(map[opKey]meterSeen), recSeen: make(map[recKey]bool),
		meterIdx: make(map[opKey]int), recIdx: make(map[recKey]int),
	}
}

func (t *usageTx) stmt(i int) *sql.Stmt {
	if t.bound[i] == nil {
		t.bound[i] = t.tx.StmtContext(t.ctx, t.src[i])
	}
	return t.bound[i]
}

// ClaimMeter implements usage.Tx.
func (t *usageTx) ClaimMeter(_ context.Context, accountID, key string, op usage.MeterOp) (usage.MeterOp, bool, error) {
	k := opKey{Acct: accountID, Key: key}
	if i, ok := t.meterIdx[k]; ok {
		return t.meters[i].op, false, nil
	}
	seen, ok := t.meterSeen[k]
	if !ok && !t.optimistic { // optimistic: see ledgerTx.optimistic
		var err error
		if seen, err = t.lookMeter(k); err != nil {
			return op, false, err
		}
	}
	if seen.found {
		return seen.op, false, nil
	}
	t.meterIdx[k] = len(t.meters)
	t.meters = append(t.meters, stagedMeter{k: k, op: op})
	return op, true, nil
}

// lookMeter reads the meter key k from the table.
func (t *usageTx) lookMeter(k opKey) (meterSeen, error) {
	var (
		seen    meterSeen
		fp      []byte
		created int64
	)
	err := t.stmt(uOp).QueryRowContext(t.ctx, k.Acct, k.Key).Scan(&fp, &seen.op.RecordID, &seen.op.HoldID, &created)
	switch {
	case err == nil:
		seen.found = true
		copy(seen.op.Fingerprint[:], fp)
		seen.op.CreatedAt = fromNanos(created)
	case !errors.Is(err, sql.ErrNoRows):
		return seen, wrap("meter key", err)
	}
	t.meterSeen[k] = seen
	return seen, nil
}

// UsageRecord implements usage.Tx.
func (t *usageTx) UsageRecord(_ context.Context, accountID, id string, createdAt time.Time) (usage.Record, bool, error) {
	if i, ok := t.recIdx[recKey{accountID, id}]; ok && t.records[i].r.CreatedAt.Equal(createdAt) {
		return *t.records[i].r, true, nil
	}
	r, err := scanRecord(t.stmt(uRecord).QueryRowContext(t.ctx, accountID, toNanos(createdAt), id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	return r, err == nil, wrap("usage record", err)
}

// AddUsage implements usage.Tx: the record is staged; its rollup is summed
// with its batch mates' at flush.
func (t *usageTx) AddUsage(_ context.Context, r *usage.Record, tz, day string) error {
	k := recKey{r.AccountID, r.ID}
	if _, ok := t.recIdx[k]; ok {
		return usage.ErrDuplicateRecord
	}
	exists, ok := t.recSeen[k]
	if !ok && !t.optimistic { // optimistic: the primary key checks it at flush
		var one int
		err := t.stmt(uRecordID).QueryRowContext(t.ctx, k.acct, k.id).Scan(&one)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return wrap("add usage", err)
		}
		exists = err == nil
	}
	if exists {
		return usage.ErrDuplicateRecord
	}
	t.recIdx[k] = len(t.records)
	t.records = append(t.records, stagedRecord{r: r, tz: tz, day: day})
	return nil
}

// usageMark extends the ledger's mark with the usage stage.
type usageMark struct {
	ledger          ledgerstage.LedgerMark
	meters, records int
}

func (t *usageTx) mark(acct string) usageMark {
	return usageMark{ledger: t.MarkAccount(acct), meters: len(t.meters), records: len(t.records)}
}

func (t *usageTx) rollback(m usageMark) {
	t.RollbackTo(m.ledger)
	for _, sm := range t.meters[m.meters:] {
		delete(t.meterIdx, sm.k)
	}
	t.meters = t.meters[:m.meters]
	for _, sr := range t.records[m.records:] {
		delete(t.recIdx, recKey{sr.r.AccountID, sr.r.ID})
	}
	t.records = t.records[:m.records]
}

// prefetch loads the ledger accounts that reqs charge and looks up, for
// the whole batch, the meter keys and record IDs the requests will check.
func (t *usageTx) prefetch(reqs []usage.MeterRequest) error {
	spends := make([]credits.SpendRequest, 0, len(reqs))
	for i := range reqs {
		if sp := &reqs[i].Spend; sp.Kind == credits.SpendDebit {
			spends = append(spends, *sp)
		}
	}
	if err := t.ledgerTx.prefetch(spends); err != nil || t.optimistic {
		return err
	}
	args := t.args[:0]
	for i := range reqs {
		r := &reqs[i]
		if k := (opKey{Acct: r.Record.AccountID, Key: r.IdempotencyKey}); !t.hasMeter(k) {
			t.meterSeen[k] = meterSeen{} // absent unless the lookup finds it
			args = append(args, r.IdempotencyKey, r.Record.AccountID)
		}
	}
	err := t.queryRows(t.ms.metersFind, args, func(rows *sql.Rows) error {
		var k opKey
		var op usage.MeterOp
		var fp []byte
		var created int64
		if err := rows.Scan(&k.Acct, &k.Key, &fp, &op.RecordID, &op.HoldID, &created); err != nil {
			return err
		}
		copy(op.Fingerprint[:], fp)
		op.CreatedAt = fromNanos(created)
		t.meterSeen[k] = meterSeen{op: op, found: true}
		return nil
	})
	if err != nil {
		return wrap("prefetch meter keys", err)
	}
	args = args[:0]
	for i := range reqs {
		r := &reqs[i].Record
		if k := (recKey{r.AccountID, r.ID}); !t.hasRecord(k) {
			t.recSeen[k] = false
			args = append(args, r.AccountID, r.ID)
		}
	}
	err = t.queryRows(t.ms.recordsFind, args, func(rows *sql.Rows) error {
		var k recKey
		if err := rows.Scan(&k.acct, &k.id); err != nil {
			return err
		}
		t.recSeen[k] = true
		return nil
	})
	t.args = args[:0]
	return wrap("prefetch record IDs", err)
}

func (t *usageTx) hasMeter(k opKey) bool {
	_, ok := t.meterSeen[k]
	return ok
}

func (t *usageTx) hasRecord(k recKey) bool {
	_, ok := t.recSeen[k]
	return ok
}

// flush writes the ledger's stage, then the meter keys, records and
// rollup sums.
func (t *usageTx) flush() error {
	if err := t.ledgerTx.flush(); err != nil {
		return err
	}
	args := t.args[:0]
	for i := range t.meters {
		m := &t.meters[i]
		args = append(args, m.k.Acct, m.k.Key, m.op.Fingerprint[:], m.op.RecordID, m.op.HoldID, toNanos(m.op.CreatedAt))
	}
	if err := t.execRows(t.ms.meters, args, nil); err != nil {
		return wrap("claim meter keys", err)
	}
	args = args[:0]
	for i := range t.records {
		r := t.records[i].r
		var meta sql.NullString
		if len(r.Metadata) > 0 {
			b, err := json.Marshal(r.Metadata)
			if err != nil {
				return wrap("add usage", err)
			}
			meta = sql.NullString{String: string(b), Valid: true}
		}
		args = append(args, r.AccountID, toNanos(r.CreatedAt), r.ID, r.KeyID, r.AuthSource, r.Endpoint, r.Method, r.Model,
			int64(r.StatusCode), int64(r.ResponseTime), r.RequestBytes, r.ResponseBytes, r.PromptTokens, r.CompletionTokens,
			r.Units, r.CachedUnits, r.UpstreamCost.String(), r.Cost.String(), r.ErrorType, r.ErrorMessage, meta)
	}
	if err := t.execRows(t.ms.records, args, nil); err != nil {
		if isUnique(err) {
			return fmt.Errorf("%w: %w", usage.ErrDuplicateRecord, err)
		}
		return wrap("add usage", err)
	}
	t.args = args[:0]
	return t.flushRollups()
}

// flushRollups sums the staged records per rollup row and upserts the
// sums.
func (t *usageTx) flushRollups() error {
	if len(t.records) == 0 {
		return nil
	}
	sums := make(map[usage.Rollup]*usage.Rollup, 16) // key: the row's dimensions only
	keys := make([]*usage.Rollup, 0, 16)
	for i := range t.records {
		sr := &t.records[i]
		k := usage.RollupFor(sr.r, sr.tz, sr.day)
		ro := sums[k]
		if ro == nil {
			ro = &usage.Rollup{}
			*ro = k
			sums[k] = ro
			keys = append(keys, ro)
		}
		ro.Add(sr.r)
	}
	args := t.args[:0]
	for _, r := range keys {
		units, atto, err := splitCost(r.Cost)
		if err != nil {
			return wrap("write rollup", err)
		}
		args = append(args, r.AccountID, r.TimeZone, r.Day, r.Model, r.KeyID, r.Endpoint,
			r.Requests, r.Errors, r.PromptTokens, r.CompletionTokens, r.Units, r.CachedUnits, units, atto)
	}
	t.args = args[:0]
	return wrap("write rollups", t.execRows(t.ms.rollups, args, nil))
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

// MeterUsage implements usage.Store.
func (s *Store) MeterUsage(ctx context.Context, now time.Time, reqs []usage.MeterRequest, res []usage.MeterOutcome) error {
	err := s.meterUsage(ctx, now, reqs, res)
	var bad *requestFailure
	if err == nil || ctx.Err() != nil || !errors.As(err, &bad) {
		return err // nothing applied; a failed BEGIN, prefetch or COMMIT concerns the whole batch
	}
	if len(reqs) == 1 {
		res[0] = usage.MeterOutcome{Err: bad.err}
		return nil
	}
	// A request's system failure or a failing statement of the flush
	// rolled the batch back: apply each request in its own transaction, so
	// that only a request that fails alone fails.
	for i := range reqs {
		if err := s.meterUsage(ctx, now, reqs[i:i+1], res[i:i+1]); err != nil {
			if errors.As(err, &bad) {
				err = bad.err
			}
			res[i] = usage.MeterOutcome{Err: err}
		}
	}
	return nil
}

func (s *Store) meterUsage(ctx context.Context, now time.Time, reqs []usage.MeterRequest, res []usage.MeterOutcome) error {
	for attempt := 0; ; attempt++ {
		err := s.cachedWrite(ctx, "meter usage", func(tx *sql.Tx) (*ledgerTx, error) {
			ut := s.newUsageTx(ctx, tx, now)
			ut.optimistic = attempt == 0
			if err := s.useCache(ut.ledgerTx); err != nil {
				return nil, err
			}
			if err := ut.prefetch(reqs); err != nil {
				return nil, err
			}
			for i := range reqs {
				out, err := ut.apply(ctx, now, &reqs[i])
				if err != nil {
					return nil, &requestFailure{err}
				}
				res[i] = out
			}
			return ut.ledgerTx, flushed(ut.optimistic, ut.flush())
		})
		if !retry(err, attempt) {
			return err
		}
	}
}

// apply runs one request, rolling it back to its mark if it fails. In an
// optimistic transaction the request claimed its key without looking, so a
// failure may be the wrong answer to a replay (a settled hold settles only
// once): the key is looked up then, and if it exists the request runs again
// as the replay it is.
func (t *usageTx) apply(ctx context.Context, now time.Time, r *usage.MeterRequest) (usage.MeterOutcome, error) {
	m := t.mark(r.Record.AccountID)
	out, err := usage.ApplyMeter(ctx, t, now, r)
	if err != nil || out.Err == nil {
		return out, err
	}
	t.rollback(m)
	k := opKey{Acct: r.Record.AccountID, Key: r.IdempotencyKey}
	if _, seen := t.meterSeen[k]; !t.optimistic || seen {
		return out, nil
	}
	if s, err := t.lookMeter(k); err != nil || !s.found {
		return out, err
	}
	out, err = usage.ApplyMeter(ctx, t, now, r)
	if err == nil && out.Err != nil {
		t.rollback(m)
	}
	return out, err
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
			&r.PromptTokens, &r.CompletionTokens, &r.Units, &r.CachedUnits, &units, &attos); err != nil {
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
	dims := [4]struct {
		keep bool
		col  string
	}{{q.Keep.Day, "day"}, {q.Keep.Model, "model"}, {q.Keep.Key, "key_id"}, {q.Keep.Endpoint, "endpoint"}}
	var sel, group []string
	for _, d := range dims {
		if d.keep {
			sel = append(sel, d.col)
			group = append(group, d.col)
		} else {
			sel = append(sel, `''`)
		}
	}
	query := `SELECT ` + strings.Join(sel, ", ") + `, SUM(requests), SUM(errors), SUM(prompt_tokens), SUM(completion_tokens),
		SUM(units), SUM(cached_units), SUM(cost_units / 1000000000), SUM(cost_units % 1000000000),
		SUM(cost_atto / 1000000000), SUM(cost_atto % 1000000000)
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
			&r.CompletionTokens, &r.Units, &r.CachedUnits, &cost[0], &cost[1], &cost[2], &cost[3]); err != nil {
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
			ut := s.newUsageTx(ctx, tx, time.Now())
			ut.optimistic = true // record IDs are new; a duplicate fails the chunk
			for i := range part {
				r := &part[i]
				if r.ID == "" || r.AccountID == "" || r.CreatedAt.IsZero() {
					return fmt.Errorf("%w: import needs ID, AccountID and CreatedAt", usage.ErrInvalidRecord)
				}
				if err := ut.AddUsage(ctx, r, tz, usage.Day(r.CreatedAt, loc)); err != nil {
					return err
				}
			}
			return ut.flush()
		})
		if err != nil {
			return err
		}
	}
	return nil
}
