package keyledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

// datedPrices: "llm" costs 1 per prompt and 2 per completion token until
// the change; from it, 1.2 per plain prompt token, 0.3 per cached one, 1.5
// per cache write, 2.4 per completion token, 4 per reasoning token and a
// fee of 0.5 a request.
func datedPrices(t testing.TB, change time.Time) *usage.PriceBook {
	p := func(s string) *decimal.Decimal { v := d(s); return &v }
	pb, err := usage.NewPriceBook([]usage.ModelPrice{
		{Model: "llm", PromptPerMillion: d("1000000"), CompletionPerMillion: d("2000000")},
		{Model: "llm", EffectiveFrom: change, PromptPerMillion: d("1200000"), CompletionPerMillion: d("2400000"),
			CachedPromptPerMillion: p("300000"), CacheWritePerMillion: p("1500000"), ReasoningPerMillion: p("4000000"), RequestFee: d("0.5")},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pb
}

// A request with cached and reasoning tokens is charged exactly per the
// dated price book, on every backend: the version in force when it
// completes, recorded on the record; a price change does not re-price
// history, and Rerate reports what the new book would have charged.
func TestCachedAndReasoningTokensChargedPerDatedPrice(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		change := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
		e := newEnvWith(t, b, func(o *keyledger.Options) { o.Catalog = bigCatalog(t); o.Prices = datedPrices(t, change) })
		ctx := context.Background()
		a, raw, _ := e.signup(t, "p@example.com", "big") // ₹50
		run := func(o keyledger.Outcome) usage.MeterResult {
			t.Helper()
			g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "llm", PromptTokens: o.PromptTokens, MaxCompletionTokens: 3,
				Endpoint: "/v1/chat/completions", Method: "POST"})
			if err != nil {
				t.Fatal(err)
			}
			o.StatusCode = 200
			res, err := g.Complete(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Charged.Cmp(g.Estimate) > 0 {
				t.Fatalf("charged %s above the hold %s: the estimate must cover every split", res.Charged, g.Estimate)
			}
			return res
		}
		// Before the change (10:00): cached and reasoning prices are unset,
		// so they bill at the plain prices: 4×1 + 3×2 = 10.
		r1 := run(keyledger.Outcome{PromptTokens: 4, CompletionTokens: 3, CachedPromptTokens: 3, ReasoningTokens: 2})
		if !r1.Charged.Equal(credits.NewAmount(d("10"))) || !r1.Record.PriceFrom.IsZero() || r1.Record.CachedPromptTokens != 3 {
			t.Fatalf("before the change: %+v", r1)
		}
		e.clk.Advance(3 * time.Hour) // 13:00, the new price is in force
		// 1 plain prompt × 1.2 + 2 cached × 0.3 + 1 written × 1.5 + 1 plain
		// completion × 2.4 + 2 reasoning × 4 + 0.5 = 14.2.
		r2 := run(keyledger.Outcome{PromptTokens: 4, CompletionTokens: 3, CachedPromptTokens: 2, CacheWriteTokens: 1, ReasoningTokens: 2})
		if !r2.Charged.Equal(credits.NewAmount(d("14.2"))) || !r2.Record.PriceFrom.Equal(change) {
			t.Fatalf("after the change: %+v (PriceFrom %v)", r2, r2.Record.PriceFrom)
		}
		if got := e.balance(t, a.ID); !got.Equal(credits.NewAmount(d("25.8"))) {
			t.Fatalf("balance %s, want 50 − 10 − 14.2", got)
		}
		// History keeps its price; the new price alone would have charged
		// the first request 1×1.2 + 3×0.3 + 1×2.4 + 2×4 + 0.5 = 13, 3 more.
		cur := must(e.kl.Prices.ModelAt("llm", change))
		cur.EffectiveFrom = time.Time{}
		newOnly, err := usage.NewPriceBook([]usage.ModelPrice{cur}, nil)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := e.kl.Usage.Rerate(ctx, usage.ListQuery{AccountID: a.ID}, newOnly)
		if err != nil {
			t.Fatal(err)
		}
		total := rows[len(rows)-1]
		if !total.Cost.Equal(credits.NewAmount(d("24.2"))) || !total.Rerated.Equal(credits.NewAmount(d("27.2"))) ||
			!total.Difference.Equal(credits.NewAmount(d("3"))) || total.CachedPromptTokens != 5 || total.ReasoningTokens != 4 {
			t.Fatalf("Rerate total: %+v", total)
		}
	})
}

func must[T any](v T, ok bool) T {
	if !ok {
		panic("not found")
	}
	return v
}

