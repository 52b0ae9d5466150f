package credits

import (
	"context"
	"errors"
	"time"

	"github.com/shopspring/decimal"
)

// Leased holds (several instances on one database).
//
// A store whose data several processes spend from (PostgreSQL) may say,
// with a LeasedHolds method that returns true, that the Service should
// lease funds: for each account and API key it spends for, the instance
// keeps one stored hold of its own — the lease — and draws the holds of
// its requests from it in memory, as process holds (local.go). A reserve,
// an extend and a release then write nothing while the lease has room, and
// the settle writes the hold, settled, with its charge and takes the part
// of the charge up to the hold's amount out of the lease in the same
// transaction (credits.SpendRequest.Lease). A request thus costs one
// durable write, and other instances see the leased funds as held, so
// they can never spend them:
//
//   - The funds check is the store's, made when the lease is created or
//     grows (a reserve or extend of the lease, with the key's limit and the
//     monthly cap, counting grants that expire before the lease does as
//     held); a draw needs only the lease's room: its amount less the holds
//     drawn from it. A settle frees its hold's unused part into that room;
//     the part it charged leaves the lease.
//   - A lease grows before it runs out, in the background; a reserve waits
//     for a write only when the room is short, and one the lease path
//     refuses is decided by a stored reserve.
//   - A lease draws for leaseMaxAge, then a successor takes over and it is
//     released once its holds end; an unused one is released after
//     leaseIdle, all of them at Close. A lease of a key with a limit ends
//     at the key's period end. A settle whose lease cannot cover it, or
//     that finds the lease outside its key's current period or the account
//     overcommitted, reports the lease lost (LeaseLost), and the instance
//     retires it; SetPolicy and SetKeyLimit retire the instance's own.
//   - If the instance dies, its leases expire at their deadline (at least
//     leaseTTL after their last growth) and the expiry sweep frees them;
//     the requests whose holds they covered died with it.
//
// Only reserves whose idempotency key was minted for the call
// (ReserveParams.FreshKey) are drawn from a lease: a client's key must meet
// the reserves of other instances, so such a reserve is stored.
type leasedHolds interface {
	LeasedHolds() bool
}

const (
	// leaseTTL is the least time a lease lives past its last growth.
	leaseTTL = time.Minute
	// leaseMargin is how long a lease outlives the deadline of every hold
	// drawn from it, at least.
	leaseMargin = 5 * time.Second
	// leaseMaxAge is how long a lease draws new holds before a successor
	// takes over (the size adapts, and a key limit is met afresh).
	leaseMaxAge = 30 * time.Second
	// leaseIdle is how long a lease with no holds is kept.
	leaseIdle = 2 * time.Second
	// leaseGrowth is how many times a reserve's amount a new lease sets
	// aside, at least.
	leaseGrowth = 8
	// leaseTimeout bounds a lease write.
	leaseTimeout = 10 * time.Second
	// leaseSpan is how long a lease's growth should last at the rate its
	// settles have taken from it.
	leaseSpan = 5 * time.Second
	// leaseTries bounds the lease writes one reserve waits for.
	leaseTries = 6
	// leaseRef is the reference of a lease's stored hold.
	leaseRef = "keyledger:lease"
)

// errLeaseCapped: no lease of the account and key can live as long as the
// hold needs (its key's limit period ends first), so the reserve is
// stored.
var errLeaseCapped = errors.New("credits: the lease ends before the hold would")

type leaseKey struct{ acct, key string }

// lease is one stored hold of this instance and the holds drawn from it.
type lease struct {
	k       leaseKey
	id      string
	amount  Amount    // the stored amount as known; never above it
	held    Amount    // the active holds drawn from it
	peak    Amount    // the most held at once
	took    Amount    // what settles took out of it
	top     Amount    // its amount after its last growth (or creation)
	grown   time.Time // when that write was made
	users   int       // holds drawn from it and not resolved
	expires time.Time // the stored deadline as known; never after it
	born    time.Time
	used    time.Time // the last draw
	// op is closed when the write of the lease in flight (its creation or
	// a growth) ends; nil when none is.
	op chan struct{}
	// err is the failure of the last write, for the reserves that waited;
	// final: it was not a generous ask that a smaller one may pass.
	err   error
	final bool
	// short: a generous growth was refused (the account is near a limit),
	// so none starts in the background.
	short bool
	// retired: it draws no new holds, and is released once users is 0.
	retired bool
	// stored: its creation committed (or may have) and it was not released.
	stored bool
	// capped: the store gave it an earlier deadline than it asked for (its
	// key's limit period ends first).
	capped bool
	// idle: a check for leaseIdle is scheduled.
	idle bool
	// next is the successor being created.
	next *lease
}

