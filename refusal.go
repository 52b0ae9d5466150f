package keyledger

import (
	"context"
	"errors"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/ratelimit"
	"github.com/keyledger/keyledger/usage"
)

// RecordableRefusal reports whether Authorize's err refused a request whose
// key was identified for a reason the customer should see in the request
// log and usage error counts: an unknown model, a model or scope the key
// may not use, or no funds (balance or monthly cap). Key errors (nothing
// to attribute the request to) and rate-limit refusals (recording them
// would turn a flood the limiter absorbs cheaply into store writes) are
// not.
func RecordableRefusal(err error) bool {
	for _, e := range []error{usage.ErrUnknownModel, apikey.ErrModelNotAllowed, apikey.ErrScopeNotAllowed,
		credits.ErrInsufficientFunds, credits.ErrMonthlyLimit, credits.ErrKeyBudgetExceeded, credits.ErrKeyLimitExceeded} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// RecordRefusal records a request that Authorize refused after its key v
// was identified (see RecordableRefusal), with the status and error the
// client was answered: a usage record that is not billable, charges
// nothing and holds nothing, so every request shows in the request log and
// the usage error counts — up to the plan's requests per minute per account
// (a log rate of its own, which takes nothing from the request budgets);
// refusals beyond it are answered but not recorded. It returns Meter's errors (usage.ErrInvalidRecord
// for a record the store cannot hold, e.g. an over-long model name).
func (kl *KeyLedger) RecordRefusal(ctx context.Context, v apikey.Verified, req Request, status int, errType, message string) error {
	now := kl.now()
	info, err := kl.account(ctx, v.AccountID, now.UnixNano())
	if err != nil {
		return err
	}
	// A refusal log of its own per account, at the plan's request rate
	// (600 a minute for plans without one): an identified key that floods
	// refused requests (an unknown model is refused before the rate limit)
	// cannot turn each into a store write. The refusal itself never takes
	// from the request's budgets; past this log's rate it is answered but
	// not recorded.
	rpm := kl.limits(v.Plan, info).RequestsPerMinute
	if rpm <= 0 {
		rpm = 600
	}
	d, err := kl.Limiter.Allow(ctx, ratelimit.Request{Key: bucketKey("a:x:", rpm, v.AccountID), Limit: ratelimit.PerMinute(rpm), Cost: 1})
	if err != nil || !d.Allowed {
		return err
	}
	rec := usage.Record{
		AccountID: v.AccountID, KeyID: v.KeyID, AuthSource: "api_key",
		Endpoint: req.Endpoint, Method: req.Method, Model: req.Model, StatusCode: status,
		ErrorType: errType, ErrorMessage: message,
	}
	_, err = kl.meter(context.WithoutCancel(ctx), usage.MeterParams{Record: rec, IdempotencyKey: kl.ids.New("req_"), TimeZone: info.tz})
	return err
}
