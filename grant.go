package keyledger

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
	"github.com/keyledger/keyledger/ratelimit"
	"github.com/keyledger/keyledger/usage"
)

// Request describes an incoming API call to Authorize.
type Request struct {
	// Model is the model asked for ("" for non-model endpoints). It must be
	// allowed for the key and priced in Options.Prices.
	Model string
	// Scope is the permission the call needs ("inference", "read", …; ""
	// checks none).
	Scope string
	// Endpoint and Method name the operation; the endpoint is also the
	// PriceBook operation of non-model calls.
	Endpoint, Method string
	// PromptTokens is the prompt estimate reserved from the prompt-token
	// budget and priced into the hold.
	PromptTokens int64
	// MaxCompletionTokens is the most the call may produce; it is reserved
	// from the completion-token budget and priced into the hold.
	MaxCompletionTokens int64
	// HoldCompletionTokens, if positive and below MaxCompletionTokens, is
	// the completion tokens priced into the initial hold instead: an
	// estimate, so that a long max_tokens does not lock the whole balance.
	// The grant extends the hold as Progress reports delivered tokens.
	HoldCompletionTokens int64
	// Units and CachedUnits estimate an operation-priced call (defaults to
	// one unit).
	Units, CachedUnits int64
	// ID identifies the request; it becomes the idempotency key of its hold
	// and its usage record. Generated ("req_…") when empty.
	ID string
}

// Outcome is what a request used and how it went.
type Outcome struct {
	StatusCode                     int
	PromptTokens, CompletionTokens int64
	// CachedPromptTokens (cache reads) and CacheWriteTokens are parts of
	// PromptTokens, ReasoningTokens a part of CompletionTokens (see
	// usage.Record). Complete clamps a part that is negative or larger than
	// its whole (an upstream's bad report) into range and logs it: the
	// whole is always charged, never a token twice.
	CachedPromptTokens, CacheWriteTokens, ReasoningTokens int64
	Units, CachedUnits                                    int64
	RequestBytes, ResponseBytes                           int64
	// Latency is the time the request took (measured from Authorize when zero).
	Latency time.Duration
	// ErrorType and ErrorMessage describe a failure; a request with an error
	// type is not charged.
	ErrorType, ErrorMessage string
	UpstreamCost            credits.Amount
	Metadata                map[string]string
}

// Budget is the state of each per-minute budget after Authorize: for each,
// the tighter of the key's and the account's bucket.
type Budget struct {
	Requests, PromptTokens, CompletionTokens ratelimit.Result
}

// Grant is an authorized request. Complete or Cancel it exactly once (more
// calls return the first result); both are safe from a defer and from
// another goroutine.
type Grant struct {
	// Key is the verified key: account, plan, models, scopes, environment.
	Key apikey.Verified
	// Budget is the rate-limit state after this request was admitted.
	Budget Budget
	// Hold is the credit hold of the estimated cost (zero ID when free).
	Hold credits.Hold
	// Estimate is the reserved cost.
	Estimate credits.Amount
	// ID is the request ID.
	ID string

	kl      *KeyLedger
	req     Request
	tz      string
	buckets [6]ratelimit.Request
	ctx     context.Context
	unbind  context.CancelFunc
	stop    context.CancelCauseFunc
	start   time.Time
	mu      sync.Mutex // serialises Complete, Cancel and Progress
	done    bool
	result  usage.MeterResult
	err     error
	fund    funding
	tracked bool // counted in the telemetry's active grants
}

// funding is how far a grant's hold reaches, in the measure Progress
// reports (completion tokens of a model request, units of an operation).
type funding struct {
	covered   int64 // the measure the hold pays for
	step      int64 // how much more each extension asks for
	extendAt  int64 // the measure at which Progress extends the hold
	renewAt   int64 // unix ns after which Progress renews the deadline
	exhausted bool
}

// Context is the request's context bound to its key: it is cancelled when
// the key is revoked, disabled or expires while the request runs. Run the
// request's work under it.
func (g *Grant) Context() context.Context { return g.ctx }

