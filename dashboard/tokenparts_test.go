package dashboard

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/apikey"
)

// The usage page, its CSV and the request log show the cached and
// reasoning tokens of each request (parts of its prompt and completion).
func TestUsageShowsCachedAndReasoningTokens(t *testing.T) {
	e := newEnv(t)
	b, _ := e.signup("Cache")
	raw, _ := b.createKey("prod", nil)
	ctx := context.Background()
	for range 2 {
		g, err := e.kl.Authorize(ctx, apikey.RawKey(raw), keyledger.Request{Model: "forii/deepseek-v3", PromptTokens: 1000, MaxCompletionTokens: 200})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 1000, CompletionTokens: 200, CachedPromptTokens: 1234 - 500,
			CacheWriteTokens: 11, ReasoningTokens: 77, Latency: time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}
	r := b.mustGet("/dashboard/usage?group=model", http.StatusOK)
	for _, want := range []string{">Cached</th>", ">Reasoning</th>", `<td class="num">1,468</td>`, `<td class="num">154</td>`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("usage page lacks %q", want)
		}
	}
	r = b.mustGet("/dashboard/usage.csv?group=model", http.StatusOK)
	if !strings.Contains(r.body, ",forii/deepseek-v3,2,0,2000,400,2400,") || !strings.HasSuffix(strings.TrimSpace(r.body), ",1468,22,154") {
		t.Fatalf("csv:\n%s", r.body)
	}
	r = b.mustGet("/dashboard/requests", http.StatusOK)
	for _, want := range []string{`data-label="Cached">734</td>`, `data-label="Reasoning">77</td>`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("request log lacks %q:\n%s", want, r.body)
		}
	}
}
