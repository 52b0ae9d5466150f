package credits_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/internal/storewrap"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// leased is a store that asks for leased holds, as pgstore does with
// Options.LeasedHolds; every Service over it is an instance of its own.
// failAfter, when set, makes the next settle of a hold commit and then
// report a failure, as a connection lost during COMMIT would.
type leased struct {
	storewrap.Base
	failAfter atomic.Bool
}

func (l *leased) LeasedHolds() bool { return true }

var errLostCommit = errors.New("connection lost during commit")

func (l *leased) ApplySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	err := l.Store.ApplySpends(ctx, now, reqs, res)
	if err == nil && len(reqs) == 1 && reqs[0].Kind == credits.SpendSettle && reqs[0].Lease != "" && l.failAfter.CompareAndSwap(true, false) {
		return errLostCommit
	}
	return err
}

func newLeased(t *testing.T, clk *fakeclock.Clock, n int) ([]*credits.Service, *leased) {
	t.Helper()
	st := &leased{Base: storewrap.Base{Store: store.Driver(memstore.New())}}
	o := &credits.Options{Logger: quiet()}
	if clk != nil {
		o.Now = clk.Now
	}
	svcs := make([]*credits.Service, n)
	for i := range svcs {
		svc, err := credits.NewService(st, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = svc.Close(context.Background()) })
		svcs[i] = svc
	}
	return svcs, st
}

func fund(t *testing.T, svc *credits.Service, acct string, amt int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := svc.Open(ctx, acct, credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Purchase(ctx, credits.CreditParams{AccountID: acct, Amount: credits.AmountFromInt(amt), IdempotencyKey: "fund-" + acct}); err != nil {
		t.Fatal(err)
	}
}

var freshKeys atomic.Int64

func freshReserve(acct, key string, amt int64) credits.ReserveParams {
	return credits.ReserveParams{
		AccountID: acct, Amount: credits.AmountFromInt(amt), TTL: time.Minute, KeyID: key, FreshKey: true,
		IdempotencyKey: fmt.Sprintf("req-%d", freshKeys.Add(1)),
	}
}

// Three instances leasing from one account, and a fourth writing every
// hold, race for its funds: no request may be admitted beyond them, every
// charge is in the balance exactly once, and once the instances close
// nothing stays held.
func TestLeasedHoldsNeverOverspendAcrossInstances(t *testing.T) {
	ctx := context.Background()
	svcs, st := newLeased(t, nil, 3)
	plain, err := credits.NewService(st.Store, &credits.Options{Logger: quiet()}) // stored holds
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plain.Close(ctx) })
	const funds = 5000
	fund(t, svcs[0], "acct", funds)
	var charged, admitted, refused atomic.Int64
	var wg sync.WaitGroup
	all := append(svcs[:3:3], plain)
	for i, svc := range all {
		for g := range 16 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(i), uint64(g)))
				for range 120 {
					amt := 1 + rng.Int64N(40)
					p := freshReserve("acct", fmt.Sprintf("key-%d", rng.IntN(3)), amt)
					h, err := svc.Reserve(ctx, p)
					if err != nil {
						if !errors.Is(err, credits.ErrInsufficientFunds) {
							t.Error(err)
							return
						}
						refused.Add(1)
						continue
					}
					admitted.Add(1)
					if rng.IntN(4) == 0 {
						if _, err := svc.Release(ctx, h.ID); err != nil {
							t.Error(err)
						}
						continue
					}
					actual := rng.Int64N(amt + 1) // never above the hold
					st, err := svc.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(actual)})
					if err != nil {
						t.Error(err)
						return
					}
					if st.Shortfall.IsPositive() {
						t.Errorf("settle within the hold fell short: %+v", st)
					}
					charged.Add(actual)
				}
			})
		}
	}
	wg.Wait()
	if refused.Load() == 0 {
		t.Fatal("the account never ran out: the test proves nothing")
	}
	for _, svc := range svcs {
		if err := svc.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	a, err := plain.Account(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Held.IsZero() {
		t.Errorf("held %s after every instance closed, want 0", a.Held)
	}
	if want := credits.AmountFromInt(funds - charged.Load()); !a.Balance.Equal(want) {
		t.Errorf("balance %s, want %s (charged %d)", a.Balance, want, charged.Load())
	}
	if a.Balance.IsNegative() {
		t.Errorf("overspent: balance %s", a.Balance)
	}
	t.Logf("admitted %d, refused %d, charged %d of %d", admitted.Load(), refused.Load(), charged.Load(), funds)
}

// A lease is a stored hold: other instances see its funds as held, a
// settle takes only the charge out of it, and Close releases it.
func TestLeaseIsAStoredHold(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	svcs, _ := newLeased(t, clk, 2)
	a, b := svcs[0], svcs[1]
	fund(t, a, "acct", 100)
	h, err := a.Reserve(ctx, freshReserve("acct", "k", 10))
	if err != nil {
		t.Fatal(err)
	}
	acct, err := b.Account(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	if acct.Held.Cmp(credits.AmountFromInt(10)) < 0 {
		t.Fatalf("another instance sees %s held, want at least the hold's 10", acct.Held)
	}
	leased := acct.Held
	// b cannot take what a leased.
	if _, err := b.Reserve(ctx, freshReserve("acct", "k", 100)); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("reserve of all funds beside a lease: %v, want ErrInsufficientFunds", err)
	}
	s, err := a.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(4)})
	if err != nil || !s.Charged.Equal(credits.AmountFromInt(4)) {
		t.Fatalf("settle: %+v, %v", s, err)
	}
	acct, _ = b.Account(ctx, "acct")
	if want := leased.Sub(credits.AmountFromInt(4)); !acct.Held.Equal(want) || !acct.Balance.Equal(credits.AmountFromInt(96)) {
		t.Fatalf("after the settle: held %s balance %s, want held %s balance 96", acct.Held, acct.Balance, want)
	}
	// The settled hold is readable from the store, on any instance.
	if got, err := b.Hold(ctx, h.ID); err != nil || got.State != credits.HoldSettled {
		t.Fatalf("settled hold on another instance: %+v, %v", got, err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	acct, _ = b.Account(ctx, "acct")
	if !acct.Held.IsZero() {
		t.Fatalf("held %s after the leasing instance closed", acct.Held)
	}
}

// An instance that dies keeps its leases until they expire; the expiry
// sweep then frees them, and a settle of a hold whose lease is gone still
// charges the delivered work, exactly once.
func TestLeaseOfADeadInstanceExpires(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	svcs, _ := newLeased(t, clk, 2)
	dead, live := svcs[0], svcs[1]
	fund(t, live, "acct", 100)
	h, err := dead.Reserve(ctx, freshReserve("acct", "", 10))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.Reserve(ctx, freshReserve("acct", "", 100)); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("reserve beside a lease: %v", err)
	}
	clk.Advance(2 * time.Minute)
	if _, err := live.ExpireDue(ctx); err != nil {
		t.Fatal(err)
	}
	acct, _ := live.Account(ctx, "acct")
	if !acct.Held.IsZero() {
		t.Fatalf("held %s after the lease's deadline", acct.Held)
	}
	// The dead instance's request outlived its hold: it expired in memory
	// too, so its settle fails like a stored hold's would.
	if _, err := dead.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(5)}); !errors.Is(err, credits.ErrHoldExpired) {
		t.Fatalf("settle past the hold's deadline: %v, want ErrHoldExpired", err)
	}
	if _, err := live.Reserve(ctx, freshReserve("acct", "", 100)); err != nil {
		t.Fatalf("all funds after the lease expired: %v", err)
	}
}

