package ratelimit_test

import (
	"context"
	"fmt"
	"time"

	"github.com/keyledger/keyledger/ratelimit"
)

// A request is admitted only if every bucket it draws on has room — here
// 3 requests a minute per key and 1,000 prompt tokens a minute per account
// — and then all of them are charged; a refusal charges none and says how
// long to wait.
func ExampleMemory_Allow() {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	lim := ratelimit.NewMemory(&ratelimit.MemoryOptions{Now: func() time.Time { return now }})
	ctx := context.Background()
	call := func(tokens int64) {
		d, _ := lim.Allow(ctx,
			ratelimit.Request{Key: "key_1:rpm", Limit: ratelimit.PerMinute(3), Cost: 1},
			ratelimit.Request{Key: "acct_1:tpm", Limit: ratelimit.PerMinute(1000), Cost: tokens})
		if !d.Allowed {
			fmt.Println("refused, retry after", d.RetryAfter())
			return
		}
		b := d.Buckets()
		fmt.Printf("allowed: %d requests and %d tokens left\n", b[0].Remaining, b[1].Remaining)
	}
	call(400)
	call(400)
	call(400) // the token bucket has 200 left: refused, and nothing is charged
	call(200) // so the request bucket still has the unit for this one
	call(0)   // three requests this minute: refused until one refills
	now = now.Add(20 * time.Second)
	call(0)
	// Output:
	// allowed: 2 requests and 600 tokens left
	// allowed: 1 requests and 200 tokens left
	// refused, retry after 12s
	// allowed: 0 requests and 0 tokens left
	// refused, retry after 20s
	// allowed: 0 requests and 333 tokens left
}
