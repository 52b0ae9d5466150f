// Package invoice makes GST tax invoices for prepaid credit purchases: the
// tax arithmetic, sequential invoice numbers per Indian financial year, and
// the PDF, drawn with github.com/go-pdf/fpdf.
//
// Tax rules implemented (services at the standard 18% rate):
//
//   - Place of supply is the customer's state code, else the state of the
//     customer's GSTIN, else (an unregistered customer with no address on
//     record, section 12(2)(b) of the IGST Act) the supplier's state.
//   - Intra-state supply (place of supply = supplier's state): CGST 9% and
//     SGST 9% (UTGST 9% in union territories without a legislature).
//     Inter-state supply: IGST 18%.
//   - Amounts are exact decimals in rupees with at most 2 decimals. Each
//     tax line is computed on the invoice's total taxable value and rounded
//     to the paisa half-up, so CGST and SGST are always equal, and
//     total = taxable + taxes exactly.
//
// Pricing convention (the gateway's choice): the credits a customer buys
// are the taxable value and GST is charged on top, so buying ₹500 of
// credits costs ₹590.00 and credits ₹500. Invoice.TaxInclusive selects the
// other convention, where the amount paid includes GST: the taxable value
// of each line is amount × 100/118 rounded half-up to the paisa, and the
// tax is the remainder (split CGST = half rounded half-up, SGST = the
// rest).
//
// The package is pure: no clock, no I/O, no globals. Rendering the same
// Invoice twice gives the same bytes, so a server may store the invoice's
// data and render the PDF on each download.
package invoice

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shopspring/decimal"
)

// Errors. Match them with errors.Is.
var (
	ErrInvalidGSTIN      = errors.New("invoice: invalid GSTIN")
	ErrInvalidStateCode  = errors.New("invoice: invalid GST state code")
	ErrStateMismatch     = errors.New("invoice: state code does not match the GSTIN")
	ErrInvalidParty      = errors.New("invoice: invalid supplier or customer")
	ErrNoItems           = errors.New("invoice: no line items")
	ErrTooManyItems      = errors.New("invoice: too many line items")
	ErrInvalidItem       = errors.New("invoice: invalid line item")
	ErrInvalidAmount     = errors.New("invoice: amount must be positive with at most 2 decimals")
	ErrInvalidSAC        = errors.New("invoice: SAC must be 6 digits starting with 99")
	ErrInvalidNumber     = errors.New("invoice: invalid invoice number")
	ErrInvalidNumberer   = errors.New("invoice: invalid numbering scheme")
	ErrSequenceExhausted = errors.New("invoice: invoice sequence exhausted for the financial year")
	ErrInvalidDate       = errors.New("invoice: invalid invoice date")
)

// SACITInfrastructure is SAC 998315, "Hosting and information technology
// (IT) infrastructure provisioning services", the default for a line item
// without a SAC: prepaid credits for a hosted model inference API.
const SACITInfrastructure = "998315"

// RatePercent is the GST rate applied, in percent.
const RatePercent = 18

// Input limits, to keep a PDF bounded whatever the caller passes.
const (
	maxItems    = 100
	maxTextLen  = 500 // runes in a description or address
	maxNameLen  = 200 // runes in a name or e-mail
	maxAmountSz = 16  // integer digits of an amount (₹ 10^16)
)

// Supplier is the registered business issuing the invoice.
type Supplier struct {
	Name    string
	Address string // may hold line breaks
	GSTIN   string
	// StateCode is the supplier's GST state code; empty means the first two
	// characters of GSTIN, and a non-empty one must match them.
	StateCode string
	Email     string // optional
}

// Customer is the recipient. Only Name is required; GSTIN makes the
// invoice B2B and fixes the place of supply.
type Customer struct {
	Name    string
	Email   string
	Address string // may hold line breaks
	GSTIN   string
	// StateCode is the place of supply; empty means the GSTIN's state, or
	// the supplier's state when the customer has no GSTIN.
	StateCode string
}

