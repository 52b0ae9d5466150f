package credits

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// Process holds.
//
// A store that is the only one spending from its data (SQLite opened with
// sqlitestore.Options.ProcessHolds, which takes the file's spending lock)
// says so with a ProcessHolds method that returns true. The Service then
// keeps holds in this process's memory instead of writing each one: a
// reserve, an extend and a release write nothing, and a settlement writes
// the hold (settled) together with its debit entry — with a metered
// request, in the transaction that records the usage. A request thus costs
// one durable write instead of two.
//
// The funds check is the same as the store's, on a snapshot of the
// account as committed plus the holds and pending debits of this process:
//
//   - The snapshot is read from the store (one read transaction) when the
//     account is first used, every localRefresh, at a month boundary or a
//     grant's expiry, and again before a refusal, so that a top-up by
//     another process (keyctl) is seen.
//   - Every durable spend of this process reaches AfterSpend after its
//     commit; there the hold (or pending debit) leaves the book and its
//     charge enters the snapshot in one step, so funds are never counted
//     free in between. An entry the snapshot already includes (read after
//     the commit) is recognised by its sequence number and not applied
//     twice.
//   - Direct debits are counted as pending until they commit (or, if their
//     transaction fails, until localPendingTTL passes).
//
// If the process dies, its holds die with its requests, which is what a
// hold is for; nothing durable needs cleaning up.
//
// Every Service on one store shares the store's book (the Shared
// capability), as all of them spend from the same data.
type processHolds interface {
	ProcessHolds() bool
	Shared(key any, mk func() any) any
	// LedgerReserveKey reads the idempotency record of (accountID, key),
	// so that a process reserve's key meets the keys of the store's
	// writes: found, and if it is a reserve's, its fingerprint and hold.
	LedgerReserveKey(ctx context.Context, accountID, key string) (fp [32]byte, holdID string, found bool, err error)
}

// bookKey is the key of the book in the store's Shared values.
type bookKey struct{}

const (
	// localRefresh bounds how old a snapshot may be: how long a credit
	// made by another process may go unseen by a reserve that fits anyway.
	localRefresh = 2 * time.Second
	// localRecheck is the age past which a refusal reads the account again
	// before it refuses.
	localRecheck = 50 * time.Millisecond
	// localPendingTTL is how long a direct debit counts as pending if its
	// commit is never reported (its transaction failed).
	localPendingTTL = time.Minute
	// localKeep is how long a resolved hold stays readable, and its
	// idempotency key answered, after it was settled, released or expired.
	// A settled hold stays readable from the store afterwards.
	localKeep = 10 * time.Minute
	// localMaxKept bounds the resolved holds kept, whatever their age.
	localMaxKept = 1 << 16
	// localMaxAccts is how many accounts' snapshots the book keeps before
	// it drops those nothing of this process refers to.
	localMaxAccts = 1 << 16
)

// book is the Service's process holds: a snapshot per account and the
// holds and pending debits of this process.
type book struct {
	mu    sync.Mutex
	accts map[string]*localAcct
	holds map[string]*localHold // active and recently resolved holds
	keys  map[opKey]*localHold  // reserve idempotency keys
	due   dueHeap               // active holds and pending debits by deadline
	kept  []*localHold          // resolved holds, oldest first
	// pend are the pending direct debits by idempotency key: a replay's
	// result names the first debit's entry, not its own.
	pend map[opKey][]*localHold
}

type opKey struct{ acct, key string }

type localAcct struct {
	snap   *Account // as committed; nil until read
	readAt time.Time
	base   int64          // snap.Seq as read
	done   map[int64]bool // entries after base already in snap (a replay's result repeats one)
	held   Amount         // active process holds
	pended Amount         // pending direct debits
	users  int            // active holds and pending debits
	// reading counts reads of the account in flight; while there are any,
	// pend keeps the charges committed meanwhile (by entry Seq), which a
	// read taken before their commit lacks.
	reading int
	pend    map[int64]Amount
}

type localHold struct {
	h       Hold
	fp      [32]byte
	pending bool // a direct debit counted until it commits (h.ID is its entry ID)
	// settling: a settle of it was prepared, so it may have committed
	// unreported (an ambiguous failure); if it then expires, the account's
	// snapshot is read again, as it may lack the charge.
	settling bool
	forget   time.Time // resolved: when it leaves the book
	idx      int       // in book.due; -1 when not queued
}

