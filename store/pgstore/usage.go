package pgstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/ledgerstage"
	"github.com/keyledger/keyledger/usage"
)

// Usage metering on PostgreSQL.
//
// MeterUsage is the group commit of usage.Service: a batch of meter
// requests in one transaction. It first locks the ledger accounts the
// batch charges (in account_id order) and reads, in the same round trip,
// the idempotency records, holds and record IDs the requests will look up.
// Each request then runs usage.ApplyMeter on a usageTx — the ledger's
// ledgerTx plus the usage tables — whose writes are staged in memory: the
// stage is the savepoint of each request. A request that fails (an expected
// failure such as insufficient funds) is rolled back to its mark — its
// staged rows dropped, its account's ledger state restored — before
// anything reaches the server, so its batch mates commit unaffected. The
// batch's rows then go to the server in one pipelined round trip:
// multi-row INSERT … SELECT FROM unnest for records, keys and ledger rows,
// and the batch's rollup sums upserted with INSERT … ON CONFLICT DO UPDATE,
// in key order so that concurrent batches lock rollup rows in one order.
//
// Meter keys of requests that charge nothing are not covered by an account
// lock: they are claimed optimistically, and if a concurrent transaction
// claimed one first the unique violation rolls the batch back and it runs
// again, now seeing (and replaying) that claim.

var _ usage.GroupCommitter = (*Store)(nil)

// UsageGroupCommit implements usage.GroupCommitter: the commit and the
// round trips dominate a meter request, so the usage Service batches them.
func (s *Store) UsageGroupCommit() bool { return true }

const recordColumns = `account_id, created_at, id, key_id, auth_source, endpoint, method, model, status_code, response_time,
	request_bytes, response_bytes, prompt_tokens, completion_tokens, units, cached_units, upstream_cost, cost,
	error_type, error_message, metadata`

const rollupColumns = `account_id, tz, day, model, key_id, endpoint, requests, errors, prompt_tokens,
	completion_tokens, units, cached_units, cost`

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
	r       usage.Record
	tz, day string
}

type stagedMeter struct {
	k  opKey
	op usage.MeterOp
}

// usageTx is a usage.Tx on one write transaction.
type usageTx struct {
	*ledgerTx
	meterSeen map[opKey]meterSeen
	recSeen   map[recKey]bool

	meters   []stagedMeter
	meterIdx map[opKey]int
	records  []stagedRecord
	recIdx   map[recKey]int
}

func newUsageTx(tx txConn, now time.Time) *usageTx {
	return &usageTx{
		ledgerTx: newLedgerTx(tx, now), meterSeen: make(map[opKey]meterSeen), recSeen: make(map[recKey]bool),
		meterIdx: make(map[opKey]int), recIdx: make(map[recKey]int),
	}
}

