package memstore

import (
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/keyledger/keyledger/credits"
)

// ledgers is the credits part of the Store. Each account has its own mutex,
// so spends on different accounts run in parallel; the maps from IDs to
// accounts have one RWMutex that is never held while an account is being
// locked (lock order: account, then maps).
type ledgers struct {
	mu    sync.RWMutex
	accts map[string]*ledgerAcct
	holds [holdShards]holdShard // hold ID → owning account, sharded by ID
	seed  maphash.Seed
}

// holdShards spreads the hold index over locks, so that reserves on
// different accounts do not queue on one mutex.
const holdShards = 32

type holdShard struct {
	mu sync.RWMutex
	m  map[string]*ledgerAcct
	_  [40]byte // keep shards on separate cache lines
}

func (l *ledgers) holdShard(id string) *holdShard {
	return &l.holds[maphash.String(l.seed, id)%holdShards]
}

type ledgerAcct struct {
	mu      sync.Mutex
	tx      memTx // reused by every operation under mu
	st      credits.AccountState
	entries chunkLog[credits.Entry] // entry i has Seq i+1
	// ops maps an idempotency key to its record in opLog: an index keeps
	// the map's slots small, so it grows with less copying and scanning.
	ops     map[string]int
	opLog   chunkLog[credits.OpRecord]
	holds   map[string]*credits.Hold
	active  map[string]*credits.Hold // the holds in state active
	nextDue time.Time                // earliest deadline in active; zero if none
	slab    []credits.Hold           // where new holds are stored, holdSlab at a time
}

const holdSlab = 128

// newHold returns a zero hold in the account's slab: one allocation per
// holdSlab holds. Holds are never deleted, so slabs never leak.
func (a *ledgerAcct) newHold() *credits.Hold {
	if len(a.slab) == cap(a.slab) {
		a.slab = make([]credits.Hold, 0, holdSlab)
	}
	a.slab = a.slab[:len(a.slab)+1]
	return &a.slab[len(a.slab)-1]
}

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
	l := &ledgers{accts: make(map[string]*ledgerAcct), seed: maphash.MakeSeed()}
	for i := range l.holds {
		l.holds[i].m = make(map[string]*ledgerAcct)
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
	sh := l.holdShard(holdID)
	sh.mu.RLock()
	a, ok := sh.m[holdID]
	sh.mu.RUnlock()
	if !ok {
		return nil, credits.ErrHoldNotFound
	}
	return a, nil
}

// dueHolds returns copies of the active holds whose deadline is not after
// now, without changing anything. a.mu must be held.
func (a *ledgerAcct) dueHolds(now time.Time) []credits.Hold {
	if a.nextDue.IsZero() || now.Before(a.nextDue) {
		return nil
	}
	var due []credits.Hold
	for _, h := range a.active {
		if !now.Before(h.ExpiresAt) {
			due = append(due, *h)
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
			h := a.holds[d.ID]
			h.State, h.ResolvedAt = credits.HoldExpired, h.ExpiresAt
			delete(a.active, d.ID)
		}
		a.nextDue = time.Time{}
		for _, h := range a.active {
			if a.nextDue.IsZero() || h.ExpiresAt.Before(a.nextDue) {
				a.nextDue = h.ExpiresAt
			}
		}
	}
	es := a.st.Advance(now, due) // due holds copies taken while still active
	for _, e := range es {
		a.entries.add(&e)
	}
	return len(es), len(due)
}