// An upstream that reports impossible parts (cached above the prompt,
// negative, absurd, reasoning above the completion) is charged sanely:
// the parts are clamped to their totals, so the request is never free and
// no token is charged twice, and the ledger reconciles with the records.
func TestBadTokenPartsAreClampedNeverFreeNeverDouble(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		change := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC) // already in force
		e := newEnvWith(t, b, func(o *keyledger.Options) { o.Catalog = bigCatalog(t); o.Prices = datedPrices(t, change) })
		ctx := context.Background()
		a, raw, _ := e.signup(t, "bad@example.com", "big")
		if _, err := e.kl.Credits.Purchase(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.NewAmount(d("100")), IdempotencyKey: "top-up"}); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name string
			o    keyledger.Outcome
			want string // the charge of the clamped split
		}{
			// cached 9 > prompt 4 → 4 cached: 4×0.3 + 3×2.4 + 0.5 = 8.9
			{"cached above prompt", keyledger.Outcome{PromptTokens: 4, CompletionTokens: 3, CachedPromptTokens: 9}, "8.9"},
			// negative parts → 0: 4×1.2 + 3×2.4 + 0.5 = 12.5
			{"negative", keyledger.Outcome{PromptTokens: 4, CompletionTokens: 3, CachedPromptTokens: -5, ReasoningTokens: -1}, "12.5"},
			// reasoning 1<<62 → 3: 4×1.2 + 3×4 + 0.5 = 17.3
			{"absurd reasoning", keyledger.Outcome{PromptTokens: 4, CompletionTokens: 3, ReasoningTokens: 1 << 62}, "17.3"},
			// cached 3 + written 5 > 4 → 3 cached, 1 written: 3×0.3 + 1×1.5 + 3×2.4 + 0.5 = 10.1
			{"cached plus writes above prompt", keyledger.Outcome{PromptTokens: 4, CompletionTokens: 3, CachedPromptTokens: 3, CacheWriteTokens: 5}, "10.1"},
		}
		spent := credits.Amount{}
		for _, c := range cases {
			g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "llm", PromptTokens: 4, MaxCompletionTokens: 3, Endpoint: "/v1/chat/completions"})
			if err != nil {
				t.Fatal(err)
			}
			c.o.StatusCode = 200
			res, err := g.Complete(ctx, c.o)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if !res.Charged.Equal(credits.NewAmount(d(c.want))) || res.Record.ErrorType != "" {
				t.Fatalf("%s: charged %s (error %q), want %s", c.name, res.Charged, res.Record.ErrorType, c.want)
			}
			r := res.Record
			if r.CachedPromptTokens+r.CacheWriteTokens > r.PromptTokens || r.ReasoningTokens > r.CompletionTokens || r.CachedPromptTokens < 0 || r.ReasoningTokens < 0 {
				t.Fatalf("%s: stored parts out of range: %+v", c.name, r)
			}
			spent = spent.Add(res.Charged)
		}
		if got, want := e.balance(t, a.ID), credits.NewAmount(d("150")).Sub(spent); !got.Equal(want) {
			t.Fatalf("balance %s, want %s", got, want)
		}
		rows, err := e.kl.Usage.Summary(ctx, usage.SummaryQuery{AccountID: a.ID, From: "2026-05-01", To: "2026-05-01"})
		if err != nil || len(rows) != 1 || !rows[0].Cost.Equal(spent) {
			t.Fatalf("summary %+v %v, want cost %s", rows, err, spent)
		}
	})
}

// Concurrent requests with cached and reasoning tokens on every backend:
// each record's cost is exactly the dated book's price of its stored
// counts at its time, and the ledger equals the sum of the records.
func TestConcurrentTokenPartsReconcile(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		change := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
		pb := datedPrices(t, change)
		e := newEnvWith(t, b, func(o *keyledger.Options) { o.Catalog = bigCatalog(t); o.Prices = pb })
		ctx := context.Background()
		a, raw, _ := e.signup(t, "conc@example.com", "big")
		if _, err := e.kl.Credits.Purchase(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.NewAmount(d("10000")), IdempotencyKey: "top-up"}); err != nil {
			t.Fatal(err)
		}
		const n = 24
		errs := make(chan error, n)
		for i := range n {
			go func() {
				g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "llm", PromptTokens: 8, MaxCompletionTokens: 6, Endpoint: "/v1/chat/completions"})
				if err != nil {
					errs <- err
					return
				}
				// Some parts in range, some not (clamped).
				_, err = g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 8, CompletionTokens: 6,
					CachedPromptTokens: int64(i % 10), CacheWriteTokens: int64(i % 3), ReasoningTokens: int64(i%8) - 1})
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		sum := credits.Amount{}
		for cursor := ""; ; {
			pg, err := e.kl.Usage.List(ctx, usage.ListQuery{AccountID: a.ID, Cursor: cursor, Limit: 500})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range pg.Records {
				want, err := pb.Cost(r)
				if err != nil || !r.Cost.Equal(want) || r.Cost.IsZero() || !r.PriceFrom.Equal(change) {
					t.Fatalf("record %+v: cost %s, the book says %s (%v)", r, r.Cost, want, err)
				}
				sum = sum.Add(r.Cost)
			}
			if cursor = pg.NextCursor; cursor == "" {
				break
			}
		}
		acct, err := e.kl.Credits.Account(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if want := credits.NewAmount(d("10050")).Sub(sum); !acct.Balance.Equal(want) || !acct.Held.IsZero() {
			t.Fatalf("balance %s held %s, want %s and nothing held", acct.Balance, acct.Held, want)
		}
	})
}
