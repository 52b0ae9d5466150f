package memstore

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
)

// ledgers is the credits part of the db. Each account has its own mutex,
// so spends on different accounts run in parallel; the maps from IDs to
// accounts have one RWMutex that is never held while an account is being
// locked (lock order: account, then maps).
type ledgers struct {
	outbox *outboxData // events written with ledger changes (events.go)
	mu     sync.RWMutex
	accts  map[string]*ledgerAcct
	list   []*ledgerAcct         // by ledgerAcct.num
	holds  [holdShards]holdShard // hold ID → owning account's num, sharded by ID
	seed   maphash.Seed
	mask   uint32 // for the indexes (see strIndex)
}

// holdShards spreads the hold index over locks, so that reserves on
// different accounts do not queue on one mutex.
const holdShards = 32

// holdShard maps hold IDs to account numbers without pointers, by 32-bit
// hash (see strIndex). A hold whose hash is taken by another account's hold goes to over,
// which is consulted first. An ID that was never stored may hash to some
// account: that account's own index then does not find it.
type holdShard struct {
	mu   sync.RWMutex
	m    map[uint32]int32
	over map[string]int32
	_    [32]byte // keep shards on separate cache lines
}

// holdShard returns id's shard (by the low bits of its hash) and its key
// there (the high 32).
func (l *ledgers) holdShard(id string) (*holdShard, uint32) {
	h := maphash.String(l.seed, id)
	return &l.holds[h%holdShards], uint32(h>>32) & l.mask
}

// indexHold records that hold id belongs to a.
func (l *ledgers) indexHold(id string, a *ledgerAcct) {
	sh, h := l.holdShard(id)
	sh.mu.Lock()
	if n, taken := sh.m[h]; !taken {
		sh.m[h] = a.num
	} else if n != a.num {
		if sh.over == nil {
			sh.over = make(map[string]int32)
		}
		sh.over[id] = a.num
	}
	sh.mu.Unlock()
}

type ledgerAcct struct {
	num     int32 // in ledgers.list
	mu      sync.Mutex
	tx      memTx // reused by every operation under mu
	st      ledger.AccountState
	strs    arena            // the strings of the rows below (pack.go); never rebuilt
	recent  ledgerRecent     // in strs
	entries chunkLog[pentry] // entry i has Seq i+1
	ops     strIndex         // idempotency key → opLog row
	opLog   chunkLog[pop]    // rows of rolled-back claims stay, unindexed
	holds   strIndex         // hold ID → holdLog row
	holdLog chunkLog[phold]  // holds are updated in place
	active  map[int32]int64  // holdLog rows of active holds → deadline (unix ns)
	nextDue time.Time        // earliest deadline in active; zero if none
}

// ledgerRecent is the recent values of the low-cardinality fields of a
// ledger account's rows (see putRecent).
type ledgerRecent struct{ typ, desc, state, keyID recent }

// pentry is a credits.Entry without pointers; its Seq is its row + 1 and
// its AccountID the account's.
type pentry struct {
	id, typ, ref, desc, key, hold sref
	amount, balance               pamt
	expires, created              int64
}

// pop is a ledger.OpRecord and the key it was claimed under.
type pop struct {
	key  sref
	hold sref
	kind ledger.OpKind
	fp   [32]byte
	seq  int64
}

// phold is a credits.Hold without pointers.
type phold struct {
	id, state, ref, key, entryID, keyID sref
	amount, actual, charged             pamt
	created, expires, resolved          int64
	entrySeq, keyEpoch                  int64
	fp                                  [32]byte
}

// packEntry packs e. Its key is usually that of the op just claimed, and
// the hold of a settlement the one the transaction looked up: those
// strings are shared, not stored again.
func (a *ledgerAcct) packEntry(e *credits.Entry) pentry {
	s := &a.strs
	op, h := a.lastOp(), a.txHold()
	return pentry{
		id: s.put(e.ID), typ: s.putRecent(&a.recent.typ, string(e.Type)), ref: s.put(e.Reference),
		desc: s.putRecent(&a.recent.desc, e.Description), key: s.reuse(e.IdempotencyKey, op.key), hold: s.reuse(e.HoldID, h.id),
		amount: s.putAmount(e.Amount), balance: s.putAmount(e.BalanceAfter),
		expires: packTime(e.ExpiresAt), created: packTime(e.CreatedAt),
	}
}

