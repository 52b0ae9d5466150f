package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/ledgerstage"
)

// The credits ledger on PostgreSQL.
//
// Money is NUMERIC, read and written as exact decimal text
// (credits.Amount.String); all arithmetic happens in Go. Every write runs
// credits.ApplySpend or credits.ApplyCredit on a ledgerTx. The ledgerTx
// first locks the ledger account rows it needs (SELECT … FOR UPDATE, in
// account_id order, one statement) and reads in the same round trip what the
// requests will look up (idempotency records, holds); after the lock no
// other transaction can change anything of those accounts, so the checks
// of the ledger rules hold until commit, across any number of pools.
//
// Writes are staged in memory while the rules run and sent at the end in
// one pipelined round trip: multi-row INSERT … SELECT FROM unnest for
// entries, idempotency records and holds, and one UPDATE for all changed
// account rows, each guarded by the version it read. ApplySpends is the
// group commit: many callers' spends in one transaction. The ledger rules
// check before they write, so a request that fails leaves nothing staged
// and its batch mates commit; if a request hits a system failure (which
// aborts a PostgreSQL transaction), the requests are retried one per
// transaction so that one bad request cannot fail the others.

var _ credits.GroupCommitter = (*Store)(nil)

// GroupCommit implements credits.GroupCommitter: a commit is a WAL flush
// and several round trips, so the Service should batch spends.
func (s *Store) GroupCommit() bool { return true }

const ledgerAccountColumns = `account_id, unit, balance, held, seq, version, overdraft, monthly_cap, time_zone,
	recharge_enabled, recharge_threshold, recharge_amount, recharge_armed, recharges,
	month_start, month_end, month_spent, opened_at, updated_at`

// ledgerAccountSelect reads ledgerAccountColumns with the money as text,
// which pgx copies instead of decoding binary NUMERIC.
const ledgerAccountSelect = `account_id, unit, balance::text, held::text, seq, version, overdraft::text, monthly_cap::text,
	time_zone, recharge_enabled, recharge_threshold::text, recharge_amount::text, recharge_armed, recharges,
	month_start, month_end, month_spent::text, opened_at, updated_at`

const entryColumns = `account_id, seq, id, type, amount, balance_after, reference, description, idem_key, hold_id, expires_at, created_at`

const holdColumns = `id, account_id, amount, state, reference, idem_key, created_at, expires_at, resolved_at,
	actual, charged, entry_id, entry_seq, settle_fp`

// Amounts: exact decimal text. PostgreSQL returns a NUMERIC with the scale
// it was computed at ("1.0"); trailing zeros are dropped so that values
// read back equal the ones written.

func parseStored(s string) (credits.Amount, error) {
	if strings.IndexByte(s, '.') >= 0 {
		s = strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
	}
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

func scanState(row pgx.Row, extra ...any) (credits.AccountState, error) {
	var (
		st                                        credits.AccountState
		bal, held, od, limit, thr, ramt, spent    string
		monthStart, monthEnd, openedAt, updatedAt int64
		enabled, armed                            bool
	)
	dest := []any{&st.ID, &st.Unit, &bal, &held, &st.Seq, &st.Version, &od, &limit, &st.Policy.TimeZone,
		&enabled, &thr, &ramt, &armed, &st.Recharges, &monthStart, &monthEnd, &spent, &openedAt, &updatedAt}
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return st, err
	}
	var p amountScanner
	st.Balance, st.Held, st.MonthSpent = p.parse(bal), p.parse(held), p.parse(spent)
	st.Policy.Overdraft, st.Policy.MonthlyCap = p.parse(od), p.parse(limit)
	st.Policy.AutoRecharge = credits.AutoRecharge{Enabled: enabled, Threshold: p.parse(thr), Amount: p.parse(ramt)}
	st.RechargeArmed = armed
	st.MonthStart, st.MonthEnd = fromNanos(monthStart), fromNanos(monthEnd)
	st.OpenedAt, st.UpdatedAt = fromNanos(openedAt), fromNanos(updatedAt)
	return st, p.err
}

