package redislimit_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/internal/faultproxy"
	"github.com/keyledger/keyledger/ratelimit"
	"github.com/keyledger/keyledger/ratelimit/redislimit"
)

// Redis behind a fault proxy: the policies while it is down, the circuit
// breaker that keeps an outage from being hammered, and recovery without a
// restart when it returns.

type downRedis struct {
	px  *faultproxy.Proxy
	rdb *redis.Client
	clk *fakeclock.Clock
	p   string
}

func newDownRedis(t *testing.T) *downRedis {
	t.Helper()
	direct := client(t) // skips without KEYLEDGER_TEST_REDIS
	px, err := faultproxy.Start(os.Getenv("KEYLEDGER_TEST_REDIS"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	rdb := redis.NewClient(&redis.Options{Addr: px.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	return &downRedis{px: px, rdb: rdb, clk: fakeclock.New(time.Unix(1_700_000_000, 0)), p: prefix(t, direct)}
}

func (d *downRedis) limiter(policy redislimit.Policy) *redislimit.Limiter {
	return redislimit.New(d.rdb, &redislimit.Options{Prefix: d.p, Now: d.clk.Now, OnUnavailable: policy,
		Timeout: 200 * time.Millisecond, ProbeInterval: time.Second, Logger: slog.New(slog.DiscardHandler)})
}

// down takes Redis away: new connections are refused, open ones reset.
func (d *downRedis) down() {
	d.px.Set(faultproxy.Refuse, 0)
	d.px.Reset()
}

func TestFailClosedWhileRedisIsDown(t *testing.T) {
	ctx := context.Background()
	d := newDownRedis(t)
	l := d.limiter(redislimit.FailClosed)
	req := ratelimit.Request{Key: "k", Limit: ratelimit.PerMinute(100), Cost: 1}
	if dec, err := l.Allow(ctx, req); err != nil || !dec.Allowed {
		t.Fatalf("Redis up: %+v %v", dec, err)
	}
	d.down()
	accepted := d.px.Accepted()
	for i := range 50 {
		if _, err := l.Allow(ctx, req); !errors.Is(err, ratelimit.ErrUnavailable) {
			t.Fatalf("call %d with Redis down: %v, want ErrUnavailable", i, err)
		}
	}
	if err := l.Adjust(ctx, req); !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Fatalf("adjust with Redis down: %v", err)
	}
	// One call found Redis down and opened the circuit; the other 50 did
	// not try it (go-redis may dial once more for the failing call).
	if n := d.px.Accepted() - accepted; n > 2 {
		t.Fatalf("%d connection attempts to a Redis that is down within one probe interval, want at most 2", n)
	}
	if l.Available() || l.Trips() != 1 {
		t.Fatalf("available %v, trips %d: want an open circuit, tripped once", l.Available(), l.Trips())
	}
	// Redis returns; the next call after the probe interval finds it and
	// closes the circuit: no restart.
	d.px.Set(faultproxy.Pass, 0)
	if _, err := l.Allow(ctx, req); !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Fatalf("within the probe interval the circuit stays open: %v", err)
	}
	d.clk.Advance(time.Second)
	if dec, err := l.Allow(ctx, req); err != nil || !dec.Allowed {
		t.Fatalf("after the probe interval with Redis back: %+v %v", dec, err)
	}
	if !l.Available() {
		t.Fatal("circuit still open after a successful probe")
	}
}

func TestFallbackMemoryWhileRedisIsDown(t *testing.T) {
	ctx := context.Background()
	d := newDownRedis(t)
	l := d.limiter(redislimit.FallbackMemory)
	req := ratelimit.Request{Key: "k", Limit: ratelimit.PerMinute(5), Cost: 1}
	for range 5 {
		if dec, err := l.Allow(ctx, req); err != nil || !dec.Allowed {
			t.Fatalf("Redis up: %+v %v", dec, err)
		}
	}
	if dec, _ := l.Allow(ctx, req); dec.Allowed {
		t.Fatal("Redis admitted a sixth request of 5 per minute")
	}
	d.down()
	// The memory fallback starts with a full bucket: this instance admits
	// one more limit's worth, and no more (the documented N × limit, plus
	// the burst Redis already gave in this minute).
	allowed := 0
	for range 12 {
		dec, err := l.Allow(ctx, req)
		if err != nil {
			t.Fatalf("fallback: %v", err)
		}
		if dec.Allowed {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("fallback admitted %d of 12, want the limit of 5", allowed)
	}
	// Back to Redis after the probe: its bucket is the one that counts.
	d.px.Set(faultproxy.Pass, 0)
	d.clk.Advance(time.Second)
	if dec, err := l.Allow(ctx, req); err != nil || dec.Allowed {
		t.Fatalf("after recovery Redis's exhausted bucket refuses: %+v %v", dec, err)
	}
	if !l.Available() {
		t.Fatal("circuit still open after Redis returned")
	}
}

// A Redis that accepts connections but never answers (a partition) costs
// one call its timeout, then nothing until the probe.
func TestStalledRedisCostsOneTimeout(t *testing.T) {
	ctx := context.Background()
	d := newDownRedis(t)
	l := d.limiter(redislimit.FailClosed)
	req := ratelimit.Request{Key: "k", Limit: ratelimit.PerMinute(100), Cost: 1}
	if _, err := l.Allow(ctx, req); err != nil {
		t.Fatal(err)
	}
	d.px.Set(faultproxy.Blackhole, 0)
	// The client here leaves ContextTimeoutEnabled off, so go-redis itself
	// would wait its ReadTimeout (3 s); the limiter's Timeout (200 ms)
	// bounds the call all the same. Checked with a wide margin.
	start := time.Now()
	if _, err := l.Allow(ctx, req); !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Fatalf("stalled Redis: %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("a call to a stalled Redis took %v with a 200 ms timeout", el)
	}
	// The circuit is open: these do not touch Redis at all (no new
	// connection, so no wait on the partition either).
	accepted := d.px.Accepted()
	for range 20 {
		if _, err := l.Allow(ctx, req); !errors.Is(err, ratelimit.ErrUnavailable) {
			t.Fatal(err)
		}
	}
	if n := d.px.Accepted() - accepted; n != 0 || l.Trips() != 1 {
		t.Fatalf("%d connections to a stalled Redis and %d trips with the circuit open, want 0 and 1", n, l.Trips())
	}
	d.px.Set(faultproxy.Pass, 0)
	d.px.Reset() // the connections that timed out are dead to the client
	d.clk.Advance(time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		dec, err := l.Allow(ctx, req)
		if err == nil && dec.Allowed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis back, still failing: %v", err)
		}
		d.clk.Advance(time.Second)
	}
}
