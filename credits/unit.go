package credits

import (
	"fmt"
	"unicode/utf8"
)

// Unit describes what a ledger counts and which amounts it accepts. A
// Service has one Unit; accounts record its Code when they are opened.
//
// Two increments say where precision matters. Increment applies to money
// that enters the ledger (grants, purchases, refunds, adjustments,
// auto-recharge amounts): INR takes at most 2 decimals. SpendIncrement
// applies to debits, holds and settlements: zero lets an LLM gateway charge
// exact sub-paisa per-token costs, 0.5 makes an email-verification ledger
// charge only whole and half credits. An amount that is not a multiple of
// its increment is refused with ErrAmountPrecision.
type Unit struct {
	// Code names the unit ("INR", "credits"); 1-16 bytes.
	Code string `json:"code"`
	// Decimals is how many decimals Format and Display show (0-18).
	Decimals int32 `json:"decimals"`
	// Increment is the smallest step of credited amounts; zero means any.
	Increment Amount `json:"increment"`
	// SpendIncrement is the smallest step of spent amounts; zero means any.
	SpendIncrement Amount `json:"spend_increment"`
}

// INR is Forii's unit: rupees shown with 2 decimals, credited in whole
// paise, spent exactly (sub-paisa per-token costs add up without rounding).
func INR() Unit {
	return Unit{Code: "INR", Decimals: 2, Increment: AmountFromMinor(1, 2)}
}

// WholeCredits is OpenRush's unit: integer credits in and out.
func WholeCredits() Unit {
	return Unit{Code: "credits", Increment: AmountFromInt(1), SpendIncrement: AmountFromInt(1)}
}

// HalfCredits is the email-verification unit: credits in steps of 0.5
// (1 for a verification, 0.5 for a cached result), shown with 1 decimal.
func HalfCredits() Unit {
	half := AmountFromMinor(5, 1)
	return Unit{Code: "credits", Decimals: 1, Increment: half, SpendIncrement: half}
}

func (u Unit) validate() error {
	switch {
	case u.Code == "" || len(u.Code) > 16 || !utf8.ValidString(u.Code):
		return fmt.Errorf("%w: code must be 1-16 bytes of UTF-8", ErrInvalidUnit)
	case u.Decimals < 0 || u.Decimals > maxFracDigits:
		return fmt.Errorf("%w: decimals must be 0-%d", ErrInvalidUnit, maxFracDigits)
	case u.Increment.IsNegative() || u.SpendIncrement.IsNegative() || !u.Increment.inBounds() || !u.SpendIncrement.inBounds():
		return fmt.Errorf("%w: increments must be non-negative amounts", ErrInvalidUnit)
	}
	return nil
}

// Round returns a rounded to the unit's display decimals, half away from
// zero (49.995 → 50.00). Use it for display only; the ledger never rounds.
func (u Unit) Round(a Amount) Amount { return fromDecimal(a.dec().Round(u.Decimals)) }

// Format returns a rounded to the unit's display decimals and padded with
// zeros: INR formats 50 as "50.00" and 0.0000125 as "0.00".
func (u Unit) Format(a Amount) string { return a.dec().StringFixed(u.Decimals) }

// Display returns a value that marshals to JSON as a number literal with
// exactly the unit's display decimals (50.00 for INR), for API responses
// such as Forii's {"credits_inr": 50.00}.
func (u Unit) Display(a Amount) Display { return Display{a: a, places: u.Decimals} }

// Display is an amount formatted for people: rounded half away from zero
// and padded to a fixed number of decimals. Build it with Unit.Display.
type Display struct {
	a      Amount
	places int32
}

// Amount returns the exact amount behind the display value.
func (d Display) Amount() Amount { return d.a }

// String returns the rounded, padded value ("50.00").
func (d Display) String() string { return d.a.dec().StringFixed(d.places) }

// MarshalJSON writes the rounded, padded value as a JSON number literal.
func (d Display) MarshalJSON() ([]byte, error) { return []byte(d.String()), nil }