func scanEntry(row pgx.Row) (credits.Entry, error) {
	var (
		e             credits.Entry
		amt, bal, typ string
		expires       *int64
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

func scanHold(row pgx.Row) (credits.Hold, error) {
	var (
		h                           credits.Hold
		amt, state, actual, charged string
		created, expires            int64
		resolved                    *int64
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

// loaded is an account as read (and locked) by a ledgerTx.
type loaded struct {
	st   credits.AccountState
	lots int64          // the lots column
	due  []credits.Hold // active holds with deadline at or before now
	// holdDue is the new lower bound of active hold deadlines (see the
	// hold_due column), and holdDue0 the stored one.
	holdDue, holdDue0 int64
}

// complete reads the lots and due holds of an account whose row is in l,
// skipping each query when the row says there is nothing to find.
func complete(ctx context.Context, q querier, l *loaded, now time.Time) error {
	id := l.st.ID
	l.holdDue = l.holdDue0
	var p amountScanner
	if l.lots > 0 {
		rows, err := q.Query(ctx, `SELECT id, expires_at, remaining FROM credit_lots WHERE account_id = $1 ORDER BY expires_at, id`, id)
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
		rows.Close()
		if err := errors.Join(rows.Err(), p.err); err != nil {
			return wrap("ledger lots", err)
		}
	}
	if l.holdDue0 == 0 || toNanos(now) < l.holdDue0 {
		return nil
	}
	rows, err := q.Query(ctx, `SELECT id, amount, expires_at FROM credit_holds
		WHERE account_id = $1 AND state = 'active' AND expires_at <= $2 ORDER BY id`, id, toNanos(now))
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
	rows.Close()
	if err := errors.Join(rows.Err(), p.err); err != nil {
		return wrap("ledger due holds", err)
	}
	var next *int64
	if err := q.QueryRow(ctx, `SELECT min(expires_at) FROM credit_holds WHERE account_id = $1 AND state = 'active' AND expires_at > $2`,
		id, toNanos(now)).Scan(&next); err != nil {
		return wrap("ledger due holds", err)
	}
	l.holdDue = 0 // no active hold is left
	if next != nil {
		l.holdDue = *next
	}
	return nil
}

// loadState reads an account with its live lots and due holds, locking its
// row if lock is set. It returns credits.ErrUnknownAccount.
func loadState(ctx context.Context, q querier, id string, now time.Time, lock bool) (loaded, error) {
	var l loaded
	query := `SELECT ` + ledgerAccountSelect + `, lots, hold_due FROM credit_accounts WHERE account_id = $1`
	if lock {
		query += ` FOR UPDATE`
	}
	st, err := scanState(q.QueryRow(ctx, query, id), &l.lots, &l.holdDue0)
	if errors.Is(err, pgx.ErrNoRows) {
		return l, credits.ErrUnknownAccount
	}
	if err != nil {
		return l, wrap("ledger account", err)
	}
	l.st = st
	return l, complete(ctx, q, &l, now)
}

type opKey = ledgerstage.OpKey

// opSeen is an idempotency record looked up in this transaction: found, or
// known to be absent (the account is locked, so nobody else can add it).
type opSeen struct {
	rec   credits.OpRecord
	found bool
}

// ledgerTx is a credits.Tx on one write transaction.
type ledgerTx struct {
	tx                 txConn
	ledgerstage.Ledger // now, accounts, expiries and the stage of writes
	// pipelined: tx is a bare connection; the transaction's BEGIN goes
	// out with the prefetch and its COMMIT with the flush (see
	// Store.pipelined), saving two round trips per batch.
	pipelined, begun bool
	// optimistic: idempotency keys (and record IDs) are claimed without
	// looking them up first; the unique indexes check the claims at flush,
	// and a violation reruns the batch with lookups (see claimed).
	optimistic bool

	ops   map[opKey]opSeen        // idempotency records read
	holds map[string]credits.Hold // holds read, as stored
}

func newLedgerTx(tx txConn, now time.Time) *ledgerTx {
	return &ledgerTx{
		tx: tx, Ledger: ledgerstage.NewLedger(now),
		ops: make(map[opKey]opSeen), holds: make(map[string]credits.Hold),
	}
}

// prefetch locks and loads, in one statement and in account_id order, the
// ledger accounts in ids and those of the holds in holdIDs that are not
// loaded yet, and reads in the same round trip, after the lock, the holds
// and idempotency records the requests will look up, and whatever more
// queues (with result callbacks). Unknown accounts are left for State to
// report.
func (t *ledgerTx) prefetch(ctx context.Context, ids, holdIDs []string, opKeys []opKey, more func(*pgx.Batch)) error {
	ids = slices.DeleteFunc(ids, func(id string) bool { return t.Accts[id] != nil })
	var b pgx.Batch
	if t.pipelined && !t.begun {
		b.Queue(`BEGIN`)
		t.begun = true
	}
	var lockRows []loaded
	if len(ids) > 0 || len(holdIDs) > 0 {
		b.Queue(`SELECT `+ledgerAccountSelect+`, lots, hold_due FROM credit_accounts
			WHERE account_id = ANY($1) OR account_id IN (SELECT account_id FROM credit_holds WHERE id = ANY($2))
			ORDER BY account_id FOR UPDATE`, ids, holdIDs).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var l loaded
				var err error
				if l.st, err = scanState(rows, &l.lots, &l.holdDue0); err != nil {
					return err
				}
				if t.Accts[l.st.ID] == nil {
					lockRows = append(lockRows, l)
				}
			}
			return rows.Err()
		})
	}
	if len(holdIDs) > 0 {
		b.Queue(`SELECT `+holdColumns+` FROM credit_holds WHERE id = ANY($1)`, holdIDs).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				h, err := scanHold(rows)
				if err != nil {
					return err
				}
				t.holds[h.ID] = h
			}
			return rows.Err()
		})
	}
	if len(opKeys) > 0 && !t.optimistic {
		keys, accts := make([]string, len(opKeys)), make([]string, len(opKeys))
		for i, k := range opKeys {
			keys[i], accts[i] = k.Key, k.Acct
			t.ops[k] = opSeen{} // absent unless the query finds it
		}
		b.Queue(`SELECT o.key, o.account_id, o.kind, o.fingerprint, o.entry_seq, o.hold_id
			FROM credit_ops o JOIN unnest($1::text[], $2::text[]) AS u(key, account_id)
			ON o.key = u.key AND o.account_id = u.account_id`, keys, accts).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var k opKey
				var rec credits.OpRecord
				var fp []byte
				if err := rows.Scan(&k.Key, &k.Acct, &rec.Kind, &fp, &rec.EntrySeq, &rec.HoldID); err != nil {
					return err
				}
				copy(rec.Fingerprint[:], fp)
				t.ops[k] = opSeen{rec: rec, found: true}
			}
			return rows.Err()
		})
	}
	if more != nil {
		more(&b)
	}
	if b.Len() == 0 {
		return nil
	}
	if err := t.tx.SendBatch(ctx, &b).Close(); err != nil {
		return wrap("prefetch", err)
	}
	for i := range lockRows {
		if err := complete(ctx, t.tx, &lockRows[i], t.Now); err != nil {
			return err
		}
		t.install(lockRows[i])
	}
	return nil
}

