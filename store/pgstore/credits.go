package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
	"github.com/keyledger/keyledger/internal/ledgerstage"
	"github.com/keyledger/keyledger/internal/sqlaccount"
	"github.com/keyledger/keyledger/internal/sqlevents"
	"github.com/keyledger/keyledger/internal/sqlledger"
	"github.com/keyledger/keyledger/internal/sqlrow"
)

// The credits ledger on PostgreSQL: the SQL side of internal/sqlledger,
// whose Engine (embedded in db) runs the ledger rules.
//
// Money is NUMERIC, read and written as exact decimal text
// (credits.Amount.String); all arithmetic happens in Go. A write
// transaction first locks the ledger account rows it needs (SELECT … FOR
// UPDATE, in account_id order, one statement) and reads in the same round
// trip what the requests will look up (idempotency records, holds, meter
// keys, record IDs); after the lock no other transaction can change
// anything of those accounts, so the checks of the ledger rules hold until
// commit, across any number of pools.
//
// Writes are staged in memory while the rules run and sent at the end in
// one pipelined round trip: multi-row INSERT … SELECT FROM unnest for
// entries, idempotency records and holds, and one UPDATE for all changed
// account rows, each guarded by the version it read. A group commit sends
// its BEGIN with the prefetch and its COMMIT with the flush.

// ledgerAccountSelect reads sqlledger.AccountColumns with the money as
// text, which pgx copies instead of decoding binary NUMERIC, then the lots
// and hold_due columns.
const ledgerAccountSelect = `account_id, unit, balance::text, held::text, seq, version, overdraft::text, monthly_cap::text,
	time_zone, recharge_enabled, recharge_threshold::text, recharge_amount::text, recharge_armed, recharges,
	month_start, month_end, month_spent::text, opened_at, updated_at, lots, hold_due, key_limits`

// db group-commits ledger spends (sqlledger.Engine.GroupCommit).
var _ interface{ GroupCommit() bool } = (*db)(nil)

// ledgerDB runs the engine's transactions on the pool (sqlledger.DB).
type ledgerDB struct{ s *db }

// Batch implements sqlledger.DB: a pipelined transaction (see
// db.pipelined), retried after a serialization failure, a deadlock or
// a unique violation (an optimistic claim of a taken key).
func (d ledgerDB) Batch(ctx context.Context, op string, now time.Time, fn func(*sqlledger.Tx) error) error {
	return d.s.pipelined(ctx, op, func(c txConn, attempt int) error {
		t := sqlledger.NewTx(&ledgerConn{tx: c, lock: true, pipelined: true}, now, true)
		t.Optimistic = attempt == 0
		return fn(t)
	})
}

// Write implements sqlledger.DB.
func (d ledgerDB) Write(ctx context.Context, op string, now time.Time, fn func(*sqlledger.Tx) error) error {
	return d.s.write(ctx, op, func(tx pgx.Tx) error {
		return fn(sqlledger.NewTx(&ledgerConn{tx: tx, lock: true}, now, true))
	})
}

// Read implements sqlledger.DB: a read-only REPEATABLE READ snapshot.
func (d ledgerDB) Read(ctx context.Context, op string, now time.Time, fn func(*sqlledger.Tx) error) error {
	return d.s.read(ctx, op, func(tx pgx.Tx) error {
		return fn(sqlledger.NewTx(&ledgerConn{tx: tx}, now, true))
	})
}

// ledgerConn is a sqlledger.Conn on one transaction.
type ledgerConn struct {
	tx txConn
	// lock: Account locks the row (FOR UPDATE).
	lock bool
	// pipelined: tx is a bare connection; the transaction's BEGIN goes
	// out with the prefetch and its COMMIT with the flush (see
	// db.pipelined), saving two round trips per batch.
	pipelined, begun bool
}

// AlertThresholds implements sqlledger.ThresholdConn.
func (c *ledgerConn) AlertThresholds(ctx context.Context, acct string) (string, error) {
	var v string
	err := c.tx.QueryRow(ctx, sqlaccount.Rebind(sqlevents.ThresholdsQuery), acct).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return v, wrap("alert thresholds", err)
}

