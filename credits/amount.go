package credits

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"

	"github.com/shopspring/decimal"
)

// Amount is an exact decimal quantity of a ledger's unit (rupees, credits).
// It wraps shopspring/decimal and never passes through a float. The zero
// value is 0.
//
// Amounts keep every digit they are given: a per-token cost of 0.0000125
// stays 0.0000125 through sums, storage and JSON. Rounding to a unit's
// display decimals happens only in Unit.Format and Unit.Display.
//
// Input is bounded so that untrusted text cannot make a huge number: at most
// 15 integer digits (|a| < 10^15) and 18 decimal places.
type Amount struct {
	// A small amount, the common case, is coef × 10^exp with big nil: it
	// takes no allocation to make, add or compare. An amount whose
	// coefficient does not fit in an int64 is kept as the decimal in big.
	// Every constructor and operation returns the small form whenever the
	// value fits, so one value has one representation per exponent.
	coef int64
	exp  int32
	big  *decimal.Decimal
}

const (
	maxAmountText   = 64 // longest accepted textual amount
	maxFracDigits   = 18 // decimal places an input may carry
	maxIntDigits    = 15 // |amount| < 10^15
	maxExponentText = 2  // digits of an exponent in "1.5e3"
)

// NewAmount returns d as an Amount. It does not check the input bounds;
// Service methods do.
func NewAmount(d decimal.Decimal) Amount { return fromDecimal(d) }

// AmountFromInt returns n units.
func AmountFromInt(n int64) Amount { return Amount{coef: n} }

// AmountFromMinor returns n × 10^-places, e.g. AmountFromMinor(5000, 2) is
// 50.00 and AmountFromMinor(125, 7) is 0.0000125.
func AmountFromMinor(n int64, places int32) Amount { return Amount{coef: n, exp: -places} }

// ParseAmount parses a decimal number such as "50", "-0.5", "0.0000125" or
// "1.5e3". It accepts an optional leading '-', digits with an optional
// fraction, and an optional exponent of at most two digits; it returns
// ErrInvalidAmount for anything else, including values outside the bounds
// documented on Amount. It is safe for untrusted input.
func ParseAmount(s string) (Amount, error) {
	if !validAmountSyntax(s) {
		return Amount{}, fmt.Errorf("%w: %q is not a decimal number", ErrInvalidAmount, truncate(s, 32))
	}
	a, ok := parseSmall(s)
	if !ok {
		d, err := decimal.NewFromString(s)
		if err != nil {
			return Amount{}, fmt.Errorf("%w: %q is not a decimal number", ErrInvalidAmount, truncate(s, 32))
		}
		a = fromDecimal(d)
	}
	if !a.inBounds() {
		return Amount{}, fmt.Errorf("%w: %s is out of range", ErrInvalidAmount, truncate(s, 32))
	}
	return a, nil
}