// Authorize admits a request or says why not: key errors (apikey.ErrMalformed,
// ErrUnknown, ErrRevoked, ErrDisabled, ErrExpired, ErrAccountInactive),
// permission errors (apikey.ErrModelNotAllowed, ErrScopeNotAllowed),
// usage.ErrUnknownModel, a *LimitError (errors.Is ErrRateLimited), or
// credits.ErrInsufficientFunds / ErrMonthlyLimit. A failure of the store or
// the rate limiter (unreachable, reset, or slower than
// Options.StoreTimeout) is wrapped in ErrUnavailable. A refused request is
// never charged and takes nothing from any budget.
func (kl *KeyLedger) Authorize(ctx context.Context, raw apikey.RawKey, req Request) (*Grant, error) {
	if kl.tel == nil {
		return kl.authorize(ctx, raw, req)
	}
	return kl.tel.authorize(ctx, kl, raw, req)
}

func (kl *KeyLedger) authorize(ctx context.Context, raw apikey.RawKey, req Request) (*Grant, error) {
	if req.PromptTokens < 0 || req.MaxCompletionTokens < 0 || req.HoldCompletionTokens < 0 || req.Units < 0 || req.CachedUnits < 0 {
		return nil, ErrInvalidRequest
	}
	if req.HoldCompletionTokens >= req.MaxCompletionTokens {
		req.HoldCompletionTokens = 0
	}
	// Every store and limiter call below runs under the store timeout, so
	// that a stalled database or Redis refuses the request quickly
	// (ErrUnavailable) instead of holding it for as long as the stall. The
	// grant's own context (g.ctx) derives from ctx, not from this bound.
	sctx, cancel := kl.bounded(ctx)
	defer cancel()
	v, err := kl.Keys.Verify(sctx, raw)
	kl.tel.verified(ctx, &v, err)
	if err != nil {
		return nil, unavailable(ctx, "verify key", err)
	}
	if err := v.Permit(req.Model, req.Scope); err != nil {
		return nil, err
	}
	estimate, err := kl.estimate(req)
	if err != nil {
		return nil, err
	}
	start := kl.now()
	info, err := kl.account(sctx, v.AccountID, start.UnixNano())
	if err != nil {
		return nil, unavailable(ctx, "read account", err)
	}
	g := &Grant{Key: v, Estimate: estimate, kl: kl, req: req, tz: info.tz, start: start, ID: req.ID}
	fresh := g.ID == "" // a new UUIDv7: its hold key cannot be a replay
	if fresh {
		g.ID = kl.ids.New("req_")
	}
	limits := kl.limits(v.Plan, info)
	rpm, ptpm, ctpm := limits.RequestsPerMinute, limits.PromptTokensPerMinute, limits.CompletionTokensPerMinute
	// The key's own limits, where lower, bound its buckets; the account's
	// stay at the plan's.
	kr := keyLimits(limits, v.RateLimits)
	names := kl.bucketNames(&v, limits, kr, start.UnixNano())
	g.buckets = [6]ratelimit.Request{
		{Key: names[0], Limit: ratelimit.PerMinute(kr.RequestsPerMinute), Cost: 1},
		{Key: names[1], Limit: ratelimit.PerMinute(rpm), Cost: 1},
		{Key: names[2], Limit: ratelimit.PerMinute(kr.PromptTokensPerMinute), Cost: req.PromptTokens},
		{Key: names[3], Limit: ratelimit.PerMinute(ptpm), Cost: req.PromptTokens},
		{Key: names[4], Limit: ratelimit.PerMinute(kr.CompletionTokensPerMinute), Cost: req.MaxCompletionTokens},
		{Key: names[5], Limit: ratelimit.PerMinute(ctpm), Cost: req.MaxCompletionTokens},
	}
	d, err := kl.Limiter.Allow(sctx, g.buckets[:]...)
	kl.tel.limited(ctx, &d, err)
	if err != nil {
		return nil, unavailable(ctx, "rate limit", err)
	}
	g.Budget = budgetOf(&d)
	if !d.Allowed {
		if e := tooLarge(&d, g); e != nil {
			return nil, e
		}
		return nil, &LimitError{Decision: d, Budget: g.Budget}
	}
	if estimate.IsPositive() {
		// A hold whose write outlives the bound may still commit: it is
		// then released by its deadline, or reused by a retry of the
		// request with the same ID (the replay of "hold:"+ID).
		g.Hold, err = kl.Credits.Reserve(sctx, credits.ReserveParams{
			AccountID: v.AccountID, Amount: estimate, TTL: kl.holdTTL, Reference: g.ID, IdempotencyKey: "hold:" + g.ID,
			KeyID: v.KeyID, FreshKey: fresh,
		})
		if err != nil {
			kl.refund(ctx, g, true)
			return nil, unavailable(ctx, "reserve", err)
		}
		if g.Hold.State != credits.HoldActive { // a replayed ID: its hold is settled or released
			kl.refund(ctx, g, true)
			return nil, ErrDuplicateRequest
		}
		g.fund = kl.initialFunding(&req, g.Hold)
	}
	g.ctx, g.unbind, g.stop = kl.Keys.BindCause(ctx, v)
	if cause := context.Cause(g.ctx); cause != nil {
		// Revoked (or expired) between Verify and Bind: Revoke has returned,
		// so the request must not run.
		_ = g.Cancel(ctx)
		return nil, cause
	}
	return g, nil
}

