// Interleavings in which process holds once overspent (found by two
// adversarial reviews): a spend still in flight while the book moved on.
// Each test blocks one store call on a channel to hold the interleaving.

package sqlitestore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/storewrap"
	"github.com/keyledger/keyledger/store"
)

// Extend of a hold whose settle is in flight (idx -1 in the heap).
func TestReview2ExtendWhileSettling(t *testing.T) {
	ctx := context.Background()
	st := processHoldsStore(t)
	ss := &slowStore{Base: storewrap.Base{Store: store.Driver(st)}, entered: make(chan struct{}), release: make(chan struct{})}
	svc := inflightLedger(t, ss, nil, 100)
	inr := credits.AmountFromInt
	h1, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: inr(10), TTL: time.Minute, IdempotencyKey: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := svc.Settle(ctx, credits.SettleParams{HoldID: h1.ID, Actual: inr(5)})
		done <- err
	}()
	<-ss.entered
	// Extend waits for the settle in flight: here until its own deadline.
	ectx, ecancel := context.WithTimeout(ctx, 100*time.Millisecond)
	h, err := svc.Extend(ectx, credits.ExtendParams{HoldID: h1.ID, Amount: inr(50), TTL: 2 * time.Minute})
	ecancel()
	t.Logf("extend while settling: %+v %v", h.State, err)
	if err == nil {
		t.Fatalf("extend answered %s while a settle of the hold was in flight", h.State)
	}
	close(ss.release)
	t.Logf("settle: %v", <-done)
	if _, err := svc.Extend(ctx, credits.ExtendParams{HoldID: h1.ID, Amount: inr(50)}); !errors.Is(err, credits.ErrHoldSettled) {
		t.Fatalf("extend once the settle committed: %v, want ErrHoldSettled", err)
	}
	h, err = svc.Hold(ctx, h1.ID)
	t.Logf("hold after: state %v amount %s err %v", h.State, h.Amount, err)
	a, _ := svc.Account(ctx, "a")
	t.Logf("account: balance %s held %s", a.Balance, a.Held)
}

// A settle's overshoot (Actual above the hold) is not counted in the book
// while the settle is in flight: a reserve accepted meanwhile (a local-only
// check) takes the same funds. ov selects OverrunWriteOff or OverrunDebt.
func review2Overshoot(t *testing.T, ov credits.Overrun) {
	ctx := context.Background()
	st := processHoldsStore(t)
	ss := &slowStore{Base: storewrap.Base{Store: store.Driver(st)}, entered: make(chan struct{}), release: make(chan struct{})}
	svc := inflightLedger(t, ss, nil, 100)
	inr := credits.AmountFromInt
	h1, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: inr(10), TTL: time.Minute, IdempotencyKey: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		s, err := svc.Settle(ctx, credits.SettleParams{HoldID: h1.ID, Actual: inr(100), Overrun: ov})
		t.Logf("settle h1: charged %s shortfall %s", s.Charged, s.Shortfall)
		done <- err
	}()
	<-ss.entered
	h2, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: inr(90), TTL: time.Minute, IdempotencyKey: "r2"})
	t.Logf("reserve 90 while the settle commits: %v", err)
	close(ss.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err == nil {
		s, err := svc.Settle(ctx, credits.SettleParams{HoldID: h2.ID, Actual: inr(90)})
		t.Logf("settle h2: charged %s err %v", s.Charged, err)
	}
	a, _ := store.Driver(st).LedgerAccount(ctx, "a", time.Now())
	t.Logf("stored: balance %s held %s", a.Balance, a.Held)
	if a.Balance.IsNegative() {
		t.Fatalf("overspend: balance %s with no overdraft", a.Balance)
	}
}

func TestReview2OvershootWriteOff(t *testing.T) { review2Overshoot(t, credits.OverrunWriteOff) }
func TestReview2OvershootDebt(t *testing.T)     { review2Overshoot(t, credits.OverrunDebt) }
