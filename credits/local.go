package credits

import (
	"container/heap"
	"context"
	"github.com/keyledger/keyledger/errkind"
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
	// localRefresh is how old a snapshot may be before it is read again:
	// how long a credit made by another process may go unseen by a
	// reserve that fits anyway. An older snapshot is still used while one
	// background read refreshes it (localStale bounds that), so that the
	// reserves of an account never wait for its periodic read.
	localRefresh = 2 * time.Second
	// localStale is the age past which a snapshot is not used at all: the
	// reserve reads the account itself (the background reads failed).
	localStale = 2 * localRefresh
	// localReadTimeout bounds a background read of an account.
	localReadTimeout = 5 * time.Second
	// localRecheck is the age past which a refusal reads the account again
	// before it refuses.
	localRecheck = 50 * time.Millisecond
	// localPendingTTL is how long a direct debit counts as pending at most:
	// a safety net, as every prepared spend's outcome is reported
	// (AfterSpend or AbortSpend) when its transaction ends.
	localPendingTTL = time.Hour
	// localWait bounds how long PrepareRelease, which has no context,
	// waits for a settle in flight.
	localWait = 5 * time.Second
	// localMaxDone bounds the charges a snapshot remembers having taken in;
	// past it the account is read again.
	localMaxDone = 4096
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

	// With leased holds (lease.go) the holds are drawn from leases and
	// accts is not used.
	lease   bool
	leases  map[leaseKey]*lease // each key's current lease
	retired map[*lease]struct{} // retired leases not yet released
	release func(*lease) bool   // releases a stored lease; false if it cannot start
	freed   func(*lease)        // called when a lease's last hold ended
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
	// gen counts the changes a read cannot account for (a credit or
	// adjustment, a write whose outcome is unknown): a read that began
	// under an older gen is not installed.
	gen uint64
	// refreshing: a background read of the account is in flight.
	refreshing bool
}

type localHold struct {
	h       Hold
	fp      [32]byte
	pending bool // a direct debit or negative adjustment counted until it ends (h.ID is its entry ID)
	// settling counts the settles of it in flight (prepared, outcome not
	// reported): meanwhile it neither expires nor is released, and wait
	// is closed when the last one ends.
	settling int
	wait     chan struct{}
	forget   time.Time // resolved: when it leaves the book
	idx      int       // in book.due; -1 when not queued
	lease    *lease    // the lease it is drawn from, with leased holds
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
	if l := lh.lease; l != nil {
		l.held = l.held.Sub(lh.h.Amount)
		if l.users--; l.users == 0 {
			b.freed(l)
		}
		return
	}
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
	if lh.idx >= 0 {
		heap.Remove(&b.due, lh.idx)
	}
	b.free(lh)
	lh.h.State, lh.h.ResolvedAt = state, now
	b.keep(lh, now)
}

// fresh reports whether a's snapshot may be used at now without reading
// the account again.
func (a *localAcct) fresh(now time.Time) bool {
	return a.usable(now) && now.Sub(a.readAt) < localRefresh
}

