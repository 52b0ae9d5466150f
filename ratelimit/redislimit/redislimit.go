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
package redislimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyledger/keyledger/ratelimit"
)

var _ ratelimit.Limiter = (*Limiter)(nil)

// Options configure New. nil means defaults.
type Options struct {
	// Prefix starts every Redis key ("kl:rl:" by default).
	Prefix string
	// Now, when set, replaces the Redis server clock (for tests).
	Now func() time.Time
}

// Limiter is a Redis-backed ratelimit.Limiter.
type Limiter struct {
	rdb    redis.Scripter
	prefix string
	now    func() time.Time
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
	return &Limiter{rdb: rdb, prefix: o.Prefix, now: o.Now}
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

// Allow implements ratelimit.Limiter.
func (l *Limiter) Allow(ctx context.Context, reqs ...ratelimit.Request) (ratelimit.Decision, error) {
	d := ratelimit.Decision{Allowed: true, N: len(reqs)}
	if err := validate(reqs); err != nil {
		return d, err
	}
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

// Adjust implements ratelimit.Limiter.
func (l *Limiter) Adjust(ctx context.Context, reqs ...ratelimit.Request) error {
	if err := validate(reqs); err != nil {
		return err
	}
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