func (l *lease) room() Amount { return l.amount.Sub(l.held) }

// draws reports whether l may draw a hold of amt until the deadline until.
func (l *lease) draws(amt Amount, until time.Time) bool {
	return l.stored && !l.retired && l.room().Cmp(amt) >= 0 && !l.expires.Before(until.Add(leaseMargin))
}

// ahead is what l should have beyond its holds to last leaseSpan at the
// rate its settles have taken from it (zero while it is young), in
// multiples of inc.
func (l *lease) ahead(now time.Time, inc Amount) Amount {
	age := now.Sub(l.born)
	if age < 100*time.Millisecond || !l.took.IsPositive() || !inc.IsPositive() {
		return Amount{}
	}
	per := l.took.Decimal().Mul(decimal.NewFromInt(int64(leaseSpan))).Div(decimal.NewFromInt(int64(age)))
	step := inc.Decimal()
	return NewAmount(per.Div(step).Ceil().Mul(step))
}

// draw counts a hold of amt drawn from l at now.
func (l *lease) draw(amt Amount, now time.Time) {
	l.held = l.held.Add(amt)
	if l.held.Cmp(l.peak) > 0 {
		l.peak = l.held
	}
	l.users++
	l.used = now
}

// leaseFor returns a lease of k with room for amt until the deadline
// until, creating or growing one as needed. The caller holds b.mu; it is
// held again when leaseFor returns a lease, and released on error.
func (s *Service) leaseFor(ctx context.Context, k leaseKey, amt Amount, until time.Time) (*lease, error) {
	b := s.local
	exact := false
	var err error
	for range leaseTries {
		now := s.opt.Now()
		l := b.leases[k]
		if l != nil && l.stored && !now.Before(l.expires) {
			b.dropLease(l) // lost to its deadline
			l = nil
		}
		if l != nil && l.draws(amt, until) {
			s.leaseAhead(l, now)
			return l, nil
		}
		if l != nil && l.capped && !l.retired && l.expires.Before(until.Add(leaseMargin)) {
			b.mu.Unlock()
			return nil, errLeaseCapped
		}
		switch {
		case l == nil:
			l = s.leaseCreate(k, amt, until, nil, exact, now)
		case l.op == nil:
			s.leaseGrow(l, amt, until, exact, now)
		}
		op := l.op
		if op == nil { // the write could not start: Close has begun
			b.mu.Unlock()
			return nil, ErrClosed
		}
		b.mu.Unlock()
		select {
		case <-op:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		b.mu.Lock()
		if l.err != nil {
			if cur := b.leases[k]; cur != nil && cur.draws(amt, until) {
				continue // the room came from elsewhere
			}
			if l.final {
				err = l.err
				break
			}
			exact = true // ask for no more than needed
		}
	}
	b.mu.Unlock()
	if err == nil {
		err = ErrInsufficientFunds // the room kept going to other reserves
	}
	return nil, err
}

// leaseAhead starts what the lease l will soon need: a growth once less
// than half of what it had is free, a successor once it is leaseMaxAge old.
// The caller holds b.mu.
func (s *Service) leaseAhead(l *lease, now time.Time) {
	if l.op != nil || l.short || l.retired {
		return
	}
	if now.Sub(l.born) >= leaseMaxAge {
		if l.next == nil {
			size := l.peak.MulInt(2)
			if a := l.peak.Add(l.ahead(now, s.opt.Unit.SpendIncrement)); a.Cmp(size) > 0 {
				size = a
			}
			if !size.IsPositive() {
				size = l.amount
			}
			s.leaseCreate(l.k, size, now, l, true, now)
		}
		return
	}
	if l.room().MulInt(2).Cmp(l.top) < 0 {
		s.leaseGrow(l, Amount{}, now, false, now)
	}
}

// leaseWrite runs the lease write r in the background and calls done
// with its outcome under b.mu; it reports false if Close has begun.
func (s *Service) leaseWrite(r SpendRequest, done func(SpendResult, error)) bool {
	s.rmu.Lock()
	if s.rclosed {
		s.rmu.Unlock()
		return false
	}
	s.recharges.Add(1) // Close waits for it as for a recharge
	s.rmu.Unlock()
	go func() {
		defer s.recharges.Done()
		ctx, cancel := context.WithTimeout(s.life, leaseTimeout)
		res, err := s.spend(ctx, r)
		cancel()
		s.local.mu.Lock()
		defer s.local.mu.Unlock()
		done(res, err)
	}()
	return true
}

// leaseTTLFor is the TTL a lease write asks for, so that the lease
// outlives until by more than leaseMargin.
func leaseTTLFor(until, now time.Time) time.Duration {
	if d := until.Sub(now) + 2*leaseMargin; d > leaseTTL {
		return d
	}
	return leaseTTL
}

// leaseCreate starts creating a lease of k with room for amt until the
// deadline until — leaseGrowth times amt unless exact — as the successor
// of prev if prev is not nil (then of exactly amt). The caller holds b.mu.
func (s *Service) leaseCreate(k leaseKey, amt Amount, until time.Time, prev *lease, exact bool, now time.Time) *lease {
	b := s.local
	size := amt
	if !exact {
		size = amt.MulInt(leaseGrowth)
	}
	l := &lease{k: k, id: s.ids.New(s.opt.HoldIDPrefix), born: now, used: now, op: make(chan struct{})}
	ttl := leaseTTLFor(until, now)
	r := SpendRequest{
		Kind: SpendReserve, Unit: s.opt.Unit.Code, AccountID: k.acct, HoldID: l.id, Amount: size, TTL: ttl,
		Reference: leaseRef, IdempotencyKey: l.id, KeyID: k.key, Lease: l.id,
		Fingerprint: fingerprint('r', k.acct, "", size, int64(ttl), time.Time{}, leaseRef, ""),
	}
	if prev != nil {
		prev.next = l
	} else {
		if old := b.leases[k]; old != nil {
			b.dropLease(old)
		}
		b.leases[k] = l
	}
	started := s.leaseWrite(r, func(res SpendResult, err error) {
		op := l.op
		l.op, l.err, l.final = nil, err, exact || systemFailure(err)
		defer close(op)
		if prev != nil && prev.next == l {
			prev.next = nil
		}
		if err != nil {
			// One that failed may have committed: release it, so that its
			// funds do not wait for its deadline.
			l.stored = systemFailure(err)
			if prev != nil && !systemFailure(err) {
				prev.short = true // no successor of that size: keep prev
			}
			b.dropLease(l)
			return
		}
		l.stored, l.amount, l.expires = true, size, res.Hold.ExpiresAt
		l.top, l.grown = size, now
		l.capped = l.expires.Before(now.Add(ttl))
		if prev != nil && !l.retired {
			if b.leases[k] != prev {
				b.retire(l) // prev was dropped meanwhile
				return
			}
			b.leases[k] = l
			b.retire(prev)
		}
		s.leaseFreedIfIdle(l)
	})
	if !started {
		l.op = nil
		if b.leases[k] == l {
			delete(b.leases, k)
		}
		if prev != nil {
			prev.next = nil
		}
	}
	return l
}

// leaseGrow starts growing the lease l so that it has room for amt until
// the deadline until: by its own amount (doubling it), or by only what is
// missing if exact. The caller holds b.mu.
func (s *Service) leaseGrow(l *lease, amt Amount, until time.Time, exact bool, now time.Time) {
	d := amt.Sub(l.room())
	if d.IsNegative() {
		d = Amount{}
	}
	if !exact {
		// As much as it had, twice that if it grew less than leaseSpan
		// ago, or what leaseSpan takes at its rate, whichever is most.
		g := l.top
		if now.Sub(l.grown) < leaseSpan {
			g = g.MulInt(2)
		}
		if a := l.ahead(now, s.opt.Unit.SpendIncrement); a.Cmp(g) > 0 {
			g = a
		}
		if g.Cmp(d) > 0 {
			d = g
		}
	}
	ttl := leaseTTLFor(until, now)
	r := SpendRequest{Kind: SpendExtend, Unit: s.opt.Unit.Code, HoldID: l.id, Lease: l.id, Amount: d, TTL: ttl}
	l.op = make(chan struct{})
	started := s.leaseWrite(r, func(res SpendResult, err error) {
		op := l.op
		l.op, l.err, l.final = nil, err, exact || systemFailure(err)
		defer close(op)
		switch {
		case err == nil:
			l.amount = l.amount.Add(d)
			l.top, l.grown = l.amount, now
			if res.Hold.ExpiresAt.After(l.expires) {
				l.expires = res.Hold.ExpiresAt
			}
			l.capped = l.expires.Before(now.Add(ttl))
			l.short = l.short && exact
		case errors.Is(err, ErrHoldExpired) || errors.Is(err, ErrHoldReleased) ||
			errors.Is(err, ErrHoldNotFound) || errors.Is(err, ErrHoldSettled):
			// Gone: the reserve that waits draws from a new one.
			l.stored, l.err = false, nil
			s.local.dropLease(l)
		case !systemFailure(err) && !exact:
			l.short = true
		}
		// A growth that failed may have committed: the lease is then
		// larger than known, which sets more aside, never less.
		s.leaseFreedIfIdle(l)
	})
	if !started {
		l.op = nil
	}
}

// dropLease makes l no longer k's lease and retires it. The caller holds
// b.mu.
func (b *book) dropLease(l *lease) {
	if b.leases[l.k] == l {
		delete(b.leases, l.k)
	}
	b.retire(l)
}

// retire stops l from drawing holds and releases it once none remain.
// The caller holds b.mu.
func (b *book) retire(l *lease) {
	if !l.retired {
		l.retired = true
		b.retired[l] = struct{}{}
	}
	b.leaseDrained(l)
}

// leaseDrained releases the retired lease l if no hold is drawn from it
// and no write of it is in flight. The caller holds b.mu.
func (b *book) leaseDrained(l *lease) {
	if !l.retired || l.users > 0 || l.op != nil {
		return
	}
	if l.stored && !b.release(l) {
		return // Close releases it
	}
	delete(b.retired, l)
	l.stored = false
}

// releaseLease releases the stored lease l in the background; it reports
// false if Close has begun (Close then releases it). A release that fails
// leaves it to Close, or to its deadline.
func (s *Service) releaseLease(l *lease) bool {
	return s.leaseWrite(SpendRequest{Kind: SpendRelease, Unit: s.opt.Unit.Code, HoldID: l.id}, func(_ SpendResult, err error) {
		if err != nil && !errors.Is(err, ErrHoldNotFound) {
			l.stored = true
			s.local.retired[l] = struct{}{}
		}
	})
}

// leaseFreed is called when the last hold drawn from l ended. The caller
// holds b.mu.
func (s *Service) leaseFreed(l *lease) {
	if l.retired {
		s.local.leaseDrained(l)
		return
	}
	if !l.idle {
		l.idle = true
		time.AfterFunc(leaseIdle, func() { s.leaseIdleCheck(l) })
	}
}

// leaseFreedIfIdle is leaseFreed for a lease whose write just ended: one
// with no holds is released (retired) or checked for idleness (current),
// as the end of its last hold would have done. The caller holds b.mu.
func (s *Service) leaseFreedIfIdle(l *lease) {
	if l.users == 0 {
		s.leaseFreed(l)
	}
}

// leaseIdleCheck retires the lease l if it has had no hold for leaseIdle.
func (s *Service) leaseIdleCheck(l *lease) {
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	l.idle = false
	if l.users > 0 || l.op != nil || l.retired {
		return // the next hold to end schedules the check again
	}
	if wait := leaseIdle - s.opt.Now().Sub(l.used); wait > 0 {
		l.idle = true
		time.AfterFunc(wait, func() { s.leaseIdleCheck(l) })
		return
	}
	b.dropLease(l)
}

// releaseLeases releases every lease at Close, with the store directly:
// the holds drawn from them end with the Service.
func (s *Service) releaseLeases(ctx context.Context) {
	b := s.local
	b.mu.Lock()
	var ids []string
	for _, l := range b.leases {
		b.retired[l] = struct{}{}
	}
	for l := range b.retired {
		if l.stored {
			ids = append(ids, l.id)
		}
		l.stored, l.retired = false, true
	}
	clear(b.leases)
	clear(b.retired)
	b.mu.Unlock()
	for _, id := range ids {
		one := []SpendRequest{{Kind: SpendRelease, Unit: s.opt.Unit.Code, HoldID: id}}
		_ = s.store.ApplySpends(ctx, s.opt.Now(), one, make([]SpendResult, 1)) // else it expires
	}
}

// extendLeased is Extend on the hold lh, drawn from a lease: the raise and
// the later deadline come from its lease if it has them, else the hold
// moves to its key's current lease, which grows as a reserve's would. The
// caller holds b.mu, which extendLeased releases; retry reports that the
// hold changed meanwhile and must be looked at again.
func (s *Service) extendLeased(ctx context.Context, lh *localHold, p ExtendParams, now time.Time) (h Hold, retry bool, err error) {
	b := s.local
	d := p.Amount.Sub(lh.h.Amount)
	if d.IsNegative() {
		d = Amount{}
	}
	until := lh.h.ExpiresAt
	if exp := now.Add(p.TTL); p.TTL > 0 && exp.After(until) {
		until = exp
	}
	l := lh.lease
	// A later deadline alone needs no new funds: the hold stays on its
	// lease, retired or not, if the lease outlives it.
	stays := d.IsZero() && l.stored && !l.expires.Before(until.Add(leaseMargin))
	if !stays && !l.draws(d, until) {
		amount, k := lh.h.Amount, l.k
		need := amount.Add(d) // the whole hold moves
		if b.leases[k] == l {
			need = d
		}
		nl, err := s.leaseFor(ctx, k, need, until)
		if errors.Is(err, errLeaseCapped) {
			// No lease outlives the deadline asked (a grant expires or
			// the key's period ends first): a raise is refused, and the
			// deadline stays where its lease covers it.
			if d.IsPositive() {
				return Hold{}, false, ErrInsufficientFunds
			}
			b.mu.Lock()
			h = lh.h
			b.mu.Unlock()
			return h, false, nil
		}
		if err != nil {
			return Hold{}, false, err
		}
		if lh.h.State != HoldActive || lh.settling > 0 || !lh.h.Amount.Equal(amount) || lh.lease != l ||
			(nl != l && !nl.draws(amount.Add(d), until)) {
			b.mu.Unlock() // changed meanwhile: again
			return Hold{}, true, nil
		}
		if nl != l {
			l.held = l.held.Sub(amount)
			if l.users--; l.users == 0 {
				b.freed(l)
			}
			nl.draw(amount, now)
			lh.lease = nl
		}
		l = nl
	}
	if d.IsPositive() {
		l.held = l.held.Add(d)
		if l.held.Cmp(l.peak) > 0 {
			l.peak = l.held
		}
		lh.h.Amount = p.Amount
	}
	s.moveDeadline(lh, p.TTL, now)
	h = lh.h
	b.mu.Unlock()
	return h, false, nil
}

// leaseRoom is the room of this instance's leases on account id: held in
// the store, but free for this instance's requests, so its view of the
// account (Account) counts it as available, and an instance with no
// request in flight reports nothing held.
func (s *Service) leaseRoom(id string) Amount {
	b := s.local
	b.mu.Lock()
	defer b.mu.Unlock()
	var r Amount
	add := func(l *lease) {
		if l.k.acct == id && l.stored && l.room().IsPositive() {
			r = r.Add(l.room())
		}
	}
	for _, l := range b.leases {
		add(l)
	}
	for l := range b.retired {
		add(l)
	}
	return r
}