func newBook() *book {
	return &book{
		accts: make(map[string]*localAcct), holds: make(map[string]*localHold),
		keys: make(map[opKey]*localHold), pend: make(map[opKey][]*localHold),
	}
}

// sweep expires the holds due by now and forgets resolved ones past
// localKeep (or past localMaxKept). The caller holds b.mu.
func (b *book) sweep(now time.Time) {
	for len(b.due) > 0 && !now.Before(b.due[0].h.ExpiresAt) {
		lh := heap.Pop(&b.due).(*localHold)
		if a := b.accts[lh.h.AccountID]; lh.settling || lh.pending {
			a.readAt = time.Time{}
		}
		b.free(lh)
		lh.h.State, lh.h.ResolvedAt = HoldExpired, lh.h.ExpiresAt
		b.keep(lh, now)
	}
	n := 0
	for n < len(b.kept) && (len(b.kept)-n > localMaxKept || !now.Before(b.kept[n].forget)) {
		lh := b.kept[n]
		b.kept[n] = nil
		n++
		delete(b.holds, lh.h.ID)
		if lh.h.IdempotencyKey != "" {
			if k := (opKey{lh.h.AccountID, lh.h.IdempotencyKey}); b.keys[k] == lh {
				delete(b.keys, k)
			}
		}
	}
	b.kept = b.kept[n:]
}

// free takes an active hold's amount out of its account's held funds.
func (b *book) free(lh *localHold) {
	a := b.accts[lh.h.AccountID]
	if lh.pending {
		a.pended = a.pended.Sub(lh.h.Amount)
	} else {
		a.held = a.held.Sub(lh.h.Amount)
	}
	a.users--
	b.drop(lh.h.AccountID, a)
}

// drop forgets an account nothing refers to.
func (b *book) drop(id string, a *localAcct) {
	if a.users == 0 && a.reading == 0 && a.snap == nil {
		delete(b.accts, id)
	}
}

// evict drops the snapshots of the accounts with no holds, pending debits
// or reads of this process, so that the book stays bounded however many
// accounts pass through it. The caller holds b.mu.
func (b *book) evict() {
	for id, a := range b.accts {
		if a.users == 0 && a.reading == 0 {
			delete(b.accts, id)
		}
	}
}

// keep keeps a resolved hold until localKeep after now; a pending debit
// leaves at once.
func (b *book) keep(lh *localHold, now time.Time) {
	if lh.pending {
		delete(b.holds, lh.h.ID)
		k := opKey{lh.h.AccountID, lh.h.IdempotencyKey}
		l := b.pend[k]
		for i, p := range l {
			if p == lh {
				l = append(l[:i:i], l[i+1:]...)
				break
			}
		}
		if len(l) == 0 {
			delete(b.pend, k)
		} else {
			b.pend[k] = l
		}
		return
	}
	lh.forget = now.Add(localKeep)
	b.kept = append(b.kept, lh)
}

// resolve marks an active hold settled or released. The caller holds b.mu.
func (b *book) resolve(lh *localHold, state HoldState, now time.Time) {
	heap.Remove(&b.due, lh.idx)
	b.free(lh)
	lh.h.State, lh.h.ResolvedAt = state, now
	b.keep(lh, now)
}

// fresh reports whether a's snapshot may be used at now.
func (a *localAcct) fresh(now time.Time) bool {
	s := a.snap
	if s == nil || now.Sub(a.readAt) >= localRefresh || !now.Before(s.MonthEnds) {
		return false
	}
	return s.NextExpiry.IsZero() || now.Before(s.NextExpiry)
}

// check tells whether amt more may be held or debited from a at now.
func (a *localAcct) check(amt Amount) error {
	c := *a.snap
	c.Held = c.Held.Add(a.held).Add(a.pended)
	return c.CanSpend(amt)
}

