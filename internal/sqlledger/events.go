package sqlledger

import (
	"context"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits/ledger"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/id"
	"github.com/keyledger/keyledger/internal/outbox"
)

// ThresholdConn is an optional capability of a Conn: it reads an account's
// low-balance thresholds inside the transaction (outbox.FormatThresholds'
// text; "" if none). A Conn without it writes no ledger events.
type ThresholdConn interface {
	AlertThresholds(ctx context.Context, acct string) (string, error)
}

var _ ledger.Observer = (*Tx)(nil)

// Moved implements ledger.Observer: it stages the events of a movement
// (outbox.Crossings) in t.Events, which the Conn's Flush writes with the
// entries. Thresholds are read once per account and transaction, and
// only for a movement that lowered the balance.
func (t *Tx) Moved(ctx context.Context, m ledger.Movement) error {
	tc, ok := t.conn.(ThresholdConn)
	if !ok {
		return nil
	}
	var low []decimal.Decimal
	if m.Entry.Amount.IsNegative() {
		acct := m.State.ID
		l, seen := t.low[acct]
		if !seen {
			s, err := tc.AlertThresholds(ctx, acct)
			if err != nil {
				return err
			}
			l = outbox.ParseThresholds(s)
			if t.low == nil {
				t.low = make(map[string][]decimal.Decimal)
			}
			t.low[acct] = l
		}
		low = l
	}
	evs := outbox.Crossings(m, low, func() string {
		if t.ids == nil {
			t.ids = id.NewGenerator(nil)
		}
		return t.ids.New("evt_")
	})
	t.Events = append(t.Events, evs...)
	return nil
}

// StagedEvents returns the events staged for the flush.
func (t *Tx) StagedEvents() []events.Event { return t.Events }