// lastOp returns the newest op row (the zero row if none): the op claimed
// by the running operation, if it claimed one.
func (a *ledgerAcct) lastOp() pop {
	if a.opLog.n == 0 {
		return pop{}
	}
	return *a.opLog.at(a.opLog.n - 1)
}

// lastEntry returns the newest entry row (the zero row if none).
func (a *ledgerAcct) lastEntry() pentry {
	if a.entries.n == 0 {
		return pentry{}
	}
	return *a.entries.at(a.entries.n - 1)
}

// txHold returns the row of the hold the account's last transaction looked
// up or stored (the zero row if none). Rows are never removed, so a row
// number from an earlier transaction is still valid; callers only compare
// its strings.
func (a *ledgerAcct) txHold() phold {
	c := &a.tx.hold
	if !c.valid || !c.found {
		return phold{}
	}
	return *a.holdLog.at(int(c.row))
}

func (a *ledgerAcct) entry(i int) credits.Entry {
	p, s := a.entries.at(i), &a.strs
	return credits.Entry{
		ID: s.get(p.id), AccountID: a.st.ID, Seq: int64(i) + 1, Type: credits.EntryType(s.get(p.typ)),
		Amount: s.amount(p.amount), BalanceAfter: s.amount(p.balance),
		Reference: s.get(p.ref), Description: s.get(p.desc), IdempotencyKey: s.get(p.key), HoldID: s.get(p.hold),
		ExpiresAt: unpackTime(p.expires), CreatedAt: unpackTime(p.created),
	}
}

func (a *ledgerAcct) addEntry(e *credits.Entry) {
	p := a.packEntry(e)
	a.entries.add(&p)
}

func (a *ledgerAcct) op(i int32) ledger.OpRecord {
	p := a.opLog.at(int(i))
	return ledger.OpRecord{Kind: p.kind, Fingerprint: p.fp, EntrySeq: p.seq, HoldID: a.strs.get(p.hold)}
}

// packHold packs h; old, if not nil, is its previous row, whose strings are
// reused where they did not change. A new hold shares its ID and key with
// the reserve op just claimed, a settled one its entry ID with the entry
// just added.
func (a *ledgerAcct) packHold(h *credits.Hold, old *phold) phold {
	var o phold
	if old != nil {
		o = *old
	}
	op, e := a.lastOp(), a.lastEntry()
	s := &a.strs
	return phold{
		id: s.reuse(h.ID, o.id, op.hold), state: s.putRecent(&a.recent.state, string(h.State)), ref: s.reuse(h.Reference, o.ref),
		key: s.reuse(h.IdempotencyKey, o.key, op.key), entryID: s.reuse(h.EntryID, o.entryID, e.id),
		amount: s.putAmount(h.Amount), actual: s.putAmount(h.Actual),
		charged: s.putAmount(h.Charged), created: packTime(h.CreatedAt), expires: packTime(h.ExpiresAt),
		resolved: packTime(h.ResolvedAt), entrySeq: h.EntrySeq, fp: h.SettleFingerprint,
		keyID: s.putRecent(&a.recent.keyID, h.KeyID), keyEpoch: h.KeyEpoch,
	}
}

func (a *ledgerAcct) hold(i int32) credits.Hold {
	p, s := a.holdLog.at(int(i)), &a.strs
	return credits.Hold{
		ID: s.get(p.id), AccountID: a.st.ID, Amount: s.amount(p.amount), State: credits.HoldState(s.get(p.state)),
		Reference: s.get(p.ref), IdempotencyKey: s.get(p.key), CreatedAt: unpackTime(p.created),
		ExpiresAt: unpackTime(p.expires), ResolvedAt: unpackTime(p.resolved), Actual: s.amount(p.actual),
		Charged: s.amount(p.charged), EntryID: s.get(p.entryID), EntrySeq: p.entrySeq, SettleFingerprint: p.fp,
		KeyID: s.get(p.keyID), KeyEpoch: p.keyEpoch,
	}
}

// opKeys and holdKeys are the account seen as the row source of one of its
// indexes.
type (
	opKeys   ledgerAcct
	holdKeys ledgerAcct
)

func (a *opKeys) keyAt(i int32) string   { return a.strs.get(a.opLog.at(int(i)).key) }
func (a *holdKeys) keyAt(i int32) string { return a.strs.get(a.holdLog.at(int(i)).id) }

// chunkLog is an append-only sequence in fixed-size chunks, so that a long
// ledger grows without copying: element i is in chunk i/logChunk.
type chunkLog[T any] struct {
	chunks [][]T
	n      int
}

