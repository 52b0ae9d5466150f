package credits

import (
	"context"
	"slices"
	"strconv"
	"time"
)

// AccountState is one ledger account as a Store keeps it: the policy, the
// running totals and the live grant lots. Stores load it, let ApplySpend,
// ApplyCredit and Advance change it inside their transaction, and persist
// it in the same transaction; the methods hold every ledger rule, so that
// all backends compute the same results. Hosts read Account instead.
type AccountState struct {
	ID     string
	Unit   string
	Policy Policy
	// Balance is the sum of all entries written so far.
	Balance Amount
	// Held is the sum of holds in state active (some may be past their
	// deadline until Advance runs).
	Held Amount
	// Seq is the Seq of the last entry (0 before the first).
	Seq int64
	// Version increases with every change; backends may use it as an
	// optimistic-concurrency guard.
	Version int64
	// MonthStart and MonthEnd bound the calendar month (policy time zone)
	// that MonthSpent counts.
	MonthStart, MonthEnd time.Time
	MonthSpent           Amount
	// RechargeArmed is true while the balance has been at or above the
	// auto-recharge threshold since the last recharge; Recharges counts the
	// crossings so far (and names their idempotency keys).
	RechargeArmed bool
	Recharges     int64
	// Lots are the unspent parts of expiring grants, earliest expiry first.
	Lots      []Lot
	OpenedAt  time.Time
	UpdatedAt time.Time
}

// Lot is the unspent remainder of one expiring grant.
type Lot struct {
	ID        string // the grant entry's ID
	ExpiresAt time.Time
	Remaining Amount // > 0
}

// NewAccountState returns the state of an account opened at now.
func NewAccountState(id, unit string, p Policy, now time.Time) AccountState {
	st := AccountState{ID: id, Unit: unit, Policy: p, OpenedAt: now, UpdatedAt: now, Version: 1}
	st.MonthStart, st.MonthEnd = monthBounds(now, p.TimeZone)
	st.RechargeArmed = !p.AutoRecharge.Threshold.IsPositive()
	return st
}