// ClaimMeter implements usage.Tx.
func (t *usageTx) ClaimMeter(ctx context.Context, accountID, key string, op usage.MeterOp) (usage.MeterOp, bool, error) {
	k := opKey{Acct: accountID, Key: key}
	if i, ok := t.meterIdx[k]; ok {
		return t.meters[i].op, false, nil
	}
	seen, ok := t.meterSeen[k]
	if !ok && !t.optimistic { // optimistic: see ledgerTx.claimed
		var err error
		if seen, err = t.lookMeter(ctx, k); err != nil {
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
func (t *usageTx) lookMeter(ctx context.Context, k opKey) (meterSeen, error) {
	var (
		seen    meterSeen
		fp      []byte
		created int64
	)
	err := t.tx.QueryRow(ctx, `SELECT fingerprint, record_id, hold_id, created_at FROM usage_ops WHERE key = $1 AND account_id = $2`,
		k.Key, k.Acct).Scan(&fp, &seen.op.RecordID, &seen.op.HoldID, &created)
	switch {
	case err == nil:
		seen.found = true
		copy(seen.op.Fingerprint[:], fp)
		seen.op.CreatedAt = fromNanos(created)
	case !errors.Is(err, pgx.ErrNoRows):
		return seen, wrap("meter key", err)
	}
	t.meterSeen[k] = seen
	return seen, nil
}

// UsageRecord implements usage.Tx.
func (t *usageTx) UsageRecord(ctx context.Context, accountID, id string, createdAt time.Time) (usage.Record, bool, error) {
	if i, ok := t.recIdx[recKey{accountID, id}]; ok && t.records[i].r.CreatedAt.Equal(createdAt) {
		return t.records[i].r, true, nil
	}
	r, err := scanRecord(t.tx.QueryRow(ctx, `SELECT `+recordColumns+` FROM usage_records
		WHERE account_id = $1 AND created_at = $2 AND id = $3`, accountID, toNanos(createdAt), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false, nil
	}
	return r, err == nil, wrap("usage record", err)
}

// AddUsage implements usage.Tx: the record is staged; its rollup is summed
// with its batch mates' at flush.
func (t *usageTx) AddUsage(ctx context.Context, r *usage.Record, tz, day string) error {
	k := recKey{r.AccountID, r.ID}
	if _, ok := t.recIdx[k]; ok {
		return usage.ErrDuplicateRecord
	}
	exists, ok := t.recSeen[k]
	if !ok && !t.optimistic { // optimistic: the primary key checks it at flush
		var one int
		err := t.tx.QueryRow(ctx, `SELECT 1 FROM usage_records WHERE account_id = $1 AND id = $2`,
			k.acct, k.id).Scan(&one)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return wrap("add usage", err)
		}
		exists = err == nil
	}
	if exists {
		return usage.ErrDuplicateRecord
	}
	t.recIdx[k] = len(t.records)
	t.records = append(t.records, stagedRecord{r: r.Clone(), tz: tz, day: day})
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

// prefetch locks the ledger accounts of reqs and reads what their requests
// will look up, in one round trip.
func (t *usageTx) prefetch(ctx context.Context, reqs []usage.MeterRequest) error {
	var (
		spends        = make([]credits.SpendRequest, 0, len(reqs))
		mKeys, mAccts = make([]string, len(reqs)), make([]string, len(reqs))
		rAccts, rIDs  = make([]string, len(reqs)), make([]string, len(reqs))
	)
	for i := range reqs {
		r := &reqs[i]
		if r.Spend.Kind != 0 {
			spends = append(spends, r.Spend)
		}
		mKeys[i], mAccts[i] = r.IdempotencyKey, r.Record.AccountID
		rAccts[i], rIDs[i] = r.Record.AccountID, r.Record.ID
		if !t.optimistic {
			t.meterSeen[opKey{Acct: r.Record.AccountID, Key: r.IdempotencyKey}] = meterSeen{}
			t.recSeen[recKey{rAccts[i], rIDs[i]}] = false
		}
	}
	ids, holds, ops := spendTargets(spends, nil, nil, nil)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if t.optimistic {
		return t.ledgerTx.prefetch(ctx, ids, holds, ops, nil)
	}
	return t.ledgerTx.prefetch(ctx, ids, holds, ops, func(b *pgx.Batch) {
		b.Queue(`SELECT o.key, o.account_id, o.fingerprint, o.record_id, o.hold_id, o.created_at
			FROM usage_ops o JOIN unnest($1::text[], $2::text[]) AS u(key, account_id)
			ON o.key = u.key AND o.account_id = u.account_id`, mKeys, mAccts).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var k opKey
				var op usage.MeterOp
				var fp []byte
				var created int64
				if err := rows.Scan(&k.Key, &k.Acct, &fp, &op.RecordID, &op.HoldID, &created); err != nil {
					return err
				}
				copy(op.Fingerprint[:], fp)
				op.CreatedAt = fromNanos(created)
				t.meterSeen[k] = meterSeen{op: op, found: true}
			}
			return rows.Err()
		})
		b.Queue(`SELECT r.account_id, r.id FROM usage_records r
			JOIN unnest($1::text[], $2::text[]) AS u(account_id, id)
			ON r.account_id = u.account_id AND r.id = u.id`, rAccts, rIDs).
			Query(func(rows pgx.Rows) error {
				for rows.Next() {
					var k recKey
					if err := rows.Scan(&k.acct, &k.id); err != nil {
						return err
					}
					t.recSeen[k] = true
				}
				return rows.Err()
			})
	})
}

type rollKey struct{ acct, tz, day, model, key, endpoint string }

// queueFlush queues the ledger's writes and the usage rows.
func (t *usageTx) queueFlush(b *pgx.Batch) (func(pgx.BatchResults) error, error) {
	checks := []func(pgx.BatchResults) error{t.ledgerTx.queueFlush(b)}
	execOK := func(br pgx.BatchResults) error { _, err := br.Exec(); return err }
	if n := len(t.meters); n > 0 {
		keys, accts, recs, holds := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		fps, created := make([][]byte, n), make([]int64, n)
		for i, m := range t.meters {
			fp := m.op.Fingerprint
			keys[i], accts[i], fps[i], recs[i], holds[i], created[i] = m.k.Key, m.k.Acct, fp[:], m.op.RecordID, m.op.HoldID, toNanos(m.op.CreatedAt)
		}
		b.Queue(`INSERT INTO usage_ops (key, account_id, fingerprint, record_id, hold_id, created_at)
			SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::bigint[])`,
			keys, accts, fps, recs, holds, created)
		checks = append(checks, execOK)
	}
	if len(t.records) > 0 {
		if err := t.queueRecords(b); err != nil {
			return nil, err
		}
		checks = append(checks, execOK)
		t.queueRollups(b)
		checks = append(checks, execOK)
	}
	return func(br pgx.BatchResults) error {
		for _, c := range checks {
			if err := c(br); err != nil {
				return err
			}
		}
		return nil
	}, nil
}

func (t *usageTx) queueRecords(b *pgx.Batch) error {
	n := len(t.records)
	var (
		acct, id, key, auth, endpoint, method, model, upstream, cost, errType, errMsg = make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n)
		created, rt, reqB, respB, prompt, completion, units, cached = make([]int64, n), make([]int64, n), make([]int64, n),
			make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		status = make([]int32, n)
		meta   = make([]*string, n)
	)
	for i := range t.records {
		r := &t.records[i].r
		acct[i], created[i], id[i], key[i], auth[i], endpoint[i], method[i], model[i] = r.AccountID, toNanos(r.CreatedAt),
			r.ID, r.KeyID, r.AuthSource, r.Endpoint, r.Method, r.Model
		status[i], rt[i], reqB[i], respB[i], prompt[i], completion[i], units[i], cached[i] = int32(r.StatusCode),
			int64(r.ResponseTime), r.RequestBytes, r.ResponseBytes, r.PromptTokens, r.CompletionTokens, r.Units, r.CachedUnits
		upstream[i], cost[i], errType[i], errMsg[i] = r.UpstreamCost.String(), r.Cost.String(), r.ErrorType, r.ErrorMessage
		if len(r.Metadata) > 0 {
			m, err := json.Marshal(r.Metadata)
			if err != nil {
				return wrap("add usage", err)
			}
			s := string(m)
			meta[i] = &s
		}
	}
	b.Queue(`INSERT INTO usage_records (`+recordColumns+`)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
			$9::integer[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[],
			$17::text[]::numeric[], $18::text[]::numeric[], $19::text[], $20::text[], $21::text[])`,
		acct, created, id, key, auth, endpoint, method, model, status, rt, reqB, respB, prompt, completion, units, cached,
		upstream, cost, errType, errMsg, meta)
	return nil
}