const logChunk = 1024

func (l *chunkLog[T]) add(e *T) int {
	if l.n%logChunk == 0 {
		l.chunks = append(l.chunks, make([]T, 0, logChunk))
	}
	c := &l.chunks[len(l.chunks)-1]
	*c = append(*c, *e)
	l.n++
	return l.n - 1
}

func (l *chunkLog[T]) at(i int) *T { return &l.chunks[i/logChunk][i%logChunk] }

func newLedgers() *ledgers {
	l := &ledgers{accts: make(map[string]*ledgerAcct), seed: maphash.MakeSeed(), mask: ^uint32(0)}
	for i := range l.holds {
		l.holds[i].m = make(map[uint32]int32)
	}
	return l
}

func (l *ledgers) acct(id string) (*ledgerAcct, error) {
	l.mu.RLock()
	a, ok := l.accts[id]
	l.mu.RUnlock()
	if !ok {
		return nil, credits.ErrUnknownAccount
	}
	return a, nil
}

func (l *ledgers) holdAcct(holdID string) (*ledgerAcct, error) {
	sh, h := l.holdShard(holdID)
	sh.mu.RLock()
	n, ok := sh.over[holdID]
	if !ok {
		n, ok = sh.m[h]
	}
	sh.mu.RUnlock()
	if !ok {
		return nil, credits.ErrHoldNotFound
	}
	l.mu.RLock()
	a := l.list[n]
	l.mu.RUnlock()
	return a, nil
}

// dueHolds returns copies of the active holds whose deadline is not after
// now, without changing anything. a.mu must be held.
func (a *ledgerAcct) dueHolds(now time.Time) []credits.Hold {
	if a.nextDue.IsZero() || now.Before(a.nextDue) {
		return nil
	}
	var due []credits.Hold
	n := now.UnixNano()
	for i, exp := range a.active {
		if exp <= n {
			due = append(due, a.hold(i))
		}
	}
	return due
}

// advance applies and persists due expiries. a.mu must be held.
func (a *ledgerAcct) advance(now time.Time) (entries, holds int) {
	var due []credits.Hold
	if !a.nextDue.IsZero() && !now.Before(a.nextDue) {
		due = a.dueHolds(now)
		for _, d := range due {
			i, _ := a.holds.get((*holdKeys)(a), d.ID)
			p := a.holdLog.at(int(i))
			p.state, p.resolved = a.strs.putRecent(&a.recent.state, string(credits.HoldExpired)), p.expires
			delete(a.active, i)
		}
		a.resetNextDue()
	}
	es := a.st.Advance(now, due) // due holds copies taken while still active
	for i := range es {
		a.addEntry(&es[i])
	}
	return len(es), len(due)
}

// resetNextDue recomputes the earliest deadline of the active holds.
func (a *ledgerAcct) resetNextDue() {
	a.nextDue = time.Time{}
	first := int64(math.MaxInt64)
	for _, exp := range a.active {
		first = min(first, exp)
	}
	if first != math.MaxInt64 {
		a.nextDue = unpackTime(first)
	}
}

// snapshot returns a copy of the state as of now, nothing persisted.
func (a *ledgerAcct) snapshot(now time.Time) ledger.AccountState {
	st := a.st.Clone()
	st.Advance(now, a.dueHolds(now))
	return st
}

// begin returns the account's memTx for one operation at now. a.mu must
// be held until the operation ends.
func (a *ledgerAcct) begin(l *ledgers, now time.Time) *memTx {
	a.tx = memTx{l: l, a: a, now: now}
	return &a.tx
}

// memTx is a ledger.Tx over one locked account.
type memTx struct {
	l        *ledgers
	a        *ledgerAcct
	now      time.Time
	advanced bool
	// The last hold and op looked up: a spend asks for the same one
	// several times (look up, then claim or update), and each lookup in a
	// large index is a cache miss.
	hold, op lookup
}

// lookup is the cached result of one index lookup.
type lookup struct {
	key   string
	row   int32
	found bool
	valid bool
}

func (c *lookup) get(x *strIndex, src keyed, key string) (int32, bool) {
	if !c.valid || c.key != key {
		c.row, c.found = x.get(src, key)
		c.key, c.valid = key, true
	}
	return c.row, c.found
}

// set records that key is now at row.
func (c *lookup) set(key string, row int32) {
	*c = lookup{key: key, row: row, found: true, valid: true}
}

