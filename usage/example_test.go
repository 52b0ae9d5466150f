package usage_test

import (
	"context"
	"fmt"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/usage"
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A Forii-style gateway meters chat completions: each call is recorded and
// its exact per-token cost debited in one transaction, a retried call is
// charged once, a failed call costs nothing, and the customer sees usage by
// day × model in their own time zone.
func Example() {
	ctx := context.Background()
	now := time.Date(2025, 1, 15, 20, 0, 0, 0, time.UTC) // 01:30 on Jan 16 in India
	clock := func() time.Time { return now }
	st := memstore.New()
	ledger := must(credits.NewService(store.Driver(st), &credits.Options{Now: clock}))
	defer ledger.Close(ctx)
	prices := must(usage.NewPriceBook([]usage.ModelPrice{{
		Model: "forii/deepseek-v3", PromptPerMillion: decimal.RequireFromString("250"),
		CompletionPerMillion: decimal.RequireFromString("645"),
	}}, nil))
	meter := must(usage.NewService(store.Driver(st), &usage.Options{Now: clock, Credits: ledger}))
	defer meter.Close(ctx)

	must(ledger.Open(ctx, "acct_asha", credits.Policy{TimeZone: "Asia/Kolkata"}))
	must(ledger.Grant(ctx, credits.CreditParams{AccountID: "acct_asha", Amount: credits.AmountFromInt(50), IdempotencyKey: "signup"}))

	call := usage.Record{AccountID: "acct_asha", KeyID: "key_1", Endpoint: "/v1/chat/completions", Method: "POST",
		Model: "forii/deepseek-v3", StatusCode: 200, PromptTokens: 1250, CompletionTokens: 340}
	call.CreatedAt = now
	if err := prices.Rate(&call); err != nil { // the one pricing step
		panic(err)
	}
	for range 2 { // the client retries with the same key
		r := must(meter.Meter(ctx, usage.MeterParams{Record: call, IdempotencyKey: "chatcmpl-1", TimeZone: "Asia/Kolkata"}))
		fmt.Println("charged", r.Charged, "replayed", r.Replayed)
	}
	failed := call
	failed.StatusCode, failed.ErrorType = 502, "upstream_error"
	r := must(meter.Meter(ctx, usage.MeterParams{Record: failed, IdempotencyKey: "chatcmpl-2", TimeZone: "Asia/Kolkata"}))
	fmt.Println("failed call charged", r.Charged)

	rows := must(meter.Summary(ctx, usage.SummaryQuery{AccountID: "acct_asha", From: "2025-01-16", To: "2025-01-16",
		GroupBy: []usage.GroupField{usage.GroupDate, usage.GroupModel}, TimeZone: "Asia/Kolkata"}))
	for _, row := range rows {
		fmt.Println(row.Date, row.Model, row.Requests, row.TotalTokens, row.Cost)
	}
	fmt.Println("balance", must(ledger.Balance(ctx, "acct_asha")))
	// Output:
	// charged 0.5318 replayed false
	// charged 0.5318 replayed true
	// failed call charged 0
	// 2025-01-16 forii/deepseek-v3 2 3180 0.5318
	// balance 49.4682
}

// A model's price changes mid-month. Each record is charged by the price
// version in force at its time, keeps that version, and is never re-priced;
// Rerate shows what the month would have cost under the new price alone.
// Cached prompt tokens and reasoning tokens are parts of the prompt and
// completion, each at its own price.
func ExampleService_Rerate() {
	ctx := context.Background()
	d := decimal.RequireFromString
	cached := d("25")
	change := time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC)
	prices := must(usage.NewPriceBook([]usage.ModelPrice{
		{Model: "gpt", PromptPerMillion: d("100"), CompletionPerMillion: d("400")},
		{Model: "gpt", EffectiveFrom: change, PromptPerMillion: d("120"), CompletionPerMillion: d("480"), CachedPromptPerMillion: &cached},
	}, nil))
	st := memstore.New()
	ledger := must(credits.NewService(store.Driver(st), nil))
	defer ledger.Close(ctx)
	meter := must(usage.NewService(store.Driver(st), &usage.Options{Credits: ledger}))
	defer meter.Close(ctx)
	must(ledger.Open(ctx, "acct", credits.Policy{}))
	must(ledger.Purchase(ctx, credits.CreditParams{AccountID: "acct", Amount: credits.AmountFromInt(100), IdempotencyKey: "buy"}))

	for i, at := range []time.Time{change.AddDate(0, 0, -1), change.AddDate(0, 0, 1)} {
		rec := usage.Record{AccountID: "acct", Model: "gpt", StatusCode: 200, CreatedAt: at,
			PromptTokens: 100_000, CachedPromptTokens: 80_000, CompletionTokens: 10_000, ReasoningTokens: 4_000}
		if err := prices.Rate(&rec); err != nil { // the one pricing step
			panic(err)
		}
		r := must(meter.Meter(ctx, usage.MeterParams{Record: rec, IdempotencyKey: fmt.Sprint("req-", i)}))
		fmt.Println(r.Record.CreatedAt.Format(time.DateOnly), "charged", r.Charged, "price from", r.Record.PriceFrom.Format(time.DateOnly))
	}
	newPrice, _ := prices.Model("gpt")
	newPrice.EffectiveFrom = time.Time{}
	rows := must(meter.Rerate(ctx, usage.ListQuery{AccountID: "acct"}, must(usage.NewPriceBook([]usage.ModelPrice{newPrice}, nil))))
	total := rows[len(rows)-1]
	fmt.Println("charged", total.Cost, "under the new price", total.Rerated, "difference", total.Difference)
	// Output:
	// 2026-03-14 charged 14 price from 0001-01-01
	// 2026-03-16 charged 9.2 price from 2026-03-15
	// charged 23.2 under the new price 18.4 difference -4.8
}