// Account implements sqlledger.Conn.
func (c *ledgerConn) Account(ctx context.Context, id string) (sqlledger.Row, error) {
	query := `SELECT ` + ledgerAccountSelect + ` FROM credit_accounts WHERE account_id = $1`
	if c.lock {
		query += ` FOR UPDATE`
	}
	r, err := sqlledger.ScanRow(c.tx.QueryRow(ctx, query, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return r, credits.ErrUnknownAccount
	}
	return r, wrap("ledger account", err)
}

// Lots implements sqlledger.Conn.
func (c *ledgerConn) Lots(ctx context.Context, id string) ([]ledger.Lot, error) {
	rows, err := c.tx.Query(ctx, `SELECT id, expires_at, remaining::text FROM credit_lots WHERE account_id = $1 ORDER BY expires_at, id`, id)
	if err != nil {
		return nil, wrap("ledger lots", err)
	}
	lots, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ledger.Lot, error) { return sqlledger.ScanLot(r) })
	return lots, wrap("ledger lots", err)
}

// DueHolds implements sqlledger.Conn.
func (c *ledgerConn) DueHolds(ctx context.Context, id string, now int64) ([]credits.Hold, int64, error) {
	rows, err := c.tx.Query(ctx, `SELECT id, amount::text, expires_at, key_id, key_epoch FROM credit_holds
		WHERE account_id = $1 AND state = 'active' AND expires_at <= $2 ORDER BY id`, id, now)
	if err != nil {
		return nil, 0, wrap("ledger due holds", err)
	}
	due, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (credits.Hold, error) { return sqlledger.ScanDueHold(r, id) })
	if err != nil {
		return nil, 0, wrap("ledger due holds", err)
	}
	var next *int64
	if err := c.tx.QueryRow(ctx, `SELECT min(expires_at) FROM credit_holds WHERE account_id = $1 AND state = 'active' AND expires_at > $2`,
		id, now).Scan(&next); err != nil {
		return nil, 0, wrap("ledger due holds", err)
	}
	if next == nil {
		return due, 0, nil // no active hold is left
	}
	return due, *next, nil
}

// Prefetch implements sqlledger.Conn: one pipelined round trip that locks
// the accounts, in account_id order, and reads after the lock the holds,
// idempotency records, meter keys and record IDs.
func (c *ledgerConn) Prefetch(ctx context.Context, f *sqlledger.Fetch) error {
	var b pgx.Batch
	if c.pipelined && !c.begun {
		b.Queue(`BEGIN`)
		// Plan this transaction's statements for their arguments: a
		// prepared statement's generic plan is frozen with the statistics
		// of its first executions, and on a young database those say the
		// tables are tiny — a group commit then looked its holds up by
		// sequential scans over a table that grew by a row per request
		// (2× the time per request at 64 callers, BENCHMARKS.md).
		b.Queue(`SET LOCAL plan_cache_mode TO force_custom_plan`)
		c.begun = true
	}
	if len(f.Accounts) > 0 || len(f.Holds) > 0 {
		b.Queue(`SELECT `+ledgerAccountSelect+` FROM credit_accounts
			WHERE account_id = ANY($1) OR account_id IN (SELECT account_id FROM credit_holds WHERE id = ANY($2))
			ORDER BY account_id FOR UPDATE`, f.Accounts, f.Holds).Query(func(rows pgx.Rows) error {
			return sqlrow.Each(rows, sqlledger.ScanRow, func(r sqlledger.Row) error {
				f.FoundAccount(r)
				return nil
			})
		})
		// The same accounts' alert thresholds, so that a movement's events
		// need no round trip of their own (Tx.Moved).
		f.ThresholdsRead()
		b.Queue(`SELECT account_id, low_balance FROM alert_thresholds
			WHERE account_id = ANY($1) OR account_id IN (SELECT account_id FROM credit_holds WHERE id = ANY($2))`,
			f.Accounts, f.Holds).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var acct, low string
				if err := rows.Scan(&acct, &low); err != nil {
					return err
				}
				f.FoundThresholds(acct, low)
			}
			return rows.Err()
		})
	}
	if len(f.Holds) > 0 {
		// After the accounts' locks, in the same pipeline: a hold a
		// settle carries that this does not find is not stored, and
		// cannot be meanwhile (only a settle of it, under its account's
		// lock, stores it), so the Tx need not ask again.
		f.CarriedRead()
		b.Queue(`SELECT `+sqlledger.HoldColumns+` FROM credit_holds WHERE id = ANY($1)`, f.Holds).Query(func(rows pgx.Rows) error {
			return sqlrow.Each(rows, sqlledger.ScanHold, func(h credits.Hold) error {
				f.FoundHold(h)
				return nil
			})
		})
	}
	if len(f.Ops) > 0 {
		keys, accts := splitKeys(f.Ops)
		b.Queue(`SELECT o.key, o.account_id, o.kind, o.fingerprint, o.entry_seq, o.hold_id
			FROM credit_ops o JOIN unnest($1::text[], $2::text[]) AS u(key, account_id)
			ON o.key = u.key AND o.account_id = u.account_id`, keys, accts).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var k sqlledger.OpKey
				rec, err := sqlledger.ScanOp(rows, &k)
				if err != nil {
					return err
				}
				f.FoundOp(k, rec)
			}
			return rows.Err()
		})
	}
	queueUsagePrefetch(&b, f)
	if b.Len() == 0 {
		return nil
	}
	return wrap("prefetch", c.tx.SendBatch(ctx, &b).Close())
}