func (t *memTx) State(_ context.Context, id string) (*ledger.AccountState, error) {
	if id != t.a.st.ID {
		return nil, credits.ErrUnknownAccount
	}
	if !t.advanced {
		t.a.advance(t.now)
		t.advanced = true
	}
	return &t.a.st, nil
}

func (t *memTx) Hold(_ context.Context, id string) (credits.Hold, error) {
	i, ok := t.hold.get(&t.a.holds, (*holdKeys)(t.a), id)
	if !ok {
		return credits.Hold{}, credits.ErrHoldNotFound
	}
	return t.a.hold(i), nil
}

func (t *memTx) Op(_ context.Context, _, key string) (ledger.OpRecord, bool, error) {
	i, ok := t.op.get(&t.a.ops, (*opKeys)(t.a), key)
	if !ok {
		return ledger.OpRecord{}, false, nil
	}
	return t.a.op(i), true, nil
}

func (t *memTx) ClaimOp(_ context.Context, _, key string, rec ledger.OpRecord) (ledger.OpRecord, bool, error) {
	a := t.a
	if i, ok := t.op.get(&a.ops, (*opKeys)(a), key); ok {
		return a.op(i), false, nil
	}
	p := pop{key: a.strs.put(key), hold: a.strs.put(rec.HoldID), kind: rec.Kind, fp: rec.Fingerprint, seq: rec.EntrySeq}
	row := int32(a.opLog.add(&p))
	a.ops.put((*opKeys)(a), key, row)
	t.op.set(key, row)
	return rec, true, nil
}

func (t *memTx) Entry(_ context.Context, _ string, seq int64) (credits.Entry, error) {
	if seq < 1 || seq > int64(t.a.entries.n) {
		return credits.Entry{}, fmt.Errorf("memstore: ledger entry %d of %s is missing", seq, t.a.st.ID)
	}
	return t.a.entry(int(seq - 1)), nil
}

func (t *memTx) AddEntry(_ context.Context, e credits.Entry) error {
	t.a.addEntry(&e)
	return nil
}

func (t *memTx) PutHold(_ context.Context, h credits.Hold) error {
	a := t.a
	i, ok := t.hold.get(&a.holds, (*holdKeys)(a), h.ID)
	var p phold
	if ok {
		row := a.holdLog.at(int(i))
		p = a.packHold(&h, row)
		*row = p
	} else {
		p = a.packHold(&h, nil)
		i = int32(a.holdLog.add(&p))
		a.holds.put((*holdKeys)(a), h.ID, i)
		t.hold.set(h.ID, i)
		t.l.indexHold(h.ID, a)
	}
	if h.State == credits.HoldActive {
		a.active[i] = p.expires
		if a.nextDue.IsZero() || h.ExpiresAt.Before(a.nextDue) {
			a.nextDue = h.ExpiresAt
		}
	} else {
		delete(a.active, i) // nextDue may now be early; advance recomputes it
	}
	return nil
}

// OpenLedger implements credits.Store.
func (s *db) OpenLedger(_ context.Context, id, unit string, p credits.Policy, now time.Time) (credits.Account, error) {
	st := ledger.NewAccountState(id, unit, p, now)
	l := s.ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.accts[st.ID]; ok {
		return credits.Account{}, credits.ErrAlreadyOpen
	}
	a := &ledgerAcct{
		st: st.Clone(), ops: newStrIndex(l.seed, l.mask), holds: newStrIndex(l.seed, l.mask), active: make(map[int32]int64),
		num: int32(len(l.list)),
	}
	l.accts[st.ID] = a
	l.list = append(l.list, a)
	return st.View(), nil
}

