// Package events is keyledger's event vocabulary and the management of
// where events go: the Event a host hook or a webhook receives, its types,
// the Hook signature, and the Service that manages an account's webhook
// endpoints (secrets shown once, addresses checked against SSRF) and its
// low-balance alert thresholds.
//
// Events are written by the backends into a transactional outbox in the
// same transaction as the change that causes them (a ledger entry, a key
// change), and delivered at least once, in order per account, by the
// dispatcher the facade runs (keyledger.KeyLedger.Dispatcher). Every event
// has a stable ID: a receiver de-duplicates by it. Webhook requests are
// signed; receivers verify them with package events/webhook.
package events

import (
	"context"
	"encoding/json"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/errkind"
)

// Type names what happened.
type Type string

// Event types. Data fields are listed with each.
const (
	// BalanceLow: the balance fell below one of the account's low-balance
	// thresholds ({"threshold","balance","unit"}); once per crossing.
	BalanceLow Type = "balance.low"
	// BudgetThreshold: the month's spend reached 50, 80 or 100 % of the
	// account's monthly cap ({"scope":"account","percent","spent","cap"}),
	// or a key's spend this period reached that share of its spend limit
	// ({"scope":"key","key_id","percent","spent","limit","period",
	// "resets_at"} — no "resets_at" for a lifetime limit); once per
	// crossing per period.
	BudgetThreshold Type = "budget.threshold"
	// MonthlyCapReached: the month's spend reached the monthly cap
	// ({"spent","cap","month_ends"}).
	MonthlyCapReached Type = "monthly_cap.reached"
	// RechargeSucceeded and RechargeFailed: an auto-recharge's outcome
	// ({"amount","crossing","reference"} / {"amount","crossing","error"}).
	RechargeSucceeded Type = "recharge.succeeded"
	RechargeFailed    Type = "recharge.failed"
	// PaymentCredited: a purchase with a payment reference was credited
	// ({"amount","reference","entry_id","balance"}).
	PaymentCredited Type = "payment.credited"
	// Key events ({"key_id","name","hint","environment"}, plus
	// "expires_at" for KeyExpiring).
	KeyCreated  Type = "key.created"
	KeyRevoked  Type = "key.revoked"
	KeyRotated  Type = "key.rotated"
	KeyLeaked   Type = "key.leaked"
	KeyExpiring Type = "key.expiring"
)

// Types lists every event type, in the order above.
func Types() []Type {
	return []Type{BalanceLow, BudgetThreshold, MonthlyCapReached, RechargeSucceeded, RechargeFailed,
		PaymentCredited, KeyCreated, KeyRevoked, KeyRotated, KeyLeaked, KeyExpiring}
}

// Event is one thing that happened to an account. ID is stable across
// redeliveries; Data is a JSON object whose fields depend on Type. It is
// also the JSON body of a webhook request.
type Event struct {
	ID        string          `json:"id"`
	Type      Type            `json:"type"`
	AccountID string          `json:"account_id"`
	Time      time.Time       `json:"created_at"`
	Data      json.RawMessage `json:"data"`
}

// Hook is a host's receiver of events. An error makes the dispatcher retry
// the event later (with backoff); the next events of the same account wait.
type Hook func(ctx context.Context, e Event) error

// Endpoint is a webhook endpoint of an account. Secret is set only in the
// result of Service.CreateEndpoint (shown once) and in the store.
type Endpoint struct {
	ID          string    `json:"id"`
	AccountID   string    `json:"account_id"`
	URL         string    `json:"url"`
	Description string    `json:"description,omitempty"`
	Secret      string    `json:"secret,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// Delivery is one attempt to deliver an event to a target: a webhook
// endpoint (EndpointID) or the host hook (EndpointID "hook"). It holds no
// secret and no response body.
type Delivery struct {
	EventID    string        `json:"event_id"`
	AccountID  string        `json:"account_id"`
	EventType  Type          `json:"event_type"`
	EndpointID string        `json:"endpoint_id"`
	Attempt    int           `json:"attempt"`
	StatusCode int           `json:"status_code,omitempty"`
	Error      string        `json:"error,omitempty"`
	Duration   time.Duration `json:"duration_ns"`
	At         time.Time     `json:"at"`
}

// HookTarget is the EndpointID of deliveries to the host hook.
const HookTarget = "hook"

// Errors.
var (
	ErrNotFound         = errkind.New(errkind.NotFound, "events: webhook endpoint not found")
	ErrAccountNotFound  = errkind.New(errkind.NotFound, "events: account not found")
	ErrInvalidURL       = errkind.New(errkind.Invalid, "events: webhook URL must be https:// with a public host")
	ErrBlockedAddress   = errkind.New(errkind.Invalid, "events: webhook host resolves to a loopback, private, link-local or metadata address")
	ErrTooManyEndpoints = errkind.New(errkind.Invalid, "events: too many webhook endpoints (at most 10 per account)")
	ErrInvalidThreshold = errkind.New(errkind.Invalid, "events: alert thresholds must be at most 5 distinct positive amounts")
	ErrInvalidOptions   = errkind.New(errkind.Invalid, "events: invalid options")
)

// Store keeps endpoints, thresholds, the delivery log and appended events.
// Backends implement it (with the outbox the dispatcher drains).
type Store interface {
	// CreateWebhookEndpoint stores e (with its secret), or returns
	// ErrAccountNotFound, or ErrTooManyEndpoints if the account already
	// has max endpoints.
	CreateWebhookEndpoint(ctx context.Context, e Endpoint, max int) error
	// WebhookEndpoints returns the account's endpoints, secrets included,
	// oldest first.
	WebhookEndpoints(ctx context.Context, accountID string) ([]Endpoint, error)
	// DeleteWebhookEndpoint deletes an endpoint of the account, or returns
	// ErrNotFound (also for another account's endpoint).
	DeleteWebhookEndpoint(ctx context.Context, accountID, id string) error
	// SetAlertThresholds replaces the account's low-balance thresholds
	// (validated, highest first; none clears them).
	SetAlertThresholds(ctx context.Context, accountID string, low []decimal.Decimal) error
	// AlertThresholds returns them (none if never set).
	AlertThresholds(ctx context.Context, accountID string) ([]decimal.Decimal, error)
	// WebhookDeliveries returns the account's latest delivery attempts,
	// newest first, at most limit.
	WebhookDeliveries(ctx context.Context, accountID string, limit int) ([]Delivery, error)
	// AppendEvents writes events that have no other transaction to join
	// (an auto-recharge that failed) to the outbox in one transaction.
	AppendEvents(ctx context.Context, evs []Event) error
}
