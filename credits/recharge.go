package credits

import (
	"context"
	"errors"
	"time"
)

// Recharger is the host's payment hook for auto-recharge (for Forii, a
// Razorpay charge of a saved mandate). The Service calls it in its own
// goroutine, once per threshold crossing, with a context bounded by
// Options.RechargeTimeout; it must charge at most once per IdempotencyKey.
// It charges the customer for r.Amount and returns the payment's
// reference, or an error if no money was taken.
type Recharger func(ctx context.Context, r RechargeRequest) (RechargeResult, error)

// RechargeRequest asks the host to buy credit after a threshold crossing.
type RechargeRequest struct {
	AccountID string `json:"account_id"`
	Amount    Amount `json:"amount"`
	// Crossing numbers the account's threshold crossings: 1, 2, 3…
	Crossing int64 `json:"crossing"`
	// IdempotencyKey ("auto-recharge:<crossing>") is used for the purchase
	// entry; pass it to the payment provider too.
	IdempotencyKey string `json:"idempotency_key"`
}

// RechargeResult is a successful recharge.
type RechargeResult struct {
	// Reference is the payment's ID; it becomes the purchase entry's
	// reference.
	Reference string
	// IdempotencyKey, if set, replaces the request's key for the purchase
	// entry, and Description, if set, replaces "auto-recharge". A host whose
	// payment provider also reports the payment another way (a webhook that
	// credits every paid order as a Purchase keyed by the order) returns
	// that Purchase's key, reference and description here, so whichever
	// path writes first, the other replays the same entry and the payment
	// is credited once.
	IdempotencyKey, Description string
}

// Stats are a Service's counters since it was created.
type Stats struct {
	// Batches and BatchedSpends count group commits and the spends they
	// carried; MaxBatch is the largest batch so far.
	Batches, BatchedSpends, MaxBatch int64
	// RechargesStarted counts Recharger calls; RechargesSucceeded and
	// RechargesFailed their outcomes (a failure includes writing the
	// purchase; a crossing committed after Close began waiting for
	// recharges also counts as failed, with ErrClosed, without a call).
	// RechargesSkipped counts crossings without a Recharger.
	RechargesStarted, RechargesSucceeded, RechargesFailed, RechargesSkipped int64
}

// startRecharge calls the Recharger for rr in a new goroutine. Once Close
// has started waiting for recharges it starts none: the crossing counts as
// a failed recharge with ErrClosed.
func (s *Service) startRecharge(rr *RechargeRequest) {
	if s.opt.Recharger == nil {
		s.stats.rechargesSkipped.Add(1)
		return
	}
	s.rmu.Lock()
	if s.rclosed {
		s.rmu.Unlock()
		s.rechargeFailed(context.Background(), *rr, ErrClosed)
		return
	}
	s.recharges.Add(1)
	s.rmu.Unlock()
	s.stats.rechargesStarted.Add(1)
	go func() {
		defer s.recharges.Done()
		s.recharge(*rr)
	}()
}

func (s *Service) recharge(rr RechargeRequest) {
	ctx, cancel := context.WithTimeout(s.life, s.opt.RechargeTimeout)
	defer cancel()
	res, err := s.opt.Recharger(ctx, rr)
	if err == nil {
		p := CreditParams{
			AccountID: rr.AccountID, Amount: rr.Amount, Reference: res.Reference,
			Description: "auto-recharge", IdempotencyKey: rr.IdempotencyKey,
		}
		if res.IdempotencyKey != "" {
			p.IdempotencyKey = res.IdempotencyKey
		}
		if res.Description != "" {
			p.Description = res.Description
		}
		err = s.creditPaid(ctx, p)
	}
	if err != nil {
		s.rechargeFailed(ctx, rr, err)
		return
	}
	s.stats.rechargesSucceeded.Add(1)
}

// Backoff between attempts to write a paid recharge's purchase.
const (
	paidRetryFirst = 10 * time.Millisecond
	paidRetryMax   = time.Second
)

// creditPaid writes the purchase of a recharge the customer has paid for.
// A store failure is retried under the same idempotency key until ctx ends
// (Options.RechargeTimeout): a write that committed although the store
// reported an error is then replayed, not credited twice, and one that did
// not commit is applied, so a transient failure neither loses the payment
// nor reports a credited recharge as failed.
func (s *Service) creditPaid(ctx context.Context, p CreditParams) error {
	wait := paidRetryFirst
	for {
		_, err := s.credit(ctx, EntryPurchase, p, time.Time{})
		if err == nil || !storeFailure(err) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, paidRetryMax)
	}
}

// storeFailure reports whether a credit's error is a system failure rather
// than a rejection of the request, which a retry would only repeat.
func storeFailure(err error) bool {
	if isDomainError(err) {
		return false
	}
	for _, e := range []error{ErrInvalidAmount, ErrAmountPrecision, ErrInvalidExpiry, ErrInvalidIdempotencyKey, ErrInvalidText, ErrClosed} {
		if errors.Is(err, e) {
			return false
		}
	}
	return true
}

func (s *Service) rechargeFailed(ctx context.Context, rr RechargeRequest, err error) {
	s.stats.rechargesFailed.Add(1)
	s.opt.Logger.WarnContext(ctx, "credits: auto-recharge failed", "account_id", rr.AccountID,
		"crossing", rr.Crossing, "error", err)
	if s.opt.OnRechargeError != nil {
		s.opt.OnRechargeError(rr, err)
	}
}
