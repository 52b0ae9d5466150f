package ledger

import (
	"slices"
	"strings"
	"time"

	"github.com/keyledger/keyledger/credits"
)

// KeyState is one API key's spend limit and its counters, kept in the
// account state so that the limit is read and enforced in the transaction
// that checks the funds. The counters belong to the period [Start, End);
// once now reaches End, Advance starts a new period with zeroed counters
// and a new Epoch (no reset job: whoever reads the account first rolls
// it). A lifetime limit has zero bounds and never rolls.
type KeyState struct {
	KeyID  string         `json:"k"`
	Limit  credits.Amount `json:"l"`
	Period credits.Period `json:"p"`
	Start  time.Time      `json:"s,omitzero"`
	End    time.Time      `json:"e,omitzero"`
	// Spent is what debits and settlements of the key charged this period.
	Spent credits.Amount `json:"sp"`
	// Held is the key's active holds whose KeyEpoch is Epoch.
	Held credits.Amount `json:"h"`
	// Epoch names this period's counters: the account Version when they
	// started. A hold counted in Held carries it (Hold.KeyEpoch), so that
	// its settle, release or expiry frees it only from the counters that
	// include it.
	Epoch int64 `json:"ep"`
}

// remaining is Limit − Spent − Held, which may be negative (a limit
// lowered below the spend, or a settlement above its hold).
func (k *KeyState) remaining() credits.Amount {
	return k.Limit.Sub(k.Spent).Sub(k.Held)
}

// view is k as hosts see it.
func (k *KeyState) view() credits.KeySpend {
	rem := k.remaining()
	if rem.IsNegative() {
		rem = credits.Amount{}
	}
	return credits.KeySpend{
		KeyID: k.KeyID, Limit: k.Limit, Period: k.Period, Spent: k.Spent, Held: k.Held,
		Remaining: rem, PeriodStart: k.Start, ResetsAt: k.End,
	}
}

// key returns the state of keyID, or nil if it has no limit.
func (st *AccountState) key(keyID string) *KeyState {
	if keyID == "" || len(st.Keys) == 0 {
		return nil
	}
	i, ok := slices.BinarySearchFunc(st.Keys, keyID, func(k KeyState, id string) int { return strings.Compare(k.KeyID, id) })
	if !ok {
		return nil
	}
	return &st.Keys[i]
}

// KeySpend reports the key's limit and its use in the current period, and
// false if the key has no limit. st must be advanced to now. It reads the
// state inside the transaction, so code that runs there (events at a share
// of a budget) sees what the transaction changed.
func (st *AccountState) KeySpend(keyID string) (credits.KeySpend, bool) {
	k := st.key(keyID)
	if k == nil {
		return credits.KeySpend{}, false
	}
	return k.view(), true
}

// MaxKeyLimits bounds the keys of one account with a spend limit: their
// state is rewritten with the account's row on every spend, so it must not
// grow without end (credits.ErrTooManyKeyLimits past it).
const MaxKeyLimits = 100

// SetKeyLimit sets the key's limit per period p (limit > 0), or removes it
// when p is "". The counters of the current period carry over: a new
// amount keeps them; a new period keeps them and re-bounds them to the
// period of the new kind that contains now, so switching periods never
// forgives spend. A new limit past MaxKeyLimits is
// credits.ErrTooManyKeyLimits, with st unchanged. st must be advanced to
// now.
func (st *AccountState) SetKeyLimit(keyID string, limit credits.Amount, p credits.Period, now time.Time) (credits.KeySpend, error) {
	i, ok := slices.BinarySearchFunc(st.Keys, keyID, func(k KeyState, id string) int { return strings.Compare(k.KeyID, id) })
	if !ok && p != "" && len(st.Keys) >= MaxKeyLimits {
		return credits.KeySpend{}, credits.ErrTooManyKeyLimits
	}
	st.touch(now)
	if p == "" {
		if ok {
			st.Keys = slices.Delete(slices.Clip(st.Keys), i, i+1)
		}
		return credits.KeySpend{}, nil
	}
	if !ok {
		k := KeyState{KeyID: keyID, Epoch: st.Version}
		st.Keys = slices.Insert(slices.Clip(st.Keys), i, k)
	}
	k := &st.Keys[i]
	k.Limit = limit
	if k.Period != p || (k.End.IsZero() && p != credits.PeriodLifetime) {
		k.Period = p
		k.Start, k.End = p.Bounds(now, st.Policy.TimeZone)
	}
	return k.view(), nil
}

// advanceKeys starts a new period for each key whose period ended at or
// before now; it reports whether any did. The caller bumps Version first:
// the new epoch is the new Version.
func (st *AccountState) advanceKeys(now time.Time) bool {
	rolled := false
	for i := range st.Keys {
		k := &st.Keys[i]
		if k.End.IsZero() || now.Before(k.End) {
			continue
		}
		k.Start, k.End = k.Period.Bounds(now, st.Policy.TimeZone)
		k.Spent, k.Held = credits.Amount{}, credits.Amount{}
		k.Epoch = -1 // set by the caller once Version is final
		rolled = true
	}
	return rolled
}

// setEpochs gives the keys that rolled (Epoch −1) the current Version.
func (st *AccountState) setEpochs() {
	for i := range st.Keys {
		if st.Keys[i].Epoch == -1 {
			st.Keys[i].Epoch = st.Version
		}
	}
}

// unhold frees h from its key's counters if they include it.
func (st *AccountState) unhold(h *credits.Hold) {
	if h.KeyEpoch == 0 {
		return
	}
	if k := st.key(h.KeyID); k != nil && k.Epoch == h.KeyEpoch {
		k.Held = k.Held.Sub(h.Amount)
	}
}

// keyCheck checks a reserve or debit of amt by keyID against its limit,
// counting others (the process's other holds of the key) as held.
func (st *AccountState) keyCheck(keyID string, amt, others credits.Amount) error {
	k := st.key(keyID)
	if k == nil {
		return nil
	}
	if amt.Cmp(k.Limit) > 0 {
		return &credits.KeyBudgetError{KeyID: keyID, Limit: k.Limit, Period: k.Period, Whole: true, Unit: st.Unit}
	}
	rem := k.remaining()
	if !others.IsZero() {
		rem = rem.Sub(others)
	}
	if rem.Cmp(amt) < 0 {
		if rem.IsNegative() {
			rem = credits.Amount{}
		}
		return &credits.KeyBudgetError{KeyID: keyID, Limit: k.Limit, Period: k.Period, Remaining: rem, ResetAt: k.End, Unit: st.Unit}
	}
	return nil
}

// keyExtend checks and counts the raise of hold h by d (its new amount is
// h.Amount + d). A hold its key's counters do not include (reserved in an
// earlier period, or before the limit was set) joins them whole, as its
// settlement will count in this period.
func (st *AccountState) keyExtend(h *credits.Hold, d credits.Amount) error {
	k := st.key(h.KeyID)
	if k == nil {
		return nil
	}
	add := d
	if h.KeyEpoch != k.Epoch {
		add = h.Amount.Add(d)
	}
	rem := k.remaining()
	if rem.Cmp(add) < 0 {
		if rem.IsNegative() {
			rem = credits.Amount{}
		}
		return &credits.KeyBudgetError{KeyID: k.KeyID, Limit: k.Limit, Period: k.Period, Remaining: rem, ResetAt: k.End, Unit: st.Unit}
	}
	k.Held = k.Held.Add(add)
	h.KeyEpoch = k.Epoch
	return nil
}
