// Package ledger is the credits ledger engine that backends run inside their
// transactions: AccountState (one account's policy, running totals and live
// grant lots, whose methods hold every ledger rule), ApplySpend and
// ApplyCredit (one request on a backend's Tx), and the idempotency records
// (OpRecord) a backend keeps.
//
// It is a driver package in the Go CDK sense: store/memstore,
// store/sqlitestore, store/pgstore and the SQL engine in internal/sqlledger
// import it; hosts use credits.Service and never import it (internal/archtest
// guards that). It imports credits for the vocabulary (Amount, Entry, Hold,
// Policy, the requests and the sentinel errors); credits does not import it.
package ledger

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/keyledger/keyledger/credits"
)

// AccountState is one ledger account as a Store keeps it: the policy, the
// running totals and the live grant lots. Stores load it, let ApplySpend,
// ApplyCredit and Advance change it inside their transaction, and persist
// it in the same transaction; the methods hold every ledger rule, so that
// all backends compute the same results. Hosts read credits.Account instead.
type AccountState struct {
	ID     string
	Unit   string
	Policy credits.Policy
	// Balance is the sum of all entries written so far.
	Balance credits.Amount
	// Held is the sum of holds in state active (some may be past their
	// deadline until Advance runs).
	Held credits.Amount
	// Seq is the Seq of the last entry (0 before the first).
	Seq int64
	// Version increases with every change; backends may use it as an
	// optimistic-concurrency guard.
	Version int64
	// MonthStart and MonthEnd bound the calendar month (policy time zone)
	// that MonthSpent counts.
	MonthStart, MonthEnd time.Time
	MonthSpent           credits.Amount
	// RechargeArmed is true while the balance has been at or above the
	// auto-recharge threshold since the last recharge; Recharges counts the
	// crossings so far (and names their idempotency keys).
	RechargeArmed bool
	Recharges     int64
	// Lots are the unspent parts of expiring grants, earliest expiry first.
	Lots []Lot
	// Keys are the spend limits of the account's keys, sorted by KeyID.
	Keys      []KeyState
	OpenedAt  time.Time
	UpdatedAt time.Time
}

// Lot is the unspent remainder of one expiring grant.
type Lot struct {
	ID        string // the grant entry's ID
	ExpiresAt time.Time
	Remaining credits.Amount // > 0
}

// NewAccountState returns the state of an account opened at now.
func NewAccountState(id, unit string, p credits.Policy, now time.Time) AccountState {
	st := AccountState{ID: id, Unit: unit, Policy: p, OpenedAt: now, UpdatedAt: now, Version: 1}
	st.MonthStart, st.MonthEnd = monthBounds(now, p.TimeZone)
	st.RechargeArmed = !p.AutoRecharge.Threshold.IsPositive()
	return st
}

// Clone returns a copy of st that shares no memory with it.
func (st AccountState) Clone() AccountState {
	st.Lots = slices.Clone(st.Lots)
	st.Keys = slices.Clone(st.Keys)
	return st
}

// ExpiryEntryID is the ID of the expiry entry of the grant lot lotID. It is
// derived from the lot, so that an expiry can be written only once.
func ExpiryEntryID(lotID string) string {
	const n = 26 // the encoded UUID at the end of an entry ID
	if len(lotID) > n {
		lotID = lotID[len(lotID)-n:]
	}
	return "exp_" + lotID
}

func monthBounds(now time.Time, tz string) (time.Time, time.Time) {
	loc := time.UTC
	if tz != "" && tz != "UTC" {
		if l, err := time.LoadLocation(tz); err == nil {
			loc = l
		}
	}
	t := now.In(loc)
	start := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, loc)
	return start.UTC(), start.AddDate(0, 1, 0).UTC()
}

