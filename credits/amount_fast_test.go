package credits

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

// The small (int64) form of Amount must agree with shopspring/decimal on
// every operation. These tests compare the two on edge values and, in
// FuzzAmountArithmetic, on arbitrary ones.

// refAmount is the amount as decimal.Decimal computed the slow way.
func refAmount(a Amount) decimal.Decimal { return a.dec() }

func checkAgainstDecimal(t *testing.T, a, b Amount) {
	t.Helper()
	da, db := refAmount(a), refAmount(b)
	if got, want := a.Add(b), da.Add(db); !got.dec().Equal(want) {
		t.Fatalf("%s + %s = %s, want %s", a, b, got, want)
	}
	if got, want := a.Sub(b), da.Sub(db); !got.dec().Equal(want) {
		t.Fatalf("%s - %s = %s, want %s", a, b, got, want)
	}
	if got, want := a.Neg(), da.Neg(); !got.dec().Equal(want) {
		t.Fatalf("-(%s) = %s, want %s", a, got, want)
	}
	if got, want := a.Cmp(b), da.Cmp(db); got != want {
		t.Fatalf("cmp(%s, %s) = %d, want %d", a, b, got, want)
	}
	if n := b.coef; b.big == nil {
		if got, want := a.MulInt(n), da.Mul(decimal.NewFromInt(n)); !got.dec().Equal(want) {
			t.Fatalf("%s × %d = %s, want %s", a, n, got, want)
		}
		if got, want := a.Shift(b.exp), da.Shift(b.exp); !got.dec().Equal(want) {
			t.Fatalf("%s shifted by %d = %s, want %s", a, b.exp, got, want)
		}
	}
	if got, want := a.Sign(), da.Sign(); got != want {
		t.Fatalf("sign(%s) = %d, want %d", a, got, want)
	}
	if db.Sign() > 0 {
		if got, want := a.MultipleOf(b), da.Mod(db).Sign() == 0; got != want {
			t.Fatalf("%s multiple of %s = %v, want %v", a, b, got, want)
		}
	}
	if got, want := a.String(), decimalText(da); got != want {
		t.Fatalf("String(%v) = %q, want %q", da, got, want)
	}
	if txt, _ := a.AppendText([]byte("x")); string(txt) != "x"+a.String() {
		t.Fatalf("AppendText(%v) = %q, want x%s", da, txt, a)
	}
	if sum := a.Add(b); (sum.big == nil) != sum.dec().Coefficient().IsInt64() {
		t.Fatalf("%s + %s: representation %+v is not canonical", a, b, a.Add(b))
	}
}

// decimalText is the String contract computed through decimal.
func decimalText(d decimal.Decimal) string {
	if d.Exponent() >= 0 {
		return d.StringFixed(0)
	}
	s := strings.TrimRight(d.StringFixed(-d.Exponent()), "0")
	return strings.TrimSuffix(s, ".")
}

func TestAmountSmallMatchesDecimal(t *testing.T) {
	vals := []Amount{
		{}, AmountFromInt(1), AmountFromInt(-1), AmountFromMinor(5000, 2), AmountFromMinor(125, 7),
		AmountFromMinor(-5, 1), AmountFromInt(math.MaxInt64), AmountFromInt(math.MinInt64),
		AmountFromMinor(math.MaxInt64, 18), AmountFromMinor(math.MinInt64, 18), AmountFromMinor(1, -18),
		AmountFromMinor(7, 30), AmountFromMinor(3, -3), NewAmount(decimal.RequireFromString("123456789012345678901234.5")),
		NewAmount(decimal.RequireFromString("-0.000000000000000000001")), AmountFromMinor(100, 0), AmountFromMinor(10, 1),
	}
	for _, a := range vals {
		for _, b := range vals {
			checkAgainstDecimal(t, a, b)
		}
	}
}

