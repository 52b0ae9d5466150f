package usage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/usage"
)

// Rerate walks every page (more records than a page holds), keeps one row
// per model and endpoint, and reports the difference exactly; it writes
// nothing.
func TestRerateWalksEveryPage(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	svc, err := usage.NewService(store.Driver(st), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(ctx)
	mid := time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC)
	dec := decimal.RequireFromString
	charged, _ := usage.NewPriceBook([]usage.ModelPrice{
		{Model: "a", PromptPerMillion: dec("1"), CompletionPerMillion: dec("3")},
		{Model: "a", EffectiveFrom: mid, PromptPerMillion: dec("2"), CompletionPerMillion: dec("3")},
		{Model: "b", PromptPerMillion: dec("7")},
	}, []usage.OperationPrice{{Operation: "/op", PerUnit: dec("0")}})
	const n = usage.MaxListLimit*2 + 3
	for i := range n {
		r := usage.Record{AccountID: "acct", Model: []string{"a", "b"}[i%2], Endpoint: "/v1/chat", StatusCode: 200,
			PromptTokens: 1000, CompletionTokens: 100, CreatedAt: mid.Add(time.Duration(i-n/2) * time.Minute)}
		if err := charged.Rate(&r); err != nil {
			t.Fatal(err)
		}
		// The service has no ledger, so the records are metered at zero
		// cost (keeping their price version): the difference is then the
		// whole re-rated amount.
		r.Cost = credits.Amount{}
		if _, err := svc.Meter(ctx, usage.MeterParams{Record: r, IdempotencyKey: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.Rerate(ctx, usage.ListQuery{AccountID: "acct"}, nil); !errors.Is(err, usage.ErrInvalidQuery) {
		t.Fatalf("nil book: %v", err)
	}
	rows, err := svc.Rerate(ctx, usage.ListQuery{AccountID: "acct"}, charged)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[0].Model != "a" || rows[1].Model != "b" || rows[2].Model != "" {
		t.Fatalf("rows: %+v", rows)
	}
	if rows[0].Requests+rows[1].Requests != n || rows[2].Requests != n {
		t.Fatalf("requests: %+v", rows)
	}
	// Model a: records before mid cost 1000×1 + 100×3 = 1300 per million,
	// from mid 2300; b: 7000 per million. Stored costs are zero, so the
	// difference is the whole re-rated amount, exactly.
	var wantA, wantB int64
	for i := range n {
		at := mid.Add(time.Duration(i-n/2) * time.Minute)
		switch {
		case i%2 == 1:
			wantB += 7000
		case at.Before(mid):
			wantA += 1300
		default:
			wantA += 2300
		}
	}
	check := func(row usage.SummaryRow, micro int64) {
		t.Helper()
		want := credits.AmountFromMinor(micro, 6)
		if !row.Rerated.Equal(want) || !row.Difference.Equal(want) || !row.Cost.IsZero() {
			t.Fatalf("%+v: want rerated %s", row, want)
		}
	}
	check(rows[0], wantA)
	check(rows[1], wantB)
	check(rows[2], wantA+wantB)
}
