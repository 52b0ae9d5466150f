package sqlledger

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
	"github.com/keyledger/keyledger/usage"
	"github.com/keyledger/keyledger/usage/meter"
)

// holdConn is a Conn that stores holds only, counts the point reads of
// them, and prefetches them as a one-writer database does.
type holdConn struct {
	stored    map[string]credits.Hold
	readsAll  bool // Prefetch says HoldsRead
	holdReads int
}

func (c *holdConn) Account(context.Context, string) (Row, error) {
	return Row{}, credits.ErrUnknownAccount
}
func (c *holdConn) Lots(context.Context, string) ([]ledger.Lot, error) { return nil, nil }
func (c *holdConn) DueHolds(context.Context, string, int64) ([]credits.Hold, int64, error) {
	return nil, 0, nil
}
func (c *holdConn) Prefetch(_ context.Context, f *Fetch) error {
	for _, id := range f.Holds {
		if h, ok := c.stored[id]; ok {
			f.FoundHold(h)
		}
	}
	if c.readsAll {
		f.HoldsRead()
	}
	return nil
}
func (c *holdConn) Hold(_ context.Context, id string) (credits.Hold, error) {
	c.holdReads++
	if h, ok := c.stored[id]; ok {
		return h, nil
	}
	return credits.Hold{}, credits.ErrHoldNotFound
}
func (c *holdConn) Op(context.Context, OpKey) (ledger.OpRecord, bool, error) {
	return ledger.OpRecord{}, false, nil
}
func (c *holdConn) Entry(context.Context, string, int64) (credits.Entry, error) {
	return credits.Entry{}, errors.New("no entries")
}
func (c *holdConn) Meter(context.Context, OpKey) (meter.MeterOp, bool, error) {
	return meter.MeterOp{}, false, nil
}
func (c *holdConn) Record(context.Context, string, string, time.Time) (usage.Record, bool, error) {
	return usage.Record{}, false, nil
}
func (c *holdConn) RecordExists(context.Context, RecKey) (bool, error) { return false, nil }
func (c *holdConn) Flush(context.Context, *Tx) error                   { return nil }

// The settle of a process hold looks its hold up in the batch's prefetch:
// where the database says the prefetch read every hold, one it did not
// find is not stored, and no statement of its own asks again.
func TestPrefetchedHoldsNeedNoPointRead(t *testing.T) {
	ctx := context.Background()
	stored := credits.Hold{ID: "hold_stored", AccountID: "a", State: credits.HoldActive}
	for _, readsAll := range []bool{true, false} {
		c := &holdConn{stored: map[string]credits.Hold{stored.ID: stored}, readsAll: readsAll}
		tx := NewTx(c, time.Unix(1000, 0), false)
		if err := tx.prefetch(ctx, &Fetch{Holds: []string{"hold_stored", "hold_process"}}); err != nil {
			t.Fatal(err)
		}
		h, err := tx.Hold(ctx, "hold_stored")
		if err != nil || h.ID != stored.ID {
			t.Fatalf("readsAll=%v: stored hold: %+v, %v", readsAll, h, err)
		}
		if _, err := tx.Hold(ctx, "hold_process"); !errors.Is(err, credits.ErrHoldNotFound) {
			t.Fatalf("readsAll=%v: a hold the store does not have: %v, want ErrHoldNotFound", readsAll, err)
		}
		want := 0
		if !readsAll {
			want = 1 // without HoldsRead the Tx cannot know, and asks
		}
		if c.holdReads != want {
			t.Fatalf("readsAll=%v: %d point reads of holds, want %d", readsAll, c.holdReads, want)
		}
		// A hold the transaction itself stages is found, absent or not.
		tx.Stage.PutHold(credits.Hold{ID: "hold_process", AccountID: "a", State: credits.HoldSettled})
		if h, err := tx.Hold(ctx, "hold_process"); err != nil || h.State != credits.HoldSettled {
			t.Fatalf("readsAll=%v: staged hold: %+v, %v", readsAll, h, err)
		}
	}
}
