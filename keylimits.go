package keyledger

import (
	"context"

	"github.com/keyledger/keyledger/credits"
)

// SpendLimit is an API key's spend limit: Amount per Period (day, week,
// month — calendar-aligned in the account's time zone — or lifetime).
type SpendLimit struct {
	Amount credits.Amount
	Period credits.Period
}

// SetKeySpendLimit sets the spend limit of the account's key keyID, or
// removes it when l is nil. The account's balance stays the pool every key
// draws from; the limit is a sub-cap enforced by Authorize (and a stream's
// hold extensions) in the same ledger transaction as the funds: a request
// whose reservation exceeds the whole limit is refused with a
// *credits.KeyBudgetError of kind Invalid (errors.Is
// credits.ErrKeyLimitExceeded), one that exceeds what remains this period
// with kind PaymentRequired (credits.ErrKeyBudgetExceeded) carrying the
// time the period resets. Spend made before a change still counts in the
// current period. It returns apikey.ErrNotFound for a key of another
// account, credits.ErrInvalidKeyLimit, ErrInvalidAmount or
// ErrAmountPrecision for a bad limit, and the store's errors. The result
// is the key's spend now (zero when the limit was removed).
func (kl *KeyLedger) SetKeySpendLimit(ctx context.Context, accountID, keyID string, l *SpendLimit) (credits.KeySpend, error) {
	if _, err := kl.Keys.Get(ctx, accountID, keyID); err != nil {
		return credits.KeySpend{}, err
	}
	if l == nil {
		return kl.Credits.SetKeyLimit(ctx, accountID, keyID, credits.Amount{}, "")
	}
	if !l.Period.Valid() {
		return credits.KeySpend{}, credits.ErrInvalidKeyLimit
	}
	return kl.Credits.SetKeyLimit(ctx, accountID, keyID, l.Amount, l.Period)
}

// KeySpend returns the spend limit of the account's key keyID with its
// spent-this-period, remaining and reset time, and false if the key has
// no limit. It returns apikey.ErrNotFound for a key of another account.
func (kl *KeyLedger) KeySpend(ctx context.Context, accountID, keyID string) (credits.KeySpend, bool, error) {
	if _, err := kl.Keys.Get(ctx, accountID, keyID); err != nil {
		return credits.KeySpend{}, false, err
	}
	return kl.Credits.KeySpend(ctx, accountID, keyID)
}

// KeySpends returns the spend limits of the account's keys that have one,
// by key ID (one ledger read, for key lists).
func (kl *KeyLedger) KeySpends(ctx context.Context, accountID string) (map[string]credits.KeySpend, error) {
	a, err := kl.Credits.Account(ctx, accountID)
	if err != nil {
		return nil, err
	}
	out := make(map[string]credits.KeySpend, len(a.Keys))
	for _, k := range a.Keys {
		out[k.KeyID] = k
	}
	return out, nil
}
