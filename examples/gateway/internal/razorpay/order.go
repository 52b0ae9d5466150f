package razorpay

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// Razorpay limits on order fields (Orders API documentation).
const (
	maxReceiptLen = 40
	maxNotes      = 15
	maxNoteLen    = 256
	idBodyLen     = 14
)

// OrderStatus is the state of an order.
type OrderStatus string

// Order states, as Razorpay documents them.
const (
	OrderCreated   OrderStatus = "created"
	OrderAttempted OrderStatus = "attempted"
	OrderPaid      OrderStatus = "paid"
)

// OrderRequest is what the server sends to create an order.
type OrderRequest struct {
	Amount   Paise             `json:"amount"`
	Currency string            `json:"currency"` // "" means INR
	Receipt  string            `json:"receipt,omitempty"`
	Notes    map[string]string `json:"notes,omitempty"`
	// CustomerID ties the order to a customer, so Checkout can save a
	// recurring token (with recurring=1 in the Checkout options).
	CustomerID string `json:"customer_id,omitempty"`
	// PaymentCapture true has Razorpay capture payments automatically.
	PaymentCapture bool `json:"payment_capture,omitempty"`
}

// Validate checks the request against Razorpay's documented limits and
// MinAmount <= Amount <= max (max <= 0 means DefaultMaxAmount).
func (r OrderRequest) Validate(max Paise) error {
	if max <= 0 {
		max = DefaultMaxAmount
	}
	switch {
	case r.Amount < MinAmount:
		return fmt.Errorf("%w: %d paise", ErrAmountTooSmall, r.Amount)
	case r.Amount > max:
		return fmt.Errorf("%w: %d paise", ErrAmountTooLarge, r.Amount)
	case r.Currency != "" && r.Currency != Currency:
		return fmt.Errorf("%w: %q", ErrInvalidCurrency, r.Currency)
	case utf8.RuneCountInString(r.Receipt) > maxReceiptLen || !utf8.ValidString(r.Receipt):
		return ErrInvalidReceipt
	case len(r.Notes) > maxNotes:
		return ErrInvalidNotes
	}
	for k, v := range r.Notes {
		if utf8.RuneCountInString(k) > maxNoteLen || utf8.RuneCountInString(v) > maxNoteLen {
			return ErrInvalidNotes
		}
	}
	return nil
}

// Order is Razorpay's order entity.
type Order struct {
	ID         string            `json:"id"`
	Entity     string            `json:"entity"` // "order"
	Amount     Paise             `json:"amount"`
	AmountPaid Paise             `json:"amount_paid"`
	AmountDue  Paise             `json:"amount_due"`
	Currency   string            `json:"currency"`
	Receipt    string            `json:"receipt,omitempty"`
	Status     OrderStatus       `json:"status"`
	Attempts   int               `json:"attempts"`
	Notes      map[string]string `json:"notes,omitempty"`
	CreatedAt  int64             `json:"created_at"`
}

// CreatedAtTime returns CreatedAt as a time.
func (o Order) CreatedAtTime() time.Time { return time.Unix(o.CreatedAt, 0) }

// OrderCreator creates Razorpay orders. The Simulator implements it without
// network access; a client of the real Orders API (POST /v1/orders with
// Basic auth key_id:key_secret) would implement it for production.
type OrderCreator interface {
	// CreateOrder creates an order for req. It returns an error wrapping
	// ErrAmountTooSmall, ErrAmountTooLarge, ErrInvalidCurrency,
	// ErrInvalidReceipt or ErrInvalidNotes for a request Razorpay would
	// reject, and the context's error if ctx ends first.
	CreateOrder(ctx context.Context, req OrderRequest) (Order, error)
}

// CheckoutResponse is what Razorpay Checkout hands the browser after a
// successful payment, and what the browser posts to the server to verify.
type CheckoutResponse struct {
	PaymentID string `json:"razorpay_payment_id"`
	OrderID   string `json:"razorpay_order_id"`
	Signature string `json:"razorpay_signature"`
}

// SimulatorOptions configures a Simulator; nil means defaults.
type SimulatorOptions struct {
	// Now is the clock for created_at; default time.Now.
	Now func() time.Time
	// Rand is the source of ids; default crypto/rand.Reader.
	Rand io.Reader
	// MaxAmount bounds orders; default DefaultMaxAmount.
	MaxAmount Paise
}

