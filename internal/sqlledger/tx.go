package sqlledger

import (
	"context"
	"slices"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/id"
	"github.com/keyledger/keyledger/internal/ledgerstage"
	"github.com/keyledger/keyledger/internal/outbox"
	"github.com/keyledger/keyledger/usage"
	"github.com/keyledger/keyledger/usage/meter"
)

// Loaded is an account as read into a transaction: its row with its lots,
// its active holds due by the transaction's now, the new lower bound of its
// other active hold deadlines, and the stored one.
type Loaded struct {
	St                ledger.AccountState
	Due               []credits.Hold
	HoldDue, HoldDue0 int64
}

// Meter is a staged meter key.
type Meter struct {
	K  OpKey
	Op meter.MeterOp
}

// Record is a staged usage record with its rollup row's zone and day. R is
// the caller's record, alive until the flush.
type Record struct {
	R       *usage.Record
	TZ, Day string
}

type opSeen struct {
	rec   ledger.OpRecord
	found bool
}

type meterSeen struct {
	op    meter.MeterOp
	found bool
}

// Tx is a ledger.Tx and a meter.Tx on one write transaction. Its writes
// are staged in memory (the embedded Ledger, Meters and Records) and
// written by the Conn's Flush at the end; reads look at the stage first,
// then at what the transaction read, then at the database.
type Tx struct {
	ledgerstage.Ledger // now, accounts, expiries and the stage of ledger writes
	// Meters and Records are the staged meter keys and usage records.
	Meters  []Meter
	Records []Record
	// Events are the outbox events of the ledger's movements (Moved),
	// written by the flush in the same transaction.
	Events []events.Event

	conn Conn
	// locks: the database locks rows (PostgreSQL), so a hold is trusted
	// only once its account is loaded (and locked); without row locks the
	// transaction is the only writer (SQLite).
	locks bool
	// Optimistic: idempotency keys and record IDs are claimed without
	// looking them up; the unique indexes check the claims at flush, and a
	// violation runs the batch again with lookups. Reads that decide an
	// outcome without claiming (Op) always look.
	Optimistic bool
	// Cached, if set, returns an account's committed state to start from
	// instead of reading it.
	Cached func(id string, now time.Time) (Loaded, bool)

	ops       map[OpKey]opSeen        // idempotency records read (or known absent)
	holds     map[string]credits.Hold // holds read, as stored
	noHold    map[string]bool         // holds known not stored (Fetch.HoldsRead)
	meterSeen map[OpKey]meterSeen
	recSeen   map[RecKey]bool
	meterIdx  map[OpKey]int
	recIdx    map[RecKey]int
	low       map[string][]decimal.Decimal // alert thresholds read (events.go)
	ids       *id.Generator                // event IDs, made on first use
}

var (
	_ ledger.Tx = (*Tx)(nil)
	_ meter.Tx  = (*Tx)(nil)
)

// NewTx returns a Tx at now on c. locks says whether c's database locks the
// rows it reads (Conn.Account) until commit.
func NewTx(c Conn, now time.Time, locks bool) *Tx {
	return &Tx{
		Ledger: ledgerstage.NewLedger(now), conn: c, locks: locks,
		ops: make(map[OpKey]opSeen), holds: make(map[string]credits.Hold),
		meterSeen: make(map[OpKey]meterSeen), recSeen: make(map[RecKey]bool),
		meterIdx: make(map[OpKey]int), recIdx: make(map[RecKey]int),
	}
}

// complete reads the lots and due holds of an account whose row is r,
// skipping each query when the row says there is nothing to find.
func (t *Tx) complete(ctx context.Context, r Row) (Loaded, error) {
	l := Loaded{St: r.St, HoldDue: r.HoldDue, HoldDue0: r.HoldDue}
	if r.Lots > 0 {
		lots, err := t.conn.Lots(ctx, r.St.ID)
		if err != nil {
			return l, err
		}
		l.St.Lots = lots
	}
	if r.HoldDue == 0 || t.Now.UnixNano() < r.HoldDue {
		return l, nil
	}
	var err error
	l.Due, l.HoldDue, err = t.conn.DueHolds(ctx, r.St.ID, t.Now.UnixNano())
	return l, err
}

// load reads an account with its lots and due holds.
func (t *Tx) load(ctx context.Context, id string) (Loaded, error) {
	r, err := t.conn.Account(ctx, id)
	if err != nil {
		return Loaded{}, err
	}
	return t.complete(ctx, r)
}

// install makes a loaded account part of the transaction (see
// ledgerstage.Ledger.Install).
func (t *Tx) install(l Loaded) *ledger.AccountState {
	return t.Install(l.St, l.Due, l.HoldDue, l.HoldDue0)
}

