package keyledger

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/ratelimit"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/storeotel"
	"github.com/keyledger/keyledger/usage"
)

// ScopeName is the instrumentation scope of the facade's meter and tracer.
const ScopeName = "github.com/keyledger/keyledger"

// telemetry is the facade's instrumentation; a nil *telemetry (no
// providers in Options) records nothing and costs a nil check.
type telemetry struct {
	tracer trace.Tracer // nil: no spans

	authorizeDur, completeDur, meterDur metric.Float64Histogram
	verifications, decisions, progress  metric.Int64Counter
	grantsActive, holdsOpen             metric.Int64UpDownCounter
	shortfall                           metric.Float64Counter

	// lookups counts verifications that reached the key cache; misses the
	// store lookups among them (read by the cache callback).
	lookups, misses atomic.Int64
	reg             metric.Registration

	// precomputed measurement options by result
	authorizeOpts, verifyOpts map[string]measure
	decisionOpts              map[string]measure
	completeOpts, meterOpts   map[string]measure
	progressOpts              map[string]measure

	// observables
	cacheLookups, batches, batchItems, recharges metric.Int64ObservableCounter
	cacheEntries, queueDepth                     metric.Int64ObservableGauge
}

// measure holds the options of one attribute set as the slices Add and
// Record take: built once, since a variadic argument made at each call
// escapes to the heap through the instrument's interface.
type measure struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

func measureOf(kvs ...attribute.KeyValue) measure {
	o := metric.WithAttributeSet(attribute.NewSet(kvs...))
	return measure{add: []metric.AddOption{o}, rec: []metric.RecordOption{o}}
}

// outcome names an error class in the result attribute.
type outcome struct {
	err  error
	name string
}

// authorizeOutcomes classify Authorize's errors, first match wins.
var authorizeOutcomes = []outcome{
	{ErrInvalidRequest, "invalid_request"},
	{apikey.ErrMalformed, "malformed_key"}, {apikey.ErrUnknown, "unknown_key"}, {apikey.ErrRevoked, "revoked"},
	{apikey.ErrDisabled, "disabled"}, {apikey.ErrExpired, "expired"}, {apikey.ErrAccountInactive, "account_inactive"},
	{apikey.ErrModelNotAllowed, "model_not_allowed"}, {apikey.ErrScopeNotAllowed, "scope_not_allowed"},
	{usage.ErrUnknownModel, "unknown_model"}, {ErrRequestTooLarge, "too_large"}, {ErrRateLimited, "rate_limited"},
	{credits.ErrInDebt, "in_debt"}, {credits.ErrInsufficientFunds, "insufficient_funds"},
	{credits.ErrMonthlyLimit, "monthly_limit"}, {ErrDuplicateRequest, "duplicate_request"},
	{context.Canceled, "canceled"}, {context.DeadlineExceeded, "canceled"},
}

// verifyOutcomes classify Verify's errors.
var verifyOutcomes = []outcome{
	{apikey.ErrMalformed, "malformed"}, {apikey.ErrUnknown, "unknown"}, {apikey.ErrRevoked, "revoked"},
	{apikey.ErrDisabled, "disabled"}, {apikey.ErrExpired, "expired"}, {apikey.ErrAccountInactive, "account_inactive"},
}

// classify names err by the first outcome it matches: "ok" for nil,
// "error" for none.
func classify(err error, outcomes []outcome) string {
	if err == nil {
		return "ok"
	}
	for _, o := range outcomes {
		if errors.Is(err, o.err) {
			return o.name
		}
	}
	return "error"
}

// budgets name the six buckets of a request, in Authorize's order.
var (
	budgetNames = [3]string{"requests", "prompt_tokens", "completion_tokens"}
	scopeNames  = [2]string{"key", "account"}
)