// queueRollups sums the batch's records per rollup row and upserts the
// sums, in key order.
func (t *usageTx) queueRollups(b *pgx.Batch) {
	sums := make(map[rollKey]*usage.Rollup, 16)
	for i := range t.records {
		sr := &t.records[i]
		k := rollKey{sr.r.AccountID, sr.tz, sr.day, sr.r.Model, sr.r.KeyID, sr.r.Endpoint}
		ro := sums[k]
		if ro == nil {
			v := usage.RollupFor(&sr.r, sr.tz, sr.day)
			ro = &v
			sums[k] = ro
		}
		ro.Add(&sr.r)
	}
	keys := make([]rollKey, 0, len(sums))
	for k := range sums {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b rollKey) int {
		return cmp.Or(strings.Compare(a.acct, b.acct), strings.Compare(a.tz, b.tz), strings.Compare(a.day, b.day),
			strings.Compare(a.model, b.model), strings.Compare(a.key, b.key), strings.Compare(a.endpoint, b.endpoint))
	})
	n := len(keys)
	var (
		acct, tz, day, model, key, endpoint, cost = make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		reqs, errs, prompt, completion, units, cached = make([]int64, n), make([]int64, n), make([]int64, n),
			make([]int64, n), make([]int64, n), make([]int64, n)
	)
	for i, k := range keys {
		ro := sums[k]
		acct[i], tz[i], day[i], model[i], key[i], endpoint[i] = k.acct, k.tz, k.day, k.model, k.key, k.endpoint
		reqs[i], errs[i], prompt[i], completion[i], units[i], cached[i], cost[i] = ro.Requests, ro.Errors, ro.PromptTokens,
			ro.CompletionTokens, ro.Units, ro.CachedUnits, ro.Cost.String()
	}
	b.Queue(`INSERT INTO usage_rollups AS r (`+rollupColumns+`)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[],
			$9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[]::numeric[])
		ON CONFLICT (account_id, tz, day, model, key_id, endpoint) DO UPDATE SET
			requests = r.requests + excluded.requests, errors = r.errors + excluded.errors,
			prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,
			completion_tokens = r.completion_tokens + excluded.completion_tokens,
			units = r.units + excluded.units, cached_units = r.cached_units + excluded.cached_units,
			cost = r.cost + excluded.cost`,
		acct, tz, day, model, key, endpoint, reqs, errs, prompt, completion, units, cached, cost)
}