// State implements ledger.Tx: the first call for an account loads (and
// locks) it, advances it to now and stages the expiries that are due.
func (t *Tx) State(ctx context.Context, id string) (*ledger.AccountState, error) {
	if a, ok := t.Accts[id]; ok {
		return &a.St, nil
	}
	if t.Cached != nil {
		if l, ok := t.Cached(id, t.Now); ok {
			return t.install(l), nil
		}
	}
	l, err := t.load(ctx, id)
	if err != nil {
		return nil, err
	}
	return t.install(l), nil
}

// Fetch is what a batch will look up, for Conn.Prefetch, which reports
// what it read to the Found methods.
type Fetch struct {
	// Accounts are the ledger accounts to load (and lock), sorted, none
	// loaded yet.
	Accounts []string
	// Holds are the holds the batch resolves; a database that locks rows
	// loads (and locks) their accounts too.
	Holds []string
	// Ops, Meters and Records are the idempotency records, meter keys and
	// record IDs to look up; empty in an optimistic transaction.
	Ops     []OpKey
	Meters  []OpKey
	Records []RecKey

	t    *Tx
	rows []Row
	// lowRead: the Conn read the alert thresholds of every account it
	// loaded (FoundThresholds), so those without a row have none.
	lowRead bool
	// holdsRead: the Conn looked up every hold of Holds (HoldsRead).
	holdsRead bool
	// carried are the holds of Holds that settles carry (process and
	// leased holds, credits.SpendRequest.Held), whose accounts are in
	// Accounts; carriedRead: the Conn looked them up under their
	// accounts' locks (CarriedRead).
	carried     []string
	carriedRead bool
}

// FoundThresholds reports an account's alert thresholds (their stored
// text), read with the account rows so that a ledger event needs no
// statement of its own (see Tx.Moved).
func (f *Fetch) FoundThresholds(acct, low string) {
	if f.t.low == nil {
		f.t.low = make(map[string][]decimal.Decimal)
	}
	f.t.low[acct] = outbox.ParseThresholds(low)
	f.lowRead = true
}

// ThresholdsRead reports that the Conn read the thresholds of every
// account it loaded: an account without a FoundThresholds has none.
func (f *Fetch) ThresholdsRead() { f.lowRead = true }

// FoundAccount reports an account row read (and locked).
func (f *Fetch) FoundAccount(r Row) {
	if f.t.Accts[r.St.ID] == nil {
		f.rows = append(f.rows, r)
	}
}

// FoundHold reports a hold read.
func (f *Fetch) FoundHold(h credits.Hold) { f.t.holds[h.ID] = h }

// HoldsRead reports that the Conn looked up every hold of Holds, so that
// one it did not report (FoundHold) is not stored and Tx.Hold answers
// credits.ErrHoldNotFound for it without a statement: the settle of a
// process hold (credits.SpendRequest.Held), which is stored only by that
// settle, costs no lookup of its own. Only a database where no other
// transaction can store a hold between the prefetch and the end of this
// one may say so (SQLite's one writer).
func (f *Fetch) HoldsRead() { f.holdsRead = true }

// CarriedRead reports that the Conn locked the batch's accounts before it
// looked up its holds: a hold that a settle carries
// (credits.SpendRequest.Held) and that the lookup did not find is then not
// stored, and Tx.Hold answers credits.ErrHoldNotFound for it without a
// statement. Such a hold is stored only by a settle of it, which locks
// its account first, so none can be stored meanwhile (PostgreSQL's row
// locks); HoldsRead says more.
func (f *Fetch) CarriedRead() { f.carriedRead = true }

// FoundOp reports an idempotency record read.
func (f *Fetch) FoundOp(k OpKey, rec ledger.OpRecord) { f.t.ops[k] = opSeen{rec: rec, found: true} }

// FoundMeter reports a meter key read.
func (f *Fetch) FoundMeter(k OpKey, op meter.MeterOp) {
	f.t.meterSeen[k] = meterSeen{op: op, found: true}
}

// FoundRecord reports a record ID that exists.
func (f *Fetch) FoundRecord(k RecKey) { f.t.recSeen[k] = true }