// snapshot returns a copy of the state as of now, nothing persisted.
func (a *ledgerAcct) snapshot(now time.Time) credits.AccountState {
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

// memTx is a credits.Tx over one locked account.
type memTx struct {
	l        *ledgers
	a        *ledgerAcct
	now      time.Time
	advanced bool
}

func (t *memTx) State(_ context.Context, id string) (*credits.AccountState, error) {
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
	h, ok := t.a.holds[id]
	if !ok {
		return credits.Hold{}, credits.ErrHoldNotFound
	}
	return *h, nil
}

func (t *memTx) Op(_ context.Context, _, key string) (credits.OpRecord, bool, error) {
	i, ok := t.a.ops[key]
	if !ok {
		return credits.OpRecord{}, false, nil
	}
	return *t.a.opLog.at(i), true, nil
}

func (t *memTx) ClaimOp(_ context.Context, _, key string, rec credits.OpRecord) (credits.OpRecord, bool, error) {
	if i, ok := t.a.ops[key]; ok {
		return *t.a.opLog.at(i), false, nil
	}
	t.a.ops[key] = t.a.opLog.add(&rec)
	return rec, true, nil
}

func (t *memTx) Entry(_ context.Context, _ string, seq int64) (credits.Entry, error) {
	if seq < 1 || seq > int64(t.a.entries.n) {
		return credits.Entry{}, fmt.Errorf("memstore: ledger entry %d of %s is missing", seq, t.a.st.ID)
	}
	return *t.a.entries.at(int(seq - 1)), nil
}

func (t *memTx) AddEntry(_ context.Context, e credits.Entry) error {
	t.a.entries.add(&e)
	return nil
}

func (t *memTx) PutHold(_ context.Context, h credits.Hold) error {
	a := t.a
	if old, ok := a.holds[h.ID]; ok {
		*old = h
	} else {
		p := a.newHold()
		*p = h
		a.holds[h.ID] = p
		sh := t.l.holdShard(h.ID)
		sh.mu.Lock()
		sh.m[h.ID] = a
		sh.mu.Unlock()
	}
	if h.State == credits.HoldActive {
		a.active[h.ID] = a.holds[h.ID]
		if a.nextDue.IsZero() || h.ExpiresAt.Before(a.nextDue) {
			a.nextDue = h.ExpiresAt
		}
	} else {
		delete(a.active, h.ID) // nextDue may now be early; advance recomputes it
	}
	return nil
}

// OpenLedger implements credits.AccountStore.
func (s *Store) OpenLedger(_ context.Context, st credits.AccountState) error {
	l := s.ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.accts[st.ID]; ok {
		return credits.ErrAlreadyOpen
	}
	l.accts[st.ID] = &ledgerAcct{
		st: st.Clone(), ops: make(map[string]int),
		holds: make(map[string]*credits.Hold), active: make(map[string]*credits.Hold),
	}
	return nil
}

// SetLedgerPolicy implements credits.AccountStore.
func (s *Store) SetLedgerPolicy(_ context.Context, id string, p credits.Policy, now time.Time) (credits.AccountState, error) {
	a, err := s.ledger.acct(id)
	if err != nil {
		return credits.AccountState{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.advance(now)
	a.st.SetPolicy(p, now)
	return a.st.Clone(), nil
}

// LedgerAccount implements credits.AccountStore.
func (s *Store) LedgerAccount(_ context.Context, id string, now time.Time) (credits.AccountState, error) {
	a, err := s.ledger.acct(id)
	if err != nil {
		return credits.AccountState{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.snapshot(now), nil
}

// LedgerCredit implements credits.EntryStore.
func (s *Store) LedgerCredit(ctx context.Context, now time.Time, r credits.CreditRequest) (credits.Entry, error) {
	a, err := s.ledger.acct(r.AccountID)
	if err != nil {
		return credits.Entry{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return credits.ApplyCredit(ctx, a.begin(s.ledger, now), now, r)
}

// LedgerEntries implements credits.EntryStore.
func (s *Store) LedgerEntries(_ context.Context, q credits.EntryQuery) ([]credits.Entry, error) {
	a, err := s.ledger.acct(q.AccountID)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	i := a.entries.n
	if q.BeforeSeq > 0 && q.BeforeSeq-1 < int64(i) {
		i = int(q.BeforeSeq - 1)
	}
	var out []credits.Entry
	for i--; i >= 0 && len(out) < q.Limit; i-- {
		e := *a.entries.at(i)
		if (len(q.Types) > 0 && !slices.Contains(q.Types, e.Type)) ||
			(!q.From.IsZero() && e.CreatedAt.Before(q.From)) || (!q.To.IsZero() && !e.CreatedAt.Before(q.To)) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// LedgerBalanceAt implements credits.EntryStore.
func (s *Store) LedgerBalanceAt(_ context.Context, id string, t time.Time) (credits.Amount, error) {
	a, err := s.ledger.acct(id)
	if err != nil {
		return credits.Amount{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var bal credits.Amount
	for i := a.entries.n - 1; i >= 0; i-- {
		if e := a.entries.at(i); !e.CreatedAt.After(t) {
			bal = e.BalanceAfter
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

// ApplySpends implements credits.SpendStore. Requests are applied one by
// one, each under its account's lock.
func (s *Store) ApplySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	for i := range reqs {
		r, err := s.applySpend(ctx, now, reqs[i])
		if err != nil {
			return err
		}
		res[i] = r
	}
	return nil
}

func (s *Store) applySpend(ctx context.Context, now time.Time, r credits.SpendRequest) (credits.SpendResult, error) {
	var (
		a   *ledgerAcct
		err error
	)
	if r.Kind == credits.SpendSettle || r.Kind == credits.SpendRelease {
		a, err = s.ledger.holdAcct(r.HoldID)
	} else {
		a, err = s.ledger.acct(r.AccountID)
	}
	if err != nil {
		return credits.SpendResult{Err: err}, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return credits.ApplySpend(ctx, a.begin(s.ledger, now), now, r)
}

// LedgerHold implements credits.SpendStore.
func (s *Store) LedgerHold(_ context.Context, id string) (credits.Hold, error) {
	a, err := s.ledger.holdAcct(id)
	if err != nil {
		return credits.Hold{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return *a.holds[id], nil
}

// ExpireLedgers implements credits.SpendStore.
func (s *Store) ExpireLedgers(_ context.Context, now time.Time, accountID string, limit int) (credits.ExpiryReport, error) {
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
