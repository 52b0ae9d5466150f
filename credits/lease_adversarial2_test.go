package credits_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/internal/storewrap"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// gated is a leasing store whose spends matching a predicate wait on a
// gate before they reach the store.
type gated struct {
	storewrap.Base
	mu     sync.Mutex
	blocks []*blk
	// failDebit: the next debit commits, then reports a lost commit.
	failDebit bool
}

type blk struct {
	match         func(credits.SpendRequest) bool
	arrived, gate chan struct{}
}

func (g *gated) LeasedHolds() bool { return true }

func (g *gated) block(match func(credits.SpendRequest) bool) (arrived, gate chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := &blk{match, make(chan struct{}), make(chan struct{})}
	g.blocks = append(g.blocks, b)
	return b.arrived, b.gate
}

func (g *gated) ApplySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	g.mu.Lock()
	var hit *blk
	for i, b := range g.blocks {
		if len(reqs) == 1 && b.match(reqs[0]) {
			hit = b
			g.blocks = append(g.blocks[:i:i], g.blocks[i+1:]...)
			break
		}
	}
	g.mu.Unlock()
	if hit != nil {
		close(hit.arrived)
		<-hit.gate
	}
	err := g.Base.Store.ApplySpends(ctx, now, reqs, res)
	g.mu.Lock()
	defer g.mu.Unlock()
	if err == nil && len(reqs) == 1 && reqs[0].Kind == credits.SpendDebit && g.failDebit {
		g.failDebit = false
		return errLostCommit
	}
	return err
}

func newGated(t *testing.T, clk *fakeclock.Clock) (*credits.Service, *credits.Service, *gated) {
	t.Helper()
	st := &gated{Base: storewrap.Base{Store: store.Driver(memstore.New())}}
	a, err := credits.NewService(st, &credits.Options{Now: clk.Now, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	plain, err := credits.NewService(st.Base.Store, &credits.Options{Now: clk.Now, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plain.Close(context.Background()) })
	return a, plain, st
}

func waitHeld(t *testing.T, plain *credits.Service, acct string, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ac, err := plain.Account(context.Background(), acct)
		if err != nil {
			t.Fatal(err)
		}
		if ac.Held.Equal(credits.AmountFromInt(want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("held %s, want %d", ac.Held, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A debit beside a lease that is released while the debit is in flight
// is checked against the funds as stored: it never spends the lease's room
// (second adversarial review of the leases).
func TestDebitBesideAReleasedLease(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	a, plain, st := newGated(t, clk)
	fund(t, a, "acct", 80)
	h, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second)) // lease of 80: all the funds
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Release(ctx, h.ID); err != nil {
		t.Fatal(err)
	}
	arrived, gate := st.block(func(r credits.SpendRequest) bool { return r.Kind == credits.SpendDebit })
	var derr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Twice the funds, charged before the work: must be refused.
		_, derr = a.Debit(ctx, credits.DebitParams{AccountID: "acct", Amount: credits.AmountFromInt(160), IdempotencyKey: "d1"})
	}()
	<-arrived
	if _, err := a.SetPolicy(ctx, "acct", credits.Policy{}); err != nil { // same policy: retires the lease
		t.Fatal(err)
	}
	waitHeld(t, plain, "acct", 0) // the lease's release committed
	close(gate)
	<-done
	ac, _ := plain.Account(ctx, "acct")
	if derr == nil || ac.Balance.IsNegative() {
		t.Fatalf("debit of 160 (Overrun 0) on a balance of 80, overdraft 0: err %v, balance %s", derr, ac.Balance)
	}
}

// A debit after the account's only grant and the lease it funded expired
// is refused: no lease room outlives the funds behind it.
func TestDebitBesideAnExpiredLease(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	a, plain, _ := newGated(t, clk)
	if _, err := plain.Open(ctx, "acct", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Grant(ctx, credits.CreditParams{AccountID: "acct", Amount: credits.AmountFromInt(100),
		ExpiresAt: epoch.Add(20 * time.Second), IdempotencyKey: "trial"}); err != nil {
		t.Fatal(err)
	}
	h, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second)) // lease of 80, capped at the expiry
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(10)}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(21 * time.Second) // grant (90 left) and lease expire together
	_, derr := a.Debit(ctx, credits.DebitParams{AccountID: "acct", Amount: credits.AmountFromInt(70), IdempotencyKey: "d1"})
	ac, _ := plain.Account(ctx, "acct")
	if derr == nil || ac.Balance.IsNegative() {
		t.Fatalf("debit of 70 (Overrun 0) after the only grant expired: err %v, balance %s", derr, ac.Balance)
	}
}

// A lease grows only on funds that outlive it: a grant another instance
// made, expiring before the lease does, does not fund the growth, and the
// lease's deadline never moves earlier than the instance drew holds until.
// Whatever the instance admits afterwards, the balance stays above the
// overdraft.
func TestLeaseGrowthIgnoresExpiringGrants(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	a, plain, _ := newGated(t, clk)
	fund(t, a, "acct", 1000)
	h1, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second)) // lease of 80, deadline +60 s
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Grant(ctx, credits.CreditParams{AccountID: "acct", Amount: credits.AmountFromInt(10),
		ExpiresAt: epoch.Add(20 * time.Second), IdempotencyKey: "promo"}); err != nil {
		t.Fatal(err)
	}
	h2, err := a.Reserve(ctx, reserveTTL("acct", "", 100, 5*time.Second)) // grows the lease: capped at +20 s
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{h1.ID, h2.ID} {
		if _, err := a.Release(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(21 * time.Second) // the stored lease expired
	ac, _ := plain.Account(ctx, "acct")
	t.Logf("after +21 s: balance %s held %s", ac.Balance, ac.Held)
	// Another instance spends everything that is free.
	if _, err := plain.Debit(ctx, credits.DebitParams{AccountID: "acct", Amount: ac.Available, IdempotencyKey: "all"}); err != nil {
		t.Fatal(err)
	}
	var hs []credits.Hold // requests in flight together
	for range 20 {
		h, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second))
		if err != nil {
			continue
		}
		hs = append(hs, h)
	}
	for _, h := range hs {
		if _, err := a.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(10)}); err != nil {
			t.Fatal(err)
		}
	}
	ac, _ = plain.Account(ctx, "acct")
	if ac.Balance.IsNegative() {
		t.Fatalf("overdraft 0: %d requests admitted; balance %s", len(hs), ac.Balance)
	}
}