// Clone returns a copy of st that shares no memory with it.
func (st AccountState) Clone() AccountState {
	st.Lots = slices.Clone(st.Lots)
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
func (st *AccountState) Advance(now time.Time, due []Hold) []Entry {
	changed := false
	for _, h := range due {
		if h.State == HoldActive && !now.Before(h.ExpiresAt) {
			st.Held = st.Held.Sub(h.Amount)
			changed = true
		}
	}
	var out []Entry
	for len(st.Lots) > 0 && !now.Before(st.Lots[0].ExpiresAt) {
		l := st.Lots[0]
		st.Lots = st.Lots[1:]
		st.Balance = st.Balance.Sub(l.Remaining)
		st.Seq++
		out = append(out, Entry{
			ID: ExpiryEntryID(l.ID), AccountID: st.ID, Seq: st.Seq, Type: EntryExpiry,
			Amount: l.Remaining.Neg(), BalanceAfter: st.Balance, Reference: l.ID,
			Description: "grant expired", CreatedAt: l.ExpiresAt,
		})
		changed = true
	}
	if !now.Before(st.MonthEnd) {
		st.MonthStart, st.MonthEnd = monthBounds(now, st.Policy.TimeZone)
		st.MonthSpent = Amount{}
		changed = true
	}
	if changed {
		st.Version++
		st.UpdatedAt = now
	}
	return out
}

// SetPolicy replaces the policy. A new time zone re-bounds the current cap
// month (spend so far carries over); the auto-recharge trigger re-arms if
// the balance is at or above the new threshold.
func (st *AccountState) SetPolicy(p Policy, now time.Time) {
	if p.TimeZone != st.Policy.TimeZone {
		st.MonthStart, st.MonthEnd = monthBounds(now, p.TimeZone)
	}
	st.Policy = p
	st.RechargeArmed = st.Balance.Cmp(p.AutoRecharge.Threshold) >= 0
	st.touch(now)
}

// View returns the account as hosts see it. st must be advanced to now.
func (st *AccountState) View() Account {
	return Account{
		ID: st.ID, Unit: st.Unit, Policy: st.Policy,
		Balance: st.Balance, Held: st.Held, Available: st.Balance.Sub(st.Held), Debt: st.debt(),
		UsedThisMonth: st.MonthSpent, OpenedAt: st.OpenedAt, UpdatedAt: st.UpdatedAt,
	}
}

func (st *AccountState) touch(now time.Time) {
	st.Version++
	st.UpdatedAt = now
}

// room is how much more may be spent or held: Balance − Held + Overdraft.
func (st *AccountState) room() Amount {
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
func (st *AccountState) capRoom() (Amount, bool) {
	c := st.Policy.MonthlyCap
	if !c.IsPositive() {
		return Amount{}, false
	}
	return c.Sub(st.MonthSpent).Sub(st.Held), true
}

// debt is how far the balance is below −Overdraft (zero if it is not).
func (st *AccountState) debt() Amount {
	d := st.Balance.Add(st.Policy.Overdraft)
	if !d.IsNegative() {
		return Amount{}
	}
	return d.Neg()
}

// canSpend checks a debit, reserve or hold extension of amt against funds
// and the cap. An account in debt gets a *DebtError naming it.
func (st *AccountState) canSpend(amt Amount) error {
	if st.room().Cmp(amt) < 0 {
		if d := st.debt(); d.IsPositive() {
			return &DebtError{Debt: d, Unit: st.Unit}
		}
		return ErrInsufficientFunds
	}
	if c, ok := st.capRoom(); ok && c.Cmp(amt) < 0 {
		return ErrMonthlyLimit
	}
	return nil
}

// withdraw lowers the balance by amt > 0, drawing on the earliest-expiring
// lots first.
func (st *AccountState) withdraw(amt Amount) {
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

func (st *AccountState) entry(id string, t EntryType, amt Amount, now time.Time) Entry {
	st.Seq++
	st.touch(now)
	return Entry{ID: id, AccountID: st.ID, Seq: st.Seq, Type: t, Amount: amt, BalanceAfter: st.Balance, CreatedAt: now}
}

// spend charges amt > 0 as a debit entry and counts it as monthly spend.
func (st *AccountState) spend(r *SpendRequest, amt Amount, now time.Time) Entry {
	st.withdraw(amt)
	st.MonthSpent = st.MonthSpent.Add(amt)
	e := st.entry(r.EntryID, EntryDebit, amt.Neg(), now)
	e.Reference, e.Description = r.Reference, r.Description
	return e
}

// afterSpend disarms the auto-recharge trigger and returns a request when
// the balance has just crossed below the threshold.
func (st *AccountState) afterSpend() *RechargeRequest {
	ar := st.Policy.AutoRecharge
	if !ar.Enabled || !st.RechargeArmed || st.Balance.Cmp(ar.Threshold) >= 0 {
		return nil
	}
	st.RechargeArmed = false
	st.Recharges++
	return &RechargeRequest{
		AccountID: st.ID, Amount: ar.Amount, Crossing: st.Recharges,
		IdempotencyKey: "auto-recharge:" + strconv.FormatInt(st.Recharges, 10),
	}
}

func (st *AccountState) afterCredit() {
	if !st.RechargeArmed && st.Balance.Cmp(st.Policy.AutoRecharge.Threshold) >= 0 {
		st.RechargeArmed = true
	}
}

func (st *AccountState) credit(r *CreditRequest, now time.Time) Entry {
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
				rem = Amount{}
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

func (st *AccountState) reserve(r *SpendRequest, now time.Time) Hold {
	st.Held = st.Held.Add(r.Amount)
	st.touch(now)
	return Hold{
		ID: r.HoldID, AccountID: st.ID, Amount: r.Amount, State: HoldActive, Reference: r.Reference,
		IdempotencyKey: r.IdempotencyKey, CreatedAt: now, ExpiresAt: now.Add(r.TTL),
	}
}

// coverable is the part of amt that funds (with overdraft) and the
// monthly cap allow to charge.
func (st *AccountState) coverable(amt Amount) Amount {
	if room := st.room(); room.Cmp(amt) < 0 {
		amt = room
	}
	if c, ok := st.capRoom(); ok && c.Cmp(amt) < 0 {
		amt = c
	}
	if amt.IsNegative() {
		return Amount{}
	}
	return amt
}

// extend raises the active hold h to r.Amount if that is more (checked
// against funds and the cap like a reserve of the difference) and moves its
// deadline to now + r.TTL if that is later. It reports whether h changed.
func (st *AccountState) extend(h *Hold, r *SpendRequest, now time.Time) (bool, error) {
	changed := false
	if d := r.Amount.Sub(h.Amount); d.IsPositive() {
		if err := st.canSpend(d); err != nil {
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
func (st *AccountState) settle(h *Hold, r *SpendRequest, now time.Time) (Entry, *RechargeRequest) {
	st.Held = st.Held.Sub(h.Amount)
	charge := r.Amount
	if r.Overrun == OverrunWriteOff {
		charge = st.coverable(charge)
	}
	h.State, h.ResolvedAt, h.Actual, h.Charged, h.SettleFingerprint = HoldSettled, now, r.Amount, charge, r.Fingerprint
	st.touch(now)
	if charge.IsZero() {
		return Entry{}, nil
	}
	ref := r.Reference
	if ref == "" {
		ref = h.Reference
	}
	rr := *r
	rr.Reference = ref
	e := st.spend(&rr, charge, now)
	e.HoldID = h.ID
	h.EntryID, h.EntrySeq = e.ID, e.Seq
	return e, st.afterSpend()
}

func (st *AccountState) release(h *Hold, now time.Time) {
	st.Held = st.Held.Sub(h.Amount)
	h.State, h.ResolvedAt = HoldReleased, now
	st.touch(now)
}

// ApplySpend runs one spend request on an open transaction: the single
// implementation of debit, reserve, settle and release that every backend
// uses. Expected failures are returned in SpendResult.Err with nothing
// written for the request; a non-nil error is a system failure after which
// the caller must roll back.
//
// Checks precede writes: a request either fails before it writes anything
// or claims its idempotency key and then writes its entry or hold, so a
// batch of requests in one transaction needs no savepoints.
func ApplySpend(ctx context.Context, tx Tx, now time.Time, r SpendRequest) (SpendResult, error) {
	res, err := applySpend(ctx, tx, now, &r)
	if err != nil {
		if isDomainError(err) {
			return SpendResult{Err: err}, nil
		}
		return SpendResult{}, err
	}
	return res, nil
}

func applySpend(ctx context.Context, tx Tx, now time.Time, r *SpendRequest) (SpendResult, error) {
	switch r.Kind {
	case SpendDebit, SpendReserve:
		return debitOrReserve(ctx, tx, now, r)
	case SpendSettle, SpendRelease, SpendExtend:
		return resolveHold(ctx, tx, now, r)
	}
	return SpendResult{}, ErrInvalidOptions
}

func debitOrReserve(ctx context.Context, tx Tx, now time.Time, r *SpendRequest) (SpendResult, error) {
	st, err := tx.State(ctx, r.AccountID)
	if err != nil {
		return SpendResult{}, err
	}
	if st.Unit != r.Unit {
		return SpendResult{}, ErrUnitMismatch
	}
	kind := OpDebit
	if r.Kind == SpendReserve {
		kind = OpReserve
	}
	amount := r.Amount
	switch {
	case kind == OpReserve || r.Overrun == 0:
		err = st.canSpend(amount)
	case r.Overrun == OverrunWriteOff:
		// Delivered work: charge what funds and the cap cover; nothing at
		// all is a refusal, so that the op always names a written entry.
		if amount = st.coverable(amount); amount.IsZero() {
			err = st.canSpend(r.Amount)
		}
	}
	if err != nil {
		// A replay of a request that succeeded returns its first result,
		// even though the same request would fail now.
		prev, ok, err2 := tx.Op(ctx, st.ID, r.IdempotencyKey)
		if err2 != nil || !ok {
			return SpendResult{}, cmpErr(err2, err)
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
		return SpendResult{}, err
	}
	if !claimed {
		return replay(ctx, tx, now, st.ID, prev, kind, r.Fingerprint)
	}
	if kind == OpReserve {
		h := st.reserve(r, now)
		return SpendResult{Hold: h}, tx.PutHold(ctx, h)
	}
	e := st.spend(r, amount, now)
	e.IdempotencyKey = r.IdempotencyKey
	if err := tx.AddEntry(ctx, e); err != nil {
		return SpendResult{}, err
	}
	return SpendResult{Entry: e, Recharge: st.afterSpend()}, nil
}

// cmpErr returns sys if it is set, else domain.
func cmpErr(sys, domain error) error {
	if sys != nil {
		return sys
	}
	return domain
}

func replay(ctx context.Context, tx Tx, now time.Time, accountID string, prev OpRecord, kind OpKind, fp Fingerprint) (SpendResult, error) {
	if prev.Kind != kind || prev.Fingerprint != fp {
		return SpendResult{}, ErrIdempotencyConflict
	}
	if kind == OpReserve {
		h, err := tx.Hold(ctx, prev.HoldID)
		return SpendResult{Hold: h.at(now)}, err
	}
	e, err := tx.Entry(ctx, accountID, prev.EntrySeq)
	return SpendResult{Entry: e}, err
}

func resolveHold(ctx context.Context, tx Tx, now time.Time, r *SpendRequest) (SpendResult, error) {
	h, err := tx.Hold(ctx, r.HoldID)
	if err != nil {
		return SpendResult{}, err
	}
	st, err := tx.State(ctx, h.AccountID) // may expire h in storage; h.at sees the same
	if err != nil {
		return SpendResult{}, err
	}
	if st.Unit != r.Unit {
		return SpendResult{}, ErrUnitMismatch
	}
	h = h.at(now)
	if r.Kind == SpendExtend {
		return extendHold(ctx, tx, now, st, h, r)
	}
	settle := r.Kind == SpendSettle
	switch h.State {
	case HoldSettled:
		if !settle {
			return SpendResult{}, ErrHoldSettled
		}
		if h.SettleFingerprint != r.Fingerprint {
			return SpendResult{}, ErrHoldSettled
		}
		res := SpendResult{Hold: h}
		if h.EntrySeq > 0 {
			res.Entry, err = tx.Entry(ctx, h.AccountID, h.EntrySeq)
		}
		return res, err
	case HoldReleased, HoldExpired:
		if !settle {
			return SpendResult{Hold: h}, nil // already free: Release is idempotent
		}
		if h.State == HoldReleased {
			return SpendResult{}, ErrHoldReleased
		}
		return SpendResult{}, ErrHoldExpired
	}
	var res SpendResult
	if settle {
		res.Entry, res.Recharge = st.settle(&h, r, now)
		if res.Entry.ID != "" {
			if err := tx.AddEntry(ctx, res.Entry); err != nil {
				return SpendResult{}, err
			}
		}
	} else {
		st.release(&h, now)
	}
	res.Hold = h
	return res, tx.PutHold(ctx, h)
}

func extendHold(ctx context.Context, tx Tx, now time.Time, st *AccountState, h Hold, r *SpendRequest) (SpendResult, error) {
	switch h.State {
	case HoldSettled:
		return SpendResult{}, ErrHoldSettled
	case HoldReleased:
		return SpendResult{}, ErrHoldReleased
	case HoldExpired:
		return SpendResult{}, ErrHoldExpired
	}
	changed, err := st.extend(&h, r, now)
	if err != nil || !changed {
		return SpendResult{Hold: h}, err
	}
	return SpendResult{Hold: h}, tx.PutHold(ctx, h)
}

// ApplyCredit runs one grant, purchase, refund or adjustment on an open
// transaction, with the same idempotency rules as ApplySpend. It returns
// expected failures (ErrUnknownAccount, ErrUnitMismatch,
// ErrIdempotencyConflict, ErrInsufficientFunds for a negative adjustment
// beyond the overdraft, ErrInvalidExpiry for a grant expiring at or before
// now) with nothing written, and system failures.
func ApplyCredit(ctx context.Context, tx Tx, now time.Time, r CreditRequest) (Entry, error) {
	st, err := tx.State(ctx, r.AccountID)
	if err != nil {
		return Entry{}, err
	}
	if st.Unit != r.Unit {
		return Entry{}, ErrUnitMismatch
	}
	var fail error
	switch {
	case r.Amount.IsNegative() && st.room().Cmp(r.Amount.Neg()) < 0:
		fail = ErrInsufficientFunds
	case !r.ExpiresAt.IsZero() && !r.ExpiresAt.After(now):
		fail = ErrInvalidExpiry // checked here, so that a replay after the expiry still replays
	}
	if fail != nil {
		prev, ok, err2 := tx.Op(ctx, st.ID, r.IdempotencyKey)
		if err2 != nil || !ok {
			return Entry{}, cmpErr(err2, fail)
		}
		res, err := replay(ctx, tx, now, st.ID, prev, OpCredit, r.Fingerprint)
		return res.Entry, err
	}
	rec := OpRecord{Kind: OpCredit, Fingerprint: r.Fingerprint, EntrySeq: st.Seq + 1}
	prev, claimed, err := tx.ClaimOp(ctx, st.ID, r.IdempotencyKey, rec)
	if err != nil {
		return Entry{}, err
	}
	if !claimed {
		res, err := replay(ctx, tx, now, st.ID, prev, OpCredit, r.Fingerprint)
		return res.Entry, err
	}
	e := st.credit(&r, now)
	return e, tx.AddEntry(ctx, e)
}
