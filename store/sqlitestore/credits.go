package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
	"github.com/keyledger/keyledger/internal/ledgerstage"
	"github.com/keyledger/keyledger/internal/sqlevents"
	"github.com/keyledger/keyledger/internal/sqlledger"
	"github.com/keyledger/keyledger/internal/sqlrow"
)

// The credits ledger on SQLite: the SQL side of internal/sqlledger, whose
// Engine (embedded in db) runs the ledger rules.
//
// Money is stored as exact decimal TEXT (credits.Amount.String) and all
// arithmetic happens in Go, so sums are exact at any precision (sub-paisa
// per-token costs included). The engine loads an account row, its grant
// lots and its due holds once per transaction and changes them in memory;
// entries, holds and idempotency records are staged in memory as each
// request is applied, and Flush writes all of it at the end — multi-row
// INSERTs for entries and keys, one multi-row UPDATE (with a version
// check) for the accounts. BEGIN IMMEDIATE makes the whole
// read-check-write one critical section across processes sharing the
// file, so no interleaving can overspend, and lets a key read absent stay
// absent until commit. A group commit starts from the account states the
// previous batches committed (acctcache.go).

// Prepared ledger statements, by index.
const (
	sAccount = iota
	sAccounts
	sLots
	sDueHolds
	sNextHoldDue
	sExpireHold
	sOp
	sEntry
	sHold
	sPutHold
	sUpdateAccount
	sInsertLot
	sUpdateLot
	sDeleteLot
	sMeter
	sRecord
	sRecordID
	sThresholds
	nLedgerStmts
)

