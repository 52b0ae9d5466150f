package sqlitestore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/storewrap"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/sqlitestore"
)

// One process keeps holds in memory; another process on the same file
// (here: a second Store, which has a lock file description of its own) may
// read and credit but not debit or adjust down, and a second owner cannot
// open. The owner sees the other's top-up before it refuses a reserve, and
// its own holds count against its adjustments.
func TestProcessHoldsOwnTheFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "k.db")
	quiet := slog.New(slog.DiscardHandler)
	owner, err := sqlitestore.Open(ctx, path, &sqlitestore.Options{Logger: quiet, ProcessHolds: true})
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	if _, err := sqlitestore.Open(ctx, path, &sqlitestore.Options{Logger: quiet, ProcessHolds: true, BusyTimeout: 50 * time.Millisecond}); !errors.Is(err, sqlitestore.ErrSpendLocked) {
		t.Fatalf("second owner: %v, want ErrSpendLocked", err)
	}
	other, err := sqlitestore.Open(ctx, path, &sqlitestore.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	opts := &credits.Options{Unit: credits.INR(), Logger: quiet}
	svc, err := credits.NewService(store.Driver(owner), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(ctx)
	admin, err := credits.NewService(store.Driver(other), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := svc.Open(ctx, "acct_1", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	inr := credits.AmountFromInt
	if _, err := admin.Purchase(ctx, credits.CreditParams{AccountID: "acct_1", Amount: inr(10), IdempotencyKey: "p1"}); err != nil {
		t.Fatal(err)
	}
	h, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "acct_1", Amount: inr(8), TTL: time.Minute, IdempotencyKey: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	// The other process may not spend: it cannot see the 8 held here.
	if _, err := admin.Debit(ctx, credits.DebitParams{AccountID: "acct_1", Amount: inr(5), IdempotencyKey: "d1"}); !errors.Is(err, sqlitestore.ErrSpendLocked) {
		t.Fatalf("debit by another process: %v, want ErrSpendLocked", err)
	}
	// Nor take funds by a negative adjustment; a positive one is fine.
	if _, err := admin.Adjust(ctx, credits.CreditParams{AccountID: "acct_1", Amount: inr(-1), IdempotencyKey: "a0"}); !errors.Is(err, sqlitestore.ErrSpendLocked) {
		t.Fatalf("negative adjustment by another process: %v, want ErrSpendLocked", err)
	}
	// The owner's own adjustment may not take the held funds (2 are free).
	if _, err := svc.Adjust(ctx, credits.CreditParams{AccountID: "acct_1", Amount: inr(-2), IdempotencyKey: "a1"}); err != nil {
		t.Fatalf("adjustment within the free funds: %v", err)
	}
	if _, err := svc.Adjust(ctx, credits.CreditParams{AccountID: "acct_1", Amount: inr(-1), IdempotencyKey: "a2"}); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("adjustment into held funds: %v, want ErrInsufficientFunds", err)
	}
	// … and a reserve past the funds is refused until the other process
	// tops up, which the owner reads before it refuses.
	if _, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "acct_1", Amount: inr(5), TTL: time.Minute, IdempotencyKey: "r2"}); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("reserve past the funds: %v", err)
	}
	if _, err := admin.Purchase(ctx, credits.CreditParams{AccountID: "acct_1", Amount: inr(5), IdempotencyKey: "p2"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond) // past the re-read threshold of a refusal
	if _, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "acct_1", Amount: inr(5), TTL: time.Minute, IdempotencyKey: "r2"}); err != nil {
		t.Fatalf("reserve after the other process's top-up: %v", err)
	}
	// The settle writes the hold, settled, with its charge; the other
	// process reads it.
	if _, err := svc.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: inr(6)}); err != nil {
		t.Fatal(err)
	}
	stored, err := admin.Hold(ctx, h.ID)
	if err != nil || stored.State != credits.HoldSettled || !stored.Charged.Equal(inr(6)) {
		t.Fatalf("the settled hold as the other process reads it: %+v %v", stored, err)
	}
	a, err := admin.Account(ctx, "acct_1")
	if err != nil || !a.Balance.Equal(inr(7)) || !a.Held.IsZero() {
		t.Fatalf("account as stored: %+v %v; want balance 7 (10 − 2 + 5 − 6), nothing held in the file", a, err)
	}
	if a, err := svc.Account(ctx, "acct_1"); err != nil || !a.Held.Equal(inr(5)) || !a.Available.Equal(inr(2)) {
		t.Fatalf("account as the owner sees it: %+v %v; want 5 held in the process", a, err)
	}
	// Closing the owner frees the file for the other process's spends.
	svc.Close(ctx)
	if err := owner.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Debit(ctx, credits.DebitParams{AccountID: "acct_1", Amount: inr(5), IdempotencyKey: "d1"}); err != nil {
		t.Fatalf("debit once the owner closed: %v", err)
	}
}

