package usage

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/shopspring/decimal"
)

func dp(s string) *decimal.Decimal { v := d(s); return &v }

// versionedBook: "m" at 1/2 per token until March, then with a cached,
// write and reasoning price and a fee; "plain" has only plain prices.
func versionedBook(t testing.TB) (*PriceBook, time.Time) {
	t.Helper()
	march := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	pb, err := NewPriceBook([]ModelPrice{
		{Model: "m", EffectiveFrom: march, PromptPerMillion: d("2000000"), CompletionPerMillion: d("4000000"),
			CachedPromptPerMillion: dp("500000"), CacheWritePerMillion: dp("2500000"), ReasoningPerMillion: dp("8000000"), RequestFee: d("0.25")},
		{Model: "m", PromptPerMillion: d("1000000"), CompletionPerMillion: d("2000000")},
		{Model: "plain", PromptPerMillion: d("1000000"), CompletionPerMillion: d("2000000")},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pb, march
}

func TestPriceVersionsPickTheOneInForce(t *testing.T) {
	pb, march := versionedBook(t)
	r := Record{Model: "m", PromptTokens: 10, CompletionTokens: 5, CachedPromptTokens: 4, CacheWriteTokens: 2, ReasoningTokens: 3}
	cases := []struct {
		at   time.Time
		want string
		from time.Time
	}{
		// Undated version: parts bill at the plain prices: 10×1 + 5×2.
		{march.Add(-time.Nanosecond), "20", time.Time{}},
		// In force from its first nanosecond: 4×2 + 4×0.5 + 2×2.5 + 2×4 + 3×8 + 0.25.
		{march, "47.25", march},
		{march.AddDate(1, 0, 0), "47.25", march},
		// A record not yet timed is priced at the newest version.
		{time.Time{}, "47.25", march},
	}
	for _, c := range cases {
		r.CreatedAt = c.at
		got, err := pb.Cost(r)
		if err != nil || !got.Equal(credits.NewAmount(d(c.want))) {
			t.Errorf("at %v: Cost = %s %v, want %s", c.at, got, err, c.want)
		}
		rated := r
		if err := pb.Rate(&rated); err != nil || !rated.Cost.Equal(got) || !rated.PriceFrom.Equal(c.from) {
			t.Errorf("at %v: Rate = %s from %v (%v), want from %v", c.at, rated.Cost, rated.PriceFrom, err, c.from)
		}
	}
	// An operation or a failed request carries no price version.
	failed := r
	failed.StatusCode, failed.CreatedAt = 500, march
	if err := pb.Rate(&failed); err != nil || !failed.Cost.IsZero() || !failed.PriceFrom.IsZero() {
		t.Errorf("failed request rated %+v %v", failed, err)
	}
	// A model whose every version starts later has no price before that.
	later, _ := NewPriceBook([]ModelPrice{{Model: "x", EffectiveFrom: march, PromptPerMillion: d("1")}}, nil)
	if _, err := later.Cost(Record{Model: "x", CreatedAt: march.Add(-time.Hour)}); !errors.Is(err, ErrUnknownModel) {
		t.Errorf("before the first version: %v", err)
	}
	if p, ok := pb.Model("m"); !ok || !p.EffectiveFrom.Equal(march) {
		t.Errorf("Model returns %+v, want the newest version", p)
	}
	if p, ok := pb.ModelAt("m", march.Add(-1)); !ok || !p.EffectiveFrom.IsZero() || p.CachedPromptPerMillion != nil {
		t.Errorf("ModelAt before March: %+v", p)
	}
	// The book keeps its own copies of optional prices.
	p, _ := pb.Model("m")
	*p.CachedPromptPerMillion = d("0")
	if again, _ := pb.Model("m"); !again.CachedPromptPerMillion.Equal(d("500000")) {
		t.Error("a returned price changed the book")
	}
}

func TestPriceBookRejects(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, ms := range map[string][]ModelPrice{
		"duplicate version":    {{Model: "m", EffectiveFrom: t0}, {Model: "m", EffectiveFrom: t0}},
		"duplicate undated":    {{Model: "m"}, {Model: "m"}},
		"negative cached":      {{Model: "m", CachedPromptPerMillion: dp("-1")}},
		"negative cache write": {{Model: "m", CacheWritePerMillion: dp("-1")}},
		"negative reasoning":   {{Model: "m", ReasoningPerMillion: dp("-1")}},
		"negative fee":         {{Model: "m", RequestFee: d("-0.01")}},
		"time out of range":    {{Model: "m", EffectiveFrom: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}},
	} {
		if _, err := NewPriceBook(ms, nil); !errors.Is(err, ErrInvalidPrice) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Whatever split of its tokens a request reports, its cost never exceeds
// the estimate its hold was priced from, and a part is billed instead of
// its share of the whole, never as well: with every part priced like the
// whole, the cost is the plain cost.
func TestEstimateCoversEverySplit(t *testing.T) {
	pb, march := versionedBook(t)
	rng := rand.New(rand.NewPCG(23, 11))
	for range 2000 {
		r := Record{Model: "m", CreatedAt: march, PromptTokens: rng.Int64N(1 << 40), CompletionTokens: rng.Int64N(1 << 40)}
		r.CachedPromptTokens = rng.Int64N(r.PromptTokens + 1)
		r.CacheWriteTokens = rng.Int64N(r.PromptTokens - r.CachedPromptTokens + 1)
		r.ReasoningTokens = rng.Int64N(r.CompletionTokens + 1)
		c, err := pb.Cost(r)
		if err != nil {
			t.Fatal(err)
		}
		est, err := pb.Estimate("m", march, r.PromptTokens, r.CompletionTokens)
		if err != nil || c.Cmp(est) > 0 {
			t.Fatalf("%+v: cost %s above estimate %s (%v)", r, c, est, err)
		}
		r.Model = "plain"
		c, _ = pb.Cost(r)
		plain, _ := pb.TokenCost("plain", r.PromptTokens, r.CompletionTokens)
		if !c.Equal(plain) {
			t.Fatalf("%+v: unset part prices cost %s, plain %s", r, c, plain)
		}
	}
}

// FuzzCost: any token counts price without a panic, and are either
// refused as ErrInvalidRecord or cost at most the estimate and at least
// the whole at the cheapest price.
func FuzzCost(f *testing.F) {
	f.Add(int64(10), int64(5), int64(4), int64(2), int64(3))
	f.Add(int64(10), int64(5), int64(11), int64(0), int64(0))
	f.Add(int64(-1), int64(5), int64(0), int64(0), int64(6))
	f.Add(int64(1<<62), int64(1<<62), int64(1<<62), int64(1<<62), int64(1<<62))
	pb, march := versionedBook(f)
	f.Fuzz(func(t *testing.T, p, c, cached, write, reasoning int64) {
		r := Record{Model: "m", CreatedAt: march, PromptTokens: p, CompletionTokens: c, CachedPromptTokens: cached,
			CacheWriteTokens: write, ReasoningTokens: reasoning}
		cost, err := pb.Cost(r)
		if err != nil {
			if !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("%+v: %v", r, err)
			}
			return
		}
		est, err := pb.Estimate("m", march, p, c)
		if err != nil || cost.Cmp(est) > 0 || cost.IsNegative() {
			t.Fatalf("%+v: cost %s, estimate %s %v", r, cost, est, err)
		}
		floor := credits.NewAmount(d("0.5")).MulInt(p).Add(credits.NewAmount(d("2")).MulInt(c)).Add(credits.NewAmount(d("0.25")))
		if cost.Cmp(floor) < 0 {
			t.Fatalf("%+v: cost %s below every token at its cheapest price %s", r, cost, floor)
		}
	})
}