func ledgerStatements() [nLedgerStmts]string {
	return [nLedgerStmts]string{
		sAccount: `SELECT ` + sqlledger.AccountColumns + `, lots, hold_due, key_limits FROM credit_accounts WHERE account_id = ?`,
		sAccounts: `SELECT ` + sqlledger.AccountColumns + `, lots, hold_due, key_limits FROM credit_accounts
			WHERE account_id IN (SELECT value FROM json_each(?))`,
		sLots:        `SELECT id, expires_at, remaining FROM credit_lots WHERE account_id = ? ORDER BY expires_at, id`,
		sDueHolds:    `SELECT id, amount, expires_at, key_id, key_epoch FROM credit_holds WHERE account_id = ? AND state = 'active' AND expires_at <= ?`,
		sNextHoldDue: `SELECT min(expires_at) FROM credit_holds WHERE account_id = ? AND state = 'active' AND expires_at > ?`,
		sExpireHold:  `UPDATE credit_holds SET state = 'expired', resolved_at = expires_at WHERE id = ? AND state = 'active'`,
		sOp:          `SELECT kind, fingerprint, entry_seq, hold_id FROM credit_ops WHERE key = ? AND account_id = ?`,
		sEntry:       `SELECT ` + sqlledger.EntryColumns + ` FROM credit_entries WHERE account_id = ? AND seq = ?`,
		sHold:        `SELECT ` + sqlledger.HoldColumns + ` FROM credit_holds WHERE id = ?`,
		sPutHold: `INSERT INTO credit_holds (` + sqlledger.HoldColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET amount = excluded.amount, expires_at = excluded.expires_at,
			state = excluded.state, resolved_at = excluded.resolved_at, actual = excluded.actual, charged = excluded.charged, entry_id = excluded.entry_id,
			entry_seq = excluded.entry_seq, settle_fp = excluded.settle_fp, key_epoch = excluded.key_epoch`,
		sUpdateAccount: `UPDATE credit_accounts SET balance = ?, held = ?, seq = ?, version = ?, overdraft = ?,
			monthly_cap = ?, time_zone = ?, recharge_enabled = ?, recharge_threshold = ?, recharge_amount = ?,
			recharge_armed = ?, recharges = ?, month_start = ?, month_end = ?, month_spent = ?, updated_at = ?,
			lots = ?, hold_due = ?, key_limits = ? WHERE account_id = ? AND version = ?`,
		sInsertLot:  `INSERT INTO credit_lots (id, account_id, expires_at, remaining) VALUES (?, ?, ?, ?)`,
		sUpdateLot:  `UPDATE credit_lots SET remaining = ? WHERE id = ?`,
		sDeleteLot:  `DELETE FROM credit_lots WHERE id = ?`,
		sMeter:      `SELECT fingerprint, record_id, hold_id, created_at FROM usage_ops WHERE key = ?2 AND account_id = ?1`,
		sRecord:     `SELECT ` + sqlledger.RecordColumns + ` FROM usage_records WHERE account_id = ? AND created_at = ? AND id = ?`,
		sRecordID:   `SELECT 1 FROM usage_records WHERE account_id = ? AND id = ?`,
		sThresholds: sqlevents.ThresholdsQuery,
	}
}

// readOnly marks the statements the reader pool prepares too.
func readOnly(i int) bool {
	return i == sAccount || i == sLots || i == sDueHolds || i == sNextHoldDue || i == sEntry || i == sHold || i == sOp
}

type ledgerStmts [nLedgerStmts]*sql.Stmt

// prepareLedger prepares the ledger statements on the writer and (the
// read-only ones) on the reader pool.
func (s *db) prepareLedger(ctx context.Context) error {
	s.lw, s.lr = new(ledgerStmts), new(ledgerStmts)
	for i, q := range ledgerStatements() {
		if q == "" {
			return fmt.Errorf("sqlitestore: ledger statement %d has no SQL", i)
		}
		var err error
		if s.lw[i], err = s.w.PrepareContext(ctx, q); err != nil {
			return fmt.Errorf("sqlitestore: prepare ledger statement %d: %w", i, err)
		}
		if readOnly(i) {
			if s.lr[i], err = s.r.PrepareContext(ctx, q); err != nil {
				return fmt.Errorf("sqlitestore: prepare ledger statement %d: %w", i, err)
			}
		}
	}
	return nil
}

func (s *db) closeLedger() error {
	var errs []error
	for _, set := range []*ledgerStmts{s.lw, s.lr} {
		if set == nil {
			continue
		}
		for _, st := range set {
			if st != nil {
				errs = append(errs, st.Close())
			}
		}
	}
	return errors.Join(errs...)
}

// binder binds prepared statements to one transaction on first use.
type binder struct {
	ctx   context.Context
	tx    *sql.Tx
	src   *ledgerStmts
	bound ledgerStmts
}

func (b *binder) stmt(i int) *sql.Stmt {
	if b.bound[i] == nil {
		b.bound[i] = b.tx.StmtContext(b.ctx, b.src[i])
	}
	return b.bound[i]
}

// read runs fn in one read transaction on the reader pool, so that its
// queries see one snapshot.
func (s *db) read(ctx context.Context, op string, fn func(*binder) error) error {
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return wrap(op, err)
	}
	defer tx.Rollback()
	if err := fn(&binder{ctx: ctx, tx: tx, src: s.lr}); err != nil {
		return err
	}
	return wrap(op, tx.Commit())
}

// db group-commits ledger spends (sqlledger.Engine.GroupCommit).
var _ interface{ GroupCommit() bool } = (*db)(nil)

// ledgerDB runs the engine's transactions on the writer (sqlledger.DB).
type ledgerDB struct{ s *db }

// newConn returns a ledgerConn on tx. Its statements run without ctx's
// cancellation: the driver would start a goroutine per statement to
// interrupt it, and the statements are short; database/sql still rolls
// the transaction back when ctx ends, and no statement runs after that.
func (s *db) newConn(ctx context.Context, tx *sql.Tx) *ledgerConn {
	return &ledgerConn{binder: binder{ctx: context.WithoutCancel(ctx), tx: tx, src: s.lw}, ms: s.mw}
}

// Batch implements sqlledger.DB: a write transaction that starts from the
// account cache, run again after an optimistic claim of a taken key or (a
// few times) a stale cached account.
func (d ledgerDB) Batch(ctx context.Context, op string, now time.Time, fn func(*sqlledger.Tx) error) error {
	if !d.s.processHolds {
		if err := d.s.spend.share(); err != nil {
			return err
		}
		defer d.s.spend.unshare()
	}
	for attempt := 0; ; attempt++ {
		err := d.s.cachedWrite(ctx, op, func(tx *sql.Tx, gen uint64) (*sqlledger.Tx, error) {
			c := d.s.newConn(ctx, tx)
			c.batch = true
			t := sqlledger.NewTx(c, now, false)
			t.Optimistic = attempt == 0
			if err := d.s.useCache(t, &c.binder); err != nil {
				return nil, err
			}
			c.cache, c.gen = &d.s.accts, gen
			return t, fn(t)
		})
		if !retry(err, attempt) {
			return err
		}
	}
}

// Write implements sqlledger.DB.
func (d ledgerDB) Write(ctx context.Context, op string, now time.Time, fn func(*sqlledger.Tx) error) error {
	return d.s.ledgerWrite(ctx, op, func(tx *sql.Tx) error {
		return fn(sqlledger.NewTx(d.s.newConn(ctx, tx), now, false))
	})
}

// Read implements sqlledger.DB: a read transaction on the reader pool.
func (d ledgerDB) Read(ctx context.Context, op string, now time.Time, fn func(*sqlledger.Tx) error) error {
	return d.s.read(ctx, op, func(b *binder) error {
		return fn(sqlledger.NewTx(&ledgerConn{binder: *b}, now, false))
	})
}

// ledgerConn is a sqlledger.Conn on one transaction: prepared statements
// bound to it on first use, and multi-row statements for the batches.
type ledgerConn struct {
	binder
	ms    *multiStmts
	args  []any // scratch for multi-row statements
	batch bool  // a group commit: Flush classifies its failures (flushed)
	// cache, if set, is the account cache this batch (begun in gen)
	// checked against data_version: thresholds are read through it.
	cache *acctCache
	gen   uint64
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// AlertThresholds implements sqlledger.ThresholdConn: from the account
// cache in a batch that uses it, else (and on a miss) from the table.
func (c *ledgerConn) AlertThresholds(_ context.Context, acct string) (string, error) {
	if c.cache != nil {
		if v, ok := c.cache.thresholds(acct); ok {
			return v, nil
		}
	}
	var v string
	err := c.stmt(sThresholds).QueryRowContext(c.ctx, acct).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		err = nil
	}
	if err != nil {
		return "", wrap("alert thresholds", err)
	}
	if c.cache != nil {
		c.cache.keepThresholds(c.gen, acct, v)
	}
	return v, nil
}

// Account implements sqlledger.Conn.
func (c *ledgerConn) Account(_ context.Context, id string) (sqlledger.Row, error) {
	r, err := sqlledger.ScanRow(c.stmt(sAccount).QueryRowContext(c.ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, credits.ErrUnknownAccount
	}
	return r, wrap("ledger account", err)
}

// Lots implements sqlledger.Conn.
func (c *ledgerConn) Lots(_ context.Context, id string) ([]ledger.Lot, error) {
	rows, err := c.stmt(sLots).QueryContext(c.ctx, id)
	if err != nil {
		return nil, wrap("ledger lots", err)
	}
	lots, err := sqlrow.Collect(rows, sqlledger.ScanLot)
	return lots, wrap("ledger lots", errors.Join(err, rows.Close()))
}

// DueHolds implements sqlledger.Conn.
func (c *ledgerConn) DueHolds(_ context.Context, id string, now int64) ([]credits.Hold, int64, error) {
	rows, err := c.stmt(sDueHolds).QueryContext(c.ctx, id, now)
	if err != nil {
		return nil, 0, wrap("ledger due holds", err)
	}
	due, err := sqlrow.Collect(rows, func(r sqlrow.Scanner) (credits.Hold, error) { return sqlledger.ScanDueHold(r, id) })
	if err := errors.Join(err, rows.Close()); err != nil {
		return nil, 0, wrap("ledger due holds", err)
	}
	var next sql.NullInt64
	if err := c.stmt(sNextHoldDue).QueryRowContext(c.ctx, id, now).Scan(&next); err != nil {
		return nil, 0, wrap("ledger due holds", err)
	}
	return due, next.Int64, nil // 0 if no active hold is left
}

// Prefetch implements sqlledger.Conn: a few multi-row lookups for the
// keys and record IDs, and one query for two or more accounts (a single
// account is as cheap with the prepared single-row query). Holds are read
// when they are needed: the writer is alone, so nothing can change them.
func (c *ledgerConn) Prefetch(_ context.Context, f *sqlledger.Fetch) error {
	args := c.args[:0]
	for _, k := range f.Ops {
		args = append(args, k.Key, k.Acct)
	}
	err := c.queryRows(c.ms.opsFind, args, func(rows *sql.Rows) error {
		var k sqlledger.OpKey
		rec, err := sqlledger.ScanOp(rows, &k)
		if err == nil {
			f.FoundOp(k, rec)
		}
		return err
	})
	if err != nil {
		return wrap("prefetch idempotency records", err)
	}
	c.args = args[:0]
	if len(f.Holds) > 0 {
		// One statement for the batch's holds instead of one per settle;
		// a process hold is not stored until its settle is, which
		// HoldsRead lets the Tx know without asking again (this
		// transaction is the file's only writer).
		args = c.args[:0]
		for _, id := range f.Holds {
			args = append(args, id)
		}
		err := c.queryRows(c.ms.holdsFind, args, func(rows *sql.Rows) error {
			h, err := sqlledger.ScanHold(rows)
			if err == nil {
				f.FoundHold(h)
			}
			return err
		})
		if err != nil {
			return wrap("prefetch holds", err)
		}
		c.args = args[:0]
		f.HoldsRead()
	}
	if err := c.prefetchUsage(f); err != nil {
		return err
	}
	if len(f.Accounts) < 2 {
		return nil
	}
	list, err := json.Marshal(f.Accounts)
	if err != nil {
		return wrap("prefetch ledger accounts", err)
	}
	rows, err := c.stmt(sAccounts).QueryContext(c.ctx, string(list))
	if err != nil {
		return wrap("prefetch ledger accounts", err)
	}
	err = sqlrow.Each(rows, sqlledger.ScanRow, func(r sqlledger.Row) error {
		f.FoundAccount(r)
		return nil
	})
	return wrap("prefetch ledger accounts", errors.Join(err, rows.Close()))
}

// Hold implements sqlledger.Conn.
func (c *ledgerConn) Hold(_ context.Context, id string) (credits.Hold, error) {
	h, err := sqlledger.ScanHold(c.stmt(sHold).QueryRowContext(c.ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return h, credits.ErrHoldNotFound
	}
	return h, wrap("ledger hold", err)
}

// Op implements sqlledger.Conn.
func (c *ledgerConn) Op(_ context.Context, k sqlledger.OpKey) (ledger.OpRecord, bool, error) {
	rec, err := sqlledger.ScanOp(c.stmt(sOp).QueryRowContext(c.ctx, k.Key, k.Acct), nil)
	if errors.Is(err, sql.ErrNoRows) {
		return rec, false, nil
	}
	return rec, err == nil, wrap("idempotency record", err)
}

// Entry implements sqlledger.Conn.
func (c *ledgerConn) Entry(_ context.Context, acct string, seq int64) (credits.Entry, error) {
	e, err := sqlledger.ScanEntry(c.stmt(sEntry).QueryRowContext(c.ctx, acct, seq))
	return e, wrap("ledger entry", err)
}

// Flush implements sqlledger.Conn: the ledger's stage, then the meter keys,
// records and rollup sums. In a group commit, a unique violation in an
// optimistic transaction is errReplayed and any other failing statement
// may concern one request only (see flushed).
func (c *ledgerConn) Flush(_ context.Context, t *sqlledger.Tx) error {
	err := c.flushLedger(t)
	if err == nil {
		err = c.flushUsage(t)
	}
	for i := 0; err == nil && i < len(t.Events); i++ {
		_, err = c.tx.ExecContext(c.ctx, sqlevents.InsertEvent, sqlevents.EventArgs(&t.Events[i])...)
		err = wrap("add outbox events", err)
	}
	if c.batch {
		return flushed(t.Optimistic, err)
	}
	return err
}

// flushLedger writes the ledger's stage: expired holds, entries, idempotency
// records, holds, and every account the transaction changed (the row, only
// if its version is still the one read, and the changed lots).
func (c *ledgerConn) flushLedger(t *sqlledger.Tx) error {
	st := &t.Stage
	for _, id := range st.Expire {
		if _, err := c.stmt(sExpireHold).ExecContext(c.ctx, id); err != nil {
			return wrap("expire hold", err)
		}
	}
	args := c.args[:0]
	for i := range st.Entries {
		e := &st.Entries[i]
		args = append(args, e.AccountID, e.Seq, e.ID, string(e.Type), e.Amount.String(), e.BalanceAfter.String(),
			e.Reference, e.Description, e.IdempotencyKey, e.HoldID, toNullNanos(e.ExpiresAt), toNanos(e.CreatedAt))
	}
	if err := c.execRows(c.ms.entries, args, nil); err != nil {
		return wrap("add ledger entries", err)
	}
	args = args[:0]
	for i := range st.Ops {
		o := &st.Ops[i]
		args = append(args, o.K.Key, o.K.Acct, o.Rec.Kind, o.Rec.Fingerprint[:], o.Rec.EntrySeq, o.Rec.HoldID)
	}
	if err := c.execRows(c.ms.ops, args, nil); err != nil {
		return wrap("claim idempotency keys", err)
	}
	for _, h := range t.LatestHolds() {
		{
			if _, err := c.stmt(sPutHold).ExecContext(c.ctx, h.ID, h.AccountID, h.Amount.String(), string(h.State),
				h.Reference, h.IdempotencyKey, toNanos(h.CreatedAt), toNanos(h.ExpiresAt), toNullNanos(h.ResolvedAt),
				h.Actual.String(), h.Charged.String(), h.EntryID, h.EntrySeq, h.SettleFingerprint[:], h.KeyID, h.KeyEpoch); err != nil {
				return wrap("put hold", err)
			}
		}
	}
	args = args[:0]
	changed := t.Changed()
	for _, a := range changed {
		st := &a.St
		p, ar := st.Policy, st.Policy.AutoRecharge
		keys, err := sqlledger.KeyLimits(st)
		if err != nil {
			return err
		}
		args = append(args, st.ID, st.Balance.String(), st.Held.String(), st.Seq, st.Version,
			p.Overdraft.String(), p.MonthlyCap.String(), p.TimeZone, boolInt(ar.Enabled), ar.Threshold.String(),
			ar.Amount.String(), boolInt(st.RechargeArmed), st.Recharges, toNanos(st.MonthStart), toNanos(st.MonthEnd),
			st.MonthSpent.String(), toNanos(st.UpdatedAt), int64(len(st.Lots)), a.HoldDue, keys, a.Version)
	}
	c.args = args[:0]
	err := c.execRows(c.ms.accounts, args, func(res sql.Result, n int) error {
		if got, err := res.RowsAffected(); err != nil || got != int64(n) {
			return fmt.Errorf("%w: %d of %d ledger accounts changed underneath (%v)", errStale, int64(n)-got, n, err)
		}
		return nil
	})
	if err != nil {
		return wrap("update ledger accounts", err)
	}
	for _, a := range changed {
		if err := c.flushLots(a); err != nil {
			return err
		}
	}
	return nil
}

func (c *ledgerConn) flushLots(a *ledgerstage.Account) error {
	added, changed, gone := a.LotChanges()
	for _, l := range added {
		if _, err := c.stmt(sInsertLot).ExecContext(c.ctx, l.ID, a.St.ID, toNanos(l.ExpiresAt), l.Remaining.String()); err != nil {
			return wrap("write lot", err)
		}
	}
	for _, l := range changed {
		if _, err := c.stmt(sUpdateLot).ExecContext(c.ctx, l.Remaining.String(), l.ID); err != nil {
			return wrap("write lot", err)
		}
	}
	for _, id := range gone {
		if _, err := c.stmt(sDeleteLot).ExecContext(c.ctx, id); err != nil {
			return wrap("delete lot", err)
		}
	}
	return nil
}

// OpenLedger implements credits.Store.
func (s *db) OpenLedger(ctx context.Context, id, unit string, pol credits.Policy, now time.Time) (credits.Account, error) {
	st := ledger.NewAccountState(id, unit, pol, now)
	p, ar := st.Policy, st.Policy.AutoRecharge
	_, err := s.w.ExecContext(ctx, `INSERT INTO credit_accounts (`+sqlledger.AccountColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		st.ID, st.Unit, st.Balance.String(), st.Held.String(), st.Seq, st.Version, p.Overdraft.String(),
		p.MonthlyCap.String(), p.TimeZone, boolInt(ar.Enabled), ar.Threshold.String(), ar.Amount.String(),
		boolInt(st.RechargeArmed), st.Recharges, toNanos(st.MonthStart), toNanos(st.MonthEnd), st.MonthSpent.String(),
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
func ledgerExists(b *binder, id string) error {
	var one int
	err := b.tx.QueryRowContext(b.ctx, `SELECT 1 FROM credit_accounts WHERE account_id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return credits.ErrUnknownAccount
	}
	return wrap("ledger account", err)
}

// LedgerEntries implements credits.Store.
func (s *db) LedgerEntries(ctx context.Context, id string, f credits.EntryFilter, beforeSeq int64, limit int) ([]credits.Entry, error) {
	var out []credits.Entry
	err := s.read(ctx, "ledger entries", func(b *binder) error {
		if err := ledgerExists(b, id); err != nil {
			return err
		}
		query, args := sqlledger.EntriesQuery(id, &f, beforeSeq, limit, false)
		rows, err := b.tx.QueryContext(ctx, query, args...)
		if err != nil {
			return wrap("ledger entries", err)
		}
		out, err = sqlrow.Collect(rows, sqlledger.ScanEntry)
		return wrap("ledger entries", errors.Join(err, rows.Close()))
	})
	return out, err
}

// LedgerBalanceAt implements credits.Store.
func (s *db) LedgerBalanceAt(ctx context.Context, id string, t time.Time) (credits.Amount, error) {
	var bal credits.Amount
	err := s.read(ctx, "ledger balance at", func(b *binder) error {
		if err := ledgerExists(b, id); err != nil {
			return err
		}
		var last string
		err := b.tx.QueryRowContext(ctx, `SELECT balance_after FROM credit_entries WHERE account_id = ? AND created_at <= ?
			ORDER BY seq DESC LIMIT 1`, id, toNanos(t)).Scan(&last)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return wrap("ledger balance at", err)
		}
		rows, err := b.tx.QueryContext(ctx, `SELECT remaining FROM credit_lots WHERE account_id = ? AND expires_at <= ?`, id, toNanos(t))
		if err != nil {
			return wrap("ledger balance at", err)
		}
		bal, err = sqlledger.BalanceAt(last, rows)
		return wrap("ledger balance at", errors.Join(err, rows.Close()))
	})
	return bal, err
}

