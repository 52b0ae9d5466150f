package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

// testUsageTokenParts meters LLM requests with cached, cache-write and
// reasoning tokens under a price book whose model changes price mid-month,
// and checks on the backend that: each record is charged exactly per the
// version in force at its time and keeps its parts and the version applied
// (PriceFrom); the rollups (grouped in SQL or not) and the raw path sum the
// parts; Rerate under the new book reports the difference exactly, while
// history keeps its price; and a part larger than its whole stores nothing.
func testUsageTokenParts(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	led, svc := e.metering(t, nil, nil)
	fundedAccount(t, led, "acct_t", "1000", credits.Policy{})
	dec := func(s string) *decimal.Decimal { d := decimal.RequireFromString(s); return &d }
	change := epoch.Add(10 * 24 * time.Hour) // March 11
	old := usage.ModelPrice{Model: "gpt", PromptPerMillion: *dec("100"), CompletionPerMillion: *dec("400"),
		CachedPromptPerMillion: dec("25"), ReasoningPerMillion: dec("400")}
	cur := usage.ModelPrice{Model: "gpt", EffectiveFrom: change, PromptPerMillion: *dec("120"), CompletionPerMillion: *dec("480"),
		CachedPromptPerMillion: dec("30"), CacheWritePerMillion: dec("150"), RequestFee: *dec("0.01")}
	book := must(usage.NewPriceBook([]usage.ModelPrice{cur, old}, nil))
	// A book that only knows the new price, for re-rating.
	newOnly := cur
	newOnly.EffectiveFrom = time.Time{}
	rebook := must(usage.NewPriceBook([]usage.ModelPrice{newOnly}, nil))

	meter := func(key string, at time.Time, p, c, cached, write, reasoning int64) usage.Record {
		t.Helper()
		r := usage.Record{AccountID: "acct_t", Model: "gpt", Endpoint: "/v1/chat/completions", StatusCode: 200, CreatedAt: at,
			PromptTokens: p, CompletionTokens: c, CachedPromptTokens: cached, CacheWriteTokens: write, ReasoningTokens: reasoning}
		if err := book.Rate(&r); err != nil {
			t.Fatal(err)
		}
		return mustMeter(t, svc, usage.MeterParams{Record: r, IdempotencyKey: key}).Record
	}
	// Before the change: 1,000,000 prompt of which 400,000 cached; 200,000
	// completion of which 50,000 reasoning.
	// 600,000×100 + 400,000×25 + 150,000×400 + 50,000×400 = 150,000,000 / 10^6 = 150.
	r1 := meter("a", epoch.Add(24*time.Hour), 1_000_000, 200_000, 400_000, 0, 50_000)
	wantAmount(t, "old price", r1.Cost, "150")
	// After: 1,000 prompt (100 cached, 300 written), 10 completion (all
	// reasoning, unset reasoning price = completion price).
	// 600×120 + 100×30 + 300×150 + 10×480 = 124,800 / 10^6 = 0.1248, + 0.01 fee.
	r2 := meter("b", change.Add(time.Hour), 1000, 10, 100, 300, 10)
	wantAmount(t, "new price", r2.Cost, "0.1348")
	wantAmount(t, "balance", must(led.Balance(ctx(), "acct_t")), "849.8652")

	recs := allRecords(t, svc, "acct_t")
	if len(recs) != 2 {
		t.Fatalf("records: %+v", recs)
	}
	got1, got2 := recs[1], recs[0]
	if got1.CachedPromptTokens != 400_000 || got1.CacheWriteTokens != 0 || got1.ReasoningTokens != 50_000 || !got1.PriceFrom.IsZero() ||
		!got1.Cost.Equal(r1.Cost) {
		t.Fatalf("stored record before the change: %+v", got1)
	}
	if got2.CachedPromptTokens != 100 || got2.CacheWriteTokens != 300 || got2.ReasoningTokens != 10 || !got2.PriceFrom.Equal(change) ||
		!got2.Cost.Equal(r2.Cost) {
		t.Fatalf("stored record after the change: %+v (PriceFrom %v, want %v)", got2, got2.PriceFrom, change)
	}
	// Both stored records re-price to their charges under the dated book.
	for _, r := range recs {
		if c := must(book.Cost(r)); !c.Equal(r.Cost) {
			t.Fatalf("record %s: book prices it %s, charged %s", r.ID, c, r.Cost)
		}
		if p, ok := book.ModelAt(r.Model, r.CreatedAt); !ok || !p.EffectiveFrom.Equal(r.PriceFrom) {
			t.Fatalf("record %s names version %v, the book's is %v", r.ID, r.PriceFrom, p.EffectiveFrom)
		}
	}

	for _, raw := range []bool{false, true} {
		for _, g := range [][]usage.GroupField{nil, {usage.GroupModel}} {
			rows := must(svc.Summary(ctx(), usage.SummaryQuery{AccountID: "acct_t", From: "2026-03-01", To: "2026-03-31", GroupBy: g, Raw: raw}))
			if len(rows) != 1 {
				t.Fatalf("summary raw=%v %v: %+v", raw, g, rows)
			}
			row := rows[0]
			if row.PromptTokens != 1_001_000 || row.CachedPromptTokens != 400_100 || row.CacheWriteTokens != 300 ||
				row.CompletionTokens != 200_010 || row.ReasoningTokens != 50_010 || !row.Cost.Equal(amt(t, "150.1348")) {
				t.Fatalf("summary raw=%v %v: %+v", raw, g, row)
			}
		}
	}

	// Re-rating March under the new price alone: the first record would
	// have cost 600,000×120 + 400,000×30 + 200,000×480 = 180,000,000 / 10^6
	// = 180 + 0.01; the second is unchanged.
	rows, err := svc.Rerate(ctx(), usage.ListQuery{AccountID: "acct_t"}, rebook)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Model != "gpt" || rows[1].Model != "" {
		t.Fatalf("Rerate rows: %+v", rows)
	}
	for _, row := range rows {
		if row.Requests != 2 || row.CachedPromptTokens != 400_100 || row.ReasoningTokens != 50_010 {
			t.Fatalf("Rerate counts: %+v", row)
		}
		wantAmount(t, "charged", row.Cost, "150.1348")
		wantAmount(t, "rerated", row.Rerated, "180.1448")
		wantAmount(t, "difference", row.Difference, "30.01")
	}
	// History keeps its price: re-rating wrote nothing.
	if again := allRecords(t, svc, "acct_t"); !again[1].Cost.Equal(r1.Cost) {
		t.Fatalf("history re-priced: %+v", again[1])
	}
	// Under the book that charged it, the difference is exactly zero.
	same := must(svc.Rerate(ctx(), usage.ListQuery{AccountID: "acct_t"}, book))
	if !same[len(same)-1].Difference.IsZero() {
		t.Fatalf("rerating under the charging book: %+v", same)
	}

	// A part larger than its whole, or negative, stores nothing.
	for _, bad := range []usage.Record{
		{PromptTokens: 10, CachedPromptTokens: 11},
		{PromptTokens: 10, CachedPromptTokens: 6, CacheWriteTokens: 5},
		{CompletionTokens: 10, ReasoningTokens: 11},
		{PromptTokens: 10, CachedPromptTokens: -1},
		{CompletionTokens: 10, ReasoningTokens: 1 << 62},
	} {
		bad.AccountID, bad.Model, bad.StatusCode, bad.Cost = "acct_t", "gpt", 200, amt(t, "1")
		if _, err := svc.Meter(ctx(), usage.MeterParams{Record: bad, IdempotencyKey: "bad"}); !errors.Is(err, usage.ErrInvalidRecord) {
			t.Fatalf("Meter(%+v) = %v, want ErrInvalidRecord", bad, err)
		}
		if _, err := book.Cost(bad); !errors.Is(err, usage.ErrInvalidRecord) {
			t.Fatalf("Cost(%+v) = %v, want ErrInvalidRecord", bad, err)
		}
	}
	if n := len(allRecords(t, svc, "acct_t")); n != 2 {
		t.Fatalf("invalid records stored: %d records", n)
	}
	wantAmount(t, "balance", must(led.Balance(ctx(), "acct_t")), "849.8652")
}