// Simulator is an OrderCreator and a simulated Checkout: it creates orders
// with realistic ids and "pays" them, signing the checkout response with
// the key secret exactly as Razorpay does, so the server's verification
// path is the production one. It keeps no state and is safe for concurrent
// use if its Rand is.
type Simulator struct {
	keySecret string
	now       func() time.Time
	rand      io.Reader
	max       Paise
}

var _ OrderCreator = (*Simulator)(nil)

// NewSimulator returns a Simulator that signs with keySecret.
func NewSimulator(keySecret string, opts *SimulatorOptions) (*Simulator, error) {
	if keySecret == "" {
		return nil, ErrEmptySecret
	}
	var o SimulatorOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxAmount < 0 || (o.MaxAmount > 0 && o.MaxAmount < MinAmount) {
		return nil, fmt.Errorf("%w: MaxAmount %d paise", ErrInvalidOptions, o.MaxAmount)
	}
	s := &Simulator{keySecret: keySecret, now: o.Now, rand: o.Rand, max: o.MaxAmount}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	if s.max == 0 {
		s.max = DefaultMaxAmount
	}
	return s, nil
}

// CreateOrder validates req and returns a new order in state created.
func (s *Simulator) CreateOrder(ctx context.Context, req OrderRequest) (Order, error) {
	if err := ctx.Err(); err != nil {
		return Order{}, err
	}
	if err := req.Validate(s.max); err != nil {
		return Order{}, err
	}
	id, err := newID(s.rand, "order_")
	if err != nil {
		return Order{}, err
	}
	var notes map[string]string
	if len(req.Notes) > 0 {
		notes = make(map[string]string, len(req.Notes))
		for k, v := range req.Notes {
			notes[k] = v
		}
	}
	return Order{
		ID: id, Entity: "order", Amount: req.Amount, AmountDue: req.Amount, Currency: Currency,
		Receipt: req.Receipt, Status: OrderCreated, Notes: notes, CreatedAt: s.now().Unix(),
	}, nil
}

// Pay simulates a customer paying order in Checkout: it returns the signed
// checkout response and the captured payment that a payment.captured
// webhook would carry.
func (s *Simulator) Pay(ctx context.Context, order Order) (CheckoutResponse, Payment, error) {
	if err := ctx.Err(); err != nil {
		return CheckoutResponse{}, Payment{}, err
	}
	if !ValidOrderID(order.ID) || order.Amount < MinAmount || order.Currency != Currency {
		return CheckoutResponse{}, Payment{}, fmt.Errorf("%w: %q", ErrInvalidOrder, order.ID)
	}
	pid, err := newID(s.rand, "pay_")
	if err != nil {
		return CheckoutResponse{}, Payment{}, err
	}
	p := Payment{
		ID: pid, Entity: "payment", Amount: order.Amount, Currency: order.Currency, Status: PaymentCaptured,
		OrderID: order.ID, Method: "upi", Captured: true, CreatedAt: s.now().Unix(),
	}
	return CheckoutResponse{PaymentID: pid, OrderID: order.ID, Signature: SignPayment(order.ID, pid, s.keySecret)}, p, nil
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newID returns prefix + 14 uniformly random base62 characters, the shape
// of Razorpay ids (order_DaZlswtdcn9UNV).
func newID(r io.Reader, prefix string) (string, error) {
	out := make([]byte, len(prefix), len(prefix)+idBodyLen)
	copy(out, prefix)
	var buf [32]byte
	for len(out) < cap(out) {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return "", fmt.Errorf("razorpay: random id: %w", err)
		}
		for _, b := range buf {
			if b < 248 && len(out) < cap(out) { // 248 = 4*62: reject to stay uniform
				out = append(out, base62[b%62])
			}
		}
	}
	return string(out), nil
}

// ValidOrderID reports whether id has the shape of a Razorpay order id.
func ValidOrderID(id string) bool { return validID(id, "order_") }

// ValidPaymentID reports whether id has the shape of a Razorpay payment id.
func ValidPaymentID(id string) bool { return validID(id, "pay_") }

func validID(id, prefix string) bool {
	if len(id) != len(prefix)+idBodyLen || id[:len(prefix)] != prefix {
		return false
	}
	for i := len(prefix); i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}
