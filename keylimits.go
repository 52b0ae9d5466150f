package keyledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
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
// ErrAmountPrecision for a bad limit, credits.ErrTooManyKeyLimits when
// the account's other limited keys that are still live fill the ledger's
// bound (limits of revoked or deleted keys are removed to make room), and
// the store's errors. The result is the key's spend now (zero when the
// limit was removed).
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
	ks, err := kl.Credits.SetKeyLimit(ctx, accountID, keyID, l.Amount, l.Period)
	if errors.Is(err, credits.ErrTooManyKeyLimits) {
		if n, perr := kl.pruneKeyLimits(ctx, accountID); perr != nil {
			return credits.KeySpend{}, perr
		} else if n > 0 {
			ks, err = kl.Credits.SetKeyLimit(ctx, accountID, keyID, l.Amount, l.Period)
		}
	}
	return ks, err
}

// pruneKeyLimits removes the spend limits of the account's keys that are
// revoked or gone (a revoked key never spends again, but its limit stays in
// the ledger row until removed) and returns how many it removed.
func (kl *KeyLedger) pruneKeyLimits(ctx context.Context, accountID string) (int, error) {
	a, err := kl.Credits.Account(ctx, accountID)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ks := range a.Keys {
		k, err := kl.Keys.Get(ctx, accountID, ks.KeyID)
		switch {
		case errors.Is(err, apikey.ErrNotFound), err == nil && k.Status == apikey.StatusRevoked:
		case err != nil:
			return n, err
		default:
			continue
		}
		if _, err := kl.Credits.SetKeyLimit(ctx, accountID, ks.KeyID, credits.Amount{}, ""); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
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

// keyLimits returns the limits of a key's own buckets: the plan's l,
// lowered by the key's own limits where they are set and lower (a plan
// lowered below a key's limit wins).
func keyLimits(l account.Limits, k apikey.RateLimits) account.Limits {
	lower := func(plan, key int64) int64 {
		if key > 0 && (plan <= 0 || key < plan) {
			return key
		}
		return plan
	}
	return account.Limits{
		RequestsPerMinute:         lower(l.RequestsPerMinute, k.RequestsPerMinute),
		PromptTokensPerMinute:     lower(l.PromptTokensPerMinute, k.PromptTokensPerMinute),
		CompletionTokensPerMinute: lower(l.CompletionTokensPerMinute, k.CompletionTokensPerMinute),
	}
}

// SetKeyRateLimits sets the account's key keyID's own per-minute limits
// (zero fields: the plan's). Each must be below the account's plan limit
// (or its custom limits), else ErrKeyRateLimitAbovePlan naming it; the
// limiter step of Authorize then applies the key's limit to the key's
// buckets and the plan's to the account's. It returns apikey.ErrNotFound
// for a key of another account and apikey.ErrInvalidRateLimits for a
// negative or absurd value.
func (kl *KeyLedger) SetKeyRateLimits(ctx context.Context, accountID, keyID string, l apikey.RateLimits) (apikey.APIKey, error) {
	if _, err := kl.Keys.Get(ctx, accountID, keyID); err != nil {
		return apikey.APIKey{}, err
	}
	a, err := kl.Accounts.Get(ctx, accountID)
	if err != nil {
		return apikey.APIKey{}, err
	}
	plan := kl.limits(a.Plan, accountInfo{limits: a.Limits})
	for _, c := range []struct {
		name      string
		key, plan int64
	}{
		{"requests_per_minute", l.RequestsPerMinute, plan.RequestsPerMinute},
		{"prompt_tokens_per_minute", l.PromptTokensPerMinute, plan.PromptTokensPerMinute},
		{"completion_tokens_per_minute", l.CompletionTokensPerMinute, plan.CompletionTokensPerMinute},
	} {
		if c.key > 0 && c.plan > 0 && c.key > c.plan {
			return apikey.APIKey{}, fmt.Errorf("%w: %s %d is above the plan's %d", ErrKeyRateLimitAbovePlan, c.name, c.key, c.plan)
		}
	}
	return kl.Keys.Update(ctx, accountID, keyID, apikey.UpdateParams{RateLimits: &l})
}
