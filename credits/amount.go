package credits

import (
	"bytes"
	"fmt"
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
	d decimal.Decimal
}

const (
	maxAmountText   = 64 // longest accepted textual amount
	maxFracDigits   = 18 // decimal places an input may carry
	maxIntDigits    = 15 // |amount| < 10^15
	maxExponentText = 2  // digits of an exponent in "1.5e3"
)

// NewAmount returns d as an Amount. It does not check the input bounds;
// Service methods do.
func NewAmount(d decimal.Decimal) Amount { return Amount{d: d} }

// AmountFromInt returns n units.
func AmountFromInt(n int64) Amount { return Amount{d: decimal.NewFromInt(n)} }

// AmountFromMinor returns n × 10^-places, e.g. AmountFromMinor(5000, 2) is
// 50.00 and AmountFromMinor(125, 7) is 0.0000125.
func AmountFromMinor(n int64, places int32) Amount { return Amount{d: decimal.New(n, -places)} }

// ParseAmount parses a decimal number such as "50", "-0.5", "0.0000125" or
// "1.5e3". It accepts an optional leading '-', digits with an optional
// fraction, and an optional exponent of at most two digits; it returns
// ErrInvalidAmount for anything else, including values outside the bounds
// documented on Amount. It is safe for untrusted input.
func ParseAmount(s string) (Amount, error) {
	if !validAmountSyntax(s) {
		return Amount{}, fmt.Errorf("%w: %q is not a decimal number", ErrInvalidAmount, truncate(s, 32))
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		return Amount{}, fmt.Errorf("%w: %q is not a decimal number", ErrInvalidAmount, truncate(s, 32))
	}
	a := Amount{d: d}
	if !a.inBounds() {
		return Amount{}, fmt.Errorf("%w: %s is out of range", ErrInvalidAmount, truncate(s, 32))
	}
	return a, nil
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
	if a.d.Sign() == 0 {
		return true
	}
	// |a| < 10^(digits+exp) and ≥ 10^(digits+exp−1): exact, and without
	// allocating for coefficients that fit in an int64.
	if a.d.NumDigits()+int(a.d.Exponent()) > maxIntDigits {
		return false
	}
	return a.d.Exponent() >= -maxFracDigits || a.d.Equal(a.d.Truncate(maxFracDigits))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Decimal returns the amount as a decimal.Decimal.
func (a Amount) Decimal() decimal.Decimal { return a.d }

// String returns the exact value in plain notation without trailing zeros:
// "50", "-0.5", "0.0000125". It does not depend on shopspring/decimal's
// package-level formatting switches.
func (a Amount) String() string {
	exp := a.d.Exponent()
	if exp >= 0 {
		return a.d.StringFixed(0)
	}
	s := a.d.StringFixed(-exp) // exact: already at this many places
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// Add returns a + b.
func (a Amount) Add(b Amount) Amount { return Amount{d: a.d.Add(b.d)} }

// Sub returns a − b.
func (a Amount) Sub(b Amount) Amount { return Amount{d: a.d.Sub(b.d)} }

// Neg returns −a.
func (a Amount) Neg() Amount { return Amount{d: a.d.Neg()} }

// Cmp returns -1, 0 or +1 as a is less than, equal to or greater than b.
func (a Amount) Cmp(b Amount) int { return a.d.Cmp(b.d) }

// Equal reports whether a and b are the same number (2.50 equals 2.5).
func (a Amount) Equal(b Amount) bool { return a.d.Cmp(b.d) == 0 }

// Sign returns -1, 0 or +1.
func (a Amount) Sign() int { return a.d.Sign() }

// IsZero reports whether a is 0.
func (a Amount) IsZero() bool { return a.d.Sign() == 0 }

// IsPositive reports whether a > 0.
func (a Amount) IsPositive() bool { return a.d.Sign() > 0 }

// IsNegative reports whether a < 0.
func (a Amount) IsNegative() bool { return a.d.Sign() < 0 }

// MultipleOf reports whether a is a whole multiple of inc; every amount is a
// multiple of a zero increment.
func (a Amount) MultipleOf(inc Amount) bool {
	if inc.d.Sign() <= 0 {
		return true
	}
	return a.d.Mod(inc.d).Sign() == 0
}

func minAmount(a, b Amount) Amount {
	if a.d.Cmp(b.d) <= 0 {
		return a
	}
	return b
}

// MarshalJSON writes the exact value as a JSON number literal (0.0000125,
// 50, -3.5), never as a string and never through a float. Use Unit.Display
// for a value rounded and padded to the unit's decimals (50.00).
func (a Amount) MarshalJSON() ([]byte, error) { return []byte(a.String()), nil }

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