// errStale reports an account row whose version is no longer the one the
// batch started from: a cached state was stale (see acctCache), and the
// batch runs again from the table.
var errStale = errors.New("sqlitestore: ledger account changed underneath")

// retry reports whether a batch that failed with err runs again: an
// optimistic claim of a taken key, or (a few times) a stale account.
func retry(err error, attempt int) bool {
	return errors.Is(err, errReplayed) || (errors.Is(err, errStale) && attempt < 3)
}

// errReplayed reports that an optimistic transaction claimed a key (or a
// record ID) that was already taken: the batch must run again with
// lookups.
var errReplayed = errors.New("sqlitestore: optimistic claim of a taken key")

// flushed classifies the error of a flush: a unique violation in an
// optimistic transaction is errReplayed; any other failing statement may
// concern one request only (a constraint) and is retried one by one, like
// a request's own system failure.
func flushed(optimistic bool, err error) error {
	switch {
	case err == nil:
		return nil
	case optimistic && isUnique(err):
		return errReplayed
	}
	return sqlledger.RequestFailure(err)
}

// LedgerHold implements credits.Store.
func (s *db) LedgerHold(ctx context.Context, id string) (credits.Hold, error) {
	h, err := sqlledger.ScanHold(s.lr[sHold].QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return h, credits.ErrHoldNotFound
	}
	return h, wrap("ledger hold", err)
}