// newTelemetry builds the instruments, or returns nil when neither
// provider is set.
func newTelemetry(mp metric.MeterProvider, tp trace.TracerProvider) (*telemetry, error) {
	if mp == nil && tp == nil {
		return nil, nil
	}
	t := &telemetry{}
	if tp != nil {
		t.tracer = tp.Tracer(ScopeName)
	}
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter(ScopeName)
	var errs []error
	hist := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(storeotel.DurationBuckets...))
		errs = append(errs, err)
		return h
	}
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	updown := func(name, unit, desc string) metric.Int64UpDownCounter {
		c, err := m.Int64UpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	obsCounter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	obsGauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		c, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	t.authorizeDur = hist("keyledger.authorize.duration", "Duration of Authorize: verify, limits and hold, by result.")
	t.completeDur = hist("keyledger.complete.duration", "Duration of Grant.Complete: meter, settle and token correction, by result.")
	t.meterDur = hist("keyledger.usage.meter.duration", "Duration of one Meter call (usage record and its charge in one commit), group-commit wait included.")
	t.verifications = counter("keyledger.apikey.verifications", "{verification}", "API key verifications by result.")
	t.decisions = counter("keyledger.ratelimit.decisions", "{decision}", "Rate-limit decisions: allowed, or the budget and scope that refused.")
	t.progress = counter("keyledger.grant.extensions", "{extension}", "Hold extensions and renewals of running requests (Grant.Progress) by result.")
	t.grantsActive = updown("keyledger.grants.active", "{request}", "Authorized requests not yet completed or cancelled.")
	t.holdsOpen = updown("keyledger.credits.holds.open", "{hold}", "Credit holds of authorized requests not yet completed or cancelled.")
	sf, err := m.Float64Counter("keyledger.credits.shortfall", metric.WithUnit("{credit}"),
		metric.WithDescription("Delivered work that could not be charged (write-off policy or unpaid)."))
	errs = append(errs, err)
	t.shortfall = sf
	t.cacheLookups = obsCounter("keyledger.apikey.cache.lookups", "{lookup}", "Verify cache lookups by result (hit, miss: a store read).")
	t.cacheEntries = obsGauge("keyledger.apikey.cache.entries", "{entry}", "Entries in the verify cache: known keys and unknown hashes.")
	t.batches = obsCounter("keyledger.groupcommit.batches", "{batch}", "Group commits of the credits and usage services.")
	t.batchItems = obsCounter("keyledger.groupcommit.requests", "{request}", "Requests carried by group commits.")
	t.queueDepth = obsGauge("keyledger.usage.meter.queue", "{request}", "Meter requests waiting for the next group commit.")
	t.recharges = obsCounter("keyledger.credits.recharges", "{recharge}", "Auto-recharge attempts by result.")
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	opts := func(key string, values ...string) map[string]measure {
		m := make(map[string]measure, len(values))
		for _, v := range values {
			m[v] = measureOf(attribute.String(key, v))
		}
		return m
	}
	names := func(os []outcome) []string {
		n := []string{"ok", "error"}
		for _, o := range os {
			n = append(n, o.name)
		}
		return n
	}
	t.authorizeOpts = opts("result", names(authorizeOutcomes)...)
	t.verifyOpts = opts("result", names(verifyOutcomes)...)
	t.completeOpts = opts("result", "charged", "free", "error")
	t.meterOpts = opts("result", "ok", "error")
	t.progressOpts = opts("result", "extended", "exhausted", "deferred", "error")
	t.decisionOpts = map[string]measure{
		"allowed": measureOf(attribute.String("result", "allowed")),
		"error":   measureOf(attribute.String("result", "error")),
	}
	for _, res := range []string{"limited", "too_large"} {
		for _, b := range budgetNames {
			for _, s := range scopeNames {
				t.decisionOpts[res+"/"+b+"/"+s] = measureOf(
					attribute.String("result", res), attribute.String("budget", b), attribute.String("scope", s))
			}
		}
	}
	return t, nil
}

// instrument wraps st with store instrumentation unless it has it.
func (t *telemetry) instrument(st store.Store, mp metric.MeterProvider, tp trace.TracerProvider) (store.Store, error) {
	if t == nil {
		return st, nil
	}
	if _, ok := st.(*storeotel.Store); ok {
		return st, nil
	}
	return storeotel.New(st, &storeotel.Options{MeterProvider: mp, TracerProvider: tp})
}

// keyStore is the store the API key service reads through: st, counting
// the hash lookups (verify cache misses) when instrumented.
func (t *telemetry) keyStore(st store.Store) apikey.Store {
	if t == nil {
		return st
	}
	k := keyLookups{Store: st, misses: &t.misses}
	if cn, ok := st.(apikey.ChangeNotifier); ok {
		return keyLookupsNotify{k, cn}
	}
	return k
}

// keyLookups counts APIKeyByHash calls.
type keyLookups struct {
	apikey.Store
	misses *atomic.Int64
}

func (k keyLookups) APIKeyByHash(ctx context.Context, hash [32]byte) (apikey.Match, error) {
	k.misses.Add(1)
	return k.Store.APIKeyByHash(ctx, hash)
}

// keyLookupsNotify is keyLookups over a store with change notifications.
type keyLookupsNotify struct {
	keyLookups
	cn apikey.ChangeNotifier
}

func (k keyLookupsNotify) WatchKeyChanges(fn func(apikey.Change)) (stop func()) {
	return k.cn.WatchKeyChanges(fn)
}

