// Package outbox is the backend side of keyledger's events: the Store a
// backend implements to keep the transactional outbox (claim, finish,
// prune, the expiring-key scan), the builders of the events backends write
// inside their transactions (key changes, ledger crossings), and the
// Dispatcher that delivers them at least once, in order per account, to
// the host hook and to signed HTTP webhooks.
package outbox

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
	"github.com/keyledger/keyledger/events"
)

// Pending is an event claimed for delivery.
type Pending struct {
	events.Event
	// Attempts made so far (before this one).
	Attempts int
	// Done lists the targets (endpoint IDs, events.HookTarget) that
	// already acknowledged the event.
	Done []string
	// Claim is the claim token: FinishEvent applies only while it holds.
	Claim string
}

// State of an outbox event.
const (
	StatePending   = 0
	StateDelivered = 1
	StateDead      = 2
)

// Result is the outcome of one delivery round of an event.
type Result struct {
	EventID string
	Claim   string
	// State is StatePending (retry at NextAt), StateDelivered or StateDead.
	State    int
	NextAt   time.Time
	Attempts int
	Done     []string
	// Log is the round's delivery attempts, one per target tried.
	Log []events.Delivery
}

// Store is the outbox a backend keeps, next to events.Store.
type Store interface {
	events.Store
	// ClaimEvents leases up to limit events that are due at now: each is
	// the oldest undelivered event of its account (so an account's events
	// are delivered in order), pending, with NextAt ≤ now and no live
	// lease. The lease lasts until leaseUntil under the token claim.
	// Several processes may claim at once (PostgreSQL: FOR UPDATE SKIP
	// LOCKED); no event is leased twice at the same time.
	ClaimEvents(ctx context.Context, now, leaseUntil time.Time, claim string, limit int) ([]Pending, error)
	// FinishEvent records a round's outcome and its delivery log and ends
	// the lease, if the event is still leased under r.Claim; otherwise
	// (the lease expired and another claim took it) it changes nothing.
	FinishEvent(ctx context.Context, now time.Time, r Result) error
	// PruneEvents deletes up to limit delivered or dead events finished
	// before before, and up to limit delivery log rows older than it, and
	// returns how many rows it deleted.
	PruneEvents(ctx context.Context, before time.Time, limit int) (int, error)
	// NoticeExpiringKeys writes a key.expiring event for up to limit
	// active keys that expire in (now, until] and have had no such event
	// for that expiry, and marks them, in one transaction. It returns how
	// many it wrote.
	NoticeExpiringKeys(ctx context.Context, now, until time.Time, limit int) (int, error)
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	return b
}

// KeyEvent returns the event of type t about key k at now.
func KeyEvent(eventID string, t events.Type, k apikey.APIKey, now time.Time) events.Event {
	d := map[string]any{"key_id": k.ID, "name": k.Name, "hint": k.Hint, "environment": k.Environment}
	if t == events.KeyExpiring {
		d["expires_at"] = k.ExpiresAt.UTC()
	}
	return events.Event{ID: eventID, Type: t, AccountID: k.AccountID, Time: now.UTC(), Data: mustJSON(d)}
}

// UpdateEvent returns the type of the event an update of a key from old
// to new writes: key.revoked or key.leaked (disabled), or "" for none.
func UpdateEvent(old, new apikey.APIKey) events.Type {
	switch {
	case old.Status != apikey.StatusRevoked && new.Status == apikey.StatusRevoked:
		return events.KeyRevoked
	case old.Status == apikey.StatusActive && new.Status == apikey.StatusDisabled:
		return events.KeyLeaked
	}
	return ""
}

