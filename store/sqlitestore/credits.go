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
)

// The credits ledger on SQLite.
//
// Money is stored as exact decimal TEXT (credits.Amount.String) and all
// arithmetic happens in Go, so sums are exact at any precision (sub-paisa
// per-token costs included). Every write runs credits.ApplySpend or
// credits.ApplyCredit on a ledgerTx: the account row, its grant lots and its
// due holds are loaded once per transaction and changed in memory;
// entries, holds and idempotency records are staged in memory as each
// request is applied, and flush writes all of it at the end — multi-row
// INSERTs for entries and keys, one multi-row UPDATE (with a version
// check) for the accounts. BEGIN IMMEDIATE makes the whole
// read-check-write one critical section across processes sharing the
// file, so no interleaving can overspend, and lets a key read absent stay
// absent until commit.
//
// ApplySpends is the group commit: many callers' spends in one transaction.
// The ledger rules check before they write, so a request that fails leaves
// nothing behind and its batch mates commit, without savepoints; if one
// request's system error, or a failing statement of the flush, aborts the
// transaction, the requests are retried one per transaction so that one
// bad request cannot fail the others. Other writers that must debit
// atomically with their own rows (usage metering) open a ledgerTx on their
// transaction (newLedgerTx), run credits.ApplySpend on it next to their own
// staged rows, and flush it before commit.

var _ credits.GroupCommitter = (*Store)(nil)

// GroupCommit implements credits.GroupCommitter: SQLite's commit (a WAL
// write and, at synchronous=NORMAL, no fsync per commit but one writer)
// dominates a spend, so the Service should batch them.
func (s *Store) GroupCommit() bool { return true }

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
	nLedgerStmts
)

const ledgerAccountColumns = `account_id, unit, balance, held, seq, version, overdraft, monthly_cap, time_zone,
	recharge_enabled, recharge_threshold, recharge_amount, recharge_armed, recharges,
	month_start, month_end, month_spent, opened_at, updated_at`

const entryColumns = `account_id, seq, id, type, amount, balance_after, reference, description, idem_key, hold_id, expires_at, created_at`

const holdColumns = `id, account_id, amount, state, reference, idem_key, created_at, expires_at, resolved_at,
	actual, charged, entry_id, entry_seq, settle_fp`