// localAcct returns the account's entry with a snapshot fresh at now,
// reading it from the store if needed (force: even if fresh enough). It
// returns with b.mu held, and with it released on error.
func (s *Service) localAcct(ctx context.Context, id string, now time.Time, force bool) (*localAcct, error) {
	b := s.local
	b.mu.Lock()
	b.sweep(now)
	a := b.accts[id]
	if a == nil {
		if len(b.accts) >= localMaxAccts {
			b.evict()
		}
		a = &localAcct{}
		b.accts[id] = a
	}
	if a.fresh(now) && !force {
		return a, nil
	}
	a.reading++
	b.mu.Unlock()
	st, err := s.store.LedgerAccount(ctx, id, now)
	b.mu.Lock()
	a.reading--
	if err != nil {
		if a.reading == 0 {
			a.pend = nil
		}
		b.drop(id, a)
		b.mu.Unlock()
		return nil, err
	}
	// The charges this process committed while the account was read and
	// that the read lacks (Seq after the read's).
	for seq, charge := range a.pend { // a replay repeats a Seq: a map keeps one
		if seq > st.Seq {
			st.charge(charge)
		}
	}
	if a.reading == 0 {
		a.pend = nil
	}
	a.snap, a.readAt, a.base, a.done = &st, now, st.Seq, nil
	return a, nil
}

// localCheck runs the funds check of amt on account id, reading the
// account again before a refusal. It returns with b.mu held on success.
func (s *Service) localCheck(ctx context.Context, id string, amt Amount, now time.Time) (*localAcct, error) {
	a, err := s.localAcct(ctx, id, now, false)
	if err != nil {
		return nil, err
	}
	if a.snap.Unit != s.opt.Unit.Code {
		s.local.mu.Unlock()
		return nil, ErrUnitMismatch
	}
	if err := a.check(amt); err == nil {
		return a, nil
	} else if now.Sub(a.readAt) < localRecheck {
		s.local.mu.Unlock()
		return nil, err
	}
	s.local.mu.Unlock()
	if a, err = s.localAcct(ctx, id, now, true); err != nil {
		return nil, err
	}
	if err := a.check(amt); err != nil {
		s.local.mu.Unlock()
		return nil, err
	}
	return a, nil
}

// reserveLocal is Reserve with a process hold.
func (s *Service) reserveLocal(ctx context.Context, p ReserveParams, fp [32]byte) (Hold, error) {
	now := s.opt.Now()
	b := s.local
	b.mu.Lock()
	b.sweep(now)
	if lh := b.keys[opKey{p.AccountID, p.IdempotencyKey}]; lh != nil {
		defer b.mu.Unlock()
		if lh.fp != fp {
			return Hold{}, ErrIdempotencyConflict
		}
		return lh.h.at(now), nil
	}
	b.mu.Unlock()
	// The key may name a write of the store: a debit or credit (a
	// conflict) or a reserve settled and forgotten here (its replay).
	kfp, holdID, found, err := s.store.(processHolds).LedgerReserveKey(ctx, p.AccountID, p.IdempotencyKey)
	if err != nil {
		return Hold{}, err
	}
	if found {
		if holdID == "" || kfp != fp {
			return Hold{}, ErrIdempotencyConflict
		}
		h, err := s.store.LedgerHold(ctx, holdID)
		return h.at(now), err
	}
	a, err := s.localCheck(ctx, p.AccountID, p.Amount, now)
	if err != nil {
		return Hold{}, err
	}
	defer b.mu.Unlock()
	k := opKey{p.AccountID, p.IdempotencyKey}
	if lh := b.keys[k]; lh != nil { // a concurrent reserve with the same key won
		if lh.fp != fp {
			return Hold{}, ErrIdempotencyConflict
		}
		return lh.h.at(now), nil
	}
	lh := &localHold{fp: fp, h: Hold{
		ID: s.ids.New(s.opt.HoldIDPrefix), AccountID: p.AccountID, Amount: p.Amount, State: HoldActive,
		Reference: p.Reference, IdempotencyKey: p.IdempotencyKey, CreatedAt: now, ExpiresAt: now.Add(p.TTL),
	}}
	a.held = a.held.Add(p.Amount)
	a.users++
	heap.Push(&b.due, lh)
	b.holds[lh.h.ID] = lh
	b.keys[k] = lh
	return lh.h, nil
}

// localHold returns the process hold id, if this Service has it. ok false
// means the store has it or nobody does.
func (s *Service) localHold(id string) (Hold, bool) {
	if s.local == nil {
		return Hold{}, false
	}
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(s.opt.Now())
	lh := b.holds[id]
	if lh == nil || lh.pending {
		return Hold{}, false
	}
	return lh.h, true
}