func (t *usageTx) flush(ctx context.Context) error {
	var b pgx.Batch
	check, err := t.queueFlush(&b)
	if err != nil {
		return err
	}
	return t.send(ctx, &b, check, "write usage")
}

// MeterUsage implements usage.Store.
func (s *Store) MeterUsage(ctx context.Context, now time.Time, reqs []usage.MeterRequest, res []usage.MeterOutcome) error {
	err := s.meterUsage(ctx, now, reqs, res)
	var bad *requestFailure
	if err == nil || ctx.Err() != nil || !errors.As(err, &bad) {
		return err // nothing applied; a failed BEGIN, flush or COMMIT concerns the whole batch
	}
	if len(reqs) == 1 {
		res[0] = usage.MeterOutcome{Err: bad.err}
		return nil
	}
	// One request hit a system failure, which aborted the transaction:
	// apply each request in its own transaction, so that only a request
	// that fails alone fails.
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
	return s.pipelined(ctx, "meter usage", func(c txConn, attempt int) error {
		ut := newUsageTx(c, now)
		ut.pipelined, ut.optimistic = true, attempt == 0
		if err := ut.prefetch(ctx, reqs); err != nil {
			return err
		}
		for i := range reqs {
			out, err := ut.apply(ctx, now, &reqs[i])
			if err != nil {
				return &requestFailure{err}
			}
			res[i] = out
		}
		return ut.flush(ctx)
	})
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
	if s, err := t.lookMeter(ctx, k); err != nil || !s.found {
		return out, err
	}
	out, err = usage.ApplyMeter(ctx, t, now, r)
	if err == nil && out.Err != nil {
		t.rollback(m)
	}
	return out, err
}

func scanRecord(row pgx.Row) (usage.Record, error) {
	var (
		r              usage.Record
		rt, created    int64
		status         int32
		upstream, cost string
		meta           *string
	)
	err := row.Scan(&r.AccountID, &created, &r.ID, &r.KeyID, &r.AuthSource, &r.Endpoint, &r.Method, &r.Model, &status,
		&rt, &r.RequestBytes, &r.ResponseBytes, &r.PromptTokens, &r.CompletionTokens, &r.Units, &r.CachedUnits, &upstream,
		&cost, &r.ErrorType, &r.ErrorMessage, &meta)
	if err != nil {
		return r, err
	}
	var p amountScanner
	r.StatusCode = int(status)
	r.UpstreamCost, r.Cost = p.parse(upstream), p.parse(cost)
	r.ResponseTime, r.CreatedAt = time.Duration(rt), fromNanos(created)
	if meta != nil {
		if err := json.Unmarshal([]byte(*meta), &r.Metadata); err != nil {
			return r, fmt.Errorf("stored metadata: %w", err)
		}
	}
	return r, p.err
}