// ExpireLedgers implements credits.Store. It finds due accounts on the
// reader pool first, so a sweep with nothing due costs no write.
func (s *db) ExpireLedgers(ctx context.Context, now time.Time, accountID string, limit int) (credits.ExpiryReport, error) {
	q := `SELECT account_id FROM credit_lots WHERE expires_at <= ?1
		UNION SELECT account_id FROM credit_holds WHERE state = 'active' AND expires_at <= ?1 LIMIT ?2`
	args := []any{toNanos(now), limit}
	if accountID != "" {
		q = `SELECT account_id FROM credit_lots WHERE account_id = ?3 AND expires_at <= ?1
			UNION SELECT account_id FROM credit_holds WHERE account_id = ?3 AND state = 'active' AND expires_at <= ?1 LIMIT ?2`
		args = append(args, accountID)
	}
	var ids []string
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return credits.ExpiryReport{}, wrap("find due ledgers", err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return credits.ExpiryReport{}, wrap("find due ledgers", err)
		}
		ids = append(ids, id)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil || len(ids) == 0 {
		return credits.ExpiryReport{}, wrap("find due ledgers", err)
	}
	return s.Expire(ctx, now, ids)
}

// LedgerCredit is the engine's, except that a negative adjustment is a
// spend: while another process keeps holds in memory
// (Options.ProcessHolds) it fails with ErrSpendLocked, as it could take
// funds that process holds.
func (s *db) LedgerCredit(ctx context.Context, now time.Time, r credits.CreditRequest) (credits.Entry, error) {
	if r.Amount.IsNegative() && !s.processHolds {
		if err := s.spend.share(); err != nil {
			return credits.Entry{}, err
		}
		defer s.spend.unshare()
	}
	return s.Engine.LedgerCredit(ctx, now, r)
}
