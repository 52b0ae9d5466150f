package credits_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/fakeclock"
)

func reserveTTL(acct, key string, amt int64, ttl time.Duration) credits.ReserveParams {
	p := freshReserve(acct, key, amt)
	p.TTL = ttl
	return p
}

func plainOver(t *testing.T, st *leased, clk *fakeclock.Clock) *credits.Service {
	t.Helper()
	plain, err := credits.NewService(st.Store, &credits.Options{Now: clk.Now, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plain.Close(context.Background()) })
	return plain
}

// A lease ends at the account's next grant expiry: funds that expire
// cannot stay drawable in an instance's memory, so once the grant expired
// no request is admitted against it (adversarial review of the leases).
func TestLeaseEndsAtGrantExpiry(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	svcs, st := newLeased(t, clk, 1)
	a := svcs[0]
	plain := plainOver(t, st, clk)
	if _, err := plain.Open(ctx, "acct", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Grant(ctx, credits.CreditParams{AccountID: "acct", Amount: credits.AmountFromInt(100),
		ExpiresAt: epoch.Add(20 * time.Second), IdempotencyKey: "trial"}); err != nil {
		t.Fatal(err)
	}
	h, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(10)}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(21 * time.Second) // the grant's 90 left expires
	if _, err := plain.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second)); err == nil {
		t.Fatal("a stored reserve after the expiry was admitted")
	}
	admitted := 0
	for range 7 {
		h, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second))
		if err != nil {
			continue
		}
		admitted++
		if _, err := a.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(10)}); err != nil {
			t.Fatal(err)
		}
	}
	acct, err := plain.Account(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	if admitted > 0 || acct.Balance.IsNegative() {
		t.Fatalf("after the grant expired the leased instance admitted %d requests; balance %s (overdraft 0)", admitted, acct.Balance)
	}
}

// Lowering the overdraft on the leasing instance retires its leases: the
// requests after it are checked against the new policy (another
// instance's leases are retired at their next settle, which finds the
// account overcommitted).
func TestLeaseMeetsLoweredOverdraft(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	svcs, st := newLeased(t, clk, 1)
	a := svcs[0]
	plain := plainOver(t, st, clk)
	if _, err := a.Open(ctx, "acct", credits.Policy{Overdraft: credits.AmountFromInt(100)}); err != nil {
		t.Fatal(err)
	}
	h, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Release(ctx, h.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetPolicy(ctx, "acct", credits.Policy{}); err != nil { // no overdraft any more
		t.Fatal(err)
	}
	admitted := 0
	for range 8 {
		h, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second))
		if err != nil {
			continue
		}
		admitted++
		if _, err := a.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(10)}); err != nil {
			t.Fatal(err)
		}
	}
	acct, _ := plain.Account(ctx, "acct")
	if admitted > 0 || acct.Balance.IsNegative() {
		t.Fatalf("overdraft 0, yet %d requests admitted after SetPolicy; balance %s", admitted, acct.Balance)
	}
}

// A settle whose lease was made before its key's limit still takes its
// charge out of the lease (so a write-off charges it in full: up to the
// hold a settle always succeeds) and retires the lease.
func TestLeaseLostToKeyLimitStillPays(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	svcs, st := newLeased(t, clk, 1)
	a := svcs[0]
	plain := plainOver(t, st, clk)
	fund(t, a, "acct", 80)
	h, err := a.Reserve(ctx, reserveTTL("acct", "k", 10, 5*time.Second)) // lease of 80: all the funds
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.SetKeyLimit(ctx, "acct", "k", credits.AmountFromInt(1000), credits.PeriodLifetime); err != nil {
		t.Fatal(err)
	}
	s, err := a.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(10), Overrun: credits.OverrunWriteOff})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Charged.Equal(credits.AmountFromInt(10)) {
		t.Fatalf("settle of 10 within a hold of 10: charged %s, shortfall %s (a free request)", s.Charged, s.Shortfall)
	}
}

