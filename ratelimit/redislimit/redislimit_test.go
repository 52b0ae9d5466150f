package redislimit_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/ratelimit"
	"github.com/keyledger/keyledger/ratelimit/limitertest"
	"github.com/keyledger/keyledger/ratelimit/redislimit"
)

// client connects to KEYLEDGER_TEST_REDIS: skips when unset, fails when set
// but unreachable.
func client(t testing.TB) *redis.Client {
	addr := os.Getenv("KEYLEDGER_TEST_REDIS")
	if addr == "" {
		t.Skip("KEYLEDGER_TEST_REDIS is not set; set it to host:port of a Redis server to run the Redis limiter tests")
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("KEYLEDGER_TEST_REDIS=%s is set but Redis does not answer: %v", addr, err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// prefix returns a key prefix unique to this test and deletes its keys after.
func prefix(t testing.TB, rdb *redis.Client) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	p := "kltest:" + hex.EncodeToString(b) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, p+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})
	return p
}

func TestConformance(t *testing.T) {
	rdb := client(t)
	limitertest.Run(t, func(t *testing.T, now func() time.Time) ratelimit.Limiter {
		return redislimit.New(rdb, &redislimit.Options{Prefix: prefix(t, rdb), Now: now})
	})
}

func TestTwoInstancesShareOneBudget(t *testing.T) {
	a, b := client(t), client(t)
	p := prefix(t, a)
	clk := fakeclock.New(time.Unix(1_700_000_000, 0))
	la := redislimit.New(a, &redislimit.Options{Prefix: p, Now: clk.Now})
	lb := redislimit.New(b, &redislimit.Options{Prefix: p, Now: clk.Now})
	req := ratelimit.Request{Key: "key_shared", Limit: ratelimit.PerMinute(10), Cost: 1}
	ctx := context.Background()
	allowed := 0
	for i := range 20 {
		l := la
		if i%2 == 1 {
			l = lb
		}
		d, err := l.Allow(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			allowed++
		}
	}
	if allowed != 10 {
		t.Fatalf("two instances allowed %d, want one shared budget of 10", allowed)
	}
}

func TestServerClock(t *testing.T) {
	rdb := client(t)
	l := redislimit.New(rdb, &redislimit.Options{Prefix: prefix(t, rdb)})
	d, err := l.Allow(context.Background(), ratelimit.Request{Key: "k", Limit: ratelimit.PerMinute(5), Cost: 5})
	if err != nil || !d.Allowed {
		t.Fatalf("%+v %v", d, err)
	}
	d, _ = l.Allow(context.Background(), ratelimit.Request{Key: "k", Limit: ratelimit.PerMinute(5), Cost: 1})
	if d.Allowed || d.Results[0].RetryAfter <= 0 || d.Results[0].RetryAfter > 12*time.Second {
		t.Fatalf("server clock: %+v", d.Results[0])
	}
	if time.Until(d.Results[0].Reset()) > 2*time.Minute {
		t.Fatalf("reset too far: %v", d.Results[0].Reset())
	}
}