// State implements credits.Tx: the first call for an account locks and
// loads it, advances it to now and stages the expiries that are due.
func (t *ledgerTx) State(ctx context.Context, id string) (*credits.AccountState, error) {
	if a, ok := t.Accts[id]; ok {
		return &a.St, nil
	}
	l, err := loadState(ctx, t.tx, id, t.Now, true)
	if err != nil {
		return nil, err
	}
	return t.install(l), nil
}

// install makes a loaded account part of the transaction (see
// ledgerstage.Ledger.Install).
func (t *ledgerTx) install(l loaded) *credits.AccountState {
	return t.Install(l.st, l.due, l.holdDue, l.holdDue0)
}

// Hold implements credits.Tx. A hold is read only after its account is
// locked, so that its state cannot change before commit.
func (t *ledgerTx) Hold(ctx context.Context, id string) (credits.Hold, error) {
	if h, ok := t.Stage.Hold(id); ok {
		return h, nil
	}
	if h, ok := t.holds[id]; ok && t.Accts[h.AccountID] != nil {
		return h, nil
	}
	var acct string
	err := t.tx.QueryRow(ctx, `SELECT account_id FROM credit_holds WHERE id = $1`, id).Scan(&acct)
	if errors.Is(err, pgx.ErrNoRows) {
		return credits.Hold{}, credits.ErrHoldNotFound
	}
	if err != nil {
		return credits.Hold{}, wrap("ledger hold", err)
	}
	if _, err := t.State(ctx, acct); err != nil {
		return credits.Hold{}, err
	}
	if i, ok := t.Stage.HoldIdx[id]; ok { // staged by the account's expiries
		return t.Stage.Holds[i].H, nil
	}
	h, err := scanHold(t.tx.QueryRow(ctx, `SELECT `+holdColumns+` FROM credit_holds WHERE id = $1`, id))
	if err != nil {
		return h, wrap("ledger hold", err)
	}
	t.holds[id] = h
	return h, nil
}

