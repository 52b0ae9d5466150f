package keyledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/keyledger/keyledger/errkind"
)

// Failure classification. Authorize tells two kinds of errors apart: the
// domains' answers about the request (a revoked key, no funds, a rate
// limit: the request is refused, and retrying it does not help) and
// failures of the systems it asks (the database stalled or reset, Redis
// down: no answer was given). The second kind is wrapped in
// ErrUnavailable, so that a host answers 503 and the client retries later,
// instead of a 500, or a wait as long as the stall.

// answer reports whether err is one of the domains' answers: an error of
// a kind that says something about the request (invalid, not found, a
// conflict, refused, no funds, rate limited). An error without a kind, or
// of kind Unavailable or Internal, is a failure of the system behind the
// call — a service closed by a shutdown included: the request may go to
// another instance.
func answer(err error) bool {
	switch errkind.Of(err) {
	case errkind.Unknown, errkind.Unavailable, errkind.Internal:
		return false
	}
	return true
}

// unavailable classifies an error of step (a store or limiter call made
// under a context derived from ctx, the caller's): a domain answer, or the
// caller's own cancellation, is returned as it is; anything else — the
// store timeout included — is wrapped in ErrUnavailable.
func unavailable(ctx context.Context, step string, err error) error {
	if err == nil || answer(err) || errors.Is(err, ErrUnavailable) {
		return err
	}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return err // the caller went away (or its own deadline passed): not our failure
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, step, err)
}

// bounded returns ctx bounded by the store timeout.
func (kl *KeyLedger) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if kl.storeTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, kl.storeTimeout)
}

// Backoff of Complete's retries: from retryMin, doubling to retryMax, with
// full jitter so that instances recovering together do not retry in step.
const (
	retryMin = 20 * time.Millisecond
	retryMax = time.Second
)

// sleepRetry waits the jittered backoff before attempt+1, or until ctx
// ends (false).
func sleepRetry(ctx context.Context, attempt int) bool {
	d := min(retryMin<<min(attempt, 10), retryMax)
	t := time.NewTimer(d/2 + rand.N(d/2+1))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