// A key limit set after a lease was made for the key invalidates the lease
// at its next settle: the instance then leases again under the limit, so
// the limit holds from then on for every instance.
func TestLeaseMeetsANewKeyLimit(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	svcs, _ := newLeased(t, clk, 2)
	a, b := svcs[0], svcs[1]
	fund(t, a, "acct", 1000)
	h1, err := a.Reserve(ctx, freshReserve("acct", "k", 10))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.SetKeyLimit(ctx, "acct", "k", credits.AmountFromInt(30), credits.PeriodLifetime); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Settle(ctx, credits.SettleParams{HoldID: h1.ID, Actual: credits.AmountFromInt(10)}); err != nil {
		t.Fatal(err)
	}
	// 10 spent; 20 left under the limit, whatever the instance leased before.
	var got int64
	for range 5 {
		if _, err := a.Reserve(ctx, freshReserve("acct", "k", 10)); err == nil {
			got += 10
		} else {
			var kb *credits.KeyBudgetError
			if !errors.As(err, &kb) {
				t.Fatalf("reserve past the key limit: %v, want a KeyBudgetError", err)
			}
		}
	}
	if got != 20 {
		t.Fatalf("admitted %d under the key's remaining 20", got)
	}
}

// A settle whose commit is not known to have happened (the connection died
// during COMMIT) leaves its hold active; the lease it drew from is retired,
// and settling again replays the first settlement: charged once.
func TestLeasedSettleWithUnknownOutcome(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	svcs, st := newLeased(t, clk, 1)
	a := svcs[0]
	fund(t, a, "acct", 100)
	h, err := a.Reserve(ctx, freshReserve("acct", "", 10))
	if err != nil {
		t.Fatal(err)
	}
	st.failAfter.Store(true)
	p := credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(7)}
	if _, err := a.Settle(ctx, p); !errors.Is(err, errLostCommit) {
		t.Fatalf("settle: %v, want the lost commit", err)
	}
	s, err := a.Settle(ctx, p)
	if err != nil || !s.Charged.Equal(credits.AmountFromInt(7)) {
		t.Fatalf("settle again: %+v, %v", s, err)
	}
	if _, err := a.Reserve(ctx, freshReserve("acct", "", 10)); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	plain, _ := credits.NewService(st.Store, &credits.Options{Now: clk.Now, Logger: quiet()})
	acct, err := plain.Account(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	if !acct.Balance.Equal(credits.AmountFromInt(93)) || !acct.Held.IsZero() {
		t.Fatalf("balance %s held %s, want 93 and 0", acct.Balance, acct.Held)
	}
}

// A lease nothing draws from is released within a few seconds, without
// Close: an idle instance does not keep funds from the others.
func TestIdleLeaseIsReleased(t *testing.T) {
	ctx := context.Background()
	svcs, _ := newLeased(t, nil, 2)
	a, b := svcs[0], svcs[1]
	fund(t, a, "acct", 100)
	for range 20 { // growths and draws, as under load
		h, err := a.Reserve(ctx, freshReserve("acct", "k", 3))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(1)}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		acct, err := b.Account(ctx, "acct")
		if err != nil {
			t.Fatal(err)
		}
		if acct.Held.IsZero() {
			if !acct.Balance.Equal(credits.AmountFromInt(80)) {
				t.Fatalf("balance %s, want 80", acct.Balance)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %s held 10 s after the last request", acct.Held)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