// Advance brings st to now. Holds in due that are active and past their
// deadline stop counting as held (the caller marks them expired); grant
// lots that expired at or before now are removed, each with an expiry entry
// for its remainder dated at its expiry, returned in ledger order for the
// caller to write; and the cap month rolls forward if now is past it.
func (st *AccountState) Advance(now time.Time, due []credits.Hold) []credits.Entry {
	changed := false
	for _, h := range due {
		if h.State == credits.HoldActive && !now.Before(h.ExpiresAt) {
			st.Held = st.Held.Sub(h.Amount)
			st.unhold(&h)
			changed = true
		}
	}
	var out []credits.Entry
	for len(st.Lots) > 0 && !now.Before(st.Lots[0].ExpiresAt) {
		l := st.Lots[0]
		st.Lots = st.Lots[1:]
		st.Balance = st.Balance.Sub(l.Remaining)
		st.Seq++
		out = append(out, credits.Entry{
			ID: ExpiryEntryID(l.ID), AccountID: st.ID, Seq: st.Seq, Type: credits.EntryExpiry,
			Amount: l.Remaining.Neg(), BalanceAfter: st.Balance, Reference: l.ID,
			Description: "grant expired", CreatedAt: l.ExpiresAt,
		})
		changed = true
	}
	if !now.Before(st.MonthEnd) {
		st.MonthStart, st.MonthEnd = monthBounds(now, st.Policy.TimeZone)
		st.MonthSpent = credits.Amount{}
		changed = true
	}
	if st.advanceKeys(now) {
		changed = true
	}
	if changed {
		st.Version++
		st.UpdatedAt = now
		st.setEpochs()
	}
	return out
}

// SetPolicy replaces the policy. A new time zone re-bounds the current cap
// month (spend so far carries over); the auto-recharge trigger re-arms if
// the balance is at or above the new threshold.
func (st *AccountState) SetPolicy(p credits.Policy, now time.Time) {
	if p.TimeZone != st.Policy.TimeZone {
		st.MonthStart, st.MonthEnd = monthBounds(now, p.TimeZone)
	}
	st.Policy = p
	st.RechargeArmed = st.Balance.Cmp(p.AutoRecharge.Threshold) >= 0
	st.touch(now)
}

// View returns the account as hosts see it. st must be advanced to now.
func (st *AccountState) View() credits.Account {
	a := credits.Account{
		ID: st.ID, Unit: st.Unit, Policy: st.Policy,
		Balance: st.Balance, Held: st.Held, Available: st.Balance.Sub(st.Held), Debt: st.debt(),
		UsedThisMonth: st.MonthSpent, MonthEnds: st.MonthEnd, Seq: st.Seq,
		OpenedAt: st.OpenedAt, UpdatedAt: st.UpdatedAt,
	}
	if len(st.Lots) > 0 {
		a.NextExpiry = st.Lots[0].ExpiresAt
	}
	if len(st.Keys) > 0 {
		a.Keys = make([]credits.KeySpend, len(st.Keys))
		for i := range st.Keys {
			a.Keys[i] = st.Keys[i].view()
		}
	}
	return a
}

func (st *AccountState) touch(now time.Time) {
	st.Version++
	st.UpdatedAt = now
}

// room is how much more may be spent or held: Balance − Held + Overdraft.
func (st *AccountState) room() credits.Amount {
	r := st.Balance
	if !st.Held.IsZero() {
		r = r.Sub(st.Held)
	}
	if od := st.Policy.Overdraft; !od.IsZero() {
		r = r.Add(od)
	}
	return r
}

// capRoom is how much more the monthly cap allows, and whether there is a cap.
func (st *AccountState) capRoom() (credits.Amount, bool) {
	c := st.Policy.MonthlyCap
	if !c.IsPositive() {
		return credits.Amount{}, false
	}
	return c.Sub(st.MonthSpent).Sub(st.Held), true
}

// debt is how far the balance is below −Overdraft (zero if it is not).
func (st *AccountState) debt() credits.Amount {
	d := st.Balance.Add(st.Policy.Overdraft)
	if !d.IsNegative() {
		return credits.Amount{}
	}
	return d.Neg()
}

// canSpend checks a debit, reserve or hold extension of amt against funds
// and the cap. An account in debt gets a *DebtError naming it.
func (st *AccountState) canSpend(amt credits.Amount) error {
	a := credits.Account{Unit: st.Unit, Policy: st.Policy, Balance: st.Balance, Held: st.Held, UsedThisMonth: st.MonthSpent}
	return a.CanSpend(amt)
}

// withdraw lowers the balance by amt > 0, drawing on the earliest-expiring
// lots first.
func (st *AccountState) withdraw(amt credits.Amount) {
	st.Balance = st.Balance.Sub(amt)
	rest := amt
	for len(st.Lots) > 0 && rest.IsPositive() {
		l := &st.Lots[0]
		if l.Remaining.Cmp(rest) > 0 {
			l.Remaining = l.Remaining.Sub(rest)
			return
		}
		rest = rest.Sub(l.Remaining)
		st.Lots = st.Lots[1:]
	}
}