// keyBuckets are the six bucket names of one key at one set of limits,
// cached per key ID so that admitting a request builds no strings.
type keyBuckets struct {
	account     string
	limits, key account.Limits
	names       [6]string
}

// bucketNames returns the bucket names of v's key and account at limits:
// requests, prompt tokens and completion tokens, each per key then per
// account.
func (kl *KeyLedger) bucketNames(v *apikey.Verified, l, k account.Limits, now int64) *[6]string {
	if b, ok := kl.buckets.GetAt(v.KeyID, now); ok && b.account == v.AccountID && b.limits == l && b.key == k {
		return &b.names
	}
	rpm, ptpm, ctpm := l.RequestsPerMinute, l.PromptTokensPerMinute, l.CompletionTokensPerMinute
	b := &keyBuckets{account: v.AccountID, limits: l, key: k, names: [6]string{
		bucketKey("k:r:", k.RequestsPerMinute, v.KeyID), bucketKey("a:r:", rpm, v.AccountID),
		bucketKey("k:p:", k.PromptTokensPerMinute, v.KeyID), bucketKey("a:p:", ptpm, v.AccountID),
		bucketKey("k:c:", k.CompletionTokensPerMinute, v.KeyID), bucketKey("a:c:", ctpm, v.AccountID),
	}}
	kl.buckets.Set(v.KeyID, b, bucketNamesTTL)
	return &b.names
}

// bucketNamesTTL bounds how long an idle key's bucket names stay cached.
const bucketNamesTTL = time.Hour

// bucketKey names a rate-limit bucket: its kind, its limit and its owner.
// The limit is part of the name so that a plan change starts fresh buckets
// at the new rate instead of inheriting time debt measured at the old one.
func bucketKey(kind string, limit int64, id string) string {
	var buf [96]byte
	b := append(buf[:0], kind...)
	b = strconv.AppendInt(b, limit, 10)
	b = append(b, ':')
	b = append(b, id...)
	return string(b)
}

// limits returns the per-minute limits for a plan, with the account's
// override for custom (Enterprise) plans.
func (kl *KeyLedger) limits(plan string, info accountInfo) account.Limits {
	if info.limits != nil {
		return *info.limits
	}
	p, _ := kl.Catalog.Plan(plan)
	return p.Limits
}

