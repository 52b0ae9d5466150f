package ratelimit_test

import (
	"context"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/keyledger/keyledger/ratelimit"
	"github.com/keyledger/keyledger/ratelimit/redislimit"
)

// BenchmarkLimiterAllow compares one RPM check per call over 1,024 keys:
// keyledger's sharded GCRA limiter, the map of x/time/rate limiters behind a
// mutex that a host would write by hand, and the Redis limiter (one round
// trip, skipped without KEYLEDGER_TEST_REDIS).
func BenchmarkLimiterAllow(b *testing.B) {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "key_" + strconv.Itoa(i)
	}
	limit := ratelimit.PerMinute(1_000_000_000) // never refuses: measure the check itself
	ctx := context.Background()

	b.Run("memory", func(b *testing.B) {
		m := ratelimit.NewMemory(nil)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if d, _ := m.Allow(ctx, ratelimit.Request{Key: keys[i&1023], Limit: limit, Cost: 1}); !d.Allowed {
				b.Fatal("refused")
			}
			i++
		}
	})
	b.Run("xtimerate", func(b *testing.B) {
		var mu sync.Mutex
		lims := map[string]*rate.Limiter{}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			k := keys[i&1023]
			mu.Lock()
			l, ok := lims[k]
			if !ok {
				l = rate.NewLimiter(rate.Every(time.Minute/1_000_000_000), 1_000_000_000)
				lims[k] = l
			}
			mu.Unlock()
			if !l.Allow() {
				b.Fatal("refused")
			}
			i++
		}
	})
	b.Run("redis", func(b *testing.B) {
		addr := os.Getenv("KEYLEDGER_TEST_REDIS")
		if addr == "" {
			b.Skip("KEYLEDGER_TEST_REDIS is not set")
		}
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil {
			b.Fatalf("KEYLEDGER_TEST_REDIS=%s set but unreachable: %v", addr, err)
		}
		l := redislimit.New(rdb, &redislimit.Options{Prefix: "klbench:"})
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if d, err := l.Allow(ctx, ratelimit.Request{Key: keys[i&1023], Limit: ratelimit.PerMinute(1 << 30), Cost: 1}); err != nil || !d.Allowed {
				b.Fatal("refused", err)
			}
			i++
		}
	})
}

// BenchmarkLimiterAllowParallel is the memory limiter under b.RunParallel:
// shards keep goroutines on different keys from queueing on one lock.
func BenchmarkLimiterAllowParallel(b *testing.B) {
	m := ratelimit.NewMemory(nil)
	limit := ratelimit.PerMinute(1_000_000_000)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		keys := make([]string, 64)
		for i := range keys {
			keys[i] = "key_" + strconv.Itoa(i*7919+len(keys))
		}
		i := 0
		for pb.Next() {
			if d, err := m.Allow(ctx, ratelimit.Request{Key: keys[i&63], Limit: limit, Cost: 1}); err != nil || !d.Allowed {
				b.Fatal("refused", err)
			}
			i++
		}
	})
}
