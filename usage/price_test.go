package usage

import (
	"errors"
	"testing"

	"github.com/shopspring/decimal"
)

func d(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func testBook(t *testing.T) *PriceBook {
	t.Helper()
	pb, err := NewPriceBook(
		[]ModelPrice{{Model: "forii/deepseek-v3", PromptPerMillion: d("250"), CompletionPerMillion: d("645")}},
		[]OperationPrice{
			{Operation: "/v1/tools/inspect_domain", PerUnit: d("3")},
			{Operation: "verify", PerUnit: d("1"), PerCachedUnit: d("0.5")},
			{Operation: "status", PerUnit: d("0")},
		})
	if err != nil {
		t.Fatal(err)
	}
	return pb
}

func TestTokenCostIsExact(t *testing.T) {
	pb := testBook(t)
	// The Forii seed: 1,250,000 prompt + 340,000 completion tokens.
	c, err := pb.TokenCost("forii/deepseek-v3", 1_250_000, 340_000)
	if err != nil || !c.Decimal().Equal(d("531.80")) {
		t.Fatalf("cost %s %v", c, err)
	}
	// Sub-paisa single tokens add up exactly.
	sum := decimal.Zero
	for range 1_000_000 / 1000 {
		one, _ := pb.TokenCost("forii/deepseek-v3", 1000, 0)
		sum = sum.Add(one.Decimal())
	}
	if !sum.Equal(d("250")) {
		t.Fatalf("1M tokens in 1000-token calls cost %s, want 250", sum)
	}
	one, _ := pb.TokenCost("forii/deepseek-v3", 1, 1)
	if !one.Decimal().Equal(d("0.000895")) {
		t.Fatalf("one token each: %s", one)
	}
	if _, err := pb.TokenCost("gpt-9", 1, 1); !errors.Is(err, ErrUnknownModel) {
		t.Fatal(err)
	}
	if _, err := pb.TokenCost("forii/deepseek-v3", -1, 0); !errors.Is(err, ErrInvalidRecord) {
		t.Fatal(err)
	}
}

func TestOperationCost(t *testing.T) {
	pb := testBook(t)
	cases := []struct {
		op            string
		units, cached int64
		want          string
	}{
		{"/v1/tools/inspect_domain", 0, 0, "3"},
		{"verify", 1, 0, "1"},
		{"verify", 1, 1, "0.5"},
		{"verify", 10, 4, "8"},
		{"status", 1, 0, "0"},
	}
	for _, c := range cases {
		got, err := pb.OperationCost(c.op, c.units, c.cached)
		if err != nil || !got.Decimal().Equal(d(c.want)) {
			t.Errorf("%s %d/%d = %s %v, want %s", c.op, c.units, c.cached, got, err, c.want)
		}
	}
	if _, err := pb.OperationCost("verify", 1, 2); !errors.Is(err, ErrInvalidRecord) {
		t.Fatal("cached above units accepted")
	}
	if _, err := pb.OperationCost("nope", 1, 0); !errors.Is(err, ErrUnknownOperation) {
		t.Fatal(err)
	}
}

func TestCostOfRecords(t *testing.T) {
	pb := testBook(t)
	for _, c := range []struct {
		r    Record
		want string
	}{
		{Record{Model: "forii/deepseek-v3", PromptTokens: 1000, CompletionTokens: 1000, StatusCode: 200}, "0.895"},
		{Record{Model: "forii/deepseek-v3", PromptTokens: 1000, StatusCode: 429}, "0"},
		{Record{Model: "forii/deepseek-v3", PromptTokens: 1000, StatusCode: 200, ErrorType: "upstream_timeout"}, "0"},
		{Record{Endpoint: "verify", Units: 1, CachedUnits: 1}, "0.5"},
	} {
		got, err := pb.Cost(c.r)
		if err != nil || !got.Decimal().Equal(d(c.want)) {
			t.Errorf("%+v: %s %v, want %s", c.r, got, err, c.want)
		}
	}
}

func TestPriceBookValidation(t *testing.T) {
	if _, err := NewPriceBook([]ModelPrice{{Model: "m", PromptPerMillion: d("-1")}}, nil); !errors.Is(err, ErrInvalidPrice) {
		t.Fatal("negative price accepted")
	}
	if _, err := NewPriceBook([]ModelPrice{{Model: "m"}, {Model: "m"}}, nil); !errors.Is(err, ErrInvalidPrice) {
		t.Fatal("duplicate accepted")
	}
	if _, err := NewPriceBook(nil, []OperationPrice{{Operation: ""}}); !errors.Is(err, ErrInvalidPrice) {
		t.Fatal("empty op accepted")
	}
}
