package razorpay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Webhook event names the gateway acts on.
const (
	EventPaymentCaptured = "payment.captured"
	EventOrderPaid       = "order.paid"
	EventPaymentFailed   = "payment.failed"
	EventRefundProcessed = "refund.processed"
)

// Payment states.
const (
	PaymentAuthorized = "authorized"
	PaymentCaptured   = "captured"
	PaymentFailed     = "failed"
)

// maxWebhookBytes bounds the body ParseWebhook accepts; Razorpay's payloads
// are a few KiB.
const maxWebhookBytes = 1 << 20

// Payment is Razorpay's payment entity (the fields the gateway uses; others
// are ignored).
type Payment struct {
	ID        string `json:"id"`
	Entity    string `json:"entity"` // "payment"
	Amount    Paise  `json:"amount"`
	Currency  string `json:"currency"`
	Status    string `json:"status"`
	OrderID   string `json:"order_id"`
	Method    string `json:"method,omitempty"`
	Captured  bool   `json:"captured"`
	Email     string `json:"email,omitempty"`
	Contact   string `json:"contact,omitempty"`
	CreatedAt int64  `json:"created_at"`
	// CustomerID and TokenID are set on a payment that saved (or used) a
	// recurring token.
	CustomerID string `json:"customer_id,omitempty"`
	TokenID    string `json:"token_id,omitempty"`
	// AmountRefunded is the part refunded so far.
	AmountRefunded Paise `json:"amount_refunded,omitempty"`
	// ErrorCode, ErrorReason and ErrorDescription explain a failed payment.
	ErrorCode        string `json:"error_code,omitempty"`
	ErrorReason      string `json:"error_reason,omitempty"`
	ErrorDescription string `json:"error_description,omitempty"`
}

// Refund is Razorpay's refund entity.
type Refund struct {
	ID        string `json:"id"`
	Entity    string `json:"entity"` // "refund"
	Amount    Paise  `json:"amount"`
	Currency  string `json:"currency"`
	PaymentID string `json:"payment_id"`
	Status    string `json:"status"`
	CreatedAt int64  `json:"created_at"`
}

// Matches checks that p pays order: same order id, amount and currency. A
// server must check this before crediting, whatever the signature says.
func (p Payment) Matches(order Order) error {
	if p.OrderID != order.ID || p.Amount != order.Amount || p.Currency != order.Currency {
		return fmt.Errorf("%w: payment %s of %d %s for %s, order %s of %d %s", ErrOrderMismatch,
			p.ID, p.Amount, p.Currency, p.OrderID, order.ID, order.Amount, order.Currency)
	}
	return nil
}

// WebhookEvent is the body of a Razorpay webhook request:
//
//	{"entity":"event","account_id":"acc_…","event":"payment.captured",
//	 "contains":["payment"],"payload":{"payment":{"entity":{…}}},
//	 "created_at":1567674606}
type WebhookEvent struct {
	Entity    string         `json:"entity"` // "event"
	AccountID string         `json:"account_id,omitempty"`
	Event     string         `json:"event"`
	Contains  []string       `json:"contains"`
	Payload   WebhookPayload `json:"payload"`
	CreatedAt int64          `json:"created_at"`
}

// WebhookPayload holds the entities an event carries.
type WebhookPayload struct {
	Payment *PaymentWrapper `json:"payment,omitempty"`
	Order   *OrderWrapper   `json:"order,omitempty"`
	Refund  *RefundWrapper  `json:"refund,omitempty"`
}

// RefundWrapper is the {"entity": {...}} wrapper of a payload refund.
type RefundWrapper struct {
	Entity Refund `json:"entity"`
}

// PaymentWrapper is the {"entity": {...}} wrapper of a payload payment.
type PaymentWrapper struct {
	Entity Payment `json:"entity"`
}

// OrderWrapper is the {"entity": {...}} wrapper of a payload order.
type OrderWrapper struct {
	Entity Order `json:"entity"`
}