// A settle that the lease paid but that reports it lost leaves the book's
// lease amount no higher than the store's: the instance's view of the
// account does not count the take as available twice.
func TestLeaseLostAfterItPaid(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	a, plain, _ := newGated(t, clk)
	fund(t, a, "acct", 80)
	h1, err := a.Reserve(ctx, reserveTTL("acct", "k", 10, 5*time.Second)) // lease of 80
	if err != nil {
		t.Fatal(err)
	}
	h2, err := a.Reserve(ctx, reserveTTL("acct", "k", 10, 5*time.Second)) // keeps the lease in use
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.SetKeyLimit(ctx, "acct", "k", credits.AmountFromInt(1000), credits.PeriodLifetime); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Settle(ctx, credits.SettleParams{HoldID: h1.ID, Actual: credits.AmountFromInt(10)}); err != nil {
		t.Fatal(err)
	}
	ac, _ := a.Account(ctx, "acct")
	// Balance 70; h2 holds 10: 60 is free.
	if !ac.Available.Equal(credits.AmountFromInt(60)) {
		t.Fatalf("balance %s, h2 (%s) active: the instance shows %s available, held %s", ac.Balance, h2.Amount, ac.Available, ac.Held)
	}
}

// A retired lease whose last hold ends while Close waits is released by
// Close: nothing stays held after Close returns.
func TestCloseReleasesLeaseDrainedWhileClosing(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	a, plain, st := newGated(t, clk)
	fund(t, a, "acct", 1000)
	fund(t, a, "acct2", 1000)
	h1, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second)) // lease of 80
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetPolicy(ctx, "acct", credits.Policy{}); err != nil { // retires it; h1 still on it
		t.Fatal(err)
	}
	sArrived, sGate := st.block(func(r credits.SpendRequest) bool { return r.Kind == credits.SpendSettle })
	sDone := make(chan struct{})
	go func() {
		defer close(sDone)
		_, _ = a.Settle(ctx, credits.SettleParams{HoldID: h1.ID, Actual: credits.AmountFromInt(10)})
	}()
	<-sArrived
	// A lease write in flight (another account's lease), which Close waits for.
	lArrived, lGate := st.block(func(r credits.SpendRequest) bool { return r.Kind == credits.SpendReserve && r.AccountID == "acct2" })
	go func() { _, _ = a.Reserve(ctx, reserveTTL("acct2", "", 10, 5*time.Second)) }()
	<-lArrived
	cDone := make(chan struct{})
	go func() { defer close(cDone); _ = a.Close(ctx) }()
	for !errorsIsClosed(a) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // Close is waiting for the lease write
	close(sGate)
	<-sDone // h1 settled: its retired lease drained, its release refused
	close(lGate)
	<-cDone
	ac, _ := plain.Account(ctx, "acct")
	if !ac.Held.IsZero() {
		t.Fatalf("after Close returned, %s of acct is still held by a lease nobody will release", ac.Held)
	}
}