// Op implements credits.Tx.
func (t *ledgerTx) Op(ctx context.Context, accountID, key string) (credits.OpRecord, bool, error) {
	k := opKey{Acct: accountID, Key: key}
	if rec, ok := t.Stage.Op(k); ok {
		return rec, true, nil
	}
	if s, ok := t.ops[k]; ok {
		return s.rec, s.found, nil
	}
	var rec credits.OpRecord
	var fp []byte
	err := t.tx.QueryRow(ctx, `SELECT kind, fingerprint, entry_seq, hold_id FROM credit_ops WHERE key = $1 AND account_id = $2`,
		key, accountID).Scan(&rec.Kind, &fp, &rec.EntrySeq, &rec.HoldID)
	if errors.Is(err, pgx.ErrNoRows) {
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

// ClaimOp implements credits.Tx. ApplySpend and ApplyCredit claim keys
// only of accounts they hold locked, so a key found absent stays absent
// until commit.
func (t *ledgerTx) ClaimOp(ctx context.Context, accountID, key string, rec credits.OpRecord) (credits.OpRecord, bool, error) {
	k := opKey{Acct: accountID, Key: key}
	if prev, ok, err := t.claimed(ctx, k); err != nil || ok {
		return prev, false, err
	}
	t.Stage.ClaimOp(k, rec)
	return rec, true, nil
}

// claimed reports the record under k that a claim must not overwrite. An
// optimistic transaction reads only what it has staged or already read:
// if the key is in the table, the claim's INSERT fails with a unique
// violation at flush and the batch runs again, carefully. Reads that decide
// an outcome without claiming (Op, for the replay of a request that would
// fail now) always look.
func (t *ledgerTx) claimed(ctx context.Context, k opKey) (credits.OpRecord, bool, error) {
	if t.optimistic {
		if rec, ok := t.Stage.Op(k); ok {
			return rec, true, nil
		}
		s := t.ops[k]
		return s.rec, s.found, nil
	}
	return t.Op(ctx, k.Acct, k.Key)
}

// Entry implements credits.Tx.
func (t *ledgerTx) Entry(ctx context.Context, accountID string, seq int64) (credits.Entry, error) {
	if e, ok := t.Stage.Entry(accountID, seq); ok {
		return e, nil
	}
	e, err := scanEntry(t.tx.QueryRow(ctx, `SELECT `+entryColumns+` FROM credit_entries WHERE account_id = $1 AND seq = $2`, accountID, seq))
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

// queueFlush queues on b the statements that write everything staged, and
// returns the function that checks their results.
func (t *ledgerTx) queueFlush(b *pgx.Batch) func(pgx.BatchResults) error {
	st := &t.Stage
	var checks []func(pgx.BatchResults) error
	execOK := func(br pgx.BatchResults) error { _, err := br.Exec(); return err }
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
				toNullNanos(e.ExpiresAt), toNanos(e.CreatedAt)
		}
		b.Queue(`INSERT INTO credit_entries (`+entryColumns+`)
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
	if len(st.Holds) > 0 {
		// The latest version of each hold, in a fixed order.
		ids := make([]string, 0, len(st.HoldIdx))
		for id := range st.HoldIdx {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		n := len(ids)
		var (
			acct, amt, state, ref, idem, actual, charged, entry = make([]string, n), make([]string, n), make([]string, n),
				make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
			created, expires, seq = make([]int64, n), make([]int64, n), make([]int64, n)
			resolved              = make([]*int64, n)
			fps                   = make([][]byte, n)
		)
		for i, id := range ids {
			h := st.Holds[st.HoldIdx[id]].H
			fp := h.SettleFingerprint
			acct[i], amt[i], state[i], ref[i], idem[i] = h.AccountID, h.Amount.String(), string(h.State), h.Reference, h.IdempotencyKey
			created[i], expires[i], resolved[i] = toNanos(h.CreatedAt), toNanos(h.ExpiresAt), toNullNanos(h.ResolvedAt)
			actual[i], charged[i], entry[i], seq[i], fps[i] = h.Actual.String(), h.Charged.String(), h.EntryID, h.EntrySeq, fp[:]
		}
		b.Queue(`INSERT INTO credit_holds (`+holdColumns+`)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[]::numeric[], $4::text[], $5::text[], $6::text[], $7::bigint[],
				$8::bigint[], $9::bigint[], $10::text[]::numeric[], $11::text[]::numeric[], $12::text[], $13::bigint[], $14::bytea[])
			ON CONFLICT (id) DO UPDATE SET amount = excluded.amount, expires_at = excluded.expires_at,
			state = excluded.state, resolved_at = excluded.resolved_at, actual = excluded.actual, charged = excluded.charged, entry_id = excluded.entry_id,
			entry_seq = excluded.entry_seq, settle_fp = excluded.settle_fp`,
			ids, acct, amt, state, ref, idem, created, expires, resolved, actual, charged, entry, seq, fps)
		checks = append(checks, execOK)
	}
	if c := t.queueAccounts(b); c != nil {
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
func (t *ledgerTx) queueAccounts(b *pgx.Batch) func(pgx.BatchResults) error {
	var changed []*ledgerstage.Account
	for _, a := range t.Order {
		if a.Changed() {
			changed = append(changed, a)
		}
	}
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
	)
	for i, a := range changed {
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
		updated_at = u.updated_at, lots = u.lots, hold_due = u.hold_due
		FROM unnest($1::text[], $2::text[]::numeric[], $3::text[]::numeric[], $4::bigint[], $5::bigint[], $6::text[]::numeric[], $7::text[]::numeric[],
			$8::text[], $9::boolean[], $10::text[]::numeric[], $11::text[]::numeric[], $12::boolean[], $13::bigint[], $14::bigint[],
			$15::bigint[], $16::text[]::numeric[], $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[])
			AS u(account_id, balance, held, seq, version, overdraft, monthly_cap, time_zone, recharge_enabled,
			recharge_threshold, recharge_amount, recharge_armed, recharges, month_start, month_end, month_spent,
			updated_at, lots, hold_due, old_version)
		WHERE c.account_id = u.account_id AND c.version = u.old_version`,
		id, bal, held, seq, version, od, limit, tz, enabled, thr, ramt, armed, recharges, mStart, mEnd, spent,
		updated, lots, holdDue, oldVersion)
	nLots := 0
	for _, a := range changed {
		nLots += t.queueLots(b, a)
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
func (t *ledgerTx) queueLots(b *pgx.Batch, a *ledgerstage.Account) int {
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

// flush writes everything staged in one round trip.
func (t *ledgerTx) flush(ctx context.Context) error {
	var b pgx.Batch
	return t.send(ctx, &b, t.queueFlush(&b), "write ledger")
}

// send sends b — with the COMMIT of a pipelined transaction at its end —
// and checks its results in order.
func (t *ledgerTx) send(ctx context.Context, b *pgx.Batch, check func(pgx.BatchResults) error, op string) error {
	if t.pipelined {
		b.Queue(`COMMIT`)
	}
	if b.Len() == 0 {
		return nil
	}
	br := t.tx.SendBatch(ctx, b)
	err := check(br)
	if err == nil && t.pipelined {
		// A COMMIT of a failed transaction reports ROLLBACK, not an error.
		var tag pgconn.CommandTag
		if tag, err = br.Exec(); err == nil && tag.String() != "COMMIT" {
			err = fmt.Errorf("transaction ended with %s", tag)
		}
	}
	return wrap(op, errors.Join(err, br.Close()))
}

// OpenLedger implements credits.AccountStore.
func (s *Store) OpenLedger(ctx context.Context, st credits.AccountState) error {
	p, ar := st.Policy, st.Policy.AutoRecharge
	_, err := s.pool.Exec(ctx, `INSERT INTO credit_accounts (`+ledgerAccountColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`,
		st.ID, st.Unit, st.Balance.String(), st.Held.String(), st.Seq, st.Version, p.Overdraft.String(),
		p.MonthlyCap.String(), p.TimeZone, ar.Enabled, ar.Threshold.String(), ar.Amount.String(),
		st.RechargeArmed, st.Recharges, toNanos(st.MonthStart), toNanos(st.MonthEnd), st.MonthSpent.String(),
		toNanos(st.OpenedAt), toNanos(st.UpdatedAt))
	if isUnique(err) {
		return credits.ErrAlreadyOpen
	}
	return wrap("open ledger", err)
}

// SetLedgerPolicy implements credits.AccountStore.
func (s *Store) SetLedgerPolicy(ctx context.Context, id string, p credits.Policy, now time.Time) (credits.AccountState, error) {
	var out credits.AccountState
	err := s.write(ctx, "set ledger policy", func(tx pgx.Tx) error {
		lt := newLedgerTx(tx, now)
		st, err := lt.State(ctx, id)
		if err != nil {
			return err
		}
		st.SetPolicy(p, now)
		out = st.Clone()
		return lt.flush(ctx)
	})
	return out, err
}

// LedgerAccount implements credits.AccountStore: one snapshot, no lock.
func (s *Store) LedgerAccount(ctx context.Context, id string, now time.Time) (credits.AccountState, error) {
	var st credits.AccountState
	err := s.read(ctx, "ledger account", func(tx pgx.Tx) error {
		l, err := loadState(ctx, tx, id, now, false)
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
	err := s.write(ctx, "ledger credit", func(tx pgx.Tx) error {
		lt := newLedgerTx(tx, now)
		var err error
		if e, err = credits.ApplyCredit(ctx, lt, now, r); err != nil {
			return err
		}
		return lt.flush(ctx)
	})
	return e, err
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

// LedgerEntries implements credits.EntryStore.
func (s *Store) LedgerEntries(ctx context.Context, q credits.EntryQuery) ([]credits.Entry, error) {
	var out []credits.Entry
	err := s.read(ctx, "ledger entries", func(tx pgx.Tx) error {
		out = nil
		if err := ledgerExists(ctx, tx, q.AccountID); err != nil {
			return err
		}
		var where strings.Builder
		args := []any{q.AccountID}
		arg := func(v any) string {
			args = append(args, v)
			return fmt.Sprintf("$%d", len(args))
		}
		where.WriteString(`account_id = $1`)
		if q.BeforeSeq > 0 {
			where.WriteString(` AND seq < ` + arg(q.BeforeSeq))
		}
		if len(q.Types) > 0 {
			types := make([]string, len(q.Types))
			for i, t := range q.Types {
				types[i] = string(t)
			}
			where.WriteString(` AND type = ANY(` + arg(types) + `)`)
		}
		if !q.From.IsZero() {
			where.WriteString(` AND created_at >= ` + arg(toNanos(q.From)))
		}
		if !q.To.IsZero() {
			where.WriteString(` AND created_at < ` + arg(toNanos(q.To)))
		}
		rows, err := tx.Query(ctx, `SELECT `+entryColumns+` FROM credit_entries WHERE `+where.String()+
			` ORDER BY seq DESC LIMIT `+arg(q.Limit), args...)
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
	err := s.read(ctx, "ledger balance at", func(tx pgx.Tx) error {
		if err := ledgerExists(ctx, tx, id); err != nil {
			return err
		}
		var text string
		err := tx.QueryRow(ctx, `SELECT balance_after FROM credit_entries WHERE account_id = $1 AND created_at <= $2
			ORDER BY seq DESC LIMIT 1`, id, toNanos(t)).Scan(&text)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			text = "0"
		case err != nil:
			return wrap("ledger balance at", err)
		}
		var p amountScanner
		bal = p.parse(text)
		rows, err := tx.Query(ctx, `SELECT remaining FROM credit_lots WHERE account_id = $1 AND expires_at <= $2`, id, toNanos(t))
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
		return err // nothing applied; a failed BEGIN, flush or COMMIT concerns the whole batch
	}
	// One request hit a system failure, which aborted the transaction:
	// apply each request in its own transaction, so that only a request
	// that fails alone fails (its res[i].Err holds the failure).
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

// spendTargets returns the accounts, holds and idempotency keys a batch of
// spends will touch, for the prefetch.
func spendTargets(reqs []credits.SpendRequest, ids, holds []string, ops []opKey) ([]string, []string, []opKey) {
	for i := range reqs {
		r := &reqs[i]
		switch r.Kind {
		case credits.SpendDebit, credits.SpendReserve:
			ids = append(ids, r.AccountID)
			ops = append(ops, opKey{Acct: r.AccountID, Key: r.IdempotencyKey})
		case credits.SpendSettle, credits.SpendRelease, credits.SpendExtend:
			holds = append(holds, r.HoldID)
		}
	}
	return ids, holds, ops
}

func (s *Store) applySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	return s.pipelined(ctx, "apply spends", func(c txConn, attempt int) error {
		lt := newLedgerTx(c, now)
		lt.pipelined, lt.optimistic = true, attempt == 0
		ids, holds, ops := spendTargets(reqs, nil, nil, nil)
		if err := lt.prefetch(ctx, ids, holds, ops, nil); err != nil {
			return err
		}
		for i := range reqs {
			r, err := credits.ApplySpend(ctx, lt, now, reqs[i])
			if err != nil {
				return &requestFailure{err}
			}
			res[i] = r
		}
		return lt.flush(ctx)
	})
}

// LedgerHold implements credits.SpendStore.
func (s *Store) LedgerHold(ctx context.Context, id string) (credits.Hold, error) {
	h, err := scanHold(s.pool.QueryRow(ctx, `SELECT `+holdColumns+` FROM credit_holds WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return h, credits.ErrHoldNotFound
	}
	return h, wrap("ledger hold", err)
}

// ExpireLedgers implements credits.SpendStore. It finds due accounts
// first without locking, so a sweep with nothing due writes nothing.
func (s *Store) ExpireLedgers(ctx context.Context, now time.Time, accountID string, limit int) (credits.ExpiryReport, error) {
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
	var rep credits.ExpiryReport
	err = s.write(ctx, "expire ledgers", func(tx pgx.Tx) error {
		lt := newLedgerTx(tx, now)
		if err := lt.prefetch(ctx, ids, nil, nil, nil); err != nil {
			return err
		}
		rep = lt.Rep
		return lt.flush(ctx)
	})
	return rep, err
}