func (st *AccountState) addLot(l Lot) {
	i, _ := slices.BinarySearchFunc(st.Lots, l, func(a, b Lot) int {
		if c := a.ExpiresAt.Compare(b.ExpiresAt); c != 0 {
			return c
		}
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	st.Lots = slices.Insert(slices.Clip(st.Lots), i, l)
}

func (st *AccountState) entry(id string, t credits.EntryType, amt credits.Amount, now time.Time) credits.Entry {
	st.Seq++
	st.touch(now)
	return credits.Entry{ID: id, AccountID: st.ID, Seq: st.Seq, Type: t, Amount: amt, BalanceAfter: st.Balance, CreatedAt: now}
}

// spend charges amt > 0 as a debit entry and counts it as monthly spend
// and as spend of the key keyID.
func (st *AccountState) spend(r *credits.SpendRequest, keyID string, amt credits.Amount, now time.Time) credits.Entry {
	st.withdraw(amt)
	st.MonthSpent = st.MonthSpent.Add(amt)
	if k := st.key(keyID); k != nil {
		k.Spent = k.Spent.Add(amt)
	}
	e := st.entry(r.EntryID, credits.EntryDebit, amt.Neg(), now)
	e.Reference, e.Description = r.Reference, r.Description
	return e
}

// afterSpend disarms the auto-recharge trigger and returns a request when
// the balance has just crossed below the threshold.
func (st *AccountState) afterSpend() *credits.RechargeRequest {
	ar := st.Policy.AutoRecharge
	if !ar.Enabled || !st.RechargeArmed || st.Balance.Cmp(ar.Threshold) >= 0 {
		return nil
	}
	st.RechargeArmed = false
	st.Recharges++
	return &credits.RechargeRequest{
		AccountID: st.ID, Amount: ar.Amount, Crossing: st.Recharges,
		IdempotencyKey: "auto-recharge:" + strconv.FormatInt(st.Recharges, 10),
	}
}

func (st *AccountState) afterCredit() {
	if !st.RechargeArmed && st.Balance.Cmp(st.Policy.AutoRecharge.Threshold) >= 0 {
		st.RechargeArmed = true
	}
}

func (st *AccountState) credit(r *credits.CreditRequest, now time.Time) credits.Entry {
	if r.Amount.IsNegative() {
		st.withdraw(r.Amount.Neg())
	} else {
		debt := st.debt()
		st.Balance = st.Balance.Add(r.Amount)
		// A debt is paid first: an expiring grant keeps only what is left
		// after it, so that its expiry cannot take the debt back.
		rem := r.Amount
		if debt.IsPositive() {
			if debt.Cmp(rem) >= 0 {
				rem = credits.Amount{}
			} else {
				rem = rem.Sub(debt)
			}
		}
		if !r.ExpiresAt.IsZero() && rem.IsPositive() {
			st.addLot(Lot{ID: r.EntryID, ExpiresAt: r.ExpiresAt, Remaining: rem})
		}
	}
	e := st.entry(r.EntryID, r.Type, r.Amount, now)
	e.Reference, e.Description, e.IdempotencyKey, e.ExpiresAt = r.Reference, r.Description, r.IdempotencyKey, r.ExpiresAt
	st.afterCredit()
	return e
}

func (st *AccountState) reserve(r *credits.SpendRequest, now time.Time) credits.Hold {
	st.Held = st.Held.Add(r.Amount)
	st.touch(now)
	h := credits.Hold{
		ID: r.HoldID, AccountID: st.ID, Amount: r.Amount, State: credits.HoldActive, Reference: r.Reference,
		IdempotencyKey: r.IdempotencyKey, CreatedAt: now, ExpiresAt: now.Add(r.TTL), KeyID: r.KeyID,
	}
	if k := st.key(r.KeyID); k != nil {
		k.Held = k.Held.Add(r.Amount)
		h.KeyEpoch = k.Epoch
	}
	return h
}

// coverable is the part of amt that funds (with overdraft) and the
// monthly cap allow to charge.
func (st *AccountState) coverable(amt credits.Amount) credits.Amount {
	if room := st.room(); room.Cmp(amt) < 0 {
		amt = room
	}
	if c, ok := st.capRoom(); ok && c.Cmp(amt) < 0 {
		amt = c
	}
	if amt.IsNegative() {
		return credits.Amount{}
	}
	return amt
}

// extend raises the active hold h to r.Amount if that is more (checked
// against funds and the cap like a reserve of the difference) and moves its
// deadline to now + r.TTL if that is later. It reports whether h changed.
func (st *AccountState) extend(h *credits.Hold, r *credits.SpendRequest, now time.Time) (bool, error) {
	changed := false
	if d := r.Amount.Sub(h.Amount); d.IsPositive() {
		if err := st.canSpend(d); err != nil {
			return false, err
		}
		if err := st.keyExtend(h, d); err != nil {
			return false, err
		}
		st.Held = st.Held.Add(d)
		h.Amount = r.Amount
		changed = true
	}
	if exp := now.Add(r.TTL); r.TTL > 0 && exp.After(h.ExpiresAt) {
		h.ExpiresAt = exp
		changed = true
	}
	if changed {
		st.touch(now)
	}
	return changed, nil
}

// settle resolves the active hold h with the actual cost r.Amount: it frees
// the hold and charges the whole cost (OverrunDebt, the default), or as
// much of it as funds and the cap allow (OverrunWriteOff).
func (st *AccountState) settle(h *credits.Hold, r *credits.SpendRequest, now time.Time) (credits.Entry, *credits.RechargeRequest) {
	st.Held = st.Held.Sub(h.Amount)
	st.unhold(h)
	charge := r.Amount
	if r.Overrun == credits.OverrunWriteOff {
		charge = st.coverable(charge)
	}
	h.State, h.ResolvedAt, h.Actual, h.Charged, h.SettleFingerprint = credits.HoldSettled, now, r.Amount, charge, r.Fingerprint
	st.touch(now)
	if charge.IsZero() {
		return credits.Entry{}, nil
	}
	ref := r.Reference
	if ref == "" {
		ref = h.Reference
	}
	rr := *r
	rr.Reference = ref
	e := st.spend(&rr, h.KeyID, charge, now)
	e.HoldID = h.ID
	h.EntryID, h.EntrySeq = e.ID, e.Seq
	return e, st.afterSpend()
}

func (st *AccountState) release(h *credits.Hold, now time.Time) {
	st.Held = st.Held.Sub(h.Amount)
	st.unhold(h)
	h.State, h.ResolvedAt = credits.HoldReleased, now
	st.touch(now)
}

// ApplySpend runs one spend request on an open transaction: the single
// implementation of debit, reserve, settle and release that every backend
// uses. Expected failures are returned in credits.SpendResult.Err with nothing
// written for the request; a non-nil error is a system failure after which
// the caller must roll back.
//
// Checks precede writes: a request either fails before it writes anything
// or claims its idempotency key and then writes its entry or hold, so a
// batch of requests in one transaction needs no savepoints.
func ApplySpend(ctx context.Context, tx Tx, now time.Time, r credits.SpendRequest) (credits.SpendResult, error) {
	res, err := applySpend(ctx, tx, now, &r)
	if err != nil {
		if isDomainError(err) {
			return credits.SpendResult{Err: err}, nil
		}
		return credits.SpendResult{}, err
	}
	return res, nil
}

func applySpend(ctx context.Context, tx Tx, now time.Time, r *credits.SpendRequest) (credits.SpendResult, error) {
	switch r.Kind {
	case credits.SpendDebit, credits.SpendReserve:
		return debitOrReserve(ctx, tx, now, r)
	case credits.SpendSettle, credits.SpendRelease, credits.SpendExtend:
		return resolveHold(ctx, tx, now, r)
	}
	return credits.SpendResult{}, credits.ErrInvalidOptions
}

func debitOrReserve(ctx context.Context, tx Tx, now time.Time, r *credits.SpendRequest) (credits.SpendResult, error) {
	st, err := tx.State(ctx, r.AccountID)
	if err != nil {
		return credits.SpendResult{}, err
	}
	if st.Unit != r.Unit {
		return credits.SpendResult{}, credits.ErrUnitMismatch
	}
	kind := OpDebit
	if r.Kind == credits.SpendReserve {
		kind = OpReserve
	}
	amount := r.Amount
	others := r.HeldOthers
	if r.Lease != "" && kind == OpReserve {
		// A lease is funded only by what lasts as long as it does.
		others = others.Add(st.expiringBefore(st.leaseDeadline(now.Add(r.TTL), r.KeyID)))
	}
	st.Held = st.Held.Add(others) // counted, not stored: taken off below
	switch {
	case kind == OpReserve || r.Overrun == 0:
		err = st.canSpend(amount)
	case r.Overrun == credits.OverrunWriteOff:
		// Delivered work: charge what funds and the cap cover; nothing at
		// all is a refusal, so that the op always names a written entry.
		if amount = st.coverable(amount); amount.IsZero() {
			err = st.canSpend(r.Amount)
		}
	}
	st.Held = st.Held.Sub(others)
	if err == nil && (kind == OpReserve || r.Overrun == 0) {
		// Delivered work (a debit with Overrun) is charged whatever the
		// key's limit; the key's counter records it.
		err = st.keyCheck(r.KeyID, amount, r.KeyHeldOthers)
	}
	if err != nil {
		// A replay of a request that succeeded returns its first result,
		// even though the same request would fail now.
		prev, ok, err2 := tx.Op(ctx, st.ID, r.IdempotencyKey)
		if err2 != nil || !ok {
			return credits.SpendResult{}, cmpErr(err2, err)
		}
		return replay(ctx, tx, now, st.ID, prev, kind, r.Fingerprint)
	}
	rec := OpRecord{Kind: kind, Fingerprint: r.Fingerprint, EntrySeq: st.Seq + 1, HoldID: r.HoldID}
	if kind == OpDebit {
		rec.HoldID = ""
	} else {
		rec.EntrySeq = 0
	}
	prev, claimed, err := tx.ClaimOp(ctx, st.ID, r.IdempotencyKey, rec)
	if err != nil {
		return credits.SpendResult{}, err
	}
	if !claimed {
		return replay(ctx, tx, now, st.ID, prev, kind, r.Fingerprint)
	}
	if kind == OpReserve {
		h := st.reserve(r, now)
		if r.Lease != "" {
			h.ExpiresAt = st.leaseDeadline(h.ExpiresAt, r.KeyID)
		}
		return credits.SpendResult{Hold: h}, tx.PutHold(ctx, h)
	}
	b := st.before(r.KeyID)
	e := st.spend(r, r.KeyID, amount, now)
	e.IdempotencyKey = r.IdempotencyKey
	if err := tx.AddEntry(ctx, e); err != nil {
		return credits.SpendResult{}, err
	}
	if err := observe(ctx, tx, st, b, e); err != nil {
		return credits.SpendResult{}, err
	}
	return credits.SpendResult{Entry: e, Recharge: st.afterSpend()}, nil
}

// cmpErr returns sys if it is set, else domain.
func cmpErr(sys, domain error) error {
	if sys != nil {
		return sys
	}
	return domain
}

func replay(ctx context.Context, tx Tx, now time.Time, accountID string, prev OpRecord, kind OpKind, fp [32]byte) (credits.SpendResult, error) {
	if prev.Kind != kind || prev.Fingerprint != fp {
		return credits.SpendResult{}, credits.ErrIdempotencyConflict
	}
	if kind == OpReserve {
		h, err := tx.Hold(ctx, prev.HoldID)
		return credits.SpendResult{Hold: holdAt(h, now)}, err
	}
	e, err := tx.Entry(ctx, accountID, prev.EntrySeq)
	return credits.SpendResult{Entry: e}, err
}

func resolveHold(ctx context.Context, tx Tx, now time.Time, r *credits.SpendRequest) (credits.SpendResult, error) {
	h, err := tx.Hold(ctx, r.HoldID)
	// A process hold (credits.SpendRequest.Held) is in the store only once
	// a settle of it committed: then this is that settle's replay.
	process := false
	if r.Held != nil && r.Kind == credits.SpendSettle && errors.Is(err, credits.ErrHoldNotFound) {
		h, err, process = *r.Held, nil, true
	}
	if err != nil {
		return credits.SpendResult{}, err
	}
	st, err := tx.State(ctx, h.AccountID) // may expire h in storage; h.at sees the same
	if err != nil {
		return credits.SpendResult{}, err
	}
	if st.Unit != r.Unit {
		return credits.SpendResult{}, credits.ErrUnitMismatch
	}
	h = holdAt(h, now)
	if r.Kind == credits.SpendExtend {
		return extendHold(ctx, tx, now, st, h, r)
	}
	settle := r.Kind == credits.SpendSettle
	switch h.State {
	case credits.HoldSettled:
		if !settle {
			return credits.SpendResult{}, credits.ErrHoldSettled
		}
		if h.SettleFingerprint != r.Fingerprint {
			return credits.SpendResult{}, credits.ErrHoldSettled
		}
		res := credits.SpendResult{Hold: h}
		if h.EntrySeq > 0 {
			res.Entry, err = tx.Entry(ctx, h.AccountID, h.EntrySeq)
		}
		return res, err
	case credits.HoldReleased, credits.HoldExpired:
		if !settle {
			return credits.SpendResult{Hold: h}, nil // already free: Release is idempotent
		}
		if h.State == credits.HoldReleased {
			return credits.SpendResult{}, credits.ErrHoldReleased
		}
		return credits.SpendResult{}, credits.ErrHoldExpired
	}
	var res credits.SpendResult
	if settle {
		carried := process // the settle writes the hold
		if process && r.Lease != "" {
			took, lost, err := takeLease(ctx, tx, st, &h, r, now)
			if err != nil {
				return credits.SpendResult{}, err
			}
			// Drawn from the lease, the hold is in Held through it;
			// otherwise it is charged as a process hold, without the
			// lease's spare room, which did not pay.
			process, res.LeaseLost = !took, lost
			if !took {
				rr := *r
				rr.HeldOthers = credits.Amount{}
				r = &rr
			}
		}
		if process { // st.settle frees it from Held, which never had it
			st.Held = st.Held.Add(h.Amount).Add(r.HeldOthers)
		}
		b := st.before(h.KeyID)
		res.Entry, res.Recharge = st.settle(&h, r, now)
		if r.Lease != "" && !res.LeaseLost && st.overcommitted() {
			// Funds fell below what is held (a grant expired, the
			// overdraft or the cap was lowered): the lease's room is not
			// there any more, so the instance must draw no more from it.
			res.LeaseLost = true
		}
		if process {
			st.Held = st.Held.Sub(r.HeldOthers)
		}
		if carried && h.IdempotencyKey != "" {
			// The reserve's record, written with the hold: its key keeps
			// meeting the keys of other writes. A key another write took
			// meanwhile stays with that write.
			rec := OpRecord{Kind: OpReserve, Fingerprint: r.ReserveFingerprint, HoldID: h.ID}
			if _, _, err := tx.ClaimOp(ctx, st.ID, h.IdempotencyKey, rec); err != nil {
				return credits.SpendResult{}, err
			}
		}
		if res.Entry.ID != "" {
			if err := tx.AddEntry(ctx, res.Entry); err != nil {
				return credits.SpendResult{}, err
			}
			if err := observe(ctx, tx, st, b, res.Entry); err != nil {
				return credits.SpendResult{}, err
			}
		}
	} else {
		st.release(&h, now)
	}
	res.Hold = h
	return res, tx.PutHold(ctx, h)
}

func extendHold(ctx context.Context, tx Tx, now time.Time, st *AccountState, h credits.Hold, r *credits.SpendRequest) (credits.SpendResult, error) {
	switch h.State {
	case credits.HoldSettled:
		return credits.SpendResult{}, credits.ErrHoldSettled
	case credits.HoldReleased:
		return credits.SpendResult{}, credits.ErrHoldReleased
	case credits.HoldExpired:
		return credits.SpendResult{}, credits.ErrHoldExpired
	}
	var expiring credits.Amount
	if r.Lease != "" {
		// A lease grows by r.Amount, funded only by what lasts as long as
		// it does: the grants that expire before its deadline do not
		// count, and its deadline moves no later than its key's period
		// end — nor ever earlier, as the instance drew holds until it.
		rr := *r
		rr.Amount = h.Amount.Add(r.Amount)
		exp := h.ExpiresAt
		if e := now.Add(r.TTL); r.TTL > 0 && e.After(exp) {
			exp = e
		}
		if k := st.key(h.KeyID); k != nil && !k.End.IsZero() && k.End.Before(exp) {
			exp = k.End
		}
		if exp.Before(h.ExpiresAt) {
			exp = h.ExpiresAt
		}
		rr.TTL = exp.Sub(now)
		expiring = st.expiringBefore(exp)
		r = &rr
	}
	st.Held = st.Held.Add(r.HeldOthers).Add(expiring) // counted, not stored
	changed, err := st.extend(&h, r, now)
	st.Held = st.Held.Sub(r.HeldOthers).Sub(expiring)
	if err != nil || !changed {
		return credits.SpendResult{Hold: h}, err
	}
	return credits.SpendResult{Hold: h}, tx.PutHold(ctx, h)
}

// takeLease moves the process hold h, settled by r, out of its lease
// r.Lease: a stored hold of the instance that set funds aside for the
// holds it draws in memory (credits.SpendRequest.Lease). The lease gives up
// the part of the charge up to h's amount (the funds the charge uses); the
// rest of h returns to the lease's room, and a charge above h is charged
// like any settle's overrun. st and h are arranged so that st.settle, which
// frees h's whole amount from Held and from its key's counters, frees only
// that part. took reports false, changing nothing, when the lease cannot
// cover h — gone, expired, another account's or key's, or short: the
// settle then charges h as a process hold. lost reports that the instance
// must draw no more from the lease: it could not cover h, or it is not
// counted in the key's current limit period (the limit was set or rolled
// over after it was made) — then its funds still pay for h, but the key's
// counters, which do not include it, are left alone.
func takeLease(ctx context.Context, tx Tx, st *AccountState, h *credits.Hold, r *credits.SpendRequest, now time.Time) (took, lost bool, err error) {
	l, err := tx.Hold(ctx, r.Lease)
	if errors.Is(err, credits.ErrHoldNotFound) {
		return false, true, nil
	}
	if err != nil {
		return false, false, err
	}
	l = holdAt(l, now)
	// Up to the hold, and past it by the lease's spare room the instance
	// gave this settle (HeldOthers, negative).
	take, most := r.Amount, h.Amount
	if r.HeldOthers.IsNegative() {
		most = most.Sub(r.HeldOthers)
	}
	if most.Cmp(take) < 0 {
		take = most
	}
	if l.State != credits.HoldActive || l.AccountID != h.AccountID || l.KeyID != h.KeyID || l.Amount.Cmp(take) < 0 {
		return false, true, nil
	}
	l.Amount = l.Amount.Sub(take)
	back := h.Amount.Sub(take) // what st.settle frees beyond the take
	st.Held = st.Held.Add(back)
	h.KeyEpoch = 0 // st.settle leaves the key's counters alone
	if k := st.key(h.KeyID); k != nil {
		if k.Epoch == l.KeyEpoch {
			k.Held = k.Held.Add(back)
			h.KeyEpoch = k.Epoch
		} else {
			lost = true // the key's counters do not include the lease
		}
	}
	return true, lost, tx.PutHold(ctx, l)
}

// overcommitted reports that funds or the cap no longer cover what is
// held: Balance − Held + Overdraft or the cap's room is negative.
func (st *AccountState) overcommitted() bool {
	if st.room().IsNegative() {
		return true
	}
	c, ok := st.capRoom()
	return ok && c.IsNegative()
}

// leaseDeadline caps a new lease's deadline at the end of its key's limit
// period, if the key has a limit: past it, the instance leases again, in
// the new period.
func (st *AccountState) leaseDeadline(d time.Time, keyID string) time.Time {
	if k := st.key(keyID); k != nil && !k.End.IsZero() && k.End.Before(d) {
		d = k.End
	}
	return d
}

// expiringBefore is what the grants that expire before t still hold: funds
// a lease living until t cannot count on.
func (st *AccountState) expiringBefore(t time.Time) credits.Amount {
	var a credits.Amount
	for _, l := range st.Lots {
		if l.ExpiresAt.Before(t) {
			a = a.Add(l.Remaining)
		}
	}
	return a
}

// ApplyCredit runs one grant, purchase, refund or adjustment on an open
// transaction, with the same idempotency rules as ApplySpend. It returns
// expected failures (credits.ErrUnknownAccount, ErrUnitMismatch,
// ErrIdempotencyConflict, ErrInsufficientFunds for a negative adjustment
// beyond the overdraft, ErrInvalidExpiry for a grant expiring at or before
// now) with nothing written, and system failures.
func ApplyCredit(ctx context.Context, tx Tx, now time.Time, r credits.CreditRequest) (credits.Entry, error) {
	st, err := tx.State(ctx, r.AccountID)
	if err != nil {
		return credits.Entry{}, err
	}
	if st.Unit != r.Unit {
		return credits.Entry{}, credits.ErrUnitMismatch
	}
	var fail error
	switch {
	case r.Amount.IsNegative() && st.room().Sub(r.HeldOthers).Cmp(r.Amount.Neg()) < 0:
		fail = credits.ErrInsufficientFunds
	case !r.ExpiresAt.IsZero() && !r.ExpiresAt.After(now):
		fail = credits.ErrInvalidExpiry // checked here, so that a replay after the expiry still replays
	}
	if fail != nil {
		prev, ok, err2 := tx.Op(ctx, st.ID, r.IdempotencyKey)
		if err2 != nil || !ok {
			return credits.Entry{}, cmpErr(err2, fail)
		}
		res, err := replay(ctx, tx, now, st.ID, prev, OpCredit, r.Fingerprint)
		return res.Entry, err
	}
	rec := OpRecord{Kind: OpCredit, Fingerprint: r.Fingerprint, EntrySeq: st.Seq + 1}
	prev, claimed, err := tx.ClaimOp(ctx, st.ID, r.IdempotencyKey, rec)
	if err != nil {
		return credits.Entry{}, err
	}
	if !claimed {
		res, err := replay(ctx, tx, now, st.ID, prev, OpCredit, r.Fingerprint)
		return res.Entry, err
	}
	b := st.before("")
	e := st.credit(&r, now)
	if err := tx.AddEntry(ctx, e); err != nil {
		return credits.Entry{}, err
	}
	return e, observe(ctx, tx, st, b, e)
}

// OpKind tells which kind of request an idempotency record belongs to.
type OpKind uint8

// Operation kinds stored with idempotency keys.
const (
	OpCredit OpKind = iota + 1
	OpDebit
	OpReserve
)

// OpRecord is what a store keeps under an idempotency key: the request's
// fingerprint and a pointer to its first result.
type OpRecord struct {
	Kind        OpKind
	Fingerprint [32]byte
	EntrySeq    int64  // OpCredit, OpDebit: the entry written
	HoldID      string // OpReserve: the hold created
}

// Tx is the view of one open backend transaction that ApplySpend and
// ApplyCredit run on. Backends implement it; hosts never see it. Methods
// return credits.ErrUnknownAccount / ErrHoldNotFound for missing rows and other
// errors only for system failures.
type Tx interface {
	// State returns the account's mutable state, loaded once per
	// transaction and already advanced to the transaction's now (due grant
	// expiries written as entries, due holds marked expired). The backend
	// persists the state when the transaction commits.
	State(ctx context.Context, accountID string) (*AccountState, error)
	// Hold returns a copy of the hold with the given ID.
	Hold(ctx context.Context, holdID string) (credits.Hold, error)
	// Op returns the idempotency record of (accountID, key), if any.
	Op(ctx context.Context, accountID, key string) (OpRecord, bool, error)
	// ClaimOp stores rec under (accountID, key) unless a record exists; it
	// returns the existing record and false in that case.
	ClaimOp(ctx context.Context, accountID, key string, rec OpRecord) (OpRecord, bool, error)
	// Entry returns the account's entry with the given Seq.
	Entry(ctx context.Context, accountID string, seq int64) (credits.Entry, error)
	// AddEntry appends an entry.
	AddEntry(ctx context.Context, e credits.Entry) error
	// PutHold inserts or replaces a hold.
	PutHold(ctx context.Context, h credits.Hold) error
}

// holdAt returns h as seen at now: an active hold past its deadline is
// expired (credits.Service reads holds the same way).
func holdAt(h credits.Hold, now time.Time) credits.Hold {
	if h.State == credits.HoldActive && !now.Before(h.ExpiresAt) {
		h.State, h.ResolvedAt = credits.HoldExpired, h.ExpiresAt
	}
	return h
}

// isDomainError reports whether err is an expected outcome of a request (a
// credits sentinel the engine returns) rather than a system failure.
func isDomainError(err error) bool {
	for _, e := range []error{
		credits.ErrUnknownAccount, credits.ErrInsufficientFunds, credits.ErrMonthlyLimit,
		credits.ErrIdempotencyConflict, credits.ErrHoldNotFound, credits.ErrHoldSettled,
		credits.ErrHoldReleased, credits.ErrHoldExpired, credits.ErrAlreadyOpen,
		credits.ErrUnitMismatch, credits.ErrInvalidTTL, credits.ErrKeyBudgetExceeded, credits.ErrKeyLimitExceeded,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
