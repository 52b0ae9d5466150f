package keyledger_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/store/storetest"
)

// BenchmarkAuthorizeComplete is one paid request through the whole hot path:
// verify (cached) + permit + price + six rate-limit buckets + credit hold,
// then meter + settle + token correction. retained-B/op is the heap each
// request leaves behind (the memory backend keeps its whole history).
func BenchmarkAuthorizeComplete(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			c, err := account.NewCatalog("big", account.Plan{ID: "big", Name: "Big",
				Limits:      account.Limits{RequestsPerMinute: 1e9, PromptTokensPerMinute: 1e9, CompletionTokensPerMinute: 1e9},
				SignupGrant: d("1000000000")})
			if err != nil {
				b.Fatal(err)
			}
			e := newEnv(b, be, c)
			_, raw, _ := e.signup(b, "bench@example.com", "")
			ctx := context.Background()
			req := keyledger.Request{Model: "test-model", PromptTokens: 100, MaxCompletionTokens: 100, Endpoint: "/v1/chat/completions", Method: "POST"}
			out := keyledger.Outcome{StatusCode: 200, PromptTokens: 100, CompletionTokens: 50}
			b.ReportAllocs()
			retained := storetest.RetainedHeap(b)
			for b.Loop() {
				g, err := e.kl.Authorize(ctx, raw, req)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := g.Complete(ctx, out); err != nil {
					b.Fatal(err)
				}
			}
			retained(e)
		})
	}
}

// BenchmarkGrantProgress is the per-chunk cost of Grant.Progress for a
// stream whose hold is far from used up (the fast path every chunk takes:
// a lock, a comparison and the clock), next to BenchmarkGrantProgressExtend,
// a stream that extends its hold every call (a store write each time).
func BenchmarkGrantProgress(b *testing.B) {
	for _, extend := range []bool{false, true} {
		name := "within-hold"
		if extend {
			name = "extend-every-call"
		}
		b.Run(name, func(b *testing.B) {
			e := newEnvWith(b, backends[0], func(o *keyledger.Options) { o.Catalog = bigCatalog(b) })
			a, raw, _ := e.signup(b, "bench@example.com", "")
			ctx := context.Background()
			if _, err := e.kl.Credits.Grant(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.NewAmount(d("1000000000")), IdempotencyKey: "big"}); err != nil {
				b.Fatal(err)
			}
			g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 1 << 40, HoldCompletionTokens: 4})
			if err != nil {
				b.Fatal(err)
			}
			var n int64
			b.ReportAllocs()
			for b.Loop() {
				if extend {
					n += 4
				}
				if err := g.Progress(ctx, keyledger.Delivered{PromptTokens: 10, CompletionTokens: n}); err != nil {
					b.Fatal(err)
				}
			}
			_ = g.Cancel(ctx)
		})
	}
}

// BenchmarkAuthorizeCompleteParallel is BenchmarkAuthorizeComplete with
// many requests in flight, as a gateway under load has them: 64 or 1,024
// callers over 64 keys of 16 accounts, on the durable backends (SQLite,
// and PostgreSQL when KEYLEDGER_TEST_POSTGRES is set). ns/op is the
// inverse of throughput; p99-µs is one request's latency.
func BenchmarkAuthorizeCompleteParallel(b *testing.B) {
	for _, be := range moneyBackends[1:] {
		for _, callers := range []int{64, 1024} {
			b.Run(fmt.Sprintf("%s/callers=%d", be.name, callers), func(b *testing.B) {
				c, err := account.NewCatalog("big", account.Plan{ID: "big", Name: "Big",
					Limits:      account.Limits{RequestsPerMinute: 1e9, PromptTokensPerMinute: 1e9, CompletionTokensPerMinute: 1e9},
					SignupGrant: d("1000000000")})
				if err != nil {
					b.Fatal(err)
				}
				e := newEnv(b, be, c)
				var raws []apikey.RawKey
				for i := range 16 {
					a, raw, _ := e.signup(b, fmt.Sprintf("bench%d@example.com", i), "")
					raws = append(raws, raw)
					for range 3 {
						r, _, err := e.kl.Keys.Create(context.Background(), apikey.CreateParams{AccountID: a.ID, Name: "k"})
						if err != nil {
							b.Fatal(err)
						}
						raws = append(raws, r)
					}
				}
				ctx := context.Background()
				req := keyledger.Request{Model: "test-model", PromptTokens: 100, MaxCompletionTokens: 100, Endpoint: "/v1/chat/completions", Method: "POST"}
				out := keyledger.Outcome{StatusCode: 200, PromptTokens: 100, CompletionTokens: 50}
				var (
					next atomic.Int64
					mu   sync.Mutex
					lat  []time.Duration
				)
				procs := runtime.GOMAXPROCS(0)
				b.SetParallelism((callers + procs - 1) / procs)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					raw := raws[int(next.Add(1))%len(raws)]
					mine := make([]time.Duration, 0, 256)
					for pb.Next() {
						start := time.Now()
						g, err := e.kl.Authorize(ctx, raw, req)
						if err != nil {
							b.Error(err)
							return
						}
						if _, err := g.Complete(ctx, out); err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(start))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				})
				b.StopTimer()
				if len(lat) > 0 {
					slices.Sort(lat)
					b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
				}
				// How well the group commits batch: requests per commit of
				// the reserve (credits) and meter (usage) committers.
				if cs := e.kl.Credits.Stats(); cs.Batches > 0 {
					b.ReportMetric(float64(cs.BatchedSpends)/float64(cs.Batches), "spends/commit")
				}
				if us := e.kl.Usage.Stats(); us.Batches > 0 {
					b.ReportMetric(float64(us.BatchedItems)/float64(us.Batches), "meters/commit")
				}
			})
		}
	}
}
