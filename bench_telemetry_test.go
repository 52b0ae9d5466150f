package keyledger_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/store/storetest"
)

// BenchmarkAuthorizeCompleteOTel is BenchmarkAuthorizeComplete on memstore
// with the OpenTelemetry SDK installed: its cost over the no-op default
// (no providers), with metrics only (read by a ManualReader, as a
// Prometheus scrape would) and with every span recorded as well (sampled,
// no exporter).
func BenchmarkAuthorizeCompleteOTel(b *testing.B) {
	for _, v := range []struct {
		name   string
		traces bool
	}{{"metrics", false}, {"metrics+traces", true}} {
		b.Run(v.name, func(b *testing.B) {
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			defer mp.Shutdown(context.Background())
			c, err := account.NewCatalog("big", account.Plan{ID: "big", Name: "Big",
				Limits:      account.Limits{RequestsPerMinute: 1e9, PromptTokensPerMinute: 1e9, CompletionTokensPerMinute: 1e9},
				SignupGrant: d("1000000000")})
			if err != nil {
				b.Fatal(err)
			}
			e := newEnvWith(b, backends[0], func(o *keyledger.Options) {
				o.Catalog, o.MeterProvider = c, mp
				if v.traces {
					tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
					b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
					o.TracerProvider = tp
				}
			})
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