// estimate prices the request's reservation: the prompt and the
// completion tokens of the initial hold, or the operation's units.
func (kl *KeyLedger) estimate(req Request) (credits.Amount, error) {
	if kl.Prices == nil {
		return credits.Amount{}, nil
	}
	if req.Model != "" {
		completion := req.MaxCompletionTokens
		if h := req.HoldCompletionTokens; h > 0 && h < completion {
			completion = h
		}
		return kl.Prices.Estimate(req.Model, kl.now(), req.PromptTokens, completion)
	}
	if _, ok := kl.Prices.Operation(req.Endpoint); !ok {
		return credits.Amount{}, nil // unpriced operations are free
	}
	return kl.Prices.OperationCost(req.Endpoint, req.Units, req.CachedUnits)
}

// clampTokenParts brings a record's cached, cache-write and reasoning
// token counts into range — none negative, cached + cache-write at most
// the prompt tokens, reasoning at most the completion tokens — and reports
// whether it changed any. The totals are never changed.
func clampTokenParts(r *usage.Record) bool {
	c, w, rs := r.CachedPromptTokens, r.CacheWriteTokens, r.ReasoningTokens
	if c|w|rs == 0 {
		return false
	}
	p, q := max(r.PromptTokens, 0), max(r.CompletionTokens, 0)
	nc := min(max(c, 0), p)
	nw := min(max(w, 0), p-nc)
	nr := min(max(rs, 0), q)
	r.CachedPromptTokens, r.CacheWriteTokens, r.ReasoningTokens = nc, nw, nr
	return nc != c || nw != w || nr != rs
}

// priced reports whether a record has a price: model records always do
// (Authorize refused unknown models); operations only if listed, the rest
// are free.
func (kl *KeyLedger) priced(rec usage.Record) bool {
	if rec.Model != "" {
		return true
	}
	_, ok := kl.Prices.Operation(rec.Endpoint)
	return ok
}

// budgetOf picks, per budget, the tighter of key and account.
func budgetOf(d *ratelimit.Decision) Budget {
	return Budget{
		Requests:         tighter(d.Results[0], d.Results[1]),
		PromptTokens:     tighter(d.Results[2], d.Results[3]),
		CompletionTokens: tighter(d.Results[4], d.Results[5]),
	}
}

func tighter(a, b ratelimit.Result) ratelimit.Result {
	switch {
	case a.Limit == 0:
		return b
	case b.Limit == 0:
		return a
	case !b.Allowed && a.Allowed:
		return b
	case !a.Allowed && b.Allowed:
		return a
	case b.Remaining < a.Remaining:
		return b
	}
	return a
}

// refund returns token reservations to the limiter; with requests true the
// request itself too (a request refused after admission).
func (kl *KeyLedger) refund(ctx context.Context, g *Grant, requests bool) {
	var back [6]ratelimit.Request
	n := 0
	for i, b := range g.buckets {
		if b.Cost == 0 || (i < 2 && !requests) {
			continue
		}
		b.Cost = -b.Cost
		back[n] = b
		n++
	}
	if n == 0 {
		return
	}
	if err := kl.Limiter.Adjust(context.WithoutCancel(ctx), back[:n]...); err != nil {
		kl.log.WarnContext(ctx, "keyledger: returning rate-limit reservation failed", "request_id", g.ID, "error", err)
	}
}

// Complete meters the request and settles its hold with the actual cost in
// one transaction (or releases the hold when the outcome is not billable:
// an error, a status ≥ 400), corrects the token budgets with the actual
// counts and unbinds the request from its key. It runs once; later calls
// return the first result. It keeps working when ctx is cancelled (a client
// that went away still pays for what it used).
//
// Delivered work is charged in full: a cost above the hold, or a hold that
// expired before completion, is charged all the same, into debt if the
// balance cannot cover it (Options.Overrun; the account then gets
// credits.ErrInDebt until a credit pays it). The usage record is never
// dropped for a charging problem: under credits.OverrunWriteOff the part
// funds cannot cover is the result's Shortfall, and a record nothing could
// be charged for is kept with zero cost, error type "unpaid" and the cost
// as Shortfall; a pricing failure records it unbilled with error type
// "pricing_error". A store failure is retried
// under the request's idempotency key (a write that committed although the
// store reported an error is then replayed, not charged again); only a
// failure that persists returns an error, after releasing the hold — and
// since that last failure may itself have committed, such an error does not
// prove that nothing was charged. The retries last up to
// Options.CompleteTimeout, each attempt bounded by Options.StoreTimeout,
// and the persistent failure is wrapped in ErrUnavailable. Should the
// process die before the write commits, the request is not recorded and
// its hold frees itself at its deadline: the loss is bounded by the holds
// in flight.
func (g *Grant) Complete(ctx context.Context, o Outcome) (usage.MeterResult, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.done {
		g.done = true
		ctx := context.WithoutCancel(ctx)
		if t := g.kl.tel; t != nil {
			var start time.Time
			ctx, start = t.startComplete(ctx, g)
			defer t.endComplete(ctx, g, start, o.StatusCode)
		}
		g.result, g.err = g.complete(ctx, o)
		g.correctTokens(ctx, o)
		g.unbind()
	}
	return g.result, g.err
}