// Crossings returns the events a ledger movement causes, given the
// account's low-balance thresholds (highest first): a balance.low per
// threshold the balance fell below, a budget.threshold per share of the
// monthly cap the month's spend reached (and monthly_cap.reached at 100 %)
// and per share of the charged key's spend limit its period's spend reached,
// and recharge.succeeded or payment.credited for a purchase. newID names
// each event.
func Crossings(m ledger.Movement, low []decimal.Decimal, newID func() string) []events.Event {
	var out []events.Event
	st := m.State
	e := m.Entry
	add := func(t events.Type, d map[string]any) {
		out = append(out, events.Event{ID: newID(), Type: t, AccountID: st.ID, Time: e.CreatedAt.UTC(), Data: mustJSON(d)})
	}
	before, after := m.BalanceBefore.Decimal(), st.Balance.Decimal()
	for _, t := range low {
		if before.Cmp(t) >= 0 && after.Cmp(t) < 0 {
			add(events.BalanceLow, map[string]any{"threshold": t.String(), "balance": st.Balance.String(), "unit": st.Unit, "entry_id": e.ID})
		}
	}
	if c := st.Policy.MonthlyCap; c.IsPositive() && st.MonthSpent.Cmp(m.SpentBefore) > 0 {
		for _, p := range crossed(m.SpentBefore, st.MonthSpent, c) {
			add(events.BudgetThreshold, map[string]any{"scope": "account", "percent": p, "spent": st.MonthSpent.String(), "cap": c.String(), "unit": st.Unit})
			if p == 100 {
				add(events.MonthlyCapReached, map[string]any{"spent": st.MonthSpent.String(), "cap": c.String(), "unit": st.Unit, "month_ends": st.MonthEnd.UTC()})
			}
		}
	}
	if ks, ok := st.KeySpend(m.KeyID); ok && ks.Limit.IsPositive() && ks.Spent.Cmp(m.KeySpentBefore) > 0 {
		for _, p := range crossed(m.KeySpentBefore, ks.Spent, ks.Limit) {
			d := map[string]any{"scope": "key", "key_id": ks.KeyID, "percent": p, "spent": ks.Spent.String(), "limit": ks.Limit.String(),
				"period": ks.Period, "unit": st.Unit}
			if !ks.ResetsAt.IsZero() {
				d["resets_at"] = ks.ResetsAt.UTC()
			}
			add(events.BudgetThreshold, d)
		}
	}
	if e.Type == credits.EntryPurchase && e.Amount.IsPositive() {
		if n, ok := strings.CutPrefix(e.IdempotencyKey, "auto-recharge:"); ok {
			crossing, _ := strconv.ParseInt(n, 10, 64)
			add(events.RechargeSucceeded, map[string]any{"amount": e.Amount.String(), "crossing": crossing, "reference": e.Reference, "entry_id": e.ID, "balance": st.Balance.String(), "unit": st.Unit})
		} else if e.Reference != "" {
			add(events.PaymentCredited, map[string]any{"amount": e.Amount.String(), "reference": e.Reference, "entry_id": e.ID, "balance": st.Balance.String(), "unit": st.Unit})
		}
	}
	return out
}

// budgetShares are the percentages of a budget that write a
// budget.threshold event when spend reaches them.
var budgetShares = [...]int64{50, 80, 100}

// crossed returns the shares of budget that spend moving from before to
// after reached.
func crossed(before, after, budget credits.Amount) []int64 {
	var out []int64
	b, a, total := before.Decimal(), after.Decimal(), budget.Decimal()
	for _, p := range budgetShares {
		lim := total.Mul(decimal.NewFromInt(p)).Div(decimal.NewFromInt(100))
		if b.Cmp(lim) < 0 && a.Cmp(lim) >= 0 {
			out = append(out, p)
		}
	}
	return out
}

// ParseThresholds decodes thresholds stored as a comma-separated list.
func ParseThresholds(s string) []decimal.Decimal {
	if s == "" {
		return nil
	}
	var out []decimal.Decimal
	for p := range strings.SplitSeq(s, ",") {
		if d, err := decimal.NewFromString(p); err == nil {
			out = append(out, d)
		}
	}
	return out
}

// FormatThresholds encodes thresholds for storage.
func FormatThresholds(ds []decimal.Decimal) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return strings.Join(s, ",")
}

// FormatDone and ParseDone encode the acknowledged targets of an event.
func FormatDone(d []string) string { return strings.Join(d, ",") }

// ParseDone is the inverse of FormatDone.
func ParseDone(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