// extendLocal is Extend on a process hold; ok false means id is not one.
func (s *Service) extendLocal(ctx context.Context, p ExtendParams) (Hold, bool, error) {
	now := s.opt.Now()
	b := s.local
	for {
		b.mu.Lock()
		b.sweep(now)
		lh := b.holds[p.HoldID]
		if lh == nil || lh.pending {
			b.mu.Unlock()
			return Hold{}, false, nil
		}
		switch lh.h.State {
		case HoldSettled:
			b.mu.Unlock()
			return Hold{}, true, ErrHoldSettled
		case HoldReleased:
			b.mu.Unlock()
			return Hold{}, true, ErrHoldReleased
		case HoldExpired:
			b.mu.Unlock()
			return Hold{}, true, ErrHoldExpired
		}
		d := p.Amount.Sub(lh.h.Amount)
		if !d.IsPositive() {
			s.moveDeadline(lh, p.TTL, now)
			h := lh.h
			b.mu.Unlock()
			return h, true, nil
		}
		acct, amount := lh.h.AccountID, lh.h.Amount
		b.mu.Unlock()
		a, err := s.localCheck(ctx, acct, d, now)
		if err != nil {
			return Hold{}, true, err
		}
		if lh.h.State != HoldActive || !lh.h.Amount.Equal(amount) {
			b.mu.Unlock() // changed while the account was read: again
			continue
		}
		a.held = a.held.Add(d)
		lh.h.Amount = p.Amount
		s.moveDeadline(lh, p.TTL, now)
		h := lh.h
		b.mu.Unlock()
		return h, true, nil
	}
}

// moveDeadline moves an active process hold's deadline to now + ttl if
// that is later. The caller holds b.mu.
func (s *Service) moveDeadline(lh *localHold, ttl time.Duration, now time.Time) {
	if exp := now.Add(ttl); ttl > 0 && exp.After(lh.h.ExpiresAt) {
		lh.h.ExpiresAt = exp
		heap.Fix(&s.local.due, lh.idx)
	}
}

// releaseLocal is Release on a process hold; ok false means id is not one.
func (s *Service) releaseLocal(id string) (Hold, bool, error) {
	now := s.opt.Now()
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(now)
	lh := b.holds[id]
	if lh == nil || lh.pending {
		return Hold{}, false, nil
	}
	switch lh.h.State {
	case HoldSettled:
		return Hold{}, true, ErrHoldSettled
	case HoldActive:
		b.resolve(lh, HoldReleased, now)
	}
	return lh.h, true, nil
}

// settleLocal completes the settle request r of a process hold: the store
// writes the hold, settled, with the charge. ok false means r's hold is
// not one. A hold resolved here already fails like a stored one would.
func (s *Service) settleLocal(r *SpendRequest) (bool, error) {
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(s.opt.Now())
	lh := b.holds[r.HoldID]
	if lh == nil || lh.pending {
		return false, nil
	}
	if lh.settling && lh.h.State != HoldSettled {
		// An earlier settle may have committed unreported: the store
		// answers, replaying it if it did; if not, the hold as it is here
		// decides (released or expired fail there as here).
		h := lh.h
		r.Held, r.ReserveFingerprint = &h, lh.fp
		return true, nil
	}
	switch lh.h.State {
	case HoldReleased:
		return true, ErrHoldReleased
	case HoldExpired:
		return true, ErrHoldExpired
	case HoldSettled:
		return false, nil // the store has it: a replay is answered there
	}
	h := lh.h
	r.Held, r.ReserveFingerprint = &h, lh.fp
	r.HeldOthers = b.accts[h.AccountID].held.Sub(h.Amount)
	lh.settling = true
	return true, nil
}

// pendLocal counts a direct debit r as pending until it commits (see
// AfterSpend, AbortSpend), so that no reserve takes the funds it will
// charge. The debit itself is checked by the store when it commits, with
// this process's holds counted as held (r.HeldOthers): only there is its
// outcome known — a replay of a debit that committed needs no funds, and
// debits are ordered by their commits.
func (s *Service) pendLocal(r *SpendRequest) error {
	now := s.opt.Now()
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(now)
	if b.keys[opKey{r.AccountID, r.IdempotencyKey}] != nil {
		return ErrIdempotencyConflict // a process reserve has the key
	}
	a := b.accts[r.AccountID]
	if a == nil {
		a = &localAcct{}
		b.accts[r.AccountID] = a
	}
	lh := &localHold{pending: true, h: Hold{
		ID: r.EntryID, AccountID: r.AccountID, Amount: r.Amount, State: HoldActive, CreatedAt: now,
		ExpiresAt: now.Add(localPendingTTL), IdempotencyKey: r.IdempotencyKey,
	}}
	r.HeldOthers = a.held
	a.pended = a.pended.Add(r.Amount)
	a.users++
	heap.Push(&b.due, lh)
	b.holds[lh.h.ID] = lh
	k := opKey{r.AccountID, r.IdempotencyKey}
	b.pend[k] = append(b.pend[k], lh)
	return nil
}

