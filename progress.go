package keyledger

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
	"github.com/keyledger/keyledger/ratelimit"
)

// Delivered is what a request has delivered so far: cumulative counts, as
// a stream's handler knows them after each chunk it wrote.
type Delivered struct {
	PromptTokens, CompletionTokens int64
	// Units are the delivered units of an operation-priced request.
	Units int64
}

// Progress reports what the request has delivered so far and keeps it
// funded. Call it after each piece of a long or streamed response with the
// cumulative counts; it is cheap (a comparison) until something is due:
//
//   - When the delivered cost nears the hold, the hold is extended from the
//     balance (credits.Service.Extend: checked against funds and the
//     monthly cap like a reserve), by the request's initial hold each time.
//     An upstream that ignores its limit keeps being funded as long as the
//     balance allows.
//   - When half the hold's TTL has passed, its deadline is renewed, so that
//     a request that keeps reporting never outlives its hold.
//   - When the delivered cost has reached what is held and the balance
//     cannot fund more, Progress returns ErrBudgetExhausted and cancels the
//     grant's Context with that cause: the handler stops the work and ends
//     the response cleanly, and Complete charges what was delivered. A
//     request is never stopped while its delivered cost is within the hold.
//
// Progress returns nil for free requests, after Complete or Cancel, and on
// store failures other than a refusal (the next call tries again).
func (g *Grant) Progress(ctx context.Context, d Delivered) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := &g.fund
	if g.done || g.Hold.ID == "" {
		return nil
	}
	if f.exhausted {
		return ErrBudgetExhausted
	}
	m := g.measure(d)
	kl := g.kl
	now := kl.now().UnixNano()
	if m < f.extendAt && now < f.renewAt {
		return nil
	}
	if t := kl.tel; t != nil {
		var done func()
		ctx, done = t.startProgress(ctx, g)
		defer done()
	}
	amount := g.Hold.Amount
	if m >= f.extendAt {
		// Grow by a step, but not past the request's own limit while the
		// delivery is within it: funds a concurrent request needs are not
		// taken early. Past the limit (an upstream ignoring it), keep
		// funding what is delivered.
		target := m + f.step
		if lim := g.limit(); m < lim && target > lim {
			target = lim
		}
		cost, err := g.costAt(d, target)
		if err != nil {
			return nil // Complete records the pricing problem
		}
		amount = cost
	}
	// Bounded like Authorize's calls: a stalled database delays a chunk by
	// at most the store timeout, and the next Progress tries again.
	ctx, cancel := kl.bounded(ctx)
	defer cancel()
	h, err := kl.Credits.Extend(ctx, credits.ExtendParams{HoldID: g.Hold.ID, Amount: amount, TTL: kl.holdTTL})
	if refused(err) && amount.Cmp(g.Hold.Amount) > 0 {
		// Not a whole step: take what is left, if anything.
		if a, aerr := kl.Credits.Account(ctx, g.Key.AccountID); aerr == nil && a.Available.IsPositive() {
			left := a.Available
			for _, k := range a.Keys { // a key's spend limit bounds it too
				if k.KeyID == g.Key.KeyID && k.Remaining.Cmp(left) < 0 {
					left = k.Remaining
				}
			}
			if left.IsPositive() {
				h, err = kl.Credits.Extend(ctx, credits.ExtendParams{HoldID: g.Hold.ID, Amount: g.Hold.Amount.Add(left), TTL: kl.holdTTL})
			}
		}
	}
	switch {
	case err == nil:
		g.Hold = h
		g.fundTo(d, h)
		return nil
	case refused(err) && m < f.covered:
		// Still within the hold: go on, and try once more when it is used up.
		f.extendAt = f.covered
		return nil
	case refused(err), errors.Is(err, credits.ErrHoldExpired), errors.Is(err, credits.ErrHoldReleased):
		f.exhausted = true
		g.stop(ErrBudgetExhausted)
		return ErrBudgetExhausted
	}
	kl.log.WarnContext(ctx, "keyledger: extending a hold failed", "request_id", g.ID, "error", err)
	return nil
}

// refused reports a spend the ledger refused for lack of funds or cap.
func refused(err error) bool {
	return errors.Is(err, credits.ErrInsufficientFunds) || errors.Is(err, credits.ErrMonthlyLimit) ||
		errors.Is(err, credits.ErrKeyBudgetExceeded)
}

// measure is the quantity the hold pays for: completion tokens of a model
// request, units of an operation.
func (g *Grant) measure(d Delivered) int64 {
	if g.req.Model != "" {
		return d.CompletionTokens
	}
	return d.Units
}

// limit is the most the request said it would deliver, in its measure.
func (g *Grant) limit() int64 { return limitOf(&g.req) }

// costAt prices the request with its measure at m (prompt tokens: the more
// of the estimate and what was delivered).
func (g *Grant) costAt(d Delivered, m int64) (credits.Amount, error) {
	p := g.kl.Prices
	if g.req.Model != "" {
		return p.Estimate(g.req.Model, g.kl.now(), max(g.req.PromptTokens, d.PromptTokens), m)
	}
	return p.OperationCost(g.req.Endpoint, m, g.req.CachedUnits)
}

