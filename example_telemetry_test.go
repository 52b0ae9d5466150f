package keyledger_test

import (
	"context"
	"fmt"

	"github.com/shopspring/decimal"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/usage"
)

// A host passes its OpenTelemetry providers in Options; keyledger then
// reports its metrics (and, with a TracerProvider, spans) through them. A
// server would read the MeterProvider with the Prometheus exporter; here a
// ManualReader shows what one request recorded.
func ExampleOptions_telemetry() {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)

	prices, _ := usage.NewPriceBook([]usage.ModelPrice{{
		Model: "forii/deepseek-v3", PromptPerMillion: decimal.NewFromInt(25), CompletionPerMillion: decimal.NewFromInt(100),
	}}, nil)
	kl, err := keyledger.New(memstore.New(), &keyledger.Options{Prices: prices, MeterProvider: mp})
	if err != nil {
		panic(err)
	}
	defer kl.Close(ctx)
	a, _ := kl.Signup(ctx, account.CreateParams{Name: "Asha", Email: "asha@example.com"})
	raw, _, _ := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "prod"})
	g, err := kl.Authorize(ctx, raw, keyledger.Request{Model: "forii/deepseek-v3", PromptTokens: 2000, MaxCompletionTokens: 1000})
	if err != nil {
		panic(err)
	}
	_, _ = g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 2000, CompletionTokens: 400})

	var rm metricdata.ResourceMetrics
	_ = reader.Collect(ctx, &rm)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch m.Name {
			case "keyledger.apikey.verifications", "keyledger.ratelimit.decisions":
				for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
					fmt.Println(m.Name, p.Attributes.Encoded(attributeEncoder), p.Value)
				}
			case "keyledger.credits.entry.amount":
				for _, p := range m.Data.(metricdata.Sum[float64]).DataPoints {
					fmt.Println(m.Name, m.Unit, p.Attributes.Encoded(attributeEncoder), p.Value)
				}
			}
		}
	}
	// Unordered output:
	// keyledger.apikey.verifications result=ok 1
	// keyledger.ratelimit.decisions result=allowed 1
	// keyledger.credits.entry.amount {credit} backend=memory,type=grant,unit=INR 50
	// keyledger.credits.entry.amount {credit} backend=memory,type=debit,unit=INR 0.09
}

var attributeEncoder = attribute.DefaultEncoder()
