package keyledger_test

import (
	"context"
	"testing"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
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