// initialFunding is the funding of a fresh hold: it pays for the tokens
// (or units) it was priced from, and grows by as much again.
func (kl *KeyLedger) initialFunding(req *Request, h credits.Hold) funding {
	covered := req.MaxCompletionTokens
	if req.HoldCompletionTokens > 0 {
		covered = req.HoldCompletionTokens
	}
	if req.Model == "" {
		covered = max(req.Units, 1)
	}
	step := max(covered, 1)
	f := funding{covered: covered, step: step, renewAt: renewAt(h, kl.holdTTL)}
	f.extendAt = f.nextExtend(limitOf(req))
	return f
}

// limitOf is the most a request said it would deliver, in its measure.
func limitOf(req *Request) int64 {
	if req.Model != "" {
		return req.MaxCompletionTokens
	}
	return max(req.Units, 1)
}

// nextExtend is the measure at which a hold paying for f.covered is
// extended: a quarter step before it runs out — but while the hold covers
// the request's whole limit, not before the delivery goes past the limit.
func (f *funding) nextExtend(limit int64) int64 {
	e := max(f.covered-f.step/4, 1)
	if f.covered >= limit && e <= limit {
		e = limit + 1
	}
	return e
}

// fundTo updates the funding after the hold grew to h: the measure h pays
// for is the most whose cost it covers (found by search, so that any
// monotonic price works).
func (g *Grant) fundTo(d Delivered, h credits.Hold) {
	f := &g.fund
	lo := f.covered // covered before: h pays at least that
	hi := max(lo*2, lo+f.step, 1)
	for hi < math.MaxInt32*int64(64) {
		c, err := g.costAt(d, hi)
		if err != nil || c.Cmp(h.Amount) > 0 {
			break
		}
		lo, hi = hi, hi*2
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if c, err := g.costAt(d, mid); err == nil && c.Cmp(h.Amount) <= 0 {
			lo = mid
		} else {
			hi = mid
		}
	}
	f.covered = lo
	f.extendAt = f.nextExtend(g.limit())
	f.renewAt = renewAt(h, g.kl.holdTTL)
}

// renewAt is when a hold's deadline is renewed: half its TTL before it.
func renewAt(h credits.Hold, ttl time.Duration) int64 {
	return h.ExpiresAt.UnixNano() - int64(ttl)/2
}

// Reserved is what the grant's hold pays for now: the prompt estimate and
// the completion tokens (or units) the hold covers.
func (g *Grant) Reserved() Delivered {
	g.mu.Lock()
	defer g.mu.Unlock()
	d := Delivered{PromptTokens: g.req.PromptTokens}
	if g.Hold.ID == "" {
		d.CompletionTokens, d.Units = g.req.MaxCompletionTokens, g.req.Units
		return d
	}
	if g.req.Model != "" {
		d.CompletionTokens = g.fund.covered
	} else {
		d.Units = g.fund.covered
	}
	return d
}

// TooLargeError refuses a request whose reservation exceeds a whole
// minute's budget of its plan: it can never be admitted, so it is not a
// rate limit (no Retry-After would help). errors.Is matches
// ErrRequestTooLarge.
type TooLargeError struct {
	// Budget names it: "requests", "prompt tokens" or "completion tokens".
	Budget string
	// Requested is the request's reservation; Limit the budget per minute.
	Requested, Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("keyledger: request reserves %d %s, more than the plan's %d %s per minute", e.Requested, e.Budget, e.Limit, e.Budget)
}

// Is makes errors.Is(err, ErrRequestTooLarge) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrRequestTooLarge }

// Kind is errkind.Invalid, like ErrRequestTooLarge: no wait makes the
// request fit, so it is not errkind.RateLimited.
func (e *TooLargeError) Kind() errkind.Kind { return errkind.Invalid }

// tooLarge returns the *TooLargeError of a refusal of g's buckets that no
// wait can cure, or nil.
func tooLarge(d *ratelimit.Decision, g *Grant) error {
	names := [3]string{"requests", "prompt tokens", "completion tokens"}
	for i := range min(d.N, len(g.buckets)) {
		if r := d.Results[i]; r.TooLarge {
			return &TooLargeError{Budget: names[i/2], Requested: g.buckets[i].Cost, Limit: r.Limit}
		}
	}
	return nil
}

// Budget returns the per-minute budgets of a verified key (for each, the
// tighter of the key's and the account's bucket) without taking anything
// from them: the X-Ratelimit-* state for a response that refused a request
// after its key was identified (a 400, 402, 403 or 404), so that every
// response to a known key carries it.
func (kl *KeyLedger) Budget(ctx context.Context, v apikey.Verified) (Budget, error) {
	now := kl.now().UnixNano()
	info, err := kl.account(ctx, v.AccountID, now)
	if err != nil {
		return Budget{}, err
	}
	l := kl.limits(v.Plan, info)
	k := keyLimits(l, v.RateLimits)
	names := kl.bucketNames(&v, l, k, now)
	per := [6]int64{k.RequestsPerMinute, l.RequestsPerMinute, k.PromptTokensPerMinute, l.PromptTokensPerMinute,
		k.CompletionTokensPerMinute, l.CompletionTokensPerMinute}
	var reqs [6]ratelimit.Request
	for i := range reqs {
		reqs[i] = ratelimit.Request{Key: names[i], Limit: ratelimit.PerMinute(per[i])}
	}
	d, err := kl.Limiter.Allow(ctx, reqs[:]...)
	if err != nil {
		return Budget{}, err
	}
	return budgetOf(&d), nil
}
