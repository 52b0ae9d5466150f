package credits

import (
	"context"
	"time"

	"github.com/keyledger/keyledger/errkind"
)

// Per-key spend limits.
//
// An API key may have a spend limit: an amount per Period, kept in the
// ledger account (the pool every key of the account draws from) next to
// the key's spend counters. The counters carry the start of the period
// they count and read as zero once it has passed, so periods roll over
// when they are read and no reset job exists. A reserve or debit that
// names the key (ReserveParams.KeyID, DebitParams.KeyID) is checked
// against the limit in the same transaction as the funds check: settled
// spend and active holds of the key count. A hold's settlement records its
// actual charge on the key (it may exceed the hold, as for the account);
// a release or expiry frees the key's part.

// Period is how often a key's spend limit starts over.
type Period string

// Periods. Day, week (ISO, from Monday) and month are calendar-aligned in
// the account policy's time zone (Policy.TimeZone); a lifetime limit never
// resets.
const (
	PeriodDay      Period = "day"
	PeriodWeek     Period = "week"
	PeriodMonth    Period = "month"
	PeriodLifetime Period = "lifetime"
)

// Valid reports whether p is one of the defined periods.
func (p Period) Valid() bool {
	switch p {
	case PeriodDay, PeriodWeek, PeriodMonth, PeriodLifetime:
		return true
	}
	return false
}

// Bounds returns the period of kind p that contains now, in the IANA time
// zone tz ("" or an unknown zone: UTC), as UTC instants. A lifetime period
// has zero bounds.
func (p Period) Bounds(now time.Time, tz string) (start, end time.Time) {
	loc := time.UTC
	if tz != "" && tz != "UTC" {
		if l, err := time.LoadLocation(tz); err == nil {
			loc = l
		}
	}
	t := now.In(loc)
	y, m, d := t.Date()
	switch p {
	case PeriodDay:
		start = time.Date(y, m, d, 0, 0, 0, 0, loc)
		end = time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	case PeriodWeek:
		back := (int(t.Weekday()) + 6) % 7 // days since Monday
		start = time.Date(y, m, d-back, 0, 0, 0, 0, loc)
		end = time.Date(y, m, d-back+7, 0, 0, 0, 0, loc)
	case PeriodMonth:
		start = time.Date(y, m, 1, 0, 0, 0, 0, loc)
		end = time.Date(y, m+1, 1, 0, 0, 0, 0, loc)
	default:
		return time.Time{}, time.Time{}
	}
	return start.UTC(), end.UTC()
}

// KeySpend is an API key's spend limit and its use in the current period.
type KeySpend struct {
	KeyID  string `json:"key_id"`
	Limit  Amount `json:"limit"`
	Period Period `json:"period"`
	// Spent is what settlements and debits of the key charged this period.
	Spent Amount `json:"spent"`
	// Held is the key's active holds counted this period.
	Held Amount `json:"held"`
	// Remaining is Limit − Spent − Held, never below zero.
	Remaining Amount `json:"remaining"`
	// PeriodStart and ResetsAt bound the current period (zero for a
	// lifetime limit).
	PeriodStart time.Time `json:"period_start,omitzero"`
	ResetsAt    time.Time `json:"resets_at,omitzero"`
}

// KeyBudgetError refuses a reserve, debit or hold extension of a key with
// a spend limit. Whole is set when the request alone is more than the
// key's whole period limit: errors.Is matches ErrKeyLimitExceeded and the
// kind is Invalid (the request can never succeed). Otherwise it is more
// than what remains this period: errors.Is matches ErrKeyBudgetExceeded,
// the kind is PaymentRequired, and ResetAt says when the period starts
// over (zero for a lifetime limit).
type KeyBudgetError struct {
	KeyID     string
	Limit     Amount
	Period    Period
	Remaining Amount
	ResetAt   time.Time
	Whole     bool
	Unit      string
}

func (e *KeyBudgetError) Error() string {
	if e.Whole {
		return "credits: request exceeds the key's " + string(e.Period) + " spend limit of " + e.Limit.String() + " " + e.Unit
	}
	msg := "credits: key " + string(e.Period) + " spend limit of " + e.Limit.String() + " " + e.Unit +
		" reached (" + e.Remaining.String() + " left)"
	if !e.ResetAt.IsZero() {
		msg += "; resets at " + e.ResetAt.UTC().Format(time.RFC3339)
	}
	return msg
}

// Is makes errors.Is match ErrKeyLimitExceeded (Whole) or
// ErrKeyBudgetExceeded.
func (e *KeyBudgetError) Is(target error) bool {
	if e.Whole {
		return target == ErrKeyLimitExceeded
	}
	return target == ErrKeyBudgetExceeded
}

// Kind is errkind.Invalid when Whole, else errkind.PaymentRequired.
func (e *KeyBudgetError) Kind() errkind.Kind {
	if e.Whole {
		return errkind.Invalid
	}
	return errkind.PaymentRequired
}

// SetKeyLimit sets the spend limit of the key keyID on the account: limit
// (positive, a multiple of the unit's SpendIncrement) per period p. The
// counters of the current period carry over, so changing a limit (or its
// period) never forgives spend already made; a limit below it refuses the
// key's further spending until the period resets. A zero Period removes
// the limit (limit is then ignored). It returns the key's spend, or
// ErrUnknownAccount, ErrInvalidAccountID, ErrInvalidKeyLimit,
// ErrInvalidAmount or ErrAmountPrecision.
func (s *Service) SetKeyLimit(ctx context.Context, accountID, keyID string, limit Amount, p Period) (KeySpend, error) {
	if !validID(accountID) {
		return KeySpend{}, ErrInvalidAccountID
	}
	if !validID(keyID) || (p != "" && !p.Valid()) {
		return KeySpend{}, ErrInvalidKeyLimit
	}
	if s.closed.Load() {
		return KeySpend{}, ErrClosed
	}
	if p != "" {
		if !limit.IsPositive() {
			return KeySpend{}, ErrInvalidKeyLimit
		}
		if err := s.checkAmount(limit, false); err != nil {
			return KeySpend{}, err
		}
	} else {
		limit = Amount{}
	}
	ks, err := s.store.SetKeyLimit(ctx, accountID, keyID, limit, p, s.opt.Now())
	s.forgetLocal(accountID)
	s.retireLeases(accountID, keyID)
	return ks, err
}

// KeySpend returns the key's spend limit and its use in the current
// period, and false if the key has no limit. It returns ErrUnknownAccount.
func (s *Service) KeySpend(ctx context.Context, accountID, keyID string) (KeySpend, bool, error) {
	a, err := s.Account(ctx, accountID)
	if err != nil {
		return KeySpend{}, false, err
	}
	for _, k := range a.Keys {
		if k.KeyID == keyID {
			return k, true, nil
		}
	}
	return KeySpend{}, false, nil
}
