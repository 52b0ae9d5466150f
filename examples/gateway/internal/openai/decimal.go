package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/shopspring/decimal"
)

// Decimal bounds: a literal longer than maxDecimalLen bytes, with an
// exponent beyond ±maxDecimalExp, more than maxIntDigits integer digits or
// more than maxFracDigits significant fraction digits is rejected, so a
// hostile "1e999999999" cannot make formatting allocate gigabytes and every
// accepted value formats short enough to parse back.
const (
	maxDecimalLen = 100
	maxDecimalExp = 40
	maxIntDigits  = 24
	maxFracDigits = 18
)

// Decimal is an exact decimal amount (INR) that encodes as a JSON number
// literal with at least two fraction digits and never rounds: 50 encodes as
// 50.00 and 0.125 as 0.125. It decodes from a JSON number, or from a JSON
// string holding one (catalog files sometimes quote prices).
type Decimal struct{ decimal.Decimal }

// NewDecimal wraps d.
func NewDecimal(d decimal.Decimal) Decimal { return Decimal{d} }

// String returns the JSON form without quotes.
func (d Decimal) String() string {
	s := d.Decimal.String()
	dot := strings.IndexByte(s, '.')
	switch {
	case dot < 0:
		return s + ".00"
	case len(s)-dot-1 == 1:
		return s + "0"
	}
	return s
}

// MarshalJSON writes the number literal.
func (d Decimal) MarshalJSON() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalJSON reads a JSON number or a string holding one.
func (d *Decimal) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > maxDecimalLen+2 {
		return fmt.Errorf("%w: too long", ErrInvalidDecimal)
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidDecimal, err)
		}
		b = []byte(s)
	} else if !json.Valid(b) {
		return fmt.Errorf("%w: not a JSON number", ErrInvalidDecimal)
	}
	v, err := ParseDecimal(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// ParseDecimal parses a plain or exponent decimal literal ("12.50", "1e2")
// within the bounds above.
func ParseDecimal(s string) (Decimal, error) {
	if s == "" || len(s) > maxDecimalLen {
		return Decimal{}, fmt.Errorf("%w: %q", ErrInvalidDecimal, truncate(s, maxDecimalLen))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && c != '.' && c != '-' && c != '+' && c != 'e' && c != 'E' {
			return Decimal{}, fmt.Errorf("%w: %q", ErrInvalidDecimal, s)
		}
	}
	v, err := decimal.NewFromString(s)
	if err != nil {
		return Decimal{}, fmt.Errorf("%w: %q", ErrInvalidDecimal, s)
	}
	if e := v.Exponent(); e > maxDecimalExp || e < -maxDecimalExp {
		return Decimal{}, fmt.Errorf("%w: %q out of range", ErrInvalidDecimal, s)
	}
	intPart, frac, _ := strings.Cut(strings.TrimPrefix(v.String(), "-"), ".")
	if len(intPart) > maxIntDigits || len(frac) > maxFracDigits {
		return Decimal{}, fmt.Errorf("%w: %q out of range", ErrInvalidDecimal, s)
	}
	return Decimal{v}, nil
}