// splitKeys returns the keys and accounts of ks, for unnest.
func splitKeys(ks []sqlledger.OpKey) (keys, accts []string) {
	keys, accts = make([]string, len(ks)), make([]string, len(ks))
	for i, k := range ks {
		keys[i], accts[i] = k.Key, k.Acct
	}
	return keys, accts
}

// Hold implements sqlledger.Conn.
func (c *ledgerConn) Hold(ctx context.Context, id string) (credits.Hold, error) {
	h, err := sqlledger.ScanHold(c.tx.QueryRow(ctx, `SELECT `+sqlledger.HoldColumns+` FROM credit_holds WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return h, credits.ErrHoldNotFound
	}
	return h, wrap("ledger hold", err)
}

// Op implements sqlledger.Conn.
func (c *ledgerConn) Op(ctx context.Context, k sqlledger.OpKey) (ledger.OpRecord, bool, error) {
	rec, err := sqlledger.ScanOp(c.tx.QueryRow(ctx, `SELECT kind, fingerprint, entry_seq, hold_id FROM credit_ops
		WHERE key = $1 AND account_id = $2`, k.Key, k.Acct), nil)
	if errors.Is(err, pgx.ErrNoRows) {
		return rec, false, nil
	}
	return rec, err == nil, wrap("idempotency record", err)
}

// Entry implements sqlledger.Conn.
func (c *ledgerConn) Entry(ctx context.Context, acct string, seq int64) (credits.Entry, error) {
	e, err := sqlledger.ScanEntry(c.tx.QueryRow(ctx, `SELECT `+sqlledger.EntryColumns+` FROM credit_entries
		WHERE account_id = $1 AND seq = $2`, acct, seq))
	return e, wrap("ledger entry", err)
}

// Flush implements sqlledger.Conn: everything staged, with the COMMIT of a
// pipelined transaction, in one round trip.
func (c *ledgerConn) Flush(ctx context.Context, t *sqlledger.Tx) error {
	var b pgx.Batch
	checks := []func(pgx.BatchResults) error{queueLedger(&b, t)}
	if err := queueUsage(&b, t, &checks); err != nil {
		return err
	}
	for i := range t.Events { // the outbox rows of the ledger's movements
		b.Queue(sqlaccount.Rebind(sqlevents.InsertEvent), sqlevents.EventArgs(&t.Events[i])...)
		checks = append(checks, execOK)
	}
	if b.Len() > 0 && !movesMoney(t) {
		// Holds only (reserve, extend, release): see movesMoney.
		b.Queue(`SET LOCAL synchronous_commit TO OFF`)
		checks = append(checks, execOK)
	}
	if c.pipelined {
		b.Queue(`COMMIT`)
	}
	if b.Len() == 0 {
		return nil
	}
	br := c.tx.SendBatch(ctx, &b)
	var err error
	for _, check := range checks {
		if err = check(br); err != nil {
			break
		}
	}
	if err == nil && c.pipelined {
		// A COMMIT of a failed transaction reports ROLLBACK, not an error.
		var tag pgconn.CommandTag
		if tag, err = br.Exec(); err == nil && tag.String() != "COMMIT" {
			err = fmt.Errorf("transaction ended with %s", tag)
		}
	}
	return wrap("write ledger", errors.Join(err, br.Close()))
}

// movesMoney reports whether t writes a ledger entry or a usage record. A
// transaction that does not — reserves, extends and releases of holds, and
// their idempotency records — commits without waiting for its WAL to reach
// the disk (synchronous_commit off for that transaction only): other
// instances see it at once, as with any commit, and any later transaction
// that moves money flushes the WAL up to its own commit, so every hold a
// charge depended on is durable with the charge. Only a crash of the
// database server itself can lose the last such commits (within three
// wal_writer_delay), which removes holds of requests that were in flight
// at that moment: their completion then charges them like a request whose
// hold expired (DESIGN.md), and no funds are ever counted free — a lost
// hold frees reserved funds, it never spends them. This saves an fsync wait
// on the first of a request's two transactions.
func movesMoney(t *sqlledger.Tx) bool {
	return len(t.Stage.Entries) > 0 || len(t.Meters) > 0 || len(t.Records) > 0
}

// execOK checks the result of one queued statement.
func execOK(br pgx.BatchResults) error { _, err := br.Exec(); return err }

// queueLedger queues on b the statements that write the ledger's stage,
// and returns the function that checks their results.
func queueLedger(b *pgx.Batch, t *sqlledger.Tx) func(pgx.BatchResults) error {
	st := &t.Stage
	var checks []func(pgx.BatchResults) error
	if len(st.Expire) > 0 {
		b.Queue(`UPDATE credit_holds SET state = 'expired', resolved_at = expires_at WHERE id = ANY($1) AND state = 'active'`, st.Expire)
		checks = append(checks, execOK)
	}
	if n := len(st.Entries); n > 0 {
		var (
			acct, id, typ, amt, bal, ref, desc, idem, hold = make([]string, n), make([]string, n), make([]string, n),
				make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
			seq, created = make([]int64, n), make([]int64, n)
			expires      = make([]*int64, n)
		)
		for i, e := range st.Entries {
			acct[i], seq[i], id[i], typ[i], amt[i], bal[i] = e.AccountID, e.Seq, e.ID, string(e.Type), e.Amount.String(), e.BalanceAfter.String()
			ref[i], desc[i], idem[i], hold[i], expires[i], created[i] = e.Reference, e.Description, e.IdempotencyKey, e.HoldID,
				sqlaccount.ToNullNanos(e.ExpiresAt), toNanos(e.CreatedAt)
		}
		b.Queue(`INSERT INTO credit_entries (`+sqlledger.EntryColumns+`)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[]::numeric[], $6::text[]::numeric[], $7::text[],
				$8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[])`,
			acct, seq, id, typ, amt, bal, ref, desc, idem, hold, expires, created)
		checks = append(checks, execOK)
	}
	if n := len(st.Ops); n > 0 {
		keys, accts, holds := make([]string, n), make([]string, n), make([]string, n)
		kinds, seqs := make([]int16, n), make([]int64, n)
		fps := make([][]byte, n)
		for i, o := range st.Ops {
			fp := o.Rec.Fingerprint
			keys[i], accts[i], kinds[i], fps[i], seqs[i], holds[i] = o.K.Key, o.K.Acct, int16(o.Rec.Kind), fp[:], o.Rec.EntrySeq, o.Rec.HoldID
		}
		b.Queue(`INSERT INTO credit_ops (key, account_id, kind, fingerprint, entry_seq, hold_id)
			SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], $4::bytea[], $5::bigint[], $6::text[])`,
			keys, accts, kinds, fps, seqs, holds)
		checks = append(checks, execOK)
	}
	if holds := t.LatestHolds(); len(holds) > 0 {
		n := len(holds)
		var (
			ids, acct, amt, state, ref, idem, actual, charged, entry = make([]string, n), make([]string, n), make([]string, n),
				make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
			created, expires, seq = make([]int64, n), make([]int64, n), make([]int64, n)
			resolved              = make([]*int64, n)
			fps                   = make([][]byte, n)
			keyIDs, epochs        = make([]string, n), make([]int64, n)
		)
		for i, h := range holds {
			fp := h.SettleFingerprint
			ids[i] = h.ID
			acct[i], amt[i], state[i], ref[i], idem[i] = h.AccountID, h.Amount.String(), string(h.State), h.Reference, h.IdempotencyKey
			created[i], expires[i], resolved[i] = toNanos(h.CreatedAt), toNanos(h.ExpiresAt), sqlaccount.ToNullNanos(h.ResolvedAt)
			actual[i], charged[i], entry[i], seq[i], fps[i] = h.Actual.String(), h.Charged.String(), h.EntryID, h.EntrySeq, fp[:]
			keyIDs[i], epochs[i] = h.KeyID, h.KeyEpoch
		}
		b.Queue(`INSERT INTO credit_holds (`+sqlledger.HoldColumns+`)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[]::numeric[], $4::text[], $5::text[], $6::text[], $7::bigint[],
				$8::bigint[], $9::bigint[], $10::text[]::numeric[], $11::text[]::numeric[], $12::text[], $13::bigint[], $14::bytea[], $15::text[], $16::bigint[])
			ON CONFLICT (id) DO UPDATE SET amount = excluded.amount, expires_at = excluded.expires_at,
			state = excluded.state, resolved_at = excluded.resolved_at, actual = excluded.actual, charged = excluded.charged, entry_id = excluded.entry_id,
			entry_seq = excluded.entry_seq, settle_fp = excluded.settle_fp, key_epoch = excluded.key_epoch`,
			ids, acct, amt, state, ref, idem, created, expires, resolved, actual, charged, entry, seq, fps, keyIDs, epochs)
		checks = append(checks, execOK)
	}
	if c := queueAccounts(b, t); c != nil {
		checks = append(checks, c)
	}
	return func(br pgx.BatchResults) error {
		for _, c := range checks {
			if err := c(br); err != nil {
				return err
			}
		}
		return nil
	}
}

// queueAccounts queues the update of every changed account row (one
// statement, each row only at the version it read) and the changes of
// their lots.
func queueAccounts(b *pgx.Batch, t *sqlledger.Tx) func(pgx.BatchResults) error {
	changed := t.Changed()
	if len(changed) == 0 {
		return nil
	}
	n := len(changed)
	var (
		id, bal, held, od, limit, tz, thr, ramt, spent = make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		seq, version, recharges, mStart, mEnd, updated, lots, holdDue, oldVersion = make([]int64, n), make([]int64, n),
			make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		enabled, armed = make([]bool, n), make([]bool, n)
		keys           = make([]string, n)
	)
	for i, a := range changed {
		var err error
		if keys[i], err = sqlledger.KeyLimits(&a.St); err != nil {
			return func(pgx.BatchResults) error { return err }
		}
		st := &a.St
		p, ar := st.Policy, st.Policy.AutoRecharge
		id[i], bal[i], held[i], seq[i], version[i] = st.ID, st.Balance.String(), st.Held.String(), st.Seq, st.Version
		od[i], limit[i], tz[i], enabled[i], thr[i], ramt[i] = p.Overdraft.String(), p.MonthlyCap.String(), p.TimeZone,
			ar.Enabled, ar.Threshold.String(), ar.Amount.String()
		armed[i], recharges[i], mStart[i], mEnd[i], spent[i] = st.RechargeArmed, st.Recharges, toNanos(st.MonthStart),
			toNanos(st.MonthEnd), st.MonthSpent.String()
		updated[i], lots[i], holdDue[i], oldVersion[i] = toNanos(st.UpdatedAt), int64(len(st.Lots)), a.HoldDue, a.Version
	}
	b.Queue(`UPDATE credit_accounts c SET balance = u.balance, held = u.held, seq = u.seq, version = u.version,
		overdraft = u.overdraft, monthly_cap = u.monthly_cap, time_zone = u.time_zone, recharge_enabled = u.recharge_enabled,
		recharge_threshold = u.recharge_threshold, recharge_amount = u.recharge_amount, recharge_armed = u.recharge_armed,
		recharges = u.recharges, month_start = u.month_start, month_end = u.month_end, month_spent = u.month_spent,
		updated_at = u.updated_at, lots = u.lots, hold_due = u.hold_due, key_limits = u.key_limits
		FROM unnest($1::text[], $2::text[]::numeric[], $3::text[]::numeric[], $4::bigint[], $5::bigint[], $6::text[]::numeric[], $7::text[]::numeric[],
			$8::text[], $9::boolean[], $10::text[]::numeric[], $11::text[]::numeric[], $12::boolean[], $13::bigint[], $14::bigint[],
			$15::bigint[], $16::text[]::numeric[], $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[], $21::text[])
			AS u(account_id, balance, held, seq, version, overdraft, monthly_cap, time_zone, recharge_enabled,
			recharge_threshold, recharge_amount, recharge_armed, recharges, month_start, month_end, month_spent,
			updated_at, lots, hold_due, old_version, key_limits)
		WHERE c.account_id = u.account_id AND c.version = u.old_version`,
		id, bal, held, seq, version, od, limit, tz, enabled, thr, ramt, armed, recharges, mStart, mEnd, spent,
		updated, lots, holdDue, oldVersion, keys)
	nLots := 0
	for _, a := range changed {
		nLots += queueLots(b, a)
	}
	return func(br pgx.BatchResults) error {
		tag, err := br.Exec()
		if err != nil {
			return err
		}
		if tag.RowsAffected() != int64(n) {
			return fmt.Errorf("update ledger accounts: %d of %d rows at the version read", tag.RowsAffected(), n)
		}
		for range nLots {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		return nil
	}
}

// queueLots queues the changes of an account's lots and returns how many
// statements it queued.
func queueLots(b *pgx.Batch, a *ledgerstage.Account) int {
	added, changed, gone := a.LotChanges()
	for _, l := range added {
		b.Queue(`INSERT INTO credit_lots (id, account_id, expires_at, remaining) VALUES ($1, $2, $3, $4)`,
			l.ID, a.St.ID, toNanos(l.ExpiresAt), l.Remaining.String())
	}
	for _, l := range changed {
		b.Queue(`UPDATE credit_lots SET remaining = $1 WHERE id = $2`, l.Remaining.String(), l.ID)
	}
	n := len(added) + len(changed)
	if len(gone) > 0 {
		b.Queue(`DELETE FROM credit_lots WHERE id = ANY($1)`, gone)
		n++
	}
	return n
}

// OpenLedger implements credits.Store.
func (s *db) OpenLedger(ctx context.Context, id, unit string, pol credits.Policy, now time.Time) (credits.Account, error) {
	st := ledger.NewAccountState(id, unit, pol, now)
	p, ar := st.Policy, st.Policy.AutoRecharge
	_, err := s.pool.Exec(ctx, `INSERT INTO credit_accounts (`+sqlledger.AccountColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`,
		st.ID, st.Unit, st.Balance.String(), st.Held.String(), st.Seq, st.Version, p.Overdraft.String(),
		p.MonthlyCap.String(), p.TimeZone, ar.Enabled, ar.Threshold.String(), ar.Amount.String(),
		st.RechargeArmed, st.Recharges, toNanos(st.MonthStart), toNanos(st.MonthEnd), st.MonthSpent.String(),
		toNanos(st.OpenedAt), toNanos(st.UpdatedAt))
	if isUnique(err) {
		return credits.Account{}, credits.ErrAlreadyOpen
	}
	if err != nil {
		return credits.Account{}, wrap("open ledger", err)
	}
	return st.View(), nil
}