// SetLedgerPolicy implements credits.Store.
func (s *db) SetLedgerPolicy(_ context.Context, id string, p credits.Policy, now time.Time) (credits.Account, error) {
	a, err := s.ledger.acct(id)
	if err != nil {
		return credits.Account{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.advance(now)
	a.st.SetPolicy(p, now)
	return a.st.View(), nil
}

// SetKeyLimit implements credits.Store.
func (s *db) SetKeyLimit(_ context.Context, id, keyID string, limit credits.Amount, p credits.Period, now time.Time) (credits.KeySpend, error) {
	a, err := s.ledger.acct(id)
	if err != nil {
		return credits.KeySpend{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.advance(now)
	return a.st.SetKeyLimit(keyID, limit, p, now)
}

// LedgerAccount implements credits.Store.
func (s *db) LedgerAccount(_ context.Context, id string, now time.Time) (credits.Account, error) {
	a, err := s.ledger.acct(id)
	if err != nil {
		return credits.Account{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.snapshot(now)
	return st.View(), nil
}

// LedgerCredit implements credits.Store.
func (s *db) LedgerCredit(ctx context.Context, now time.Time, r credits.CreditRequest) (credits.Entry, error) {
	a, err := s.ledger.acct(r.AccountID)
	if err != nil {
		return credits.Entry{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return ledger.ApplyCredit(ctx, a.begin(s.ledger, now), now, r)
}

// LedgerEntries implements credits.Store.
func (s *db) LedgerEntries(_ context.Context, id string, q credits.EntryFilter, beforeSeq int64, limit int) ([]credits.Entry, error) {
	a, err := s.ledger.acct(id)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	i := a.entries.n
	if beforeSeq > 0 && beforeSeq-1 < int64(i) {
		i = int(beforeSeq - 1)
	}
	var out []credits.Entry
	for i--; i >= 0 && len(out) < limit; i-- {
		e := a.entry(i)
		if (len(q.Types) > 0 && !slices.Contains(q.Types, e.Type)) ||
			(!q.From.IsZero() && e.CreatedAt.Before(q.From)) || (!q.To.IsZero() && !e.CreatedAt.Before(q.To)) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// LedgerBalanceAt implements credits.Store.
func (s *db) LedgerBalanceAt(_ context.Context, id string, t time.Time) (credits.Amount, error) {
	a, err := s.ledger.acct(id)
	if err != nil {
		return credits.Amount{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var bal credits.Amount
	for i := a.entries.n - 1; i >= 0; i-- {
		if e := a.entries.at(i); !unpackTime(e.created).After(t) {
			bal = a.strs.amount(e.balance)
			break
		}
	}
	for _, lot := range a.st.Lots {
		if !lot.ExpiresAt.After(t) {
			bal = bal.Sub(lot.Remaining)
		}
	}
	return bal, nil
}

// ApplySpends implements credits.Store. Requests are applied one by
// one, each under its account's lock.
func (s *db) ApplySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	for i := range reqs {
		r, err := s.applySpend(ctx, now, reqs[i])
		if err != nil {
			return err
		}
		res[i] = r
	}
	return nil
}

func (s *db) applySpend(ctx context.Context, now time.Time, r credits.SpendRequest) (credits.SpendResult, error) {
	var (
		a   *ledgerAcct
		err error
	)
	if r.Kind == credits.SpendSettle || r.Kind == credits.SpendRelease || r.Kind == credits.SpendExtend {
		a, err = s.ledger.holdAcct(r.HoldID)
		if err != nil && r.Held != nil { // a process hold: stored by this settle
			a, err = s.ledger.acct(r.Held.AccountID)
		}
	} else {
		a, err = s.ledger.acct(r.AccountID)
	}
	if err != nil {
		return credits.SpendResult{Err: err}, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return ledger.ApplySpend(ctx, a.begin(s.ledger, now), now, r)
}

// LedgerHold implements credits.Store.
func (s *db) LedgerHold(_ context.Context, id string) (credits.Hold, error) {
	a, err := s.ledger.holdAcct(id)
	if err != nil {
		return credits.Hold{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	i, ok := a.holds.get((*holdKeys)(a), id)
	if !ok {
		return credits.Hold{}, credits.ErrHoldNotFound
	}
	return a.hold(i), nil
}

// ExpireLedgers implements credits.Store.
func (s *db) ExpireLedgers(_ context.Context, now time.Time, accountID string, limit int) (credits.ExpiryReport, error) {
	var accts []*ledgerAcct
	if accountID != "" {
		a, err := s.ledger.acct(accountID)
		if err != nil {
			return credits.ExpiryReport{}, nil
		}
		accts = append(accts, a)
	} else {
		s.ledger.mu.RLock()
		for _, a := range s.ledger.accts {
			accts = append(accts, a)
		}
		s.ledger.mu.RUnlock()
	}
	var rep credits.ExpiryReport
	for _, a := range accts {
		if rep.Accounts >= limit {
			break
		}
		a.mu.Lock()
		if due := (len(a.st.Lots) > 0 && !now.Before(a.st.Lots[0].ExpiresAt)) || len(a.dueHolds(now)) > 0; due {
			e, h := a.advance(now)
			rep.Accounts++
			rep.Entries += e
			rep.Holds += h
		}
		a.mu.Unlock()
	}
	return rep, nil
}