// prefetch runs f: accounts the cache has are installed from it, keys not
// known yet are marked absent unless the Conn finds them, and the account
// rows it read are completed and installed.
func (t *Tx) prefetch(ctx context.Context, f *Fetch) error {
	f.t = t
	slices.Sort(f.Accounts)
	f.Accounts = slices.Compact(f.Accounts)
	f.Accounts = slices.DeleteFunc(f.Accounts, func(id string) bool {
		if t.Accts[id] != nil {
			return true
		}
		if t.Cached != nil {
			if l, ok := t.Cached(id, t.Now); ok {
				t.install(l)
				return true
			}
		}
		return false
	})
	if t.Optimistic {
		f.Ops, f.Meters, f.Records = nil, nil, nil
	}
	f.Ops = slices.DeleteFunc(f.Ops, func(k OpKey) bool {
		if _, ok := t.Stage.Op(k); ok {
			return true
		}
		if _, ok := t.ops[k]; ok {
			return true
		}
		t.ops[k] = opSeen{} // absent unless the Conn finds it
		return false
	})
	f.Meters = slices.DeleteFunc(f.Meters, func(k OpKey) bool {
		if _, ok := t.meterSeen[k]; ok {
			return true
		}
		t.meterSeen[k] = meterSeen{}
		return false
	})
	f.Records = slices.DeleteFunc(f.Records, func(k RecKey) bool {
		if _, ok := t.recSeen[k]; ok {
			return true
		}
		t.recSeen[k] = false
		return false
	})
	if err := t.conn.Prefetch(ctx, f); err != nil {
		return err
	}
	if known := f.carried; f.holdsRead || f.carriedRead {
		if f.holdsRead {
			known = f.Holds
		}
		for _, id := range known {
			if _, ok := t.holds[id]; !ok {
				if t.noHold == nil {
					t.noHold = make(map[string]bool)
				}
				t.noHold[id] = true
			}
		}
	}
	for _, r := range f.rows {
		if f.lowRead {
			if _, ok := t.low[r.St.ID]; !ok {
				if t.low == nil {
					t.low = make(map[string][]decimal.Decimal)
				}
				t.low[r.St.ID] = nil
			}
		}
		if t.Accts[r.St.ID] != nil {
			continue
		}
		l, err := t.complete(ctx, r)
		if err != nil {
			return err
		}
		t.install(l)
	}
	return nil
}

// spendTargets adds to f the accounts, holds and idempotency keys of reqs.
func (f *Fetch) spendTargets(reqs []credits.SpendRequest) {
	for i := range reqs {
		r := &reqs[i]
		switch r.Kind {
		case credits.SpendDebit, credits.SpendReserve:
			f.Accounts = append(f.Accounts, r.AccountID)
			f.Ops = append(f.Ops, OpKey{Acct: r.AccountID, Key: r.IdempotencyKey})
		case credits.SpendSettle, credits.SpendRelease, credits.SpendExtend:
			f.Holds = append(f.Holds, r.HoldID)
			if r.Lease != "" && r.Lease != r.HoldID {
				f.Holds = append(f.Holds, r.Lease)
			}
			if r.Held != nil && r.Kind == credits.SpendSettle {
				// Not stored before this settle: its account is found
				// through Held, not through the hold's row.
				f.Accounts = append(f.Accounts, r.Held.AccountID)
				f.carried = append(f.carried, r.HoldID)
			}
		}
	}
}

// Hold implements ledger.Tx. Where the database locks rows, a hold is
// read again once its account is locked, so that its state cannot change
// before commit.
func (t *Tx) Hold(ctx context.Context, id string) (credits.Hold, error) {
	if h, ok := t.Stage.Hold(id); ok {
		return h, nil
	}
	if t.noHold[id] {
		return credits.Hold{}, credits.ErrHoldNotFound
	}
	if h, ok := t.holds[id]; ok && (!t.locks || t.Accts[h.AccountID] != nil) {
		return h, nil
	}
	h, err := t.conn.Hold(ctx, id)
	if err != nil || !t.locks {
		return h, err
	}
	if t.Accts[h.AccountID] == nil {
		if _, err := t.State(ctx, h.AccountID); err != nil {
			return credits.Hold{}, err
		}
		if h, ok := t.Stage.Hold(id); ok { // staged by the account's expiries
			return h, nil
		}
		if h, err = t.conn.Hold(ctx, id); err != nil {
			return h, err
		}
	}
	t.holds[id] = h
	return h, nil
}

// Op implements ledger.Tx.
func (t *Tx) Op(ctx context.Context, accountID, key string) (ledger.OpRecord, bool, error) {
	k := OpKey{Acct: accountID, Key: key}
	if rec, ok := t.Stage.Op(k); ok {
		return rec, true, nil
	}
	if s, ok := t.ops[k]; ok {
		return s.rec, s.found, nil
	}
	rec, found, err := t.conn.Op(ctx, k)
	if err != nil {
		return rec, false, err
	}
	t.ops[k] = opSeen{rec: rec, found: found}
	return rec, found, nil
}

