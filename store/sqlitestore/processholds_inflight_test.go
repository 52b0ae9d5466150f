// Interleavings in which process holds once overspent (found by two
// adversarial reviews): a spend still in flight while the book moved on.
// Each test blocks one store call on a channel to hold the interleaving.

package sqlitestore_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/storewrap"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/sqlitestore"
)

// processHoldsStore opens a SQLite store with process holds in a
// temporary directory, closed when t ends.
func processHoldsStore(t *testing.T) *sqlitestore.Store {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "k.db"),
		&sqlitestore.Options{Logger: slog.New(slog.DiscardHandler), ProcessHolds: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// inflightLedger is a credits Service over st (now nil: the real clock)
// with account "a" opened and funded with amount.
func inflightLedger(t *testing.T, st credits.Store, now func() time.Time, amount int64) *credits.Service {
	t.Helper()
	ctx := context.Background()
	svc, err := credits.NewService(st, &credits.Options{Unit: credits.INR(), Logger: slog.New(slog.DiscardHandler), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(ctx) })
	if _, err := svc.Open(ctx, "a", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Purchase(ctx, credits.CreditParams{AccountID: "a", Amount: credits.AmountFromInt(amount), IdempotencyKey: "p"}); err != nil {
		t.Fatal(err)
	}
	return svc
}

// slowStore blocks the first ApplySpends until release is closed.
type slowStore struct {
	storewrap.Base
	entered, release chan struct{}
	first            bool
}

func (s *slowStore) ApplySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	if !s.first {
		s.first = true
		close(s.entered)
		<-s.release
	}
	return s.Store.ApplySpends(ctx, now, reqs, res)
}

// A debit whose caller's ctx ends while its batch commits is AbortSpend'ed
// (its pending amount freed) but still commits: a reserve in between takes
// the same funds.
func TestReviewCancelledDebitOverspend(t *testing.T) {
	ctx := context.Background()
	st := processHoldsStore(t)
	ss := &slowStore{Base: storewrap.Base{Store: store.Driver(st)}, entered: make(chan struct{}), release: make(chan struct{})}
	svc := inflightLedger(t, ss, nil, 10)
	inr := credits.AmountFromInt
	if _, err := svc.Account(ctx, "a"); err != nil { // snapshot
		t.Fatal(err)
	}
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := svc.Debit(dctx, credits.DebitParams{AccountID: "a", Amount: inr(10), IdempotencyKey: "d"})
		done <- err
	}()
	<-ss.entered
	cancel()
	t.Logf("debit: %v", <-done)
	h, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: inr(10), TTL: time.Minute, IdempotencyKey: "r"})
	t.Logf("reserve while the cancelled debit commits: %v", err)
	close(ss.release)
	time.Sleep(100 * time.Millisecond)
	if err == nil {
		if _, err := svc.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: inr(10)}); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := store.Driver(st).LedgerAccount(ctx, "a", time.Now())
	t.Logf("stored: balance %s held %s", a.Balance, a.Held)
	if a.Balance.IsNegative() {
		t.Fatalf("overspend: balance %s with no overdraft", a.Balance)
	}
}

type slowCredit struct {
	storewrap.Base
	entered, release chan struct{}
	block            bool
}

func (s *slowCredit) LedgerCredit(ctx context.Context, now time.Time, r credits.CreditRequest) (credits.Entry, error) {
	if s.block {
		s.block = false
		close(s.entered)
		<-s.release
	}
	return s.Store.LedgerCredit(ctx, now, r)
}

// A negative adjustment in the owner process is neither pended nor
// re-checked against holds taken while it commits.
func TestReviewAdjustRacesReserve(t *testing.T) {
	ctx := context.Background()
	st := processHoldsStore(t)
	ss := &slowCredit{Base: storewrap.Base{Store: store.Driver(st)}, entered: make(chan struct{}), release: make(chan struct{})}
	svc := inflightLedger(t, ss, nil, 10)
	inr := credits.AmountFromInt
	if _, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: inr(1), TTL: time.Minute, IdempotencyKey: "warm"}); err != nil {
		t.Fatal(err)
	}
	ss.block = true
	done := make(chan error, 1)
	go func() {
		_, err := svc.Adjust(ctx, credits.CreditParams{AccountID: "a", Amount: inr(-9), IdempotencyKey: "adj"})
		done <- err
	}()
	<-ss.entered
	h, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: inr(9), TTL: time.Minute, IdempotencyKey: "r"})
	t.Logf("reserve during the adjustment: %v", err)
	close(ss.release)
	t.Logf("adjust: %v", <-done)
	if err == nil {
		if _, err := svc.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: inr(9)}); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := store.Driver(st).LedgerAccount(ctx, "a", time.Now())
	t.Logf("stored: balance %s", a.Balance)
	if a.Balance.IsNegative() {
		t.Fatalf("overspend: balance %s with no overdraft", a.Balance)
	}
}

type slowRead struct {
	storewrap.Base
	entered, release chan struct{}
	block            bool
}