// AbortSpend tells the Service that the transaction of a prepared spend r
// (PrepareDebit, PrepareSettle) failed, or may have: its caller got an
// error. With process holds, a pending debit stops counting and the
// account is read again before its next check, so that a charge that did
// commit is seen. Otherwise it does nothing. A spend whose commit is
// reported later still reaches AfterSpend.
func (s *Service) AbortSpend(r SpendRequest) {
	if s.local == nil || r.Kind == 0 {
		return
	}
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	acct := r.AccountID
	if r.Held != nil {
		acct = r.Held.AccountID
	}
	if lh := b.holds[r.EntryID]; r.Kind == SpendDebit && lh != nil && lh.pending && lh.h.State == HoldActive {
		b.resolve(lh, HoldReleased, s.opt.Now())
	}
	if a := b.accts[acct]; a != nil {
		a.readAt = time.Time{}
	}
}

// committedLocal takes a committed spend into the book: its process hold or
// pending debit leaves, and its charge enters the account's snapshot.
func (s *Service) committedLocal(res SpendResult) {
	now := s.opt.Now()
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	e := res.Entry
	if id := res.Hold.ID; id != "" {
		if lh := b.holds[id]; lh != nil && !lh.pending && lh.h.State == HoldActive {
			b.resolve(lh, HoldSettled, now)
			lh.h = res.Hold
		}
	} else if l := b.pend[opKey{e.AccountID, e.IdempotencyKey}]; e.ID != "" && len(l) > 0 {
		b.resolve(l[0], HoldSettled, now) // a debit under this key committed or replayed
	}
	a := b.accts[e.AccountID]
	if e.ID == "" || a == nil {
		return
	}
	charge := e.Amount.Neg()
	if a.reading > 0 {
		if a.pend == nil {
			a.pend = make(map[int64]Amount)
		}
		a.pend[e.Seq] = charge
	}
	if a.snap != nil && e.Seq > a.base && !a.done[e.Seq] {
		if a.done == nil {
			a.done = make(map[int64]bool)
		}
		a.done[e.Seq] = true
		a.snap.charge(charge)
	}
}

// forgetLocal drops account id's snapshot: a write of another kind
// (credit, policy) changed it.
func (s *Service) forgetLocal(id string) {
	if s.local == nil {
		return
	}
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	if a := b.accts[id]; a != nil {
		a.snap = nil
		b.drop(id, a)
	}
}

// keyLocal reports whether a process reserve has the key (accountID, key).
func (s *Service) keyLocal(accountID, key string) bool {
	if s.local == nil {
		return false
	}
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(s.opt.Now())
	return b.keys[opKey{accountID, key}] != nil
}

// heldLocal is what this process holds on account id.
func (s *Service) heldLocal(id string) Amount {
	if s.local == nil {
		return Amount{}
	}
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(s.opt.Now())
	if a := b.accts[id]; a != nil {
		return a.held.Add(a.pended)
	}
	return Amount{}
}

// dueHeap orders process holds by when the book must look at them again.
type dueHeap []*localHold

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].h.ExpiresAt.Before(h[j].h.ExpiresAt) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *dueHeap) Push(x any) {
	lh := x.(*localHold)
	lh.idx = len(*h)
	*h = append(*h, lh)
}
func (h *dueHeap) Pop() any {
	old := *h
	lh := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	lh.idx = -1
	return lh
}

// withLocal adds this process's holds to an account read from the store.
func (s *Service) withLocal(a Account) Account {
	if h := s.heldLocal(a.ID); !h.IsZero() {
		a.Held = a.Held.Add(h)
		a.Available = a.Available.Sub(h)
	}
	return a
}

// charge takes a committed charge c into a snapshot.
func (a *Account) charge(c Amount) {
	a.Balance = a.Balance.Sub(c)
	a.Available = a.Balance.Sub(a.Held)
	a.UsedThisMonth = a.UsedThisMonth.Add(c)
	a.Debt = a.debt()
}