func (g *Grant) complete(ctx context.Context, o Outcome) (usage.MeterResult, error) {
	kl := g.kl
	if o.Latency == 0 {
		o.Latency = kl.now().Sub(g.start)
	}
	units := o.Units
	if units == 0 && g.req.Model == "" {
		units = max(g.req.Units, 1)
	}
	rec := usage.Record{
		AccountID: g.Key.AccountID, KeyID: g.Key.KeyID, AuthSource: "api_key",
		Endpoint: g.req.Endpoint, Method: g.req.Method, Model: g.req.Model, StatusCode: o.StatusCode,
		ResponseTime: o.Latency, RequestBytes: o.RequestBytes, ResponseBytes: o.ResponseBytes,
		PromptTokens: o.PromptTokens, CompletionTokens: o.CompletionTokens, Units: units, CachedUnits: o.CachedUnits,
		UpstreamCost: o.UpstreamCost, ErrorType: o.ErrorType, ErrorMessage: o.ErrorMessage, Metadata: o.Metadata,
		CachedPromptTokens: o.CachedPromptTokens, CacheWriteTokens: o.CacheWriteTokens, ReasoningTokens: o.ReasoningTokens,
	}
	if clampTokenParts(&rec) {
		kl.log.WarnContext(ctx, "keyledger: token parts out of range, clamped to their totals", "request_id", g.ID,
			"prompt_tokens", o.PromptTokens, "cached_prompt_tokens", o.CachedPromptTokens, "cache_write_tokens", o.CacheWriteTokens,
			"completion_tokens", o.CompletionTokens, "reasoning_tokens", o.ReasoningTokens)
	}
	if rec.Billable() && kl.Prices != nil && kl.priced(rec) {
		// The one pricing site: the version in force now, recorded on the
		// record (PriceFrom) so that a later price change never re-prices it.
		priced := rec
		priced.CreatedAt = kl.now()
		switch err := kl.Prices.Rate(&priced); {
		case err != nil:
			rec.ErrorType, rec.ErrorMessage = "pricing_error", err.Error()
		default:
			rec.Cost, rec.PriceFrom = priced.Cost, priced.PriceFrom
		}
	}
	p := usage.MeterParams{Record: rec, HoldID: g.Hold.ID, IdempotencyKey: g.ID, TimeZone: g.tz, Overrun: kl.overrun}
	res, err := kl.meter(ctx, p)
	if p.HoldID != "" && (errors.Is(err, credits.ErrHoldExpired) || errors.Is(err, credits.ErrHoldReleased) ||
		errors.Is(err, credits.ErrHoldNotFound)) {
		// The request outlived its hold (a process hold resolved long ago
		// is not found at all): charge the delivered work directly, under
		// the same overrun policy (into debt by default).
		p.HoldID = ""
		res, err = kl.meter(ctx, p)
	}
	if errors.Is(err, credits.ErrInsufficientFunds) || errors.Is(err, credits.ErrMonthlyLimit) {
		cost := p.Record.Cost
		p.Record.Cost = credits.Amount{}
		p.Record.ErrorType, p.Record.ErrorMessage = "unpaid", err.Error()
		res, err = kl.meter(ctx, p)
		res.Shortfall = cost
	}
	if err != nil && g.Hold.ID != "" {
		rctx, cancel := kl.bounded(ctx)
		defer cancel()
		if _, rerr := kl.Credits.Release(rctx, g.Hold.ID); rerr != nil && !errors.Is(rerr, credits.ErrHoldSettled) {
			kl.log.WarnContext(ctx, "keyledger: releasing the hold of a failed completion", "request_id", g.ID, "error", rerr)
		}
	}
	return res, err
}

