// Package limitertest is the conformance suite every ratelimit.Limiter
// passes (ratelimit.Memory and redislimit.Limiter). The suite drives the
// limiter with a fake clock; newLimiter must return a limiter with no
// buckets that reads time from now.
package limitertest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/ratelimit"
)

// NewFunc returns an empty limiter on the given clock.
type NewFunc func(t *testing.T, now func() time.Time) ratelimit.Limiter

// Run runs the suite.
func Run(t *testing.T, newLimiter NewFunc) {
	t.Run("FreePlanRPM", func(t *testing.T) { testFreePlanRPM(t, newLimiter) })
	t.Run("AllOrNothing", func(t *testing.T) { testAllOrNothing(t, newLimiter) })
	t.Run("AdjustCorrectsEstimates", func(t *testing.T) { testAdjust(t, newLimiter) })
	t.Run("SameKeyTwice", func(t *testing.T) { testSameKeyTwice(t, newLimiter) })
	t.Run("ConcurrentNeverExceedsBurst", func(t *testing.T) { testConcurrent(t, newLimiter) })
	t.Run("Unlimited", func(t *testing.T) { testUnlimited(t, newLimiter) })
}

var ctx = context.Background()

func start() *fakeclock.Clock { return fakeclock.New(time.Unix(1_700_000_000, 0)) }

func allow(t *testing.T, l ratelimit.Limiter, reqs ...ratelimit.Request) ratelimit.Decision {
	t.Helper()
	d, err := l.Allow(ctx, reqs...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func testFreePlanRPM(t *testing.T, newLimiter NewFunc) {
	clk := start()
	l := newLimiter(t, clk.Now)
	req := ratelimit.Request{Key: "key_1", Limit: ratelimit.PerMinute(60), Cost: 1}
	for i := range 60 {
		d := allow(t, l, req)
		if !d.Allowed || d.Results[0].Remaining != int64(59-i) {
			t.Fatalf("request %d: %+v", i+1, d.Results[0])
		}
	}
	d := allow(t, l, req)
	r := d.Results[0]
	if d.Allowed || r.RetryAfter != time.Second || r.Remaining != 0 || r.Limit != 60 || r.TooLarge {
		t.Fatalf("61st: %+v", r)
	}
	if want := clk.Now().Add(time.Minute); !r.Reset().Equal(want) {
		t.Fatalf("reset %v, want %v", r.Reset(), want)
	}
	clk.Advance(time.Second)
	if !allow(t, l, req).Allowed {
		t.Fatal("refill after 1s refused")
	}
	if allow(t, l, req).Allowed {
		t.Fatal("second request after 1s allowed")
	}
	clk.Advance(time.Minute)
	if d := allow(t, l, ratelimit.Request{Key: "key_1", Limit: ratelimit.PerMinute(60)}); d.Results[0].Remaining != 60 {
		t.Fatalf("after a minute at rest: %+v", d.Results[0])
	}
}

func testAllOrNothing(t *testing.T, newLimiter NewFunc) {
	l := newLimiter(t, start().Now)
	rpm := ratelimit.Request{Key: "rpm", Limit: ratelimit.PerMinute(60), Cost: 1}
	prompt := ratelimit.Request{Key: "ptpm", Limit: ratelimit.PerMinute(100_000), Cost: 90_000}
	completion := ratelimit.Request{Key: "ctpm", Limit: ratelimit.PerMinute(10_000), Cost: 4_000}
	if d := allow(t, l, rpm, prompt, completion); !d.Allowed {
		t.Fatalf("first: %+v", d.Buckets())
	}
	d := allow(t, l, rpm, prompt, completion)
	if d.Allowed || !d.Results[0].Allowed || d.Results[1].Allowed || !d.Results[2].Allowed || d.RetryAfter() <= 0 {
		t.Fatalf("prompt budget should refuse alone: %+v", d.Buckets())
	}
	if d := allow(t, l, ratelimit.Request{Key: "rpm", Limit: ratelimit.PerMinute(60)}); d.Results[0].Remaining != 59 {
		t.Fatalf("refused call charged rpm: remaining %d", d.Results[0].Remaining)
	}
	d = allow(t, l, rpm, ratelimit.Request{Key: "ctpm", Limit: ratelimit.PerMinute(10_000), Cost: 7_000})
	if d.Allowed || d.Results[1].Allowed {
		t.Fatalf("completion budget should refuse: %+v", d.Buckets())
	}
	d = allow(t, l, ratelimit.Request{Key: "x", Limit: ratelimit.PerMinute(10), Cost: 11})
	if d.Allowed || !d.Results[0].TooLarge {
		t.Fatalf("cost above burst: %+v", d.Results[0])
	}
}

func testAdjust(t *testing.T, newLimiter NewFunc) {
	l := newLimiter(t, start().Now)
	lim := ratelimit.PerMinute(10_000)
	if !allow(t, l, ratelimit.Request{Key: "c", Limit: lim, Cost: 8_000}).Allowed {
		t.Fatal("reserve refused")
	}
	if err := l.Adjust(ctx, ratelimit.Request{Key: "c", Limit: lim, Cost: -7_500}); err != nil {
		t.Fatal(err)
	}
	if d := allow(t, l, ratelimit.Request{Key: "c", Limit: lim}); d.Results[0].Remaining != 9_500 {
		t.Fatalf("after refund remaining %d, want 9500", d.Results[0].Remaining)
	}
	if err := l.Adjust(ctx, ratelimit.Request{Key: "c", Limit: lim, Cost: 12_000}); err != nil {
		t.Fatal(err)
	}
	if allow(t, l, ratelimit.Request{Key: "c", Limit: lim, Cost: 1}).Allowed {
		t.Fatal("bucket in debt allowed a request")
	}
	if err := l.Adjust(ctx, ratelimit.Request{Key: "c", Limit: lim, Cost: -1_000_000}); err != nil {
		t.Fatal(err)
	}
	if d := allow(t, l, ratelimit.Request{Key: "c", Limit: lim}); d.Results[0].Remaining != 10_000 {
		t.Fatalf("over-refund must not exceed the burst: %d", d.Results[0].Remaining)
	}
}

func testSameKeyTwice(t *testing.T, newLimiter NewFunc) {
	l := newLimiter(t, start().Now)
	r := ratelimit.Request{Key: "k", Limit: ratelimit.PerMinute(3), Cost: 2}
	if allow(t, l, r, r).Allowed {
		t.Fatal("4 units from a burst of 3 allowed")
	}
	if !allow(t, l, r).Allowed {
		t.Fatal("refused call must charge nothing")
	}
}

func testConcurrent(t *testing.T, newLimiter NewFunc) {
	l := newLimiter(t, start().Now) // frozen clock: no refill
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				d, err := l.Allow(ctx,
					ratelimit.Request{Key: "acct", Limit: ratelimit.PerMinute(500), Cost: 1},
					ratelimit.Request{Key: fmt.Sprint("key", (g+i)%4), Limit: ratelimit.PerMinute(200), Cost: 1})
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := allowed.Load(); got != 500 {
		t.Fatalf("allowed %d, want exactly the account burst of 500", got)
	}
}

func testUnlimited(t *testing.T, newLimiter NewFunc) {
	l := newLimiter(t, start().Now)
	d := allow(t, l, ratelimit.Request{Key: "e", Cost: 1_000_000}, ratelimit.Request{Key: "r", Limit: ratelimit.PerMinute(1), Cost: 1})
	if !d.Allowed || !d.Results[0].Allowed || d.Results[1].Remaining != 0 {
		t.Fatalf("unlimited: %+v", d.Buckets())
	}
}
