package credits

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
)

func TestParseAmount(t *testing.T) {
	good := map[string]string{
		"0": "0", "50": "50", "50.00": "50", "-0.5": "-0.5", "0.0000125": "0.0000125", "1.5e3": "1500",
		"25E-2": "0.25", "999999999999999.999999999999999999": "999999999999999.999999999999999999",
		"0.000000000000000001": "0.000000000000000001", "1.0000000000000000000000": "1", "-0": "0",
	}
	for in, want := range good {
		a, err := ParseAmount(in)
		if err != nil || a.String() != want {
			t.Errorf("ParseAmount(%q) = %s, %v; want %s", in, a, err, want)
		}
	}
	bad := []string{
		"", " 1", "1 ", "+1", "1.", ".5", "1e", "1e100", "1e+999", "0x10", "NaN", "Inf", "1,5", "--1", "1.2.3",
		"1000000000000000", "-1000000000000000", "1e15", "0.0000000000000000001", strings.Repeat("1", 65), "１",
	}
	for _, in := range bad {
		if a, err := ParseAmount(in); !errors.Is(err, ErrInvalidAmount) {
			t.Errorf("ParseAmount(%q) = %s, %v; want ErrInvalidAmount", in, a, err)
		}
	}
}

func TestAmountArithmeticIsExact(t *testing.T) {
	cost, _ := ParseAmount("0.0000125")
	var sum Amount
	for range 80_000 {
		sum = sum.Add(cost)
	}
	if sum.String() != "1" {
		t.Fatalf("80,000 × 0.0000125 = %s", sum)
	}
	tenth, _ := ParseAmount("0.1")
	if tenth.Add(tenth).Add(tenth).String() != "0.3" {
		t.Fatal("0.1 + 0.1 + 0.1 != 0.3")
	}
	if !AmountFromMinor(5000, 2).Equal(AmountFromInt(50)) || AmountFromMinor(5000, 2).String() != "50" {
		t.Fatal("50.00 != 50")
	}
	half := AmountFromMinor(5, 1)
	for in, want := range map[string]bool{"1": true, "0.5": true, "24499.5": true, "0.3": false, "0.25": false} {
		a, _ := ParseAmount(in)
		if a.MultipleOf(half) != want {
			t.Errorf("%s multiple of 0.5: %v", in, !want)
		}
	}
	if !AmountFromMinor(3, 7).MultipleOf(Amount{}) {
		t.Error("everything is a multiple of a zero increment")
	}
}

func TestAmountJSON(t *testing.T) {
	type doc struct {
		Balance Amount  `json:"balance"`
		Cost    Amount  `json:"cost"`
		Shown   Display `json:"credits_inr"`
		Half    Display `json:"half"`
	}
	bal, _ := ParseAmount("49.999975")
	cost, _ := ParseAmount("0.0000125")
	b, err := json.Marshal(doc{Balance: bal, Cost: cost, Shown: INR().Display(AmountFromInt(50)), Half: HalfCredits().Display(AmountFromInt(24500))})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"balance":49.999975,"cost":0.0000125,"credits_inr":50.00,"half":24500.0}` {
		t.Fatalf("JSON %s", b)
	}
	var back struct {
		Balance, Cost Amount
		Str           Amount
		Null          Amount
	}
	if err := json.Unmarshal([]byte(`{"balance":49.999975,"cost":1.25e-5,"str":"0.5","null":null}`), &back); err != nil {
		t.Fatal(err)
	}
	if !back.Balance.Equal(bal) || !back.Cost.Equal(cost) || back.Str.String() != "0.5" || !back.Null.IsZero() {
		t.Fatalf("decoded %+v", back)
	}
	for _, in := range []string{`{"balance":"abc"}`, `{"balance":1e99}`, `{"balance":true}`, `{"balance":[1]}`} {
		if err := json.Unmarshal([]byte(in), &back); err == nil {
			t.Errorf("decoded %s", in)
		}
	}
}

func TestUnitDisplay(t *testing.T) {
	for _, c := range []struct {
		u    Unit
		in   string
		want string
	}{
		{INR(), "49.999975", "50.00"}, {INR(), "49.994", "49.99"}, {INR(), "0.005", "0.01"}, {INR(), "-0.005", "-0.01"},
		{INR(), "0.0000125", "0.00"}, {WholeCredits(), "500", "500"}, {HalfCredits(), "24499.5", "24499.5"}, {HalfCredits(), "24500", "24500.0"},
	} {
		a, _ := ParseAmount(c.in)
		if got := c.u.Format(a); got != c.want {
			t.Errorf("%s.Format(%s) = %s, want %s", c.u.Code, c.in, got, c.want)
		}
		if got := c.u.Display(a).String(); got != c.want {
			t.Errorf("%s.Display(%s) = %s", c.u.Code, c.in, got)
		}
		if !c.u.Display(a).Amount().Equal(a) {
			t.Error("Display lost the exact amount")
		}
	}
	for _, u := range []Unit{{}, {Code: strings.Repeat("x", 17)}, {Code: "X", Decimals: -1}, {Code: "X", Increment: AmountFromInt(-1)}} {
		if err := u.validate(); !errors.Is(err, ErrInvalidUnit) {
			t.Errorf("unit %+v: %v", u, err)
		}
	}
}

// FuzzParseAmount checks that untrusted text either parses into an amount
// within bounds whose canonical form parses back to itself, or fails with
// ErrInvalidAmount — and never panics or allocates a huge number.
func FuzzParseAmount(f *testing.F) {
	for _, s := range []string{"0", "50.00", "-0.5", "0.0000125", "1.5e3", "1e99", strings.Repeat("9", 20)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAmount(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidAmount) {
				t.Fatalf("ParseAmount(%q): %v", s, err)
			}
			return
		}
		if !a.inBounds() {
			t.Fatalf("ParseAmount(%q) = %s out of bounds", s, a)
		}
		if d, err := decimal.NewFromString(s); err != nil || !a.Decimal().Equal(d) {
			t.Fatalf("ParseAmount(%q) = %s, decimal reads %s (%v)", s, a, d, err)
		}
		b, err := ParseAmount(a.String())
		if err != nil || !b.Equal(a) || b.String() != a.String() {
			t.Fatalf("round trip of %q: %s → %s, %v", s, a, b, err)
		}
		j, _ := a.MarshalJSON()
		var c Amount
		if err := c.UnmarshalJSON(j); err != nil || !c.Equal(a) {
			t.Fatalf("JSON round trip of %s: %s, %v", a, c, err)
		}
	})
}

// FuzzAmountJSON decodes arbitrary JSON documents into Amounts.
func FuzzAmountJSON(f *testing.F) {
	for _, s := range []string{`{"a":50.00}`, `{"a":"0.5"}`, `{"a":null}`, `{"a":1e2}`, `{"a":-0}`, `{"a":"1e99"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v struct{ A Amount }
		if err := json.Unmarshal(b, &v); err != nil {
			return
		}
		if !v.A.inBounds() {
			t.Fatalf("%s decoded out of bounds: %s", b, v.A)
		}
	})
}