// Item is one line: a service with its SAC and amount in rupees (the
// taxable value, or the tax-inclusive amount when Invoice.TaxInclusive).
type Item struct {
	Description string
	SAC         string // empty means SACITInfrastructure
	Amount      decimal.Decimal
}

// Invoice is everything printed on a tax invoice.
type Invoice struct {
	// Number is the invoice number (Rule 46(b): at most 16 characters of
	// letters, digits, - and /); see Numberer.
	Number string
	// Date is the date of issue, printed in IST.
	Date     time.Time
	Supplier Supplier
	Customer Customer
	Items    []Item
	// TaxInclusive means Item amounts include GST; default false (tax is
	// added on top).
	TaxInclusive bool
	// Reference is an optional line such as the payment id.
	Reference string
}

// Tax heads.
const (
	CGST  = "CGST"
	SGST  = "SGST"
	UTGST = "UTGST"
	IGST  = "IGST"
)

// TaxLine is one tax head of an invoice.
type TaxLine struct {
	Name        string          // CGST, SGST, UTGST or IGST
	RatePercent decimal.Decimal // 9 or 18
	Amount      decimal.Decimal
}

// Line is an item with its taxable value.
type Line struct {
	Item
	Taxable decimal.Decimal
}

// Totals is the computed tax of an invoice.
type Totals struct {
	SupplierState string // GST state code
	PlaceOfSupply string // GST state code
	InterState    bool
	Lines         []Line
	Taxable       decimal.Decimal
	Taxes         []TaxLine
	Tax           decimal.Decimal
	Total         decimal.Decimal
}

// Compute validates the parties and items of inv (not its number or date;
// Render checks those) and returns its tax. It is what a server calls
// before creating the payment order, to know the amount to charge.
func Compute(inv Invoice) (Totals, error) {
	supplierState, err := supplierState(inv.Supplier)
	if err != nil {
		return Totals{}, err
	}
	pos, err := placeOfSupply(inv.Customer, supplierState)
	if err != nil {
		return Totals{}, err
	}
	if len(inv.Items) == 0 {
		return Totals{}, ErrNoItems
	}
	if len(inv.Items) > maxItems {
		return Totals{}, fmt.Errorf("%w: %d > %d", ErrTooManyItems, len(inv.Items), maxItems)
	}
	t := Totals{SupplierState: supplierState, PlaceOfSupply: pos, InterState: pos != supplierState, Lines: make([]Line, len(inv.Items))}
	gross, hundred := decimal.Zero, decimal.NewFromInt(100)
	for i, it := range inv.Items {
		if it.SAC == "" {
			it.SAC = SACITInfrastructure
		}
		if err := checkItem(i, it); err != nil {
			return Totals{}, err
		}
		taxable := it.Amount
		if inv.TaxInclusive {
			taxable = it.Amount.Mul(hundred).DivRound(hundred.Add(decimal.NewFromInt(RatePercent)), 2)
		}
		t.Lines[i] = Line{Item: it, Taxable: taxable}
		t.Taxable = t.Taxable.Add(taxable)
		gross = gross.Add(it.Amount)
	}
	names := [2]string{CGST, SGST}
	if unionTerritoryWithoutLegislature(supplierState) {
		names[1] = UTGST
	}
	half := decimal.NewFromInt(RatePercent / 2)
	switch {
	case t.InterState && !inv.TaxInclusive:
		t.Taxes = []TaxLine{{IGST, decimal.NewFromInt(RatePercent), percent(t.Taxable, decimal.NewFromInt(RatePercent))}}
	case t.InterState:
		t.Taxes = []TaxLine{{IGST, decimal.NewFromInt(RatePercent), gross.Sub(t.Taxable)}}
	case !inv.TaxInclusive:
		c := percent(t.Taxable, half)
		t.Taxes = []TaxLine{{names[0], half, c}, {names[1], half, c}}
	default:
		tax := gross.Sub(t.Taxable)
		c := tax.Div(decimal.NewFromInt(2)).Round(2)
		t.Taxes = []TaxLine{{names[0], half, c}, {names[1], half, tax.Sub(c)}}
	}
	for _, x := range t.Taxes {
		t.Tax = t.Tax.Add(x.Amount)
	}
	t.Total = t.Taxable.Add(t.Tax)
	return t, nil
}