// ParseWebhook decodes a webhook body (verify its signature first with
// VerifyWebhookSignature). It fails with ErrMalformedWebhook unless the
// body is an event object with an event name, and, for payment.captured
// and order.paid, a payment entity with an id, an order id, a positive
// amount, a currency and status "captured". Other events are returned
// without those checks; callers acknowledge and ignore them.
func ParseWebhook(rawBody []byte) (WebhookEvent, error) {
	if len(rawBody) > maxWebhookBytes {
		return WebhookEvent{}, fmt.Errorf("%w: body too large", ErrMalformedWebhook)
	}
	var e WebhookEvent
	if err := json.Unmarshal(rawBody, &e); err != nil {
		return WebhookEvent{}, fmt.Errorf("%w: %v", ErrMalformedWebhook, err)
	}
	if t := bytes.TrimSpace(rawBody); len(t) == 0 || t[0] != '{' {
		return WebhookEvent{}, fmt.Errorf("%w: not an object", ErrMalformedWebhook)
	}
	if e.Entity != "event" || e.Event == "" {
		return WebhookEvent{}, fmt.Errorf("%w: not an event", ErrMalformedWebhook)
	}
	switch e.Event {
	case EventPaymentCaptured, EventOrderPaid:
		if e.Payload.Payment == nil {
			return WebhookEvent{}, fmt.Errorf("%w: %s without a payment", ErrMalformedWebhook, e.Event)
		}
		p := e.Payload.Payment.Entity
		switch {
		case p.ID == "" || p.OrderID == "":
			return WebhookEvent{}, fmt.Errorf("%w: payment without id or order_id", ErrMalformedWebhook)
		case p.Amount <= 0 || p.Currency == "":
			return WebhookEvent{}, fmt.Errorf("%w: payment without amount or currency", ErrMalformedWebhook)
		case p.Status != PaymentCaptured:
			return WebhookEvent{}, fmt.Errorf("%w: %s payment in status %q", ErrMalformedWebhook, e.Event, truncate(p.Status, 32))
		}
	case EventPaymentFailed:
		if e.Payload.Payment == nil {
			return WebhookEvent{}, fmt.Errorf("%w: %s without a payment", ErrMalformedWebhook, e.Event)
		}
		p := e.Payload.Payment.Entity
		if p.ID == "" || p.OrderID == "" || p.Status != PaymentFailed {
			return WebhookEvent{}, fmt.Errorf("%w: payment.failed needs a failed payment with id and order_id", ErrMalformedWebhook)
		}
	case EventRefundProcessed:
		if e.Payload.Refund == nil || e.Payload.Payment == nil {
			return WebhookEvent{}, fmt.Errorf("%w: %s without a refund and its payment", ErrMalformedWebhook, e.Event)
		}
		rf, p := e.Payload.Refund.Entity, e.Payload.Payment.Entity
		switch {
		case rf.ID == "" || rf.PaymentID == "" || rf.PaymentID != p.ID || p.OrderID == "":
			return WebhookEvent{}, fmt.Errorf("%w: refund without id, or not of its payment", ErrMalformedWebhook)
		case rf.Amount <= 0 || rf.Currency == "":
			return WebhookEvent{}, fmt.Errorf("%w: refund without amount or currency", ErrMalformedWebhook)
		}
	}
	return e, nil
}

// CapturedPayment returns the captured payment of a payment.captured or
// order.paid event; ok is false for other events.
func (e WebhookEvent) CapturedPayment() (p Payment, ok bool) {
	if (e.Event != EventPaymentCaptured && e.Event != EventOrderPaid) || e.Payload.Payment == nil {
		return Payment{}, false
	}
	return e.Payload.Payment.Entity, true
}

// FailedPayment returns the payment of a payment.failed event.
func (e WebhookEvent) FailedPayment() (p Payment, ok bool) {
	if e.Event != EventPaymentFailed || e.Payload.Payment == nil {
		return Payment{}, false
	}
	return e.Payload.Payment.Entity, true
}

// ProcessedRefund returns the refund and refunded payment of a
// refund.processed event.
func (e WebhookEvent) ProcessedRefund() (r Refund, p Payment, ok bool) {
	if e.Event != EventRefundProcessed || e.Payload.Refund == nil || e.Payload.Payment == nil {
		return Refund{}, Payment{}, false
	}
	return e.Payload.Refund.Entity, e.Payload.Payment.Entity, true
}

// NewEvent returns an event named name carrying p (and rf unless nil), as
// Razorpay would send it.
func NewEvent(name string, p Payment, rf *Refund, at time.Time) WebhookEvent {
	ev := WebhookEvent{Entity: "event", Event: name, Contains: []string{"payment"},
		Payload: WebhookPayload{Payment: &PaymentWrapper{Entity: p}}, CreatedAt: at.Unix()}
	if rf != nil {
		ev.Contains = []string{"refund", "payment"}
		ev.Payload.Refund = &RefundWrapper{Entity: *rf}
	}
	return ev
}

// NewPaymentCapturedEvent returns the payment.captured event Razorpay would
// send for p; marshal it with encoding/json and sign the bytes with
// SignWebhook to simulate a webhook delivery.
func NewPaymentCapturedEvent(p Payment, at time.Time) WebhookEvent {
	return WebhookEvent{
		Entity: "event", Event: EventPaymentCaptured, Contains: []string{"payment"},
		Payload: WebhookPayload{Payment: &PaymentWrapper{Entity: p}}, CreatedAt: at.Unix(),
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