func (s *slowRead) LedgerAccount(ctx context.Context, id string, now time.Time) (credits.Account, error) {
	a, err := s.Store.LedgerAccount(ctx, id, now)
	if s.block {
		s.block = false
		close(s.entered)
		<-s.release
	}
	return a, err
}

// A snapshot read that started before a negative adjustment (or policy
// change) and lands after it survives forgetLocal for localRefresh.
func TestReviewStaleReadAfterAdjust(t *testing.T) {
	ctx := context.Background()
	st := processHoldsStore(t)
	ss := &slowRead{Base: storewrap.Base{Store: store.Driver(st)}, entered: make(chan struct{}), release: make(chan struct{})}
	svc := inflightLedger(t, ss, nil, 10)
	inr := credits.AmountFromInt
	ss.block = true
	done := make(chan error, 1)
	go func() {
		_, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: inr(1), TTL: time.Minute, IdempotencyKey: "r1"})
		done <- err
	}()
	<-ss.entered
	if _, err := svc.Adjust(ctx, credits.CreditParams{AccountID: "a", Amount: inr(-9), IdempotencyKey: "adj"}); err != nil {
		t.Fatal(err)
	}
	close(ss.release)
	t.Logf("reserve 1 (read in flight): %v", <-done)
	h, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: inr(9), TTL: time.Minute, IdempotencyKey: "r2"})
	t.Logf("reserve 9 after Adjust(-9) returned: %v", err)
	if err == nil {
		svc.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: inr(9)})
		a, _ := store.Driver(st).LedgerAccount(ctx, "a", time.Now())
		t.Fatalf("overspend: balance %s", a.Balance)
	}
}

// A settle whose batch started before the hold's deadline commits after
// the book expired the hold and let a reserve take its funds.
func TestReviewSettleAcrossExpiry(t *testing.T) {
	ctx := context.Background()
	st := processHoldsStore(t)
	ss := &slowStore{Base: storewrap.Base{Store: store.Driver(st)}, entered: make(chan struct{}), release: make(chan struct{}), first: true}
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	svc := inflightLedger(t, ss, now, 10)
	inr := credits.AmountFromInt
	h, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: inr(10), TTL: time.Second, IdempotencyKey: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	ss.first = false // block the next ApplySpends
	done := make(chan error, 1)
	go func() {
		_, err := svc.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: inr(10)})
		done <- err
	}()
	<-ss.entered
	mu.Lock()
	clock = clock.Add(2 * time.Second) // past the hold's deadline
	mu.Unlock()
	h2, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: inr(10), TTL: time.Minute, IdempotencyKey: "r2"})
	t.Logf("reserve after the deadline while the settle commits: %v", err)
	close(ss.release)
	t.Logf("settle: %v", <-done)
	if err == nil {
		_, err := svc.Settle(ctx, credits.SettleParams{HoldID: h2.ID, Actual: inr(10)})
		a, _ := store.Driver(st).LedgerAccount(ctx, "a", now())
		t.Fatalf("second settle %v; overspend: balance %s", err, a.Balance)
	}
}

// Settle times out (ctx), client releases the hold, the settle commits.
func TestReviewReleaseDuringSettle(t *testing.T) {
	ctx := context.Background()
	st := processHoldsStore(t)
	ss := &slowStore{Base: storewrap.Base{Store: store.Driver(st)}, entered: make(chan struct{}), release: make(chan struct{}), first: true}
	svc := inflightLedger(t, ss, nil, 10)
	inr := credits.AmountFromInt
	h, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: inr(10), TTL: time.Minute, IdempotencyKey: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	ss.first = false
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := svc.Settle(sctx, credits.SettleParams{HoldID: h.ID, Actual: inr(10)})
		done <- err
	}()
	<-ss.entered
	cancel()
	t.Logf("settle: %v", <-done)
	// Release waits for the settle in flight: here until its own deadline.
	rctx, rcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	rh, err := svc.Release(rctx, h.ID)
	rcancel()
	t.Logf("release: %v %v", rh.State, err)
	if err == nil {
		t.Fatalf("release answered %s while a settle of the hold was in flight", rh.State)
	}
	h2, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: inr(10), TTL: time.Minute, IdempotencyKey: "r2"})
	t.Logf("reserve: %v", err)
	close(ss.release)
	time.Sleep(100 * time.Millisecond)
	if _, err := svc.Release(ctx, h.ID); !errors.Is(err, credits.ErrHoldSettled) {
		t.Fatalf("release once the settle committed: %v, want ErrHoldSettled", err)
	}
	if err == nil {
		svc.Settle(ctx, credits.SettleParams{HoldID: h2.ID, Actual: inr(10)})
	}
	a, _ := store.Driver(st).LedgerAccount(ctx, "a", time.Now())
	sh, _ := store.Driver(st).LedgerHold(ctx, h.ID)
	t.Logf("stored hold %s: %v charged %s; balance %s", h.ID, sh.State, sh.Charged, a.Balance)
	if a.Balance.IsNegative() {
		t.Fatalf("overspend: balance %s", a.Balance)
	}
}