// ledgerExists reports credits.ErrUnknownAccount for a missing account.
func ledgerExists(ctx context.Context, q querier, id string) error {
	var one int
	err := q.QueryRow(ctx, `SELECT 1 FROM credit_accounts WHERE account_id = $1`, id).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return credits.ErrUnknownAccount
	}
	return wrap("ledger account", err)
}

// LedgerEntries implements credits.Store.
func (s *db) LedgerEntries(ctx context.Context, id string, f credits.EntryFilter, beforeSeq int64, limit int) ([]credits.Entry, error) {
	var out []credits.Entry
	err := s.read(ctx, "ledger entries", func(tx pgx.Tx) error {
		out = nil
		if err := ledgerExists(ctx, tx, id); err != nil {
			return err
		}
		query, args := sqlledger.EntriesQuery(id, &f, beforeSeq, limit, true)
		rows, err := tx.Query(ctx, query, args...)
		if err != nil {
			return wrap("ledger entries", err)
		}
		defer rows.Close()
		out, err = sqlrow.Collect(rows, sqlledger.ScanEntry)
		return wrap("ledger entries", err)
	})
	return out, err
}

// LedgerBalanceAt implements credits.Store.
func (s *db) LedgerBalanceAt(ctx context.Context, id string, t time.Time) (credits.Amount, error) {
	var bal credits.Amount
	err := s.read(ctx, "ledger balance at", func(tx pgx.Tx) error {
		if err := ledgerExists(ctx, tx, id); err != nil {
			return err
		}
		var last string
		err := tx.QueryRow(ctx, `SELECT balance_after::text FROM credit_entries WHERE account_id = $1 AND created_at <= $2
			ORDER BY seq DESC LIMIT 1`, id, toNanos(t)).Scan(&last)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return wrap("ledger balance at", err)
		}
		rows, err := tx.Query(ctx, `SELECT remaining::text FROM credit_lots WHERE account_id = $1 AND expires_at <= $2`, id, toNanos(t))
		if err != nil {
			return wrap("ledger balance at", err)
		}
		defer rows.Close()
		bal, err = sqlledger.BalanceAt(last, rows)
		return wrap("ledger balance at", err)
	})
	return bal, err
}