// A lease of a key with a daily limit ends at the key's period end: the
// draws after midnight come from a lease counted in the new day, which
// other instances see, so the key never spends more than its limit in a
// day.
func TestLeaseEndsAtKeyPeriodEnd(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 3, 1, 23, 59, 50, 0, time.UTC)
	clk := fakeclock.New(start)
	svcs, st := newLeased(t, clk, 1)
	a := svcs[0]
	plain := plainOver(t, st, clk)
	fund(t, a, "acct", 1000)
	if _, err := plain.SetKeyLimit(ctx, "acct", "k", credits.AmountFromInt(100), credits.PeriodDay); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Reserve(ctx, reserveTTL("acct", "k", 10, 30*time.Second)); err != nil { // lease of 80
		t.Fatal(err)
	}
	clk.Advance(15 * time.Second) // a new day: the key's counters restart
	var hs []credits.Hold
	for range 7 {
		h, err := a.Reserve(ctx, reserveTTL("acct", "k", 10, 5*time.Second))
		if err != nil {
			continue
		}
		hs = append(hs, h)
	}
	// The whole new day's limit, which a's new lease now shares.
	hb, err := plain.Reserve(ctx, reserveTTL("acct", "k", 100, 5*time.Second))
	var kb *credits.KeyBudgetError
	if err != nil && !errors.As(err, &kb) {
		t.Fatal(err)
	}
	for _, h := range hs {
		if _, err := a.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(10)}); err != nil {
			t.Fatal(err)
		}
	}
	if err == nil {
		if _, err := plain.Settle(ctx, credits.SettleParams{HoldID: hb.ID, Actual: credits.AmountFromInt(100)}); err != nil {
			t.Fatal(err)
		}
	}
	ks, _, err := plain.KeySpend(ctx, "acct", "k")
	if err != nil {
		t.Fatal(err)
	}
	if ks.Spent.Cmp(ks.Limit) > 0 {
		t.Fatalf("key spent %s in one day under a daily limit of %s", ks.Spent, ks.Limit)
	}
}

// The spare room of the instance's own lease pays for a settle above its
// hold under OverrunWriteOff, as the same funds would with stored holds:
// nothing is written off while the instance itself set the funds aside.
// (A direct debit does not draw on the lease: see DESIGN.md.)
func TestWriteOffUsesOwnLeaseRoom(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	svcs, _ := newLeased(t, clk, 1)
	a := svcs[0]
	fund(t, a, "acct", 80)
	h, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second)) // lease of 80
	if err != nil {
		t.Fatal(err)
	}
	s, err := a.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(15), Overrun: credits.OverrunWriteOff})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Charged.Equal(credits.AmountFromInt(15)) {
		t.Fatalf("balance 80, nothing else in flight: settle of 15 charged %s (shortfall %s)", s.Charged, s.Shortfall)
	}
}

// A later deadline for a hold whose lease was retired (an unknown settle
// outcome, a rotation) needs no new funds: the hold stays on its lease.
func TestExtendOfHoldOnRetiredLease(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	svcs, st := newLeased(t, clk, 1)
	a := svcs[0]
	fund(t, a, "acct", 80)
	h1, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 20*time.Second)) // lease of 80
	if err != nil {
		t.Fatal(err)
	}
	h2, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	st.failAfter.Store(true) // h1's settle commits, reported lost: the lease is retired
	if _, err := a.Settle(ctx, credits.SettleParams{HoldID: h1.ID, Actual: credits.AmountFromInt(5)}); err == nil {
		t.Fatal("want the lost commit")
	}
	if _, err := a.Extend(ctx, credits.ExtendParams{HoldID: h2.ID, Amount: h2.Amount, TTL: 30 * time.Second}); err != nil {
		t.Fatalf("moving the deadline of a funded hold: %v", err)
	}
}
