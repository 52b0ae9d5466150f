// Package redislimit is a ratelimit.Limiter whose buckets live in Redis, so
// that many instances of a host share one budget per key and per account.
//
// Each call is one Lua script (EVALSHA) that runs GCRA over all the call's
// buckets atomically: all are charged or none. Buckets are plain string keys
// holding the arrival time in microseconds, with a TTL that lets buckets at
// rest disappear. By default the script reads the Redis server's clock, so
// hosts with skewed clocks still agree; tests may inject a clock instead.
//
// The keys of one call must hash to one slot on Redis Cluster; use a single
// Redis (or a primary with replicas) or a key prefix with a hash tag.
//
// # When Redis is unavailable
//
// Every call is bounded by Options.Timeout (250 ms by default). A call that
// fails — Redis down, unreachable, reset or slower than the timeout — opens
// a circuit breaker: for Options.ProbeInterval (1 s by default) calls do not
// touch Redis at all, then a single call probes it, and the first that
// succeeds closes the circuit again. So a Redis outage costs each instance
// one timed-out call and then one probe per interval (no hammering, no
// restart needed), and the limiter recovers by itself when Redis returns.
// While the circuit is open, Options.OnUnavailable decides:
//
//   - FailClosed (the default): Allow fails with an error wrapping
//     ratelimit.ErrUnavailable (keyledger answers 503 with Retry-After);
//     Adjust's corrections are dropped.
//   - FallbackMemory: each instance limits in its own memory
//     (Options.Fallback, a ratelimit.Memory by default) with the same
//     limits. Budgets are then per instance, so N instances admit up to N ×
//     the limit per key and account; in a minute that spans the outage's
//     start or end, up to (N + 1) × the limit, since Redis's buckets and
//     the fresh memory buckets each allow a burst.
//
// Rate limits never touch money: a request admitted by the fallback still
// needs its credit hold in the database.
package redislimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyledger/keyledger/ratelimit"
)

var _ ratelimit.Limiter = (*Limiter)(nil)

// Policy is what a Limiter does while Redis is unavailable.
type Policy uint8

// Policies.
const (
	// FailClosed refuses to decide: Allow returns an error wrapping
	// ratelimit.ErrUnavailable.
	FailClosed Policy = iota + 1
	// FallbackMemory limits in each instance's memory until Redis returns
	// (worst case N instances × the limit; see the package documentation).
	FallbackMemory
)