// recordWhere builds the WHERE clause of a record query.
func recordWhere(q *usage.RecordQuery) (string, []any) {
	var w strings.Builder
	args := []any{q.AccountID}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	w.WriteString(`account_id = $1`)
	for _, f := range []struct{ col, v string }{{"key_id", q.KeyID}, {"model", q.Model}, {"endpoint", q.Endpoint}} {
		if f.v != "" {
			w.WriteString(` AND ` + f.col + ` = ` + arg(f.v))
		}
	}
	if !q.From.IsZero() {
		w.WriteString(` AND created_at >= ` + arg(toNanos(q.From)))
	}
	if !q.To.IsZero() {
		w.WriteString(` AND created_at < ` + arg(toNanos(q.To)))
	}
	if q.AfterID != "" {
		at := arg(toNanos(q.AfterTime))
		w.WriteString(` AND (created_at, id) < (` + at + `, ` + arg(q.AfterID) + `)`)
	}
	return w.String(), args
}

// UsageRecords implements usage.Store.
func (s *Store) UsageRecords(ctx context.Context, q usage.RecordQuery) ([]usage.Record, error) {
	where, args := recordWhere(&q)
	args = append(args, q.Limit)
	rows, err := s.pool.Query(ctx, `SELECT `+recordColumns+` FROM usage_records WHERE `+where+
		fmt.Sprintf(` ORDER BY created_at DESC, id DESC LIMIT $%d`, len(args)), args...)
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

// ScanUsage implements usage.Store: one query, so one snapshot.
func (s *Store) ScanUsage(ctx context.Context, q usage.RecordQuery, fn func(*usage.Record) error) error {
	q.AfterID = ""
	where, args := recordWhere(&q)
	rows, err := s.pool.Query(ctx, `SELECT `+recordColumns+` FROM usage_records WHERE `+where, args...)
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

// UsageRollups implements usage.Store: one read-only snapshot, so the rows
// and the check for other zones agree.
func (s *Store) UsageRollups(ctx context.Context, q usage.RollupQuery) ([]usage.Rollup, bool, error) {
	var (
		out   []usage.Rollup
		other bool
	)
	err := s.read(ctx, "usage rollups", func(tx pgx.Tx) error {
		out, other = nil, false
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM usage_rollups WHERE account_id = $1 AND tz <> $2 AND day BETWEEN $3 AND $4 LIMIT 1`,
			q.AccountID, q.TimeZone, dayAround(q.FromDay, -1), dayAround(q.ToDay, 1)).Scan(&one)
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
		var p amountScanner
		for rows.Next() {
			var r usage.Rollup
			var cost string
			if err := rows.Scan(&r.AccountID, &r.TimeZone, &r.Day, &r.Model, &r.KeyID, &r.Endpoint, &r.Requests, &r.Errors,
				&r.PromptTokens, &r.CompletionTokens, &r.Units, &r.CachedUnits, &cost); err != nil {
				return wrap("usage rollups", err)
			}
			r.Cost = p.parse(cost)
			out = append(out, r)
		}
		return wrap("usage rollups", errors.Join(rows.Err(), p.err))
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
	dims := [4]struct {
		keep bool
		col  string
	}{{keep.Day, "day"}, {keep.Model, "model"}, {keep.Key, "key_id"}, {keep.Endpoint, "endpoint"}}
	sel, group := []string{"account_id", "tz"}, []string{"account_id", "tz"}
	for _, d := range dims {
		if d.keep {
			sel = append(sel, d.col)
			group = append(group, d.col)
		} else {
			sel = append(sel, `''`)
		}
	}
	return `SELECT ` + strings.Join(sel, ", ") + `, SUM(requests)::bigint, SUM(errors)::bigint, SUM(prompt_tokens)::bigint,
		SUM(completion_tokens)::bigint, SUM(units)::bigint, SUM(cached_units)::bigint, SUM(cost)::text
		FROM usage_rollups WHERE ` + where + ` GROUP BY ` + strings.Join(group, ", ")
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

// DeleteUsageBefore implements usage.Store: one statement. Unlike SQLite,
// a long delete blocks no writer here, so it is not chunked.
func (s *Store) DeleteUsageBefore(ctx context.Context, t time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM usage_records WHERE created_at < $1`, toNanos(t))
	return int(tag.RowsAffected()), wrap("delete usage", err)
}