// reserveKeyReads counts the store lookups of reserve keys.
type reserveKeyReads struct {
	storewrap.Base
	n atomic.Int64
}

func (r *reserveKeyReads) LedgerReserveKey(ctx context.Context, accountID, key string) ([32]byte, string, bool, error) {
	r.n.Add(1)
	return r.Base.LedgerReserveKey(ctx, accountID, key)
}

// A reserve whose key was minted for it (ReserveParams.FreshKey, the
// facade's generated request IDs) skips the store lookup of the key: it
// cannot be a replay. A key a client chose is still looked up, so the
// replay of a settled reserve returns the settled hold instead of
// reserving again.
func TestProcessHoldsFreshKeySkipsTheLookup(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "k.db"), &sqlitestore.Options{Logger: quiet, ProcessHolds: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rk := &reserveKeyReads{Base: storewrap.Base{Store: store.Driver(st)}}
	svc, err := credits.NewService(rk, &credits.Options{Unit: credits.INR(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(ctx)
	if _, err := svc.Open(ctx, "a", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	inr := credits.AmountFromInt
	if _, err := svc.Purchase(ctx, credits.CreditParams{AccountID: "a", Amount: inr(100), IdempotencyKey: "p"}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		h, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: inr(2), TTL: time.Minute, IdempotencyKey: fmt.Sprintf("hold:req_%d", i), FreshKey: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: inr(1)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := rk.n.Load(); n != 0 {
		t.Fatalf("%d reserve-key lookups for fresh keys, want 0", n)
	}
	// A client's key: looked up, and the replay of the settled reserve
	// answers the settled hold without taking funds again.
	p := credits.ReserveParams{AccountID: "a", Amount: inr(2), TTL: time.Minute, IdempotencyKey: "hold:client-1"}
	h, err := svc.Reserve(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: inr(1)}); err != nil {
		t.Fatal(err)
	}
	before, _ := svc.Account(ctx, "a")
	r, err := svc.Reserve(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != h.ID || r.State != credits.HoldSettled {
		t.Fatalf("replay of a settled reserve: %s %s, want the settled hold %s", r.ID, r.State, h.ID)
	}
	after, _ := svc.Account(ctx, "a")
	if !after.Available.Equal(before.Available) {
		t.Fatalf("replay took funds: available %s → %s", before.Available, after.Available)
	}
	if n := rk.n.Load(); n != 1 { // the replay is found in the book, where the hold still is
		t.Fatalf("%d reserve-key lookups for a client's key, want 1", n)
	}
}

// gatedAccountReads holds each account read, once armed, after it read the
// store and before it returns, until gate is closed.
type gatedAccountReads struct {
	storewrap.Base
	armed    atomic.Bool
	gate     chan struct{}
	read     chan struct{} // a gated read has its result
	returned chan struct{} // the gated read returned
	reads    atomic.Int64
}

func (g *gatedAccountReads) LedgerAccount(ctx context.Context, id string, now time.Time) (credits.Account, error) {
	g.reads.Add(1)
	a, err := g.Base.LedgerAccount(ctx, id, now)
	if g.armed.CompareAndSwap(true, false) {
		close(g.read)
		select {
		case <-g.gate:
		case <-ctx.Done():
		}
		defer close(g.returned)
	}
	return a, err
}

// The owner reads an account again every localRefresh (2 s) to see other
// processes' credits; the reserves of that account no longer wait for the
// read: an older snapshot serves them while one background read refreshes
// it, and the charges this process commits meanwhile — which the read
// lacks — are counted into what it installs, so the refreshed snapshot
// neither loses a charge (an overspend) nor misses the other process's
// credit.
func TestProcessHoldsRefreshInTheBackground(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "k.db")
	quiet := slog.New(slog.DiscardHandler)
	owner, err := sqlitestore.Open(ctx, path, &sqlitestore.Options{Logger: quiet, ProcessHolds: true})
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	other, err := sqlitestore.Open(ctx, path, &sqlitestore.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	g := &gatedAccountReads{Base: storewrap.Base{Store: store.Driver(owner)},
		gate: make(chan struct{}), read: make(chan struct{}), returned: make(chan struct{})}
	svc, err := credits.NewService(g, &credits.Options{Unit: credits.INR(), Logger: quiet, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(ctx)
	admin, err := credits.NewService(store.Driver(other), &credits.Options{Unit: credits.INR(), Logger: quiet, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	inr := credits.AmountFromInt
	if _, err := svc.Open(ctx, "a", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Purchase(ctx, credits.CreditParams{AccountID: "a", Amount: inr(10), IdempotencyKey: "p1"}); err != nil {
		t.Fatal(err)
	}
	reserve := func(amt credits.Amount, key string) (credits.Hold, error) {
		return svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: amt, TTL: time.Hour, IdempotencyKey: key})
	}
	h, err := reserve(inr(1), "r0") // the snapshot: 10
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Release(ctx, h.ID); err != nil {
		t.Fatal(err)
	}
	// Another process's top-up, which the snapshot lacks.
	if _, err := admin.Purchase(ctx, credits.CreditParams{AccountID: "a", Amount: inr(10), IdempotencyKey: "p2"}); err != nil {
		t.Fatal(err)
	}
	clock.Add(int64(2500 * time.Millisecond)) // past the refresh, before stale
	g.armed.Store(true)
	before := g.reads.Load()

	done := make(chan error, 1)
	var a credits.Hold
	go func() {
		var err error
		a, err = reserve(inr(3), "rA")
		done <- err
	}()
	select { // the reserve does not wait for the account's read
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a reserve waited for the periodic read of its account")
	}
	<-g.read // the background read has the account (20, nothing charged)
	// A charge committed after the read took its snapshot: the read lacks it.
	if _, err := svc.Settle(ctx, credits.SettleParams{HoldID: a.ID, Actual: inr(3)}); err != nil {
		t.Fatal(err)
	}
	close(g.gate)
	<-g.returned
	if n := g.reads.Load() - before; n != 1 {
		t.Fatalf("%d reads of the account, want the one background read", n)
	}
	// 20 bought, 3 charged: exactly 17 may be held, whether the refreshed
	// snapshot is installed yet or a refusal reads the account again.
	b, err := reserve(inr(17), "rB")
	if err != nil {
		t.Fatalf("reserving the 17 left: %v", err)
	}
	cent, _ := credits.ParseAmount("0.01")
	if _, err := reserve(cent, "rC"); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("reserving past the 17 left: %v, want ErrInsufficientFunds (a charge lost by the refresh)", err)
	}
	if _, err := svc.Release(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	// Past localStale a reserve reads the account itself.
	clock.Add(int64(5 * time.Second))
	before = g.reads.Load()
	if _, err := reserve(inr(1), "rD"); err != nil {
		t.Fatal(err)
	}
	if n := g.reads.Load() - before; n < 1 {
		t.Fatal("a reserve on a snapshot past localStale did not read the account")
	}
}