func (p Policy) String() string {
	switch p {
	case FailClosed:
		return "fail-closed"
	case FallbackMemory:
		return "fallback-memory"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// Options configure New. nil means defaults.
type Options struct {
	// Prefix starts every Redis key ("kl:rl:" by default).
	Prefix string
	// Now, when set, replaces the Redis server clock and the clock of the
	// circuit breaker (for tests).
	Now func() time.Time
	// Timeout bounds each Redis call (250 ms by default), whatever the
	// client's own timeouts; give the client ContextTimeoutEnabled so that
	// a call given up on also ends on its socket at once.
	Timeout time.Duration
	// OnUnavailable is the policy while Redis is unavailable (FailClosed
	// by default).
	OnUnavailable Policy
	// Fallback limits while Redis is unavailable under FallbackMemory
	// (ratelimit.NewMemory on Now by default).
	Fallback ratelimit.Limiter
	// ProbeInterval is how long the circuit stays open after a failure
	// before one call probes Redis again (1 s by default).
	ProbeInterval time.Duration
	// Logger receives the circuit's transitions (slog.Default if nil).
	Logger *slog.Logger
}

// Limiter is a Redis-backed ratelimit.Limiter.
type Limiter struct {
	rdb    redis.Scripter
	prefix string
	now    func() time.Time
	opt    Options

	mu        sync.Mutex
	openUntil time.Time // zero: closed
	open      bool
	probing   bool
	trips     int64
}

// New returns a Limiter over a go-redis client (*redis.Client,
// *redis.ClusterClient, *redis.Ring or redis.UniversalClient).
func New(rdb redis.Scripter, opts *Options) *Limiter {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Prefix == "" {
		o.Prefix = "kl:rl:"
	}
	if o.Timeout <= 0 {
		o.Timeout = 250 * time.Millisecond
	}
	if o.OnUnavailable == 0 {
		o.OnUnavailable = FailClosed
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.OnUnavailable == FallbackMemory && o.Fallback == nil {
		var mo *ratelimit.MemoryOptions
		if o.Now != nil {
			mo = &ratelimit.MemoryOptions{Now: o.Now}
		}
		o.Fallback = ratelimit.NewMemory(mo)
	}
	return &Limiter{rdb: rdb, prefix: o.Prefix, now: o.Now, opt: o}
}

// clock is the circuit breaker's clock.
func (l *Limiter) clock() time.Time {
	if l.now != nil {
		return l.now()
	}
	return time.Now()
}

// Available reports whether the circuit is closed: the last call to Redis
// succeeded.
func (l *Limiter) Available() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.open
}

// Trips is how often the circuit has opened.
func (l *Limiter) Trips() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.trips
}

// admit decides whether a call may go to Redis: always while the circuit
// is closed; while it is open, one call (the probe) once ProbeInterval has
// passed. probe is true for that call.
func (l *Limiter) admit() (ok, probe bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.open {
		return true, false
	}
	if l.probing || l.clock().Before(l.openUntil) {
		return false, false
	}
	l.probing = true
	return true, true
}

// report records the outcome of a call admitted by admit.
func (l *Limiter) report(probe bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if probe {
		l.probing = false
	}
	switch {
	case err == nil && l.open:
		l.open = false
		l.opt.Logger.Info("redislimit: Redis is back; shared rate limits resume")
	case err != nil:
		if !l.open {
			l.trips++
			l.opt.Logger.Warn("redislimit: Redis unavailable; rate limits follow the policy until it returns",
				"policy", l.opt.OnUnavailable.String(), "probe_every", l.opt.ProbeInterval, "error", err)
		}
		l.open = true
		l.openUntil = l.clock().Add(l.opt.ProbeInterval)
	}
}

// bounded runs fn under ctx with a timeout and returns when either fn
// returns or the timeout passes. go-redis passes a context's deadline to
// its sockets only with ContextTimeoutEnabled; without it a stalled Redis
// would hold the call for the client's ReadTimeout (3 s by default), so fn
// runs in its own goroutine, which ends by that timeout at the latest.
func bounded[T any](ctx context.Context, timeout time.Duration, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn(ctx)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// abandon ends a call that gave no verdict on Redis (its caller left): a
// probe is due again at once.
func (l *Limiter) abandon(probe bool) {
	if probe {
		l.mu.Lock()
		l.probing = false
		l.mu.Unlock()
	}
}

// failure reports whether err from a Redis call means Redis is unavailable
// (as opposed to the caller's context ending).
func failure(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() == nil
}

// allowScript: KEYS = buckets; ARGV = now_us (0: server time), then per
// bucket interval_us, burst, cost. Returns {allowed, now_us, then per bucket
// ok, remaining, retry_us, reset_us}.
var allowScript = redis.NewScript(`
local now = tonumber(ARGV[1])
if now <= 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local out = {1, now}
local newtats = {}
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 3
  local T, burst, cost = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  for j = 1, i - 1 do
    if KEYS[j] == KEYS[i] then tat = newtats[j] end
  end
  if tat < now then tat = now end
  local tau = T * burst
  local newtat = tat + cost * T
  local allowAt = newtat - tau
  if allowAt > now then
    out[1] = 0
    newtats[i] = tat
    table.insert(out, 0)
    table.insert(out, math.max(0, math.floor((tau - (tat - now)) / T + 1e-9)))
    table.insert(out, math.ceil(allowAt - now))
    table.insert(out, math.ceil(tat))
  else
    newtats[i] = newtat
    table.insert(out, 1)
    table.insert(out, math.floor((tau - (newtat - now)) / T + 1e-9))
    table.insert(out, 0)
    table.insert(out, math.ceil(newtat))
  end
end
if out[1] == 1 then
  for i = 1, #KEYS do
    if newtats[i] > now then
      redis.call('SET', KEYS[i], string.format('%.0f', newtats[i]), 'PX', math.ceil((newtats[i] - now) / 1000) + 1)
    end
  end
end
return out
`)

// adjustScript: KEYS = buckets; ARGV = now_us, then per bucket interval_us, cost.
var adjustScript = redis.NewScript(`
local now = tonumber(ARGV[1])
if now <= 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 2
  local T, cost = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tat = tat + cost * T
  if tat > now then
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  else
    redis.call('DEL', KEYS[i])
  end
end
return 1
`)

func (l *Limiter) nowMicros() int64 {
	if l.now == nil {
		return 0
	}
	return l.now().UnixMicro()
}

func intervalMicros(lim ratelimit.Limit) float64 {
	return float64(lim.Period.Microseconds()) / float64(lim.Rate)
}

func burstOf(lim ratelimit.Limit) int64 {
	if lim.Burst > 0 {
		return lim.Burst
	}
	return lim.Rate
}

func validate(reqs []ratelimit.Request) error {
	if len(reqs) > ratelimit.MaxBuckets {
		return ratelimit.ErrTooManyBuckets
	}
	for _, r := range reqs {
		if !r.Limit.Unlimited() && (r.Limit.Period < time.Microsecond || r.Limit.Burst < 0) {
			return ratelimit.ErrInvalidLimit
		}
	}
	return nil
}

// Allow implements ratelimit.Limiter. While Redis is unavailable it
// follows Options.OnUnavailable (see the package documentation).
func (l *Limiter) Allow(ctx context.Context, reqs ...ratelimit.Request) (ratelimit.Decision, error) {
	if err := validate(reqs); err != nil {
		return ratelimit.Decision{Allowed: true, N: len(reqs)}, err
	}
	ok, probe := l.admit()
	if !ok {
		return l.degradedAllow(ctx, reqs, nil)
	}
	d, err := bounded(ctx, l.opt.Timeout, func(ctx context.Context) (ratelimit.Decision, error) { return l.allow(ctx, reqs) })
	if err != nil && !failure(ctx, err) {
		l.abandon(probe) // the caller left: no verdict on Redis
		return d, err
	}
	l.report(probe, err)
	if err != nil {
		return l.degradedAllow(ctx, reqs, err)
	}
	return d, nil
}

// degradedAllow is Allow while the circuit is open.
func (l *Limiter) degradedAllow(ctx context.Context, reqs []ratelimit.Request, cause error) (ratelimit.Decision, error) {
	if l.opt.OnUnavailable == FallbackMemory {
		return l.opt.Fallback.Allow(ctx, reqs...)
	}
	if cause == nil {
		cause = errors.New("circuit open")
	}
	return ratelimit.Decision{}, fmt.Errorf("redislimit: allow: %w: %w", ratelimit.ErrUnavailable, cause)
}

// allow runs the script.
func (l *Limiter) allow(ctx context.Context, reqs []ratelimit.Request) (ratelimit.Decision, error) {
	d := ratelimit.Decision{Allowed: true, N: len(reqs)}
	keys := make([]string, 0, len(reqs))
	args := make([]any, 1, 1+3*len(reqs))
	args[0] = l.nowMicros()
	var slot [ratelimit.MaxBuckets]int // index into the script's buckets, -1 for unlimited
	for i, r := range reqs {
		slot[i] = -1
		if r.Limit.Unlimited() {
			continue
		}
		slot[i] = len(keys)
		keys = append(keys, l.prefix+r.Key)
		args = append(args, intervalMicros(r.Limit), burstOf(r.Limit), r.Cost)
	}
	for i := range reqs {
		d.Results[i] = ratelimit.Result{Allowed: true}
	}
	if len(keys) == 0 {
		return d, nil
	}
	vals, err := allowScript.Run(ctx, l.rdb, keys, args...).Int64Slice()
	if err != nil {
		return ratelimit.Decision{}, fmt.Errorf("redislimit: allow: %w", err)
	}
	if len(vals) != 2+4*len(keys) {
		return ratelimit.Decision{}, fmt.Errorf("redislimit: allow: unexpected reply of %d values", len(vals))
	}
	d.Allowed = vals[0] == 1
	for i, r := range reqs {
		if slot[i] < 0 {
			continue
		}
		v := vals[2+4*slot[i]:]
		res := ratelimit.Result{
			Limit: burstOf(r.Limit), Allowed: v[0] == 1, Remaining: v[1],
			RetryAfter: time.Duration(v[2]) * time.Microsecond, ResetUnixNano: v[3] * 1000,
		}
		res.TooLarge = !res.Allowed && r.Cost > res.Limit
		d.Results[i] = res
	}
	return d, nil
}

// Adjust implements ratelimit.Limiter. While Redis is unavailable the
// corrections go to the fallback (FallbackMemory) or are dropped
// (FailClosed, which returns an error wrapping ratelimit.ErrUnavailable).
func (l *Limiter) Adjust(ctx context.Context, reqs ...ratelimit.Request) error {
	if err := validate(reqs); err != nil {
		return err
	}
	ok, probe := l.admit()
	if !ok {
		return l.degradedAdjust(ctx, reqs, nil)
	}
	_, err := bounded(ctx, l.opt.Timeout, func(ctx context.Context) (struct{}, error) { return struct{}{}, l.adjust(ctx, reqs) })
	if err != nil && !failure(ctx, err) {
		l.abandon(probe)
		return err
	}
	l.report(probe, err)
	if err != nil {
		return l.degradedAdjust(ctx, reqs, err)
	}
	return nil
}

// degradedAdjust is Adjust while the circuit is open.
func (l *Limiter) degradedAdjust(ctx context.Context, reqs []ratelimit.Request, cause error) error {
	if l.opt.OnUnavailable == FallbackMemory {
		return l.opt.Fallback.Adjust(ctx, reqs...)
	}
	if cause == nil {
		cause = errors.New("circuit open")
	}
	return fmt.Errorf("redislimit: adjust: %w: %w", ratelimit.ErrUnavailable, cause)
}

// adjust runs the script.
func (l *Limiter) adjust(ctx context.Context, reqs []ratelimit.Request) error {
	keys := make([]string, 0, len(reqs))
	args := make([]any, 1, 1+2*len(reqs))
	args[0] = l.nowMicros()
	for _, r := range reqs {
		if r.Limit.Unlimited() || r.Cost == 0 {
			continue
		}
		keys = append(keys, l.prefix+r.Key)
		args = append(args, intervalMicros(r.Limit), r.Cost)
	}
	if len(keys) == 0 {
		return nil
	}
	if err := adjustScript.Run(ctx, l.rdb, keys, args...).Err(); err != nil {
		return fmt.Errorf("redislimit: adjust: %w", err)
	}
	return nil
}
