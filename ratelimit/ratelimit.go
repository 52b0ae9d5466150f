// Package ratelimit enforces per-minute budgets (requests, prompt tokens,
// completion tokens) per API key and per account with GCRA, the generic cell
// rate algorithm: each bucket is one timestamp (its "theoretical arrival
// time"), so a check is a few integer operations and a bucket at rest costs
// nothing.
//
// A Limiter checks several buckets at once and takes from all of them or
// from none, so a request refused by its token budget does not use up its
// request budget. Token budgets are reserved up front from an estimate and
// corrected afterwards with Adjust.
//
// Memory is the in-process Limiter (sharded, no global lock, bounded,
// idle buckets evicted without loss). The subpackage redislimit shares
// budgets between many instances through Redis.
package ratelimit

import (
	"context"
	"time"

	"github.com/keyledger/keyledger/errkind"
)

// Errors.
var (
	ErrTooManyBuckets = errkind.New(errkind.Invalid, "ratelimit: too many buckets in one call")
	ErrInvalidLimit   = errkind.New(errkind.Invalid, "ratelimit: invalid limit")
	// ErrUnavailable is wrapped around the failure of a shared limiter's
	// backend (Redis unreachable or slow) when its policy is to fail
	// closed: the request is neither admitted nor refused.
	ErrUnavailable = errkind.New(errkind.Unavailable, "ratelimit: limiter backend unavailable")
)

// MaxBuckets is the most buckets one Allow or Adjust call may name: the six
// budgets of one request (requests, prompt tokens and completion tokens, each
// per key and per account). It is small because every Decision carries a
// Result per bucket by value.
const MaxBuckets = 6

// Limit is a budget of Rate units per Period with a burst of Burst units
// (Rate when zero): a bucket at rest can take Burst units at once and then
// refills at Rate per Period. A zero Rate means no limit.
type Limit struct {
	Rate   int64
	Period time.Duration
	Burst  int64
}

// PerMinute returns a limit of n per minute with a burst of n.
func PerMinute(n int64) Limit { return Limit{Rate: n, Period: time.Minute} }

// Unlimited reports whether l enforces nothing.
func (l Limit) Unlimited() bool { return l.Rate <= 0 }

// burst returns the effective burst.
func (l Limit) burst() int64 {
	if l.Burst > 0 {
		return l.Burst
	}
	return l.Rate
}

// valid reports whether the limit can be paced: an emission interval
// Period/Rate of at least a nanosecond (Period ≥ Rate, without dividing).
func (l Limit) valid() bool {
	return l.Unlimited() || (l.Period > 0 && l.Burst >= 0 && int64(l.Period) >= l.Rate)
}

// interval is the GCRA emission interval in nanoseconds: the time one unit
// takes to refill.
func (l Limit) interval() int64 { return int64(l.Period) / l.Rate }

// Request asks one bucket for Cost units (Cost may be zero to read the
// bucket's state without taking anything).
type Request struct {
	Key   string
	Limit Limit
	Cost  int64
}

// Result is the state of one bucket after a call. It is small and free of
// pointers so that a Decision is cheap to return.
type Result struct {
	// Limit is the bucket's burst: what the X-Ratelimit-Limit-* headers show.
	Limit int64
	// Remaining is how many units the bucket could take now.
	Remaining int64
	// ResetUnixNano is when the bucket will be full again (see Reset).
	ResetUnixNano int64
	// RetryAfter is how long until this request could succeed (zero when it
	// was allowed).
	RetryAfter time.Duration
	// Allowed reports whether this bucket had room for the cost.
	Allowed bool
	// TooLarge reports a cost above the burst: it can never succeed.
	TooLarge bool
}

// Reset returns when the bucket will be full again.
func (r Result) Reset() time.Time { return time.Unix(0, r.ResetUnixNano) }

// Decision is the outcome of Allow over several buckets.
type Decision struct {
	// Allowed is true when every bucket had room; then every bucket was
	// charged, otherwise none was.
	Allowed bool
	N       int
	Results [MaxBuckets]Result
}

// Buckets returns the per-bucket results in request order.
func (d *Decision) Buckets() []Result { return d.Results[:d.N] }

// RetryAfter is the longest wait any refusing bucket asks for.
func (d *Decision) RetryAfter() time.Duration {
	var r time.Duration
	for _, b := range d.Results[:d.N] {
		r = max(r, b.RetryAfter)
	}
	return r
}

// Limiter checks and charges buckets. Implementations are safe for
// concurrent use.
type Limiter interface {
	// Allow charges every request's cost if all buckets have room, and none
	// otherwise. Unlimited requests are reported as allowed with no state.
	Allow(ctx context.Context, reqs ...Request) (Decision, error)
	// Adjust corrects earlier charges without refusing: a positive cost
	// takes more (actual usage above the estimate may push a bucket into
	// debt, delaying later requests), a negative cost gives back.
	Adjust(ctx context.Context, reqs ...Request) error
}

// gcra computes one bucket's step. tat is the stored arrival time (0 for a
// bucket at rest), all times in unix nanoseconds. It returns the result and
// the new arrival time to store when the whole call is allowed.
func gcra(now, tat int64, r Request) (Result, int64) {
	T := r.Limit.interval()
	burst := r.Limit.burst()
	tau := T * burst
	if tat < now {
		tat = now
	}
	res := Result{Limit: burst}
	newTat := tat + r.Cost*T
	if allowAt := newTat - tau; allowAt > now {
		res.RetryAfter = time.Duration(allowAt - now)
		res.TooLarge = r.Cost > burst
		res.Remaining = max(0, (tau-(tat-now))/T)
		res.ResetUnixNano = tat
		return res, tat
	}
	res.Allowed = true
	res.Remaining = (tau - (newTat - now)) / T
	res.ResetUnixNano = newTat
	return res, newTat
}

// adjust moves a bucket's arrival time by cost units, never below now.
func adjust(now, tat int64, r Request) int64 {
	if tat < now {
		tat = now
	}
	tat += r.Cost * r.Limit.interval()
	return max(tat, now)
}

func validate(reqs []Request) error {
	if len(reqs) > MaxBuckets {
		return ErrTooManyBuckets
	}
	for _, r := range reqs {
		if !r.Limit.valid() {
			return ErrInvalidLimit
		}
	}
	return nil
}