func errorsIsClosed(s *credits.Service) bool {
	_, err := s.Release(context.Background(), "x")
	return err == credits.ErrClosed
}

// Near the expiry of a grant the account does not depend on, a leased
// hold is raised and its deadline moved like any other.
func TestExtendNearGrantExpiry(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	a, plain, _ := newGated(t, clk)
	fund(t, a, "acct", 1000)
	if _, err := plain.Grant(ctx, credits.CreditParams{AccountID: "acct", Amount: credits.AmountFromInt(10),
		ExpiresAt: epoch.Add(20 * time.Second), IdempotencyKey: "promo"}); err != nil {
		t.Fatal(err)
	}
	h, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second)) // lease capped at +20 s
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Extend(ctx, credits.ExtendParams{HoldID: h.ID, Amount: credits.AmountFromInt(20), TTL: 30 * time.Second}); err != nil {
		t.Logf("raise to 20 with 1000 free: %v", err)
	}
	e, err := a.Extend(ctx, credits.ExtendParams{HoldID: h.ID, Amount: h.Amount, TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Second)
	_, serr := a.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(10)})
	if !e.ExpiresAt.Equal(epoch.Add(30*time.Second)) || serr != nil {
		t.Fatalf("Extend(TTL 30 s) returned nil error with deadline %s (asked %s); settle at +10 s: %v",
			e.ExpiresAt.Sub(epoch), 30*time.Second, serr)
	}
}

// A top-up on the leasing instance keeps its lease: a credit only adds
// funds, and retiring the lease would hold its room until its longest
// hold ends.
func TestTopUpKeepsTheLease(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	a, plain, _ := newGated(t, clk)
	fund(t, a, "acct", 80)
	if _, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 10*time.Minute)); err != nil { // lease of 80, a long stream
		t.Fatal(err)
	}
	if _, err := a.Purchase(ctx, credits.CreditParams{AccountID: "acct", Amount: credits.AmountFromInt(5), IdempotencyKey: "topup"}); err != nil {
		t.Fatal(err)
	}
	ac, _ := plain.Account(ctx, "acct")
	if _, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second)); err != nil {
		t.Fatalf("after a top-up: balance %s, one hold of 10 active (store's Held %s): reserve of 10: %v", ac.Balance, ac.Held, err)
	}
}

// A debit whose commit is not known to have happened, beside a lease, never
// lets the instance draw the lease's room twice.
func TestDebitWithUnknownOutcomeBesideALease(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(epoch)
	a, plain, st := newGated(t, clk)
	fund(t, a, "acct", 80)
	h, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second)) // lease of 80: all the funds
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Release(ctx, h.ID); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	st.failDebit = true
	st.mu.Unlock()
	if _, err := a.Debit(ctx, credits.DebitParams{AccountID: "acct", Amount: credits.AmountFromInt(80), IdempotencyKey: "d1"}); err == nil {
		t.Fatal("want the lost commit")
	}
	var hs []credits.Hold
	for range 8 {
		h, err := a.Reserve(ctx, reserveTTL("acct", "", 10, 5*time.Second))
		if err != nil {
			break
		}
		hs = append(hs, h)
	}
	for _, h := range hs {
		if _, err := a.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(10)}); err != nil {
			t.Fatal(err)
		}
	}
	ac, _ := plain.Account(ctx, "acct")
	if ac.Balance.IsNegative() {
		t.Fatalf("balance 80 spent by a debit whose commit was lost, then %d requests drawn from the same room: balance %s (overdraft 0)", len(hs), ac.Balance)
	}
}