// usable reports whether a's snapshot may be used at now while a
// background read refreshes it: it is exact but for what other processes
// did since it was read, and they may only add funds (no other process
// spends while this one keeps holds: the store's spend lock), so an old
// snapshot can refuse what a fresh one would allow — and a refusal reads
// the account again — but never allow what a fresh one would refuse. A
// month boundary or a grant's expiry, which change the funds themselves,
// end it.
func (a *localAcct) usable(now time.Time) bool {
	s := a.snap
	if s == nil || now.Sub(a.readAt) >= localStale || !now.Before(s.MonthEnds) {
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
	for !a.fresh(now) || force {
		if !force && a.usable(now) {
			s.refreshLocal(id, a, now)
			break
		}
		gen := a.gen
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
		if a.gen != gen {
			continue // a change the read may lack: read again
		}
		a.install(st, now)
		force = false
	}
	return a, nil
}

// refreshLocal starts a background read of account id, unless one is in
// flight or Close has begun; the snapshot it reads is installed as a
// synchronous read's would be (not if a change it may lack happened
// meanwhile), and a failed one leaves the old snapshot, which localStale
// bounds. The caller holds b.mu.
func (s *Service) refreshLocal(id string, a *localAcct, now time.Time) {
	if a.refreshing {
		return
	}
	s.rmu.Lock()
	if s.rclosed {
		s.rmu.Unlock()
		return
	}
	s.recharges.Add(1) // Close waits for it as for a recharge
	s.rmu.Unlock()
	a.refreshing = true
	a.reading++
	gen := a.gen
	go func() {
		defer s.recharges.Done()
		ctx, cancel := context.WithTimeout(s.life, localReadTimeout)
		st, err := s.store.LedgerAccount(ctx, id, now)
		cancel()
		b := s.local
		b.mu.Lock()
		defer b.mu.Unlock()
		a.reading--
		a.refreshing = false
		// Not over a newer read (a refusal's) that finished first.
		if err == nil && a.gen == gen && b.accts[id] == a && !a.readAt.After(now) {
			a.install(st, now)
			return
		}
		if a.reading == 0 {
			a.pend = nil
		}
		b.drop(id, a)
	}()
}

// install makes st, read at now, a's snapshot. The caller holds b.mu.
func (a *localAcct) install(st Account, now time.Time) {
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
	if len(b.pend[opKey{p.AccountID, p.IdempotencyKey}]) > 0 {
		b.mu.Unlock()
		return Hold{}, ErrIdempotencyConflict // a pending debit has the key
	}
	b.mu.Unlock()
	// The key may name a write of the store: a debit or credit (a
	// conflict) or a reserve settled and forgotten here (its replay). A
	// fresh key names nothing yet.
	if !p.FreshKey && !b.lease { // with leases only fresh keys come here
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
	}
	var (
		a   *localAcct
		l   *lease
		err error
	)
	if b.lease {
		b.mu.Lock()
		l, err = s.leaseFor(ctx, leaseKey{p.AccountID, p.KeyID}, p.Amount, now.Add(p.TTL))
	} else {
		a, err = s.localCheck(ctx, p.AccountID, p.Amount, now)
	}
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
	if l != nil {
		l.draw(p.Amount, now)
		lh.lease, lh.h.KeyID = l, p.KeyID
	} else {
		a.held = a.held.Add(p.Amount)
		a.users++
	}
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
		if lh.settling > 0 { // its settle decides first
			wait := lh.wait
			b.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return Hold{}, true, ctx.Err()
			}
			continue
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
		if lh.lease != nil {
			h, retry, err := s.extendLeased(ctx, lh, p, now)
			if retry {
				continue
			}
			return h, true, err
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
		if lh.h.State != HoldActive || lh.settling > 0 || !lh.h.Amount.Equal(amount) {
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
// A hold with a settle in flight is released only if that settle did not
// commit: releaseLocal waits for its outcome (or ctx).
func (s *Service) releaseLocal(ctx context.Context, id string) (Hold, bool, error) {
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		now := s.opt.Now()
		b.sweep(now)
		lh := b.holds[id]
		if lh == nil || lh.pending {
			return Hold{}, false, nil
		}
		if lh.settling > 0 {
			wait := lh.wait
			b.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				b.mu.Lock()
				return Hold{}, true, ctx.Err()
			}
			b.mu.Lock()
			continue
		}
		switch lh.h.State {
		case HoldSettled:
			return Hold{}, true, ErrHoldSettled
		case HoldActive:
			b.resolve(lh, HoldReleased, now)
		}
		return lh.h, true, nil
	}
}

// settleLocal completes the settle request r of a process hold: the store
// writes the hold, settled, with the charge. ok false means r's hold is
// not one. A hold resolved here already fails like a stored one would.
// From here until its outcome is reported (AfterSpend, AbortSpend) the
// hold neither expires nor is released.
func (s *Service) settleLocal(r *SpendRequest) (bool, error) {
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(s.opt.Now())
	lh := b.holds[r.HoldID]
	if lh == nil || lh.pending {
		return false, nil
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
	if l := lh.lease; l != nil {
		r.Lease = l.id
		if over := r.Amount.Sub(h.Amount); over.IsPositive() && l.stored && !l.retired {
			// The lease's spare room pays for the charge above the hold
			// before other funds do: counted as drawn until the outcome.
			sp := l.room()
			if sp.Cmp(over) > 0 {
				sp = over
			}
			if sp.IsPositive() {
				l.held = l.held.Add(sp)
				r.HeldOthers = sp.Neg()
			}
		}
	} else {
		a := b.accts[h.AccountID]
		r.HeldOthers = a.held.Sub(h.Amount)
		if over := r.Amount.Sub(h.Amount); over.IsPositive() {
			// The charge above the hold counts as pending until the settle
			// ends, so that no reserve takes the funds it may charge.
			a.pended = a.pended.Add(over)
			a.users++
		}
	}
	if lh.settling == 0 {
		if lh.idx >= 0 {
			heap.Remove(&b.due, lh.idx)
		}
		lh.wait = make(chan struct{})
	}
	lh.settling++
	return true, nil
}

// pendLocal counts a direct debit r as pending until it commits (see
// AfterSpend, AbortSpend), so that no reserve takes the funds it will
// charge. The debit itself is checked by the store when it commits, with
// this process's holds counted as held (r.HeldOthers): only there is its
// outcome known — a replay of a debit that committed needs no funds, and
// debits are ordered by their commits.
func (s *Service) pendLocal(r *SpendRequest) error {
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(s.opt.Now())
	if b.keys[opKey{r.AccountID, r.IdempotencyKey}] != nil {
		return ErrIdempotencyConflict // a process reserve has the key
	}
	if b.lease {
		return nil // the leases are stored holds: the store counts them
	}
	r.HeldOthers = b.pendAdd(r.AccountID, r.EntryID, r.IdempotencyKey, r.Amount, s.opt.Now())
	return nil
}

// pendAdd counts amt on account acct as pending under id (and key) and
// returns what the process's holds set aside there. The caller holds b.mu.
func (b *book) pendAdd(acct, id, key string, amt Amount, now time.Time) Amount {
	a := b.accts[acct]
	if a == nil {
		a = &localAcct{}
		b.accts[acct] = a
	}
	lh := &localHold{pending: true, h: Hold{
		ID: id, AccountID: acct, Amount: amt, State: HoldActive, CreatedAt: now,
		ExpiresAt: now.Add(localPendingTTL), IdempotencyKey: key,
	}}
	before := a.held // pending debits are ordered by the store itself
	a.pended = a.pended.Add(amt)
	a.users++
	heap.Push(&b.due, lh)
	b.holds[id] = lh
	k := opKey{acct, key}
	b.pend[k] = append(b.pend[k], lh)
	return before
}

// adjustLocal counts a negative adjustment r as pending while the store
// applies it, so that no reserve takes the funds it may remove; the
// returned func ends that once the store call returned, whatever it
// answered, and has the account read again.
func (s *Service) adjustLocal(r *CreditRequest) func() {
	if s.local == nil || s.local.lease || !r.Amount.IsNegative() {
		return func() {}
	}
	b := s.local
	b.mu.Lock()
	r.HeldOthers = b.pendAdd(r.AccountID, r.EntryID, "", r.Amount.Neg(), s.opt.Now())
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if lh := b.holds[r.EntryID]; lh != nil && lh.pending && lh.h.State == HoldActive {
			b.resolve(lh, HoldReleased, s.opt.Now())
		}
		b.changed(r.AccountID)
	}
}

// changed marks account id as changed in a way a read in flight may lack:
// its snapshot is dropped and such a read is not installed. The caller
// holds b.mu.
func (b *book) changed(id string) {
	if a := b.accts[id]; a != nil {
		a.snap, a.done = nil, nil
		a.gen++
		b.drop(id, a)
	}
}

// AbortSpend reports that a prepared spend r (PrepareDebit, PrepareSettle)
// was not applied, or that its transaction ended without a known outcome
// (the store call returned an error): call it once for such a request,
// and AfterSpend for one that committed or was refused. With process
// holds a pending debit stops counting, a settled hold is active again
// (or expires), and the account is read again before its next check, so
// that a charge that did commit is seen. Otherwise it does nothing.
func (s *Service) AbortSpend(r SpendRequest) {
	if s.local == nil || r.Kind == 0 {
		return
	}
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	s.outcomeLocal(&r, SpendResult{}, false)
	if lh := b.holds[r.HoldID]; r.Held != nil && lh != nil && lh.lease != nil {
		// Whether the lease gave up the charge is not known: draw no more
		// from it.
		b.dropLease(lh.lease)
	}
	acct := r.AccountID
	if r.Held != nil {
		acct = r.Held.AccountID
	}
	b.changed(acct)
}

// outcomeLocal takes the outcome of a prepared spend r into the book:
// applied (res is its committed result or its refusal) or not. Its
// pending debit leaves, its settling hold is settled or active again, and
// a committed charge enters the account's snapshot. The caller holds b.mu.
func (s *Service) outcomeLocal(r *SpendRequest, res SpendResult, applied bool) {
	b := s.local
	now := s.opt.Now()
	if r.Held != nil {
		if over := r.Amount.Sub(r.Held.Amount); over.IsPositive() {
			if a := b.accts[r.Held.AccountID]; a != nil {
				a.pended = a.pended.Sub(over)
				a.users--
				defer b.drop(r.Held.AccountID, a)
			}
		}
	}
	switch {
	case r.Held != nil:
		lh := b.holds[r.HoldID]
		if lh == nil || lh.pending || lh.settling == 0 {
			break
		}
		lh.settling--
		sp := r.HeldOthers.Neg() // with a lease: its spare room this settle drew
		if l := lh.lease; l != nil && sp.IsPositive() {
			l.held = l.held.Sub(sp)
		}
		if applied && res.Err == nil && lh.h.State == HoldActive {
			if l := lh.lease; l != nil {
				// What the lease paid (or, if it could not, less than the
				// store has: never more).
				take := r.Amount
				if c := r.Held.Amount.Add(sp); take.Cmp(c) > 0 {
					take = c
				}
				l.amount, l.took = l.amount.Sub(take), l.took.Add(take)
				if res.LeaseLost {
					b.dropLease(l)
				}
			}
			b.resolve(lh, HoldSettled, now)
			lh.h = res.Hold
		}
		if lh.settling > 0 {
			break
		}
		close(lh.wait)
		if lh.h.State == HoldActive {
			heap.Push(&b.due, lh) // not settled: it expires at its deadline again
		}
	case r.Kind == SpendDebit:
		if lh := b.holds[r.EntryID]; lh != nil && lh.pending && lh.h.State == HoldActive {
			b.resolve(lh, HoldReleased, now)
		}
	}
	e := res.Entry
	if !applied || res.Err != nil || e.ID == "" {
		return
	}
	a := b.accts[e.AccountID]
	if a == nil {
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
		if len(a.done) >= localMaxDone {
			b.changed(e.AccountID) // read it again rather than remember more
			return
		}
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
	if b.lease {
		return // a credit only adds funds; see retireLeases
	}
	b.changed(id)
}

// retireLeases retires this instance's leases of account id — of key keyID
// only, if it is not "" — after a change of the policy or of a key's
// limit: they were checked against the rules as they were, so new holds
// come from new leases (another instance's leases are retired at their
// next settle, which finds the account overcommitted or the key's period
// changed).
func (s *Service) retireLeases(id, keyID string) {
	if s.local == nil || !s.local.lease {
		return
	}
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.leases {
		if l.k.acct == id && (keyID == "" || l.k.key == keyID) {
			b.dropLease(l)
		}
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
	if s.local.lease {
		return s.leaseRoom(id).Neg()
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

// withLocal adds this process's holds to an account read from the store
// (with leased holds: takes the room of its leases out of Held, as this
// instance may spend it).
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

// systemFailure tells a failure of the store (no kind, Unavailable,
// Internal) from a refusal of the ledger's rules, which writes nothing.
func systemFailure(err error) bool {
	switch errkind.Of(err) {
	case errkind.Unknown, errkind.Unavailable, errkind.Internal:
		return true
	}
	return false
}

// Keys with a spend limit under process holds.
//
// A key's limit is enforced by the store, whose counters must include every
// hold of the key. So a reserve for a key that has a limit (as the
// account's snapshot says) is written to the store like one without
// process holds, counted meanwhile as pending in the book (so that no
// process reserve takes its funds) and checked there with the process's
// holds counted as held; the account is read again afterwards. Its settle,
// release and extension go to the store too. Keys without a limit keep
// process holds.

// keyLimitedLocal reports whether keyID has a spend limit on account id
// according to the snapshot (read if needed).
func (s *Service) keyLimitedLocal(ctx context.Context, id, keyID string) bool {
	if keyID == "" {
		return false
	}
	a, err := s.localAcct(ctx, id, s.opt.Now(), false)
	if err != nil {
		return false // reserveLocal meets the error again
	}
	defer s.local.mu.Unlock()
	for _, k := range a.snap.Keys {
		if k.KeyID == keyID {
			return true
		}
	}
	return false
}

// reserveKeyed is Reserve of a key with a limit under process holds.
func (s *Service) reserveKeyed(ctx context.Context, p ReserveParams, fp [32]byte) (Hold, error) {
	now := s.opt.Now()
	b := s.local
	b.mu.Lock()
	b.sweep(now)
	if b.keys[opKey{p.AccountID, p.IdempotencyKey}] != nil {
		b.mu.Unlock()
		return s.reserveLocal(ctx, p, fp) // its replay
	}
	r := SpendRequest{
		Kind: SpendReserve, Unit: s.opt.Unit.Code, AccountID: p.AccountID, HoldID: s.ids.New(s.opt.HoldIDPrefix),
		Amount: p.Amount, TTL: p.TTL, Reference: p.Reference, IdempotencyKey: p.IdempotencyKey, Fingerprint: fp,
		KeyID: p.KeyID,
	}
	r.HeldOthers = b.pendAdd(p.AccountID, r.HoldID, "", p.Amount, now)
	b.mu.Unlock()
	res, err := s.spend(ctx, r)
	b.mu.Lock()
	if lh := b.holds[r.HoldID]; lh != nil && lh.pending && lh.h.State == HoldActive {
		b.resolve(lh, HoldReleased, s.opt.Now())
	}
	b.changed(p.AccountID)
	b.mu.Unlock()
	return res.Hold, err
}

// extendKeyed is Extend of a stored hold under process holds: the raise is
// pending in the book meanwhile and checked with the process's holds.
func (s *Service) extendKeyed(ctx context.Context, r SpendRequest) (Hold, error) {
	h, err := s.store.LedgerHold(ctx, r.HoldID)
	if err != nil {
		return Hold{}, err
	}
	d := r.Amount.Sub(h.Amount)
	if !d.IsPositive() {
		res, err := s.spend(ctx, r)
		return res.Hold, err
	}
	b := s.local
	b.mu.Lock()
	b.sweep(s.opt.Now())
	pendID := "extend:" + r.HoldID + ":" + r.Amount.String()
	if b.holds[pendID] != nil {
		pendID += ":" + s.ids.New("")
	}
	r.HeldOthers = b.pendAdd(h.AccountID, pendID, "", d, s.opt.Now())
	b.mu.Unlock()
	res, err := s.spend(ctx, r)
	b.mu.Lock()
	if lh := b.holds[pendID]; lh != nil && lh.pending && lh.h.State == HoldActive {
		b.resolve(lh, HoldReleased, s.opt.Now())
	}
	b.changed(h.AccountID)
	b.mu.Unlock()
	return res.Hold, err
}