// parseSmall parses text that validAmountSyntax accepted into the small
// form, without allocating. It reports false when the digits do not fit in
// an int64, leaving those to shopspring/decimal.
func parseSmall(s string) (Amount, bool) {
	neg := s[0] == '-'
	limit := uint64(math.MaxInt64) // magnitude bound: 2^63 for a negative number
	if neg {
		s = s[1:]
		limit++
	}
	var (
		coef uint64
		exp  int32
		frac bool
	)
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			frac = true
			continue
		case c < '0' || c > '9':
		default:
			d := uint64(c - '0')
			if coef > (limit-d)/10 { // coef*10+d would pass what an int64 holds
				return Amount{}, false
			}
			coef = coef*10 + d
			if frac {
				exp--
			}
			continue
		}
		break
	}
	if i < len(s) { // exponent: [eE][+-]?d{1,2}
		i++
		eneg := false
		if s[i] == '+' || s[i] == '-' {
			eneg = s[i] == '-'
			i++
		}
		var e int32
		for ; i < len(s); i++ {
			e = e*10 + int32(s[i]-'0')
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	c := int64(coef) // 2^63 wraps to math.MinInt64, which is what -2^63 is
	if neg {
		c = -c
	}
	return Amount{coef: c, exp: exp}, true
}

// validAmountSyntax accepts -?digits(.digits)?([eE][+-]?d{1,2})? and nothing
// else, so that decimal.NewFromString never sees an exponent that would
// allocate a huge number.
func validAmountSyntax(s string) bool {
	if len(s) == 0 || len(s) > maxAmountText {
		return false
	}
	i := 0
	if s[0] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if digits() == 0 {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if n := digits(); n == 0 || n > maxExponentText {
			return false
		}
	}
	return i == len(s)
}

// inBounds reports whether |a| < 10^15 with at most 18 decimal places.
func (a Amount) inBounds() bool {
	if a.big == nil {
		c, e := a.coef, a.exp
		for c != 0 && c%10 == 0 {
			c /= 10
			e++
		}
		return c == 0 || (digits(c)+int(e) <= maxIntDigits && e >= -maxFracDigits)
	}
	d := *a.big
	if d.Sign() == 0 {
		return true
	}
	// |a| < 10^(digits+exp) and ≥ 10^(digits+exp−1).
	if d.NumDigits()+int(d.Exponent()) > maxIntDigits {
		return false
	}
	return d.Exponent() >= -maxFracDigits || d.Equal(d.Truncate(maxFracDigits))
}

// digits is the number of decimal digits of |c|, c != 0.
func digits(c int64) int {
	u := uint64(c)
	if c < 0 {
		u = uint64(-c) // MinInt64 too: its magnitude as uint64 is exact
	}
	n := 1
	for u >= 10 {
		u /= 10
		n++
	}
	return n
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// fromDecimal returns d in the small form when its coefficient fits in an
// int64, else kept as the decimal.
func fromDecimal(d decimal.Decimal) Amount {
	if n := d.NumDigits(); n <= 18 || (n == 19 && d.Coefficient().IsInt64()) { // NumDigits does not allocate for these
		return Amount{coef: d.CoefficientInt64(), exp: d.Exponent()}
	}
	return Amount{big: &d}
}

// dec returns a as a decimal.Decimal.
func (a Amount) dec() decimal.Decimal {
	if a.big != nil {
		return *a.big
	}
	return decimal.New(a.coef, a.exp)
}

// Int64Parts returns a as coef × 10^exp when its coefficient fits in an
// int64, and ok false otherwise. AmountFromMinor(coef, -exp) rebuilds it;
// stores use the pair to keep amounts without pointers.
func (a Amount) Int64Parts() (coef int64, exp int32, ok bool) {
	if a.big != nil {
		return 0, 0, false
	}
	return a.coef, a.exp, true
}

// Decimal returns the amount as a decimal.Decimal.
func (a Amount) Decimal() decimal.Decimal { return a.dec() }

// String returns the exact value in plain notation without trailing zeros:
// "50", "-0.5", "0.0000125". It does not depend on shopspring/decimal's
// package-level formatting switches.
func (a Amount) String() string {
	if a.big == nil {
		var buf [48]byte
		return string(a.appendSmall(buf[:0]))
	}
	d := *a.big
	exp := d.Exponent()
	if exp >= 0 {
		return d.StringFixed(0)
	}
	s := d.StringFixed(-exp) // exact: already at this many places
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// AppendText appends the text String returns to b (encoding.TextAppender),
// without allocating for amounts whose coefficient fits in an int64.
func (a Amount) AppendText(b []byte) ([]byte, error) {
	if a.big == nil {
		return a.appendSmall(b), nil
	}
	return append(b, a.String()...), nil
}

// appendSmall appends the text of a small amount, as String describes it.
func (a Amount) appendSmall(b []byte) []byte {
	if a.coef == 0 {
		return append(b, '0')
	}
	u := uint64(a.coef)
	if a.coef < 0 {
		b = append(b, '-')
		u = uint64(-a.coef)
	}
	var tmp [20]byte
	ds := strconv.AppendUint(tmp[:0], u, 10)
	if a.exp >= 0 {
		b = append(b, ds...)
		for range a.exp {
			b = append(b, '0')
		}
		return b
	}
	frac := int(-a.exp)
	for len(ds) > 0 && frac > 0 && ds[len(ds)-1] == '0' { // trailing zeros of the fraction
		ds = ds[:len(ds)-1]
		frac--
	}
	if frac == 0 {
		return append(b, ds...)
	}
	if len(ds) <= frac {
		b = append(b, '0', '.')
		for range frac - len(ds) {
			b = append(b, '0')
		}
		return append(b, ds...)
	}
	b = append(b, ds[:len(ds)-frac]...)
	b = append(b, '.')
	return append(b, ds[len(ds)-frac:]...)
}

// pow10 holds 10^0 … 10^18, the powers of ten that fit in an int64.
var pow10 = [...]int64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18}

// scale returns c × 10^k and whether it fits in an int64 (k ≥ 0; a
// difference of two int32 exponents, so it is computed in int64).
func scale(c int64, k int64) (int64, bool) {
	if c == 0 || k == 0 {
		return c, true
	}
	if k < 0 || k >= int64(len(pow10)) {
		return 0, false
	}
	p := pow10[k]
	if c > math.MaxInt64/p || c < math.MinInt64/p {
		return 0, false
	}
	return c * p, true
}

// align returns the coefficients of two small amounts at their common
// (smaller) exponent, and false when one does not fit in an int64.
func align(a, b Amount) (x, y int64, exp int32, ok bool) {
	switch {
	case a.exp == b.exp:
		return a.coef, b.coef, a.exp, true
	case a.exp > b.exp:
		x, ok = scale(a.coef, int64(a.exp)-int64(b.exp))
		return x, b.coef, b.exp, ok
	default:
		y, ok = scale(b.coef, int64(b.exp)-int64(a.exp))
		return a.coef, y, a.exp, ok
	}
}

// Add returns a + b.
func (a Amount) Add(b Amount) Amount {
	if a.big == nil && b.big == nil {
		if x, y, e, ok := align(a, b); ok {
			if s := x + y; (s > x) == (y > 0) { // no overflow
				return Amount{coef: s, exp: e}
			}
		}
	}
	return fromDecimal(a.dec().Add(b.dec()))
}

// Sub returns a − b.
func (a Amount) Sub(b Amount) Amount {
	if a.big == nil && b.big == nil {
		if x, y, e, ok := align(a, b); ok {
			if s := x - y; (s < x) == (y > 0) { // no overflow
				return Amount{coef: s, exp: e}
			}
		}
	}
	return fromDecimal(a.dec().Sub(b.dec()))
}

// Neg returns −a.
func (a Amount) Neg() Amount {
	if a.big == nil && a.coef != math.MinInt64 {
		return Amount{coef: -a.coef, exp: a.exp}
	}
	return fromDecimal(a.dec().Neg())
}

// MulInt returns a × n, exactly.
func (a Amount) MulInt(n int64) Amount {
	if a.big == nil {
		if hi, lo := bits.Mul64(abs64(a.coef), abs64(n)); hi == 0 && lo <= math.MaxInt64 {
			p := int64(lo)
			if (a.coef < 0) != (n < 0) {
				p = -p
			}
			return Amount{coef: p, exp: a.exp}
		}
	}
	return fromDecimal(a.dec().Mul(decimal.NewFromInt(n)))
}

// abs64 is |c| as a uint64 (exact for math.MinInt64 too).
func abs64(c int64) uint64 {
	if c < 0 {
		return uint64(-c)
	}
	return uint64(c)
}

// Shift returns a × 10^places, exactly: Shift(-6) divides by one million.
func (a Amount) Shift(places int32) Amount {
	if a.big == nil {
		if e := int64(a.exp) + int64(places); e >= math.MinInt32 && e <= math.MaxInt32 {
			return Amount{coef: a.coef, exp: int32(e)}
		}
	}
	return fromDecimal(a.dec().Shift(places))
}

// Cmp returns -1, 0 or +1 as a is less than, equal to or greater than b.
func (a Amount) Cmp(b Amount) int {
	if a.big == nil && b.big == nil {
		if x, y, _, ok := align(a, b); ok {
			return cmp.Compare(x, y)
		}
		sa, sb := a.Sign(), b.Sign()
		if sa != sb {
			return cmp.Compare(sa, sb)
		}
		// Same sign, both non-zero (a zero would have aligned): the one
		// with more digits before the point is larger in magnitude. Only
		// equal magnitudes reach decimal, whose exponents are then close.
		if ma, mb := int64(digits(a.coef))+int64(a.exp), int64(digits(b.coef))+int64(b.exp); ma != mb {
			return sa * cmp.Compare(ma, mb)
		}
	}
	return a.dec().Cmp(b.dec())
}

// Equal reports whether a and b are the same number (2.50 equals 2.5).
func (a Amount) Equal(b Amount) bool { return a.Cmp(b) == 0 }

// Sign returns -1, 0 or +1.
func (a Amount) Sign() int {
	if a.big != nil {
		return a.big.Sign()
	}
	return cmp.Compare(a.coef, 0)
}

// IsZero reports whether a is 0.
func (a Amount) IsZero() bool { return a.Sign() == 0 }

// IsPositive reports whether a > 0.
func (a Amount) IsPositive() bool { return a.Sign() > 0 }

// IsNegative reports whether a < 0.
func (a Amount) IsNegative() bool { return a.Sign() < 0 }

// MultipleOf reports whether a is a whole multiple of inc; every amount is a
// multiple of a zero increment.
func (a Amount) MultipleOf(inc Amount) bool {
	if inc.Sign() <= 0 {
		return true
	}
	if a.big == nil && inc.big == nil {
		if x, y, _, ok := align(a, inc); ok {
			return x%y == 0
		}
	}
	return a.dec().Mod(inc.dec()).Sign() == 0
}

// MarshalJSON writes the exact value as a JSON number literal (0.0000125,
// 50, -3.5), never as a string and never through a float. Use Unit.Display
// for a value rounded and padded to the unit's decimals (50.00).
func (a Amount) MarshalJSON() ([]byte, error) {
	if a.big == nil {
		return a.appendSmall(make([]byte, 0, 24)), nil
	}
	return []byte(a.String()), nil
}

// UnmarshalJSON accepts a JSON number or a string holding one, with the
// syntax and bounds of ParseAmount. null leaves a unchanged.
func (a *Amount) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		b = b[1 : len(b)-1]
	}
	v, err := ParseAmount(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}