func TestParseAmountSmall(t *testing.T) {
	for _, s := range []string{"0", "-0", "50.00", "0.0000125", "1.5e3", "1.5E-3", "-7e+2", "9223372036854775807", "0.000000000000000001", "100000000000000.5"} {
		a, err := ParseAmount(s)
		if err != nil {
			if s == "9223372036854775807" { // ≥ 10^15: out of range either way
				continue
			}
			t.Fatalf("ParseAmount(%q): %v", s, err)
		}
		d := decimal.RequireFromString(s)
		if !a.dec().Equal(d) {
			t.Fatalf("ParseAmount(%q) = %s, want %s", s, a, d)
		}
	}
}

func TestAmountSmallPathsDoNotAllocate(t *testing.T) {
	a, b := AmountFromMinor(5000, 2), AmountFromMinor(125, 7)
	n := testing.AllocsPerRun(100, func() {
		c := a.Sub(b).Add(b).Neg()
		_ = c.Cmp(a) + c.Sign()
		_ = a.MultipleOf(AmountFromMinor(1, 2))
		_, _ = ParseAmount("0.0000125")
		_ = b.MulInt(1_000).Shift(-6)
	})
	if n != 0 {
		t.Fatalf("small amount arithmetic allocates %v times", n)
	}
}

// FuzzAmountArithmetic compares the small form with shopspring/decimal on
// arbitrary coefficients and exponents.
func FuzzAmountArithmetic(f *testing.F) {
	f.Add(int64(5000), int32(-2), int64(125), int32(-7))
	f.Add(int64(math.MaxInt64), int32(0), int64(1), int32(0))
	f.Add(int64(math.MinInt64), int32(-18), int64(-1), int32(5))
	f.Add(int64(3), int32(40), int64(-3), int32(-40))
	f.Fuzz(func(t *testing.T, c1 int64, e1 int32, c2 int64, e2 int32) {
		e1, e2 = e1%60, e2%60 // keep decimal's own work bounded
		checkAgainstDecimal(t, AmountFromMinor(c1, -e1), AmountFromMinor(c2, -e2))
		checkAgainstDecimal(t, NewAmount(decimal.New(c1, e1).Mul(decimal.New(c2, 0))), AmountFromMinor(c2, -e2))
	})
}

// TestAmountExtremeExponents: exponents far apart must not overflow the
// int32 difference (found in review: Cmp panicked indexing pow10).
func TestAmountExtremeExponents(t *testing.T) {
	huge := NewAmount(decimal.New(1, math.MaxInt32-1))
	tiny := NewAmount(decimal.New(1, -10))
	negHuge := NewAmount(decimal.New(-1, math.MaxInt32-1))
	if huge.Cmp(tiny) != 1 || tiny.Cmp(huge) != -1 || negHuge.Cmp(tiny) != -1 || huge.Equal(tiny) {
		t.Fatal("comparison across extreme exponents is wrong")
	}
	if AmountFromMinor(1, math.MaxInt32).Cmp(AmountFromMinor(1, -math.MaxInt32)) != -1 {
		t.Fatal("comparison across extreme negative exponents is wrong")
	}
}

// TestFingerprintOfEqualAmounts: equal amounts fingerprint alike whatever
// their text, including coefficients at the very top of the int64 range
// (found in review).
func TestFingerprintOfEqualAmounts(t *testing.T) {
	for _, pair := range [][2]string{
		{"9.223372036854775807", "9.2233720368547758070"},
		{"-9.223372036854775808", "-9.22337203685477580800"},
		{"50", "50.000"},
		{"0.0000125", "0.00001250"},
	} {
		a, err1 := ParseAmount(pair[0])
		b, err2 := ParseAmount(pair[1])
		if err1 != nil || err2 != nil || !a.Equal(b) {
			t.Fatalf("%q and %q: %v %v", pair[0], pair[1], err1, err2)
		}
		fa := fingerprint('d', "acct", "", a, 0, time.Time{}, "", "")
		fb := fingerprint('d', "acct", "", b, 0, time.Time{}, "", "")
		if fa != fb {
			t.Fatalf("%q and %q fingerprint differently", pair[0], pair[1])
		}
	}
	if a, err := ParseAmount("-9.223372036854775808"); err != nil || a.big != nil || a.coef != math.MinInt64 {
		t.Fatalf("the most negative int64 coefficient is not kept small: %+v %v", a, err)
	}
}