// ClaimOp implements ledger.Tx. A key found absent stays absent until
// commit: the account is locked, or the transaction is the only writer.
// An optimistic transaction reads only what it has staged or already read:
// if the key is in the table, the claim fails at flush and the batch runs
// again with lookups.
func (t *Tx) ClaimOp(ctx context.Context, accountID, key string, rec ledger.OpRecord) (ledger.OpRecord, bool, error) {
	k := OpKey{Acct: accountID, Key: key}
	if t.Optimistic {
		if prev, ok := t.Stage.Op(k); ok {
			return prev, false, nil
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

// Entry implements ledger.Tx.
func (t *Tx) Entry(ctx context.Context, accountID string, seq int64) (credits.Entry, error) {
	if e, ok := t.Stage.Entry(accountID, seq); ok {
		return e, nil
	}
	return t.conn.Entry(ctx, accountID, seq)
}

// AddEntry implements ledger.Tx.
func (t *Tx) AddEntry(_ context.Context, e credits.Entry) error {
	t.Stage.AddEntry(e)
	return nil
}

// PutHold implements ledger.Tx.
func (t *Tx) PutHold(_ context.Context, h credits.Hold) error {
	t.StageHold(h)
	return nil
}

// ClaimMeter implements meter.Tx.
func (t *Tx) ClaimMeter(ctx context.Context, accountID, key string, op meter.MeterOp) (meter.MeterOp, bool, error) {
	k := OpKey{Acct: accountID, Key: key}
	if i, ok := t.meterIdx[k]; ok {
		return t.Meters[i].Op, false, nil
	}
	seen, ok := t.meterSeen[k]
	if !ok && !t.Optimistic {
		var err error
		if seen, err = t.lookMeter(ctx, k); err != nil {
			return op, false, err
		}
	}
	if seen.found {
		return seen.op, false, nil
	}
	t.meterIdx[k] = len(t.Meters)
	t.Meters = append(t.Meters, Meter{K: k, Op: op})
	return op, true, nil
}

// lookMeter reads the meter key k.
func (t *Tx) lookMeter(ctx context.Context, k OpKey) (meterSeen, error) {
	op, found, err := t.conn.Meter(ctx, k)
	if err != nil {
		return meterSeen{}, err
	}
	s := meterSeen{op: op, found: found}
	t.meterSeen[k] = s
	return s, nil
}

// UsageRecord implements meter.Tx.
func (t *Tx) UsageRecord(ctx context.Context, accountID, id string, createdAt time.Time) (usage.Record, bool, error) {
	if i, ok := t.recIdx[RecKey{accountID, id}]; ok && t.Records[i].R.CreatedAt.Equal(createdAt) {
		return *t.Records[i].R, true, nil
	}
	return t.conn.Record(ctx, accountID, id, createdAt)
}

// AddUsage implements meter.Tx: the record is staged (r must stay alive
// until the flush); its rollup is summed with its batch mates' at flush.
func (t *Tx) AddUsage(ctx context.Context, r *usage.Record, tz, day string) error {
	k := RecKey{r.AccountID, r.ID}
	if _, ok := t.recIdx[k]; ok {
		return usage.ErrDuplicateRecord
	}
	exists, ok := t.recSeen[k]
	if !ok && !t.Optimistic { // optimistic: the primary key checks it at flush
		var err error
		if exists, err = t.conn.RecordExists(ctx, k); err != nil {
			return err
		}
	}
	if exists {
		return usage.ErrDuplicateRecord
	}
	t.recIdx[k] = len(t.Records)
	t.Records = append(t.Records, Record{R: r, TZ: tz, Day: day})
	return nil
}

// mark is the state of a transaction before one meter request.
type mark struct {
	ledger                  ledgerstage.LedgerMark
	meters, records, events int
}

func (t *Tx) mark(acct string) mark {
	return mark{ledger: t.MarkAccount(acct), meters: len(t.Meters), records: len(t.Records), events: len(t.Events)}
}

// rollback drops what was staged since m (see ledgerstage.RollbackTo).
func (t *Tx) rollback(m mark) {
	t.RollbackTo(m.ledger)
	for _, sm := range t.Meters[m.meters:] {
		delete(t.meterIdx, sm.K)
	}
	t.Meters = t.Meters[:m.meters]
	for _, sr := range t.Records[m.records:] {
		delete(t.recIdx, RecKey{sr.R.AccountID, sr.R.ID})
	}
	t.Records = t.Records[:m.records]
	t.Events = t.Events[:m.events]
}

// Changed returns the accounts whose rows the flush must write, in load
// order.
func (t *Tx) Changed() []*ledgerstage.Account {
	var out []*ledgerstage.Account
	for _, a := range t.Order {
		if a.Changed() {
			out = append(out, a)
		}
	}
	return out
}

// LatestHolds returns the latest staged version of each hold, in hold ID
// order.
func (t *Tx) LatestHolds() []credits.Hold {
	ids := make([]string, 0, len(t.HoldIdx))
	for id := range t.HoldIdx {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]credits.Hold, len(ids))
	for i, id := range ids {
		out[i] = t.Holds[t.HoldIdx[id]].H
	}
	return out
}