func ledgerStatements() [nLedgerStmts]string {
	return [nLedgerStmts]string{
		sAccount: `SELECT ` + ledgerAccountColumns + `, lots, hold_due FROM credit_accounts WHERE account_id = ?`,
		sAccounts: `SELECT ` + ledgerAccountColumns + `, lots, hold_due FROM credit_accounts
			WHERE account_id IN (SELECT value FROM json_each(?))`,
		sLots:        `SELECT id, expires_at, remaining FROM credit_lots WHERE account_id = ? ORDER BY expires_at, id`,
		sDueHolds:    `SELECT id, amount, expires_at FROM credit_holds WHERE account_id = ? AND state = 'active' AND expires_at <= ?`,
		sNextHoldDue: `SELECT min(expires_at) FROM credit_holds WHERE account_id = ? AND state = 'active' AND expires_at > ?`,
		sExpireHold:  `UPDATE credit_holds SET state = 'expired', resolved_at = expires_at WHERE id = ? AND state = 'active'`,
		sOp:          `SELECT kind, fingerprint, entry_seq, hold_id FROM credit_ops WHERE key = ? AND account_id = ?`,
		sEntry:       `SELECT ` + entryColumns + ` FROM credit_entries WHERE account_id = ? AND seq = ?`,
		sHold:        `SELECT ` + holdColumns + ` FROM credit_holds WHERE id = ?`,
		sPutHold: `INSERT INTO credit_holds (` + holdColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET amount = excluded.amount, expires_at = excluded.expires_at,
			state = excluded.state, resolved_at = excluded.resolved_at, actual = excluded.actual, charged = excluded.charged, entry_id = excluded.entry_id,
			entry_seq = excluded.entry_seq, settle_fp = excluded.settle_fp`,
		sUpdateAccount: `UPDATE credit_accounts SET balance = ?, held = ?, seq = ?, version = ?, overdraft = ?,
			monthly_cap = ?, time_zone = ?, recharge_enabled = ?, recharge_threshold = ?, recharge_amount = ?,
			recharge_armed = ?, recharges = ?, month_start = ?, month_end = ?, month_spent = ?, updated_at = ?,
			lots = ?, hold_due = ? WHERE account_id = ? AND version = ?`,
		sInsertLot: `INSERT INTO credit_lots (id, account_id, expires_at, remaining) VALUES (?, ?, ?, ?)`,
		sUpdateLot: `UPDATE credit_lots SET remaining = ? WHERE id = ?`,
		sDeleteLot: `DELETE FROM credit_lots WHERE id = ?`,
	}
}

// readOnly marks the statements the reader pool prepares too.
func readOnly(i int) bool {
	return i == sAccount || i == sLots || i == sDueHolds || i == sNextHoldDue || i == sEntry || i == sHold
}

type ledgerStmts [nLedgerStmts]*sql.Stmt

// prepareLedger prepares the ledger statements on the writer and (the
// read-only ones) on the reader pool.
func (s *Store) prepareLedger(ctx context.Context) error {
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

func (s *Store) closeLedger() error {
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
func (s *Store) read(ctx context.Context, op string, fn func(*binder) error) error {
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

// Amounts: exact decimal text. Stored text is always credits.Amount.String
// output, read back without ParseAmount's input bounds.

func parseStored(s string) (credits.Amount, error) {
	d, err := decimal.NewFromString(s)
	return credits.NewAmount(d), err
}

// amountScanner collects the first parse error of several columns.
type amountScanner struct{ err error }

func (a *amountScanner) parse(s string) credits.Amount {
	v, err := parseStored(s)
	if err != nil && a.err == nil {
		a.err = fmt.Errorf("stored amount %q: %w", s, err)
	}
	return v
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func scanState(row scanner, extra ...any) (credits.AccountState, error) {
	var (
		st                                                        credits.AccountState
		bal, held, od, limit, thr, ramt, spent                    string
		enabled, armed, monthStart, monthEnd, openedAt, updatedAt int64
	)
	dest := []any{&st.ID, &st.Unit, &bal, &held, &st.Seq, &st.Version, &od, &limit, &st.Policy.TimeZone,
		&enabled, &thr, &ramt, &armed, &st.Recharges, &monthStart, &monthEnd, &spent, &openedAt, &updatedAt}
	err := row.Scan(append(dest, extra...)...)
	if err != nil {
		return st, err
	}
	var p amountScanner
	st.Balance, st.Held, st.MonthSpent = p.parse(bal), p.parse(held), p.parse(spent)
	st.Policy.Overdraft, st.Policy.MonthlyCap = p.parse(od), p.parse(limit)
	st.Policy.AutoRecharge = credits.AutoRecharge{Enabled: enabled != 0, Threshold: p.parse(thr), Amount: p.parse(ramt)}
	st.RechargeArmed = armed != 0
	st.MonthStart, st.MonthEnd = fromNanos(monthStart), fromNanos(monthEnd)
	st.OpenedAt, st.UpdatedAt = fromNanos(openedAt), fromNanos(updatedAt)
	return st, p.err
}

// loaded is an account as read by loadState.
type loaded struct {
	st  credits.AccountState
	due []credits.Hold // active holds with deadline at or before now
	// holdDue is the new lower bound of active hold deadlines (see the
	// hold_due column), and holdDue0 the stored one.
	holdDue, holdDue0 int64
}

// loadState reads an account with its live lots and its due holds in b's
// snapshot. It returns credits.ErrUnknownAccount.
func loadState(b *binder, id string, now time.Time) (loaded, error) {
	var lots int64
	var l loaded
	st, err := scanState(b.stmt(sAccount).QueryRowContext(b.ctx, id), &lots, &l.holdDue0)
	if errors.Is(err, sql.ErrNoRows) {
		return l, credits.ErrUnknownAccount
	}
	if err != nil {
		return l, wrap("ledger account", err)
	}
	l.st = st
	return l, b.complete(&l, lots, now)
}

// complete reads the lots and due holds of an account whose row is in l,
// skipping each query when the row says there is nothing to find.
func (b *binder) complete(l *loaded, lots int64, now time.Time) error {
	id := l.st.ID
	l.holdDue = l.holdDue0
	var p amountScanner
	if lots > 0 {
		rows, err := b.stmt(sLots).QueryContext(b.ctx, id)
		if err != nil {
			return wrap("ledger lots", err)
		}
		for rows.Next() {
			var lot credits.Lot
			var exp int64
			var rem string
			if err := rows.Scan(&lot.ID, &exp, &rem); err != nil {
				rows.Close()
				return wrap("ledger lots", err)
			}
			lot.ExpiresAt, lot.Remaining = fromNanos(exp), p.parse(rem)
			l.st.Lots = append(l.st.Lots, lot)
		}
		if err := errors.Join(rows.Err(), rows.Close(), p.err); err != nil {
			return wrap("ledger lots", err)
		}
	}
	if l.holdDue0 == 0 || toNanos(now) < l.holdDue0 {
		return nil
	}
	rows, err := b.stmt(sDueHolds).QueryContext(b.ctx, id, toNanos(now))
	if err != nil {
		return wrap("ledger due holds", err)
	}
	for rows.Next() {
		h := credits.Hold{AccountID: id, State: credits.HoldActive}
		var amt string
		var exp int64
		if err := rows.Scan(&h.ID, &amt, &exp); err != nil {
			rows.Close()
			return wrap("ledger due holds", err)
		}
		h.Amount, h.ExpiresAt = p.parse(amt), fromNanos(exp)
		l.due = append(l.due, h)
	}
	if err := errors.Join(rows.Err(), rows.Close(), p.err); err != nil {
		return wrap("ledger due holds", err)
	}
	var next sql.NullInt64
	if err := b.stmt(sNextHoldDue).QueryRowContext(b.ctx, id, toNanos(now)).Scan(&next); err != nil {
		return wrap("ledger due holds", err)
	}
	l.holdDue = next.Int64 // 0 if no active hold is left
	return nil
}

func scanEntry(row scanner) (credits.Entry, error) {
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
	var p amountScanner
	e.Type, e.Amount, e.BalanceAfter = credits.EntryType(typ), p.parse(amt), p.parse(bal)
	e.ExpiresAt, e.CreatedAt = fromNullNanos(expires), fromNanos(created)
	return e, p.err
}

func scanHold(row scanner) (credits.Hold, error) {
	var (
		h                           credits.Hold
		amt, state, actual, charged string
		created, expires            int64
		resolved                    sql.NullInt64
		fp                          []byte
	)
	if err := row.Scan(&h.ID, &h.AccountID, &amt, &state, &h.Reference, &h.IdempotencyKey, &created, &expires,
		&resolved, &actual, &charged, &h.EntryID, &h.EntrySeq, &fp); err != nil {
		return h, err
	}
	var p amountScanner
	h.Amount, h.Actual, h.Charged = p.parse(amt), p.parse(actual), p.parse(charged)
	h.State = credits.HoldState(state)
	h.CreatedAt, h.ExpiresAt, h.ResolvedAt = fromNanos(created), fromNanos(expires), fromNullNanos(resolved)
	copy(h.SettleFingerprint[:], fp)
	return h, p.err
}

// ledgerTx is a credits.Tx on one write transaction. Its writes are
// staged in memory and written by flush with multi-row statements; reads
// look at the stage first, then at the database (which holds nothing of
// this transaction until flush). Because nothing reaches SQLite before
// flush, a request is rolled back by truncating the stage to its mark
// (usage.go), without a savepoint.
type ledgerTx struct {
	binder
	ms                 *multiStmts
	ledgerstage.Ledger                  // now, accounts, expiries and the stage of writes
	ops                map[opKey]opSeen // idempotency records read (or known absent)
	// optimistic: idempotency keys (and record IDs, usage.go) are claimed
	// without looking them up; the primary keys check the claims at flush,
	// and a violation (a replay) runs the batch again with lookups. Reads
	// that decide an outcome without claiming (Op) always look.
	optimistic bool
	args       []any      // scratch for multi-row statements
	cache      *acctCache // committed account states to start from, or nil
}

type opKey = ledgerstage.OpKey

type opSeen struct {
	rec   credits.OpRecord
	found bool
}

// newLedgerTx returns a ledgerTx on tx. Its statements run without ctx's
// cancellation: the driver would start a goroutine per statement to
// interrupt it, and the statements are short; database/sql still rolls
// the transaction back when ctx ends, and no statement runs after that.
func (s *Store) newLedgerTx(ctx context.Context, tx *sql.Tx, now time.Time) *ledgerTx {
	return &ledgerTx{
		binder: binder{ctx: context.WithoutCancel(ctx), tx: tx, src: s.lw},
		ms:     s.mw, ops: make(map[opKey]opSeen), Ledger: ledgerstage.NewLedger(now),
	}
}

// State implements credits.Tx: the first call for an account loads it,
// advances it to now and stages the expiries that are due.
func (t *ledgerTx) State(_ context.Context, id string) (*credits.AccountState, error) {
	if a, ok := t.Accts[id]; ok {
		return &a.St, nil
	}
	if t.cache != nil {
		if l, ok := t.cache.get(id, t.Now); ok {
			return t.install(l), nil
		}
	}
	l, err := loadState(&t.binder, id, t.Now)
	if err != nil {
		return nil, err
	}
	return t.install(l), nil
}

// prefetch loads, in one query, the accounts of the debits and reserves in
// reqs that are not loaded yet, so that a batch over many accounts does
// not pay one round trip per account, and reads the idempotency records of
// their keys in a few more. Unknown accounts are left for State to report.
func (t *ledgerTx) prefetch(reqs []credits.SpendRequest) error {
	var ids []string
	seen := make(map[string]bool, len(reqs))
	keys := t.args[:0]
	for i := range reqs {
		r := &reqs[i]
		if r.Kind != credits.SpendDebit && r.Kind != credits.SpendReserve {
			continue
		}
		if k := (opKey{Acct: r.AccountID, Key: r.IdempotencyKey}); !t.optimistic && !t.staged(k) && !t.known(k) {
			t.ops[k] = opSeen{} // absent unless the lookup finds it
			keys = append(keys, r.IdempotencyKey, r.AccountID)
		}
		if !seen[r.AccountID] && t.Accts[r.AccountID] == nil {
			seen[r.AccountID] = true
			if t.cache != nil {
				if l, ok := t.cache.get(r.AccountID, t.Now); ok {
					t.install(l)
					continue
				}
			}
			ids = append(ids, r.AccountID)
		}
	}
	t.args = keys[:0]
	if !t.optimistic {
		if err := t.findOps(keys); err != nil {
			return err
		}
	}
	if len(ids) < 2 {
		return nil // State's prepared single-row query is as cheap
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return wrap("prefetch ledger accounts", err)
	}
	rows, err := t.stmt(sAccounts).QueryContext(t.ctx, string(list))
	if err != nil {
		return wrap("prefetch ledger accounts", err)
	}
	type row struct {
		l    loaded
		lots int64
	}
	var got []row
	for rows.Next() {
		var r row
		if r.l.st, err = scanState(rows, &r.lots, &r.l.holdDue0); err != nil {
			rows.Close()
			return wrap("prefetch ledger accounts", err)
		}
		got = append(got, r)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return wrap("prefetch ledger accounts", err)
	}
	for i := range got {
		if err := t.complete(&got[i].l, got[i].lots, t.Now); err != nil {
			return err
		}
		t.install(got[i].l)
	}
	return nil
}

// staged reports whether the transaction has claimed k.
func (t *ledgerTx) staged(k opKey) bool {
	_, ok := t.Stage.Op(k)
	return ok
}

// known reports whether the idempotency record under k has been read.
func (t *ledgerTx) known(k opKey) bool {
	_, ok := t.ops[k]
	return ok
}

// findOps reads the idempotency records of keys (key, account pairs).
func (t *ledgerTx) findOps(keys []any) error {
	err := t.queryRows(t.ms.opsFind, keys, func(rows *sql.Rows) error {
		var k opKey
		var rec credits.OpRecord
		var fp []byte
		if err := rows.Scan(&k.Key, &k.Acct, &rec.Kind, &fp, &rec.EntrySeq, &rec.HoldID); err != nil {
			return err
		}
		copy(rec.Fingerprint[:], fp)
		t.ops[k] = opSeen{rec: rec, found: true}
		return nil
	})
	return wrap("prefetch idempotency records", err)
}

// install makes a loaded account part of the transaction (see
// ledgerstage.Ledger.Install).
func (t *ledgerTx) install(l loaded) *credits.AccountState {
	return t.Install(l.st, l.due, l.holdDue, l.holdDue0)
}

// Hold implements credits.Tx. A hold whose expiry is staged reads active
// from the table; credits sees it expired all the same (past its deadline).
func (t *ledgerTx) Hold(_ context.Context, id string) (credits.Hold, error) {
	if h, ok := t.Stage.Hold(id); ok {
		return h, nil
	}
	h, err := scanHold(t.stmt(sHold).QueryRowContext(t.ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return h, credits.ErrHoldNotFound
	}
	return h, wrap("ledger hold", err)
}

// Op implements credits.Tx.
func (t *ledgerTx) Op(_ context.Context, accountID, key string) (credits.OpRecord, bool, error) {
	k := opKey{Acct: accountID, Key: key}
	if rec, ok := t.Stage.Op(k); ok {
		return rec, true, nil
	}
	if s, ok := t.ops[k]; ok {
		return s.rec, s.found, nil
	}
	var rec credits.OpRecord
	var fp []byte
	err := t.stmt(sOp).QueryRowContext(t.ctx, key, accountID).Scan(&rec.Kind, &fp, &rec.EntrySeq, &rec.HoldID)
	if errors.Is(err, sql.ErrNoRows) {
		t.ops[k] = opSeen{}
		return rec, false, nil
	}
	if err != nil {
		return rec, false, wrap("idempotency record", err)
	}
	copy(rec.Fingerprint[:], fp)
	t.ops[k] = opSeen{rec: rec, found: true}
	return rec, true, nil
}

// ClaimOp implements credits.Tx. The transaction is SQLite's only writer,
// so a key found absent stays absent until commit; the primary key checks
// the claim again at flush. An optimistic transaction does not look.
func (t *ledgerTx) ClaimOp(ctx context.Context, accountID, key string, rec credits.OpRecord) (credits.OpRecord, bool, error) {
	k := opKey{Acct: accountID, Key: key}
	if t.optimistic {
		if rec, ok := t.Stage.Op(k); ok {
			return rec, false, nil
		}
		if s := t.ops[k]; s.found {
			return s.rec, false, nil
		}
	} else if prev, ok, err := t.Op(ctx, accountID, key); err != nil || ok {
		return prev, false, err
	}
	t.Stage.ClaimOp(k, rec)
	return rec, true, nil
}

// Entry implements credits.Tx.
func (t *ledgerTx) Entry(_ context.Context, accountID string, seq int64) (credits.Entry, error) {
	if e, ok := t.Stage.Entry(accountID, seq); ok {
		return e, nil
	}
	e, err := scanEntry(t.stmt(sEntry).QueryRowContext(t.ctx, accountID, seq))
	return e, wrap("ledger entry", err)
}

// AddEntry implements credits.Tx.
func (t *ledgerTx) AddEntry(_ context.Context, e credits.Entry) error {
	t.Stage.AddEntry(e)
	return nil
}

// PutHold implements credits.Tx.
func (t *ledgerTx) PutHold(_ context.Context, h credits.Hold) error {
	t.StageHold(h)
	return nil
}

// flush writes everything staged: expired holds, entries, idempotency
// records, holds, and every account the transaction changed (the row, only
// if its version is still the one read, and the changed lots).
func (t *ledgerTx) flush() error {
	st := &t.Stage
	for _, id := range st.Expire {
		if _, err := t.stmt(sExpireHold).ExecContext(t.ctx, id); err != nil {
			return wrap("expire hold", err)
		}
	}
	args := t.args[:0]
	for i := range st.Entries {
		e := &st.Entries[i]
		args = append(args, e.AccountID, e.Seq, e.ID, string(e.Type), e.Amount.String(), e.BalanceAfter.String(),
			e.Reference, e.Description, e.IdempotencyKey, e.HoldID, toNullNanos(e.ExpiresAt), toNanos(e.CreatedAt))
	}
	if err := t.execRows(t.ms.entries, args, nil); err != nil {
		return wrap("add ledger entries", err)
	}
	args = args[:0]
	for i := range st.Ops {
		o := &st.Ops[i]
		args = append(args, o.K.Key, o.K.Acct, o.Rec.Kind, o.Rec.Fingerprint[:], o.Rec.EntrySeq, o.Rec.HoldID)
	}
	if err := t.execRows(t.ms.ops, args, nil); err != nil {
		return wrap("claim idempotency keys", err)
	}
	for i := range st.Holds {
		if h := &st.Holds[i].H; st.HoldIdx[h.ID] == i {
			if _, err := t.stmt(sPutHold).ExecContext(t.ctx, h.ID, h.AccountID, h.Amount.String(), string(h.State),
				h.Reference, h.IdempotencyKey, toNanos(h.CreatedAt), toNanos(h.ExpiresAt), toNullNanos(h.ResolvedAt),
				h.Actual.String(), h.Charged.String(), h.EntryID, h.EntrySeq, h.SettleFingerprint[:]); err != nil {
				return wrap("put hold", err)
			}
		}
	}
	args = args[:0]
	var changed []*ledgerstage.Account
	for _, a := range t.Order {
		st := &a.St
		if !a.Changed() {
			continue
		}
		changed = append(changed, a)
		p, ar := st.Policy, st.Policy.AutoRecharge
		args = append(args, st.ID, st.Balance.String(), st.Held.String(), st.Seq, st.Version,
			p.Overdraft.String(), p.MonthlyCap.String(), p.TimeZone, boolInt(ar.Enabled), ar.Threshold.String(),
			ar.Amount.String(), boolInt(st.RechargeArmed), st.Recharges, toNanos(st.MonthStart), toNanos(st.MonthEnd),
			st.MonthSpent.String(), toNanos(st.UpdatedAt), int64(len(st.Lots)), a.HoldDue, a.Version)
	}
	t.args = args[:0]
	err := t.execRows(t.ms.accounts, args, func(res sql.Result, n int) error {
		if got, err := res.RowsAffected(); err != nil || got != int64(n) {
			return fmt.Errorf("%w: %d of %d ledger accounts changed underneath (%v)", errStale, int64(n)-got, n, err)
		}
		return nil
	})
	if err != nil {
		return wrap("update ledger accounts", err)
	}
	for _, a := range changed {
		if err := t.flushLots(a); err != nil {
			return err
		}
	}
	return nil
}

func (t *ledgerTx) flushLots(a *ledgerstage.Account) error {
	added, changed, gone := a.LotChanges()
	for _, l := range added {
		if _, err := t.stmt(sInsertLot).ExecContext(t.ctx, l.ID, a.St.ID, toNanos(l.ExpiresAt), l.Remaining.String()); err != nil {
			return wrap("write lot", err)
		}
	}
	for _, l := range changed {
		if _, err := t.stmt(sUpdateLot).ExecContext(t.ctx, l.Remaining.String(), l.ID); err != nil {
			return wrap("write lot", err)
		}
	}
	for _, id := range gone {
		if _, err := t.stmt(sDeleteLot).ExecContext(t.ctx, id); err != nil {
			return wrap("delete lot", err)
		}
	}
	return nil
}

// OpenLedger implements credits.AccountStore.
func (s *Store) OpenLedger(ctx context.Context, st credits.AccountState) error {
	p, ar := st.Policy, st.Policy.AutoRecharge
	_, err := s.w.ExecContext(ctx, `INSERT INTO credit_accounts (`+ledgerAccountColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		st.ID, st.Unit, st.Balance.String(), st.Held.String(), st.Seq, st.Version, p.Overdraft.String(),
		p.MonthlyCap.String(), p.TimeZone, boolInt(ar.Enabled), ar.Threshold.String(), ar.Amount.String(),
		boolInt(st.RechargeArmed), st.Recharges, toNanos(st.MonthStart), toNanos(st.MonthEnd), st.MonthSpent.String(),
		toNanos(st.OpenedAt), toNanos(st.UpdatedAt))
	if isUnique(err) {
		return credits.ErrAlreadyOpen
	}
	return wrap("open ledger", err)
}

// SetLedgerPolicy implements credits.AccountStore.
func (s *Store) SetLedgerPolicy(ctx context.Context, id string, p credits.Policy, now time.Time) (credits.AccountState, error) {
	var out credits.AccountState
	err := s.ledgerWrite(ctx, "set ledger policy", func(tx *sql.Tx) error {
		lt := s.newLedgerTx(ctx, tx, now)
		st, err := lt.State(ctx, id)
		if err != nil {
			return err
		}
		st.SetPolicy(p, now)
		out = st.Clone()
		return lt.flush()
	})
	return out, err
}

// LedgerAccount implements credits.AccountStore.
func (s *Store) LedgerAccount(ctx context.Context, id string, now time.Time) (credits.AccountState, error) {
	var st credits.AccountState
	err := s.read(ctx, "ledger account", func(b *binder) error {
		l, err := loadState(b, id, now)
		if err != nil {
			return err
		}
		st = l.st
		st.Advance(now, l.due)
		return nil
	})
	return st, err
}

// LedgerCredit implements credits.EntryStore.
func (s *Store) LedgerCredit(ctx context.Context, now time.Time, r credits.CreditRequest) (credits.Entry, error) {
	var e credits.Entry
	err := s.ledgerWrite(ctx, "ledger credit", func(tx *sql.Tx) error {
		lt := s.newLedgerTx(ctx, tx, now)
		var err error
		if e, err = credits.ApplyCredit(ctx, lt, now, r); err != nil {
			return err
		}
		return lt.flush()
	})
	return e, err
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

// LedgerEntries implements credits.EntryStore.
func (s *Store) LedgerEntries(ctx context.Context, q credits.EntryQuery) ([]credits.Entry, error) {
	var out []credits.Entry
	err := s.read(ctx, "ledger entries", func(b *binder) error {
		if err := ledgerExists(b, q.AccountID); err != nil {
			return err
		}
		var where strings.Builder
		args := []any{q.AccountID}
		where.WriteString(`account_id = ?`)
		if q.BeforeSeq > 0 {
			where.WriteString(` AND seq < ?`)
			args = append(args, q.BeforeSeq)
		}
		if len(q.Types) > 0 {
			where.WriteString(` AND type IN (?` + strings.Repeat(`, ?`, len(q.Types)-1) + `)`)
			for _, t := range q.Types {
				args = append(args, string(t))
			}
		}
		if !q.From.IsZero() {
			where.WriteString(` AND created_at >= ?`)
			args = append(args, toNanos(q.From))
		}
		if !q.To.IsZero() {
			where.WriteString(` AND created_at < ?`)
			args = append(args, toNanos(q.To))
		}
		args = append(args, q.Limit)
		rows, err := b.tx.QueryContext(ctx, `SELECT `+entryColumns+` FROM credit_entries WHERE `+where.String()+
			` ORDER BY seq DESC LIMIT ?`, args...)
		if err != nil {
			return wrap("ledger entries", err)
		}
		defer rows.Close()
		for rows.Next() {
			e, err := scanEntry(rows)
			if err != nil {
				return wrap("ledger entries", err)
			}
			out = append(out, e)
		}
		return wrap("ledger entries", rows.Err())
	})
	return out, err
}

// LedgerBalanceAt implements credits.EntryStore.
func (s *Store) LedgerBalanceAt(ctx context.Context, id string, t time.Time) (credits.Amount, error) {
	var bal credits.Amount
	err := s.read(ctx, "ledger balance at", func(b *binder) error {
		if err := ledgerExists(b, id); err != nil {
			return err
		}
		var text string
		err := b.tx.QueryRowContext(ctx, `SELECT balance_after FROM credit_entries WHERE account_id = ? AND created_at <= ?
			ORDER BY seq DESC LIMIT 1`, id, toNanos(t)).Scan(&text)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			text = "0"
		case err != nil:
			return wrap("ledger balance at", err)
		}
		var p amountScanner
		bal = p.parse(text)
		rows, err := b.tx.QueryContext(ctx, `SELECT remaining FROM credit_lots WHERE account_id = ? AND expires_at <= ?`, id, toNanos(t))
		if err != nil {
			return wrap("ledger balance at", err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := rows.Scan(&text); err != nil {
				return wrap("ledger balance at", err)
			}
			bal = bal.Sub(p.parse(text))
		}
		return wrap("ledger balance at", errors.Join(rows.Err(), p.err))
	})
	return bal, err
}

// ApplySpends implements credits.SpendStore.
func (s *Store) ApplySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	err := s.applySpends(ctx, now, reqs, res)
	var bad *requestFailure
	if err == nil || len(reqs) == 1 || ctx.Err() != nil || !errors.As(err, &bad) {
		return err // nothing applied; a failed BEGIN or COMMIT concerns the whole batch
	}
	// One request hit a system failure and rolled the batch back: apply
	// each request in its own transaction, so that only a request that
	// fails alone fails (its res[i].Err holds the failure).
	for i := range reqs {
		if err := s.applySpends(ctx, now, reqs[i:i+1], res[i:i+1]); err != nil {
			res[i] = credits.SpendResult{Err: err}
		}
	}
	return nil
}

// requestFailure is a system failure while applying one request of a batch.
type requestFailure struct{ err error }

func (f *requestFailure) Error() string { return f.err.Error() }
func (f *requestFailure) Unwrap() error { return f.err }

func (s *Store) applySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	for attempt := 0; ; attempt++ {
		err := s.cachedWrite(ctx, "apply spends", func(tx *sql.Tx) (*ledgerTx, error) {
			lt := s.newLedgerTx(ctx, tx, now)
			lt.optimistic = attempt == 0
			if err := s.useCache(lt); err != nil {
				return nil, err
			}
			if err := lt.prefetch(reqs); err != nil {
				return nil, err
			}
			for i := range reqs {
				r, err := credits.ApplySpend(ctx, lt, now, reqs[i])
				if err != nil {
					return nil, &requestFailure{err}
				}
				res[i] = r
			}
			return lt, flushed(lt.optimistic, lt.flush())
		})
		if !retry(err, attempt) {
			return err
		}
	}
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
	return &requestFailure{err}
}

// LedgerHold implements credits.SpendStore.
func (s *Store) LedgerHold(ctx context.Context, id string) (credits.Hold, error) {
	h, err := scanHold(s.lr[sHold].QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return h, credits.ErrHoldNotFound
	}
	return h, wrap("ledger hold", err)
}

// ExpireLedgers implements credits.SpendStore. It finds due accounts on the
// reader pool first, so a sweep with nothing due costs no write.
func (s *Store) ExpireLedgers(ctx context.Context, now time.Time, accountID string, limit int) (credits.ExpiryReport, error) {
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
	var rep credits.ExpiryReport
	err = s.ledgerWrite(ctx, "expire ledgers", func(tx *sql.Tx) error {
		lt := s.newLedgerTx(ctx, tx, now)
		for _, id := range ids {
			if _, err := lt.State(ctx, id); err != nil && !errors.Is(err, credits.ErrUnknownAccount) {
				return err
			}
		}
		rep = lt.Rep
		return lt.flush()
	})
	return rep, err
}
