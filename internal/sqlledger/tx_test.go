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
	stored      map[string]credits.Hold
	readsAll    bool // Prefetch says HoldsRead
	carriedRead bool // Prefetch says CarriedRead
	holdReads   int
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
	if c.carriedRead {
		f.CarriedRead()
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

// A database that locks a batch's accounts before it reads the batch's
// holds (PostgreSQL) says CarriedRead: a hold a settle carries (a process
// or leased hold, stored only by a settle of it) that the read did not find
// is not stored, and no statement asks again; a hold no settle carries is
// still looked up.
func TestCarriedHoldsNeedNoPointRead(t *testing.T) {
	ctx := context.Background()
	held := credits.Hold{ID: "hold_leased", AccountID: "a", State: credits.HoldActive}
	reqs := []credits.SpendRequest{
		{Kind: credits.SpendSettle, HoldID: "hold_leased", Held: &held, Lease: "hold_lease"},
		{Kind: credits.SpendRelease, HoldID: "hold_gone"},
	}
	for _, carried := range []bool{true, false} {
		c := &holdConn{stored: map[string]credits.Hold{}, carriedRead: carried}
		tx := NewTx(c, time.Unix(1000, 0), false)
		var f Fetch
		f.spendTargets(reqs)
		if len(f.Accounts) != 1 || f.Accounts[0] != "a" || len(f.Holds) != 3 {
			t.Fatalf("targets: accounts %v holds %v, want the carried hold's account and hold, lease and release", f.Accounts, f.Holds)
		}
		if err := tx.prefetch(ctx, &f); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"hold_leased", "hold_gone"} {
			if _, err := tx.Hold(ctx, id); !errors.Is(err, credits.ErrHoldNotFound) {
				t.Fatalf("carried=%v: %s: %v, want ErrHoldNotFound", carried, id, err)
			}
		}
		want := 1 // hold_gone: no settle carries it
		if !carried {
			want = 2
		}
		if c.holdReads != want {
			t.Fatalf("carried=%v: %d point reads of holds, want %d", carried, c.holdReads, want)
		}
	}
}
