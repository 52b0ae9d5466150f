// Package razorpay holds the server side of Razorpay Standard Checkout that
// the gateway needs to sell prepaid credits, without any network access:
// amounts in paise, orders behind an OrderCreator interface (with a
// simulated implementation for tests and the default demo), the checkout
// payment signature, the webhook signature, and the payment.captured
// webhook payload.
//
// The signature schemes are Razorpay's documented ones:
//
//   - Checkout: razorpay_signature = hex(HMAC-SHA256(key_secret,
//     order_id + "|" + razorpay_payment_id)), where order_id is the one the
//     server stored when it created the order, never one taken from the
//     callback.
//   - Webhooks: X-Razorpay-Signature = hex(HMAC-SHA256(webhook_secret,
//     raw request body)), computed over the exact bytes received, never a
//     re-serialised body.
//
// Both are compared in constant time.
package razorpay

import (
	"errors"
	"fmt"
	"math"

	"github.com/shopspring/decimal"
)

// Errors. Match them with errors.Is.
var (
	ErrInvalidAmount    = errors.New("razorpay: amount must be a positive number of rupees with at most 2 decimals")
	ErrAmountTooSmall   = errors.New("razorpay: amount is below the minimum")
	ErrAmountTooLarge   = errors.New("razorpay: amount is above the maximum")
	ErrInvalidCurrency  = errors.New("razorpay: unsupported currency")
	ErrInvalidReceipt   = errors.New("razorpay: receipt must be at most 40 characters")
	ErrInvalidNotes     = errors.New("razorpay: at most 15 notes of at most 256 characters")
	ErrInvalidOrder     = errors.New("razorpay: invalid order")
	ErrInvalidSignature = errors.New("razorpay: signature does not match")
	ErrEmptySecret      = errors.New("razorpay: secret is empty")
	ErrMalformedWebhook = errors.New("razorpay: malformed webhook payload")
	ErrOrderMismatch    = errors.New("razorpay: payment does not match the order")
	ErrInvalidOptions   = errors.New("razorpay: invalid options")
)

// Currency is the only currency the gateway sells credits in.
const Currency = "INR"

// Amount bounds. Razorpay's documented minimum order is ₹1.00.
const (
	MinAmount        Paise = 100
	DefaultMaxAmount Paise = 5_00_000_00 // ₹5,00,000
)

// Paise is an amount in the currency subunit, as Razorpay's API takes and
// returns it: ₹222.25 is 22225.
type Paise int64

// PaiseFromINR converts an exact rupee amount to paise. It fails with
// ErrInvalidAmount for a non-positive amount, one with fractional paise
// (more than 2 significant decimals) or one too large for int64; it never
// rounds. Bounds for an order are checked by CheckAmount.
func PaiseFromINR(inr decimal.Decimal) (Paise, error) {
	// Bound the representation first: decimal arithmetic on a hostile
	// exponent (1e999999999) or coefficient would be slow or huge.
	if inr.Exponent() > 20 || inr.Exponent() < -40 || inr.Coefficient().BitLen() > 160 {
		return 0, fmt.Errorf("%w: out of range", ErrInvalidAmount)
	}
	if !inr.IsPositive() {
		return 0, fmt.Errorf("%w: %s is not positive", ErrInvalidAmount, inr)
	}
	p := inr.Shift(2)
	if !p.IsInteger() {
		return 0, fmt.Errorf("%w: %s has fractional paise", ErrInvalidAmount, inr)
	}
	if p.GreaterThan(decimal.NewFromInt(math.MaxInt64)) {
		return 0, fmt.Errorf("%w: out of range", ErrInvalidAmount)
	}
	return Paise(p.IntPart()), nil
}

// CheckAmount converts inr to paise and checks MinAmount <= amount <= max
// (max <= 0 means DefaultMaxAmount).
func CheckAmount(inr decimal.Decimal, max Paise) (Paise, error) {
	p, err := PaiseFromINR(inr)
	if err != nil {
		return 0, err
	}
	if max <= 0 {
		max = DefaultMaxAmount
	}
	switch {
	case p < MinAmount:
		return 0, fmt.Errorf("%w: ₹%s < ₹%s", ErrAmountTooSmall, p.Rupees(), MinAmount.Rupees())
	case p > max:
		return 0, fmt.Errorf("%w: ₹%s > ₹%s", ErrAmountTooLarge, p.Rupees(), max.Rupees())
	}
	return p, nil
}

// INR returns the amount in rupees, exactly.
func (p Paise) INR() decimal.Decimal { return decimal.New(int64(p), -2) }

// Rupees returns the amount in rupees with 2 decimals ("590.00").
func (p Paise) Rupees() string { return p.INR().StringFixed(2) }