// LedgerHold implements credits.Store.
func (s *db) LedgerHold(ctx context.Context, id string) (credits.Hold, error) {
	h, err := sqlledger.ScanHold(s.pool.QueryRow(ctx, `SELECT `+sqlledger.HoldColumns+` FROM credit_holds WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return h, credits.ErrHoldNotFound
	}
	return h, wrap("ledger hold", err)
}

// ExpireLedgers implements credits.Store. It finds due accounts
// first without locking, so a sweep with nothing due writes nothing.
func (s *db) ExpireLedgers(ctx context.Context, now time.Time, accountID string, limit int) (credits.ExpiryReport, error) {
	q := `SELECT account_id FROM credit_lots WHERE expires_at <= $1
		UNION SELECT account_id FROM credit_holds WHERE state = 'active' AND expires_at <= $1 LIMIT $2`
	args := []any{toNanos(now), limit}
	if accountID != "" {
		q = `SELECT account_id FROM credit_lots WHERE account_id = $3 AND expires_at <= $1
			UNION SELECT account_id FROM credit_holds WHERE account_id = $3 AND state = 'active' AND expires_at <= $1 LIMIT $2`
		args = append(args, accountID)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return credits.ExpiryReport{}, wrap("find due ledgers", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(ids) == 0 {
		return credits.ExpiryReport{}, wrap("find due ledgers", err)
	}
	return s.Expire(ctx, now, ids)
}
