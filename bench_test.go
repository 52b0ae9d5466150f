package keyledger_test

import (
	"context"
	"testing"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
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