// percent returns v × p / 100 rounded half-up to the paisa (v and p are
// positive, so half-up equals decimal's half-away-from-zero).
func percent(v, p decimal.Decimal) decimal.Decimal {
	return v.Mul(p).Shift(-2).Round(2)
}

func supplierState(s Supplier) (string, error) {
	if err := checkName("supplier name", s.Name, true); err != nil {
		return "", err
	}
	if err := checkText("supplier address", s.Address, true); err != nil {
		return "", err
	}
	if err := checkName("supplier email", s.Email, false); err != nil {
		return "", err
	}
	if err := ValidateGSTIN(s.GSTIN); err != nil {
		return "", fmt.Errorf("supplier: %w", err)
	}
	if s.StateCode != "" && s.StateCode != s.GSTIN[:2] {
		return "", fmt.Errorf("%w: supplier state %q, GSTIN %s", ErrStateMismatch, clip(s.StateCode), s.GSTIN)
	}
	return s.GSTIN[:2], nil
}

func placeOfSupply(c Customer, supplierState string) (string, error) {
	if err := checkName("customer name", c.Name, true); err != nil {
		return "", err
	}
	if err := checkName("customer email", c.Email, false); err != nil {
		return "", err
	}
	if err := checkText("customer address", c.Address, false); err != nil {
		return "", err
	}
	if c.StateCode != "" {
		if _, ok := StateName(c.StateCode); !ok {
			return "", fmt.Errorf("%w: %q", ErrInvalidStateCode, clip(c.StateCode))
		}
	}
	if c.GSTIN != "" {
		if err := ValidateGSTIN(c.GSTIN); err != nil {
			return "", fmt.Errorf("customer: %w", err)
		}
		if c.StateCode != "" && c.StateCode != c.GSTIN[:2] {
			return "", fmt.Errorf("%w: customer state %q, GSTIN %s", ErrStateMismatch, c.StateCode, c.GSTIN)
		}
		return c.GSTIN[:2], nil
	}
	if c.StateCode != "" {
		return c.StateCode, nil
	}
	return supplierState, nil
}

func checkItem(i int, it Item) error {
	if err := checkText(fmt.Sprintf("item %d description", i+1), it.Description, true); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidItem, err)
	}
	if len(it.SAC) != 6 || !allDigits(it.SAC) || !strings.HasPrefix(it.SAC, "99") {
		return fmt.Errorf("%w: item %d: %q", ErrInvalidSAC, i+1, clip(it.SAC))
	}
	return CheckAmount(it.Amount)
}

// CheckAmount checks that d is a positive rupee amount with at most 2
// decimals and at most 16 integer digits.
func CheckAmount(d decimal.Decimal) error {
	// Bound the representation before any arithmetic (see razorpay).
	if d.Exponent() > maxAmountSz || d.Exponent() < -40 || d.Coefficient().BitLen() > 160 {
		return fmt.Errorf("%w: out of range", ErrInvalidAmount)
	}
	if !d.IsPositive() || !d.Shift(2).IsInteger() || d.GreaterThanOrEqual(decimal.New(1, maxAmountSz)) {
		return fmt.Errorf("%w: %s", ErrInvalidAmount, d)
	}
	return nil
}

func checkName(what, s string, required bool) error {
	if err := checkString(what, s, required, maxNameLen); err != nil {
		return err
	}
	if strings.ContainsAny(s, "\r\n") {
		return fmt.Errorf("%w: %s must be one line", ErrInvalidParty, what)
	}
	return nil
}

func checkText(what, s string, required bool) error {
	return checkString(what, s, required, maxTextLen)
}

func checkString(what, s string, required bool, max int) error {
	switch {
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidParty, what)
	case required && strings.TrimSpace(s) == "":
		return fmt.Errorf("%w: %s is required", ErrInvalidParty, what)
	case utf8.RuneCountInString(s) > max:
		return fmt.Errorf("%w: %s is longer than %d characters", ErrInvalidParty, what, max)
	}
	return nil
}