// observe registers the callbacks that read the services' counters.
func (t *telemetry) observe(mp metric.MeterProvider, kl *KeyLedger) error {
	if t == nil || mp == nil {
		return nil
	}
	hit := metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "hit")))
	miss := metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "miss")))
	known := metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", "known")))
	unknown := metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", "unknown")))
	cr := metric.WithAttributeSet(attribute.NewSet(attribute.String("component", "credits")))
	us := metric.WithAttributeSet(attribute.NewSet(attribute.String("component", "usage")))
	rOK := metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "succeeded")))
	rFail := metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "failed")))
	rSkip := metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "skipped")))
	reg, err := mp.Meter(ScopeName).RegisterCallback(func(_ context.Context, o metric.Observer) error {
		lookups, misses := t.lookups.Load(), t.misses.Load()
		o.ObserveInt64(t.cacheLookups, max(lookups-misses, 0), hit)
		o.ObserveInt64(t.cacheLookups, misses, miss)
		ks := kl.Keys.Stats()
		o.ObserveInt64(t.cacheEntries, int64(ks.CachedKeys), known)
		o.ObserveInt64(t.cacheEntries, int64(ks.CachedUnknown), unknown)
		cs, us2 := kl.Credits.Stats(), kl.Usage.Stats()
		o.ObserveInt64(t.batches, cs.Batches, cr)
		o.ObserveInt64(t.batches, us2.Batches, us)
		o.ObserveInt64(t.batchItems, cs.BatchedSpends, cr)
		o.ObserveInt64(t.batchItems, us2.BatchedItems, us)
		o.ObserveInt64(t.queueDepth, us2.QueueDepth)
		o.ObserveInt64(t.recharges, cs.RechargesSucceeded, rOK)
		o.ObserveInt64(t.recharges, cs.RechargesFailed, rFail)
		o.ObserveInt64(t.recharges, cs.RechargesSkipped, rSkip)
		return nil
	}, t.cacheLookups, t.cacheEntries, t.batches, t.batchItems, t.queueDepth, t.recharges)
	t.reg = reg
	return err
}

// close unregisters the callbacks.
func (t *telemetry) close() error {
	if t == nil || t.reg == nil {
		return nil
	}
	return t.reg.Unregister()
}

func accountAttr(id string) attribute.KeyValue { return attribute.String("keyledger.account.id", id) }
func keyAttr(id string) attribute.KeyValue     { return attribute.String("keyledger.key.id", id) }
func requestAttr(id string) attribute.KeyValue { return attribute.String("keyledger.request.id", id) }

// mctx is the context measurements are recorded with: ctx when it may
// carry our spans (exemplars), else Background — reading a value from a
// WithoutCancel context, as Complete's is, allocates every time.
func (t *telemetry) mctx(ctx context.Context) context.Context {
	if t.tracer != nil {
		return ctx
	}
	return context.Background()
}

// authorize is Authorize with a span, its duration and its outcome.
func (t *telemetry) authorize(ctx context.Context, kl *KeyLedger, raw apikey.RawKey, req Request) (*Grant, error) {
	parent := ctx
	var span trace.Span
	if t.tracer != nil {
		ctx, span = t.tracer.Start(ctx, "keyledger.Authorize", trace.WithAttributes(
			attribute.String("keyledger.model", req.Model), attribute.String("keyledger.endpoint", req.Endpoint)))
	}
	start := time.Now()
	g, err := kl.authorize(ctx, raw, req)
	result := classify(err, authorizeOutcomes)
	mctx := t.mctx(ctx)
	t.authorizeDur.Record(mctx, time.Since(start).Seconds(), t.authorizeOpts[result].rec...)
	if err == nil {
		g.tracked = true
		t.grantsActive.Add(mctx, 1)
		if g.Hold.ID != "" {
			t.holdsOpen.Add(mctx, 1)
		}
	}
	if span != nil {
		span.SetAttributes(attribute.String("keyledger.result", result))
		if err == nil {
			span.SetAttributes(requestAttr(g.ID))
			// The request's work runs beside Authorize, not inside it.
			g.ctx = trace.ContextWithSpan(g.ctx, trace.SpanFromContext(parent))
		} else if result == "error" || result == "canceled" {
			span.RecordError(err)
			span.SetStatus(codes.Error, result)
		}
		span.End()
	}
	return g, err
}