// minMeterAttempts is how many Meter calls a step of Complete makes after
// store failures even when Options.CompleteTimeout has passed.
const minMeterAttempts = 3

// meter meters p, repeating the call with the same request after a store
// failure, with a growing jittered backoff, until it gets an answer or
// Options.CompleteTimeout has passed (and at least minMeterAttempts calls
// were made); each call is bounded by Options.StoreTimeout. A failed write
// may have committed (its acknowledgement was lost, or it outlived its
// bound); the repeat, under the same idempotency key, then replays the
// committed result instead of charging again, and otherwise applies the
// request. Without it, Complete would report a failure for a request that
// was charged, or drop the usage of one that was served.
func (kl *KeyLedger) meter(ctx context.Context, p usage.MeterParams) (usage.MeterResult, error) {
	var (
		res usage.MeterResult
		err error
	)
	deadline := time.Now().Add(kl.completeTimeout)
	for attempt := 0; ; attempt++ {
		actx, cancel := kl.bounded(ctx)
		start := kl.tel.clock()
		res, err = kl.Usage.Meter(actx, p)
		kl.tel.metered(ctx, start, err)
		cancel()
		if err == nil || !storeFailure(err) {
			return res, err
		}
		if attempt+1 >= minMeterAttempts && !time.Now().Before(deadline) {
			return res, unavailable(ctx, "meter", err)
		}
		if !sleepRetry(ctx, attempt) {
			return res, unavailable(ctx, "meter", err)
		}
	}
}

// storeFailure reports whether a Meter error is a failure of the store
// after which the request may or may not have been applied (no kind, as a
// driver error has none, or errkind.Unavailable), so that Complete retries
// it under the same idempotency key. Every other kind is an answer of the
// usage or credits domain, or a closed service (errkind.Internal), which no
// retry changes.
func storeFailure(err error) bool {
	k := errkind.Of(err)
	return k == errkind.Unknown || k == errkind.Unavailable
}

// correctTokens replaces the token reservations with the actual counts.
func (g *Grant) correctTokens(ctx context.Context, o Outcome) {
	dp := o.PromptTokens - g.req.PromptTokens
	dc := o.CompletionTokens - g.req.MaxCompletionTokens
	if dp == 0 && dc == 0 {
		return
	}
	// The grant is done (Complete runs once): its token buckets can carry
	// the corrections instead of a fresh array escaping through Adjust.
	adj := g.buckets[2:6]
	adj[0].Cost, adj[1].Cost, adj[2].Cost, adj[3].Cost = dp, dp, dc, dc
	if err := g.kl.Limiter.Adjust(ctx, adj...); err != nil {
		g.kl.log.WarnContext(ctx, "keyledger: correcting token budgets failed", "request_id", g.ID, "error", err)
	}
}

// Cancel gives back what Authorize took: the hold is released and the token
// reservations return to their budgets (the request still counts against
// the request budget). It runs once, shared with Complete: whichever comes
// first decides, and later calls return its result.
func (g *Grant) Cancel(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.done {
		g.done = true
		ctx := context.WithoutCancel(ctx)
		g.kl.tel.closed(ctx, g)
		g.kl.refund(ctx, g, false)
		if g.Hold.ID != "" {
			rctx, cancel := g.kl.bounded(ctx)
			_, g.err = g.kl.Credits.Release(rctx, g.Hold.ID)
			cancel()
			g.err = unavailable(ctx, "release", g.err)
		}
		g.unbind()
	}
	return g.err
}