// verified records a verification (after Verify, before anything else)
// and names the key on the Authorize span.
func (t *telemetry) verified(ctx context.Context, v *apikey.Verified, err error) {
	if t == nil {
		return
	}
	result := classify(err, verifyOutcomes)
	if result != "malformed" {
		t.lookups.Add(1)
	}
	t.verifications.Add(t.mctx(ctx), 1, t.verifyOpts[result].add...)
	if err == nil && t.tracer != nil {
		trace.SpanFromContext(ctx).SetAttributes(accountAttr(v.AccountID), keyAttr(v.KeyID))
	}
}

// limited records a rate-limit decision over the six buckets of Authorize.
func (t *telemetry) limited(ctx context.Context, d *ratelimit.Decision, err error) {
	if t == nil {
		return
	}
	key := "allowed"
	switch {
	case err != nil:
		key = "error"
	case !d.Allowed:
		key = "error"
		for i, r := range d.Results[:min(d.N, 6)] {
			if !r.Allowed {
				res := "limited"
				if r.TooLarge {
					res = "too_large"
				}
				key = res + "/" + budgetNames[i/2] + "/" + scopeNames[i%2]
				break
			}
		}
	}
	t.decisions.Add(t.mctx(ctx), 1, t.decisionOpts[key].add...)
}

// clock returns the time a measured step starts (zero when not measured).
func (t *telemetry) clock() time.Time {
	if t == nil {
		return time.Time{}
	}
	return time.Now()
}

// metered records one Meter call that started at start.
func (t *telemetry) metered(ctx context.Context, start time.Time, err error) {
	if t == nil {
		return
	}
	r := "ok"
	if err != nil {
		r = "error"
	}
	t.meterDur.Record(t.mctx(ctx), time.Since(start).Seconds(), t.meterOpts[r].rec...)
}

// startComplete starts Complete's span; the grant is locked.
func (t *telemetry) startComplete(ctx context.Context, g *Grant) (context.Context, time.Time) {
	if t.tracer != nil {
		ctx, _ = t.tracer.Start(ctx, "keyledger.Complete", trace.WithAttributes(
			requestAttr(g.ID), accountAttr(g.Key.AccountID), keyAttr(g.Key.KeyID)))
	}
	return ctx, time.Now()
}

// endComplete records Complete's outcome and ends its span; the grant is
// locked and done.
func (t *telemetry) endComplete(ctx context.Context, g *Grant, start time.Time, status int) {
	result := "free"
	switch {
	case g.err != nil:
		result = "error"
	case g.result.Charged.IsPositive():
		result = "charged"
	}
	mctx := t.mctx(ctx)
	t.completeDur.Record(mctx, time.Since(start).Seconds(), t.completeOpts[result].rec...)
	if g.result.Shortfall.IsPositive() {
		t.shortfall.Add(mctx, g.result.Shortfall.Decimal().InexactFloat64())
	}
	t.closed(ctx, g)
	if span := trace.SpanFromContext(ctx); t.tracer != nil && span.IsRecording() {
		span.SetAttributes(attribute.String("keyledger.result", result), attribute.Int("http.response.status_code", status),
			attribute.String("keyledger.charged", g.result.Charged.String()))
		if g.err != nil {
			span.RecordError(g.err)
			span.SetStatus(codes.Error, "error")
		}
		span.End()
	}
}

// closed counts a tracked grant's end (Complete or Cancel).
func (t *telemetry) closed(ctx context.Context, g *Grant) {
	if t == nil || !g.tracked {
		return
	}
	g.tracked = false
	mctx := t.mctx(ctx)
	t.grantsActive.Add(mctx, -1)
	if g.Hold.ID != "" {
		t.holdsOpen.Add(mctx, -1)
	}
}

// startProgress starts the span of a Progress call that has work to do
// (extend or renew the hold); the grant is locked. end records its result.
func (t *telemetry) startProgress(ctx context.Context, g *Grant) (context.Context, func()) {
	var span trace.Span
	if t.tracer != nil {
		ctx, span = t.tracer.Start(ctx, "keyledger.Progress", trace.WithAttributes(
			requestAttr(g.ID), accountAttr(g.Key.AccountID), keyAttr(g.Key.KeyID)))
	}
	before := g.Hold
	return ctx, func() {
		result := "deferred" // refused, but the request is still within its hold
		switch {
		case g.fund.exhausted:
			result = "exhausted"
		case g.Hold.Amount.Cmp(before.Amount) != 0 || !g.Hold.ExpiresAt.Equal(before.ExpiresAt):
			result = "extended"
		}
		t.progress.Add(t.mctx(ctx), 1, t.progressOpts[result].add...)
		if span != nil {
			span.SetAttributes(attribute.String("keyledger.result", result), attribute.String("keyledger.hold.amount", g.Hold.Amount.String()))
			span.End()
		}
	}
}
