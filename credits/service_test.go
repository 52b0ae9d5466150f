package credits_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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

var epoch = time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestOptions(t *testing.T) {
	bad := []credits.Options{
		{MaxBatch: -1},
		{MaxWait: -time.Second},
		{MaxHoldTTL: -time.Second},
		{EntryIDPrefix: "exp_"},
	}
	for _, o := range bad {
		if _, err := credits.NewService(store.Driver(memstore.New()), &o); !errors.Is(err, credits.ErrInvalidOptions) {
			t.Errorf("options %+v: %v", o, err)
		}
	}
	if _, err := credits.NewService(store.Driver(memstore.New()), &credits.Options{Unit: credits.Unit{Code: "X", Decimals: 40}}); !errors.Is(err, credits.ErrInvalidUnit) {
		t.Errorf("bad unit: %v", err)
	}
	svc, err := credits.NewService(store.Driver(memstore.New()), nil)
	if err != nil || svc.Unit().Code != "INR" {
		t.Fatalf("defaults: %v %+v", err, svc.Unit())
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Debit(context.Background(), credits.DebitParams{AccountID: "a", Amount: credits.AmountFromInt(1), IdempotencyKey: "k"}); !errors.Is(err, credits.ErrClosed) {
		t.Fatalf("debit after Close: %v", err)
	}
	if _, err := svc.Grant(context.Background(), credits.CreditParams{AccountID: "a", Amount: credits.AmountFromInt(1), IdempotencyKey: "k"}); !errors.Is(err, credits.ErrClosed) {
		t.Fatalf("grant after Close: %v", err)
	}
}

// batching is memstore with group commit switched on, so the batcher can
// be tested quickly; gate, when set, holds every ApplySpends call until it
// is closed and reports entry on entered.
type batching struct {
	storewrap.Base
	mu      sync.Mutex
	sizes   []int
	fail    error
	entered chan struct{}
	gate    chan struct{}
}

func (b *batching) GroupCommit() bool { return true }

func (b *batching) ApplySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	b.mu.Lock()
	b.sizes = append(b.sizes, len(reqs))
	fail, gate, entered := b.fail, b.gate, b.entered
	b.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		<-gate
	}
	if fail != nil {
		return fail
	}
	return b.Store.ApplySpends(ctx, now, reqs, res)
}

func newBatching(t *testing.T, maxWait ...time.Duration) (*credits.Service, *batching) {
	st := &batching{Base: storewrap.Base{Store: store.Driver(memstore.New())}}
	clk := fakeclock.New(epoch)
	o := &credits.Options{Now: clk.Now, MaxBatch: 16, Logger: quiet()}
	if len(maxWait) > 0 {
		o.MaxWait = maxWait[0]
	}
	svc, err := credits.NewService(st, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	if _, err := svc.Open(context.Background(), "acct_1", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Purchase(context.Background(), credits.CreditParams{AccountID: "acct_1", Amount: credits.AmountFromInt(1000), IdempotencyKey: "p"}); err != nil {
		t.Fatal(err)
	}
	return svc, st
}

func TestGroupCommitDeliversEachResult(t *testing.T) {
	svc, st := newBatching(t)
	var wg sync.WaitGroup
	ids := make([][]string, 32)
	for g := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				// Every third request asks for too much: its failure must
				// reach its own caller only.
				amt := credits.AmountFromInt(1)
				if i%3 == 0 {
					amt = credits.AmountFromInt(5000)
				}
				e, err := svc.Debit(context.Background(), credits.DebitParams{AccountID: "acct_1", Amount: amt, IdempotencyKey: fmt.Sprint(g, "-", i)})
				if i%3 == 0 {
					if !errors.Is(err, credits.ErrInsufficientFunds) {
						t.Errorf("big debit: %v", err)
					}
					continue
				}
				if err != nil || e.IdempotencyKey != fmt.Sprint(g, "-", i) {
					t.Errorf("debit %d-%d: %+v, %v", g, i, e, err)
				}
				ids[g] = append(ids[g], e.ID)
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, l := range ids {
		for _, id := range l {
			if seen[id] {
				t.Fatalf("entry %s delivered twice", id)
			}
			seen[id] = true
		}
	}
	if len(seen) != 32*13 {
		t.Fatalf("%d entries delivered", len(seen))
	}
	a, _ := svc.Account(context.Background(), "acct_1")
	if !a.Balance.Equal(credits.AmountFromInt(1000 - 32*13)) {
		t.Fatalf("balance %s", a.Balance)
	}
	stats := svc.Stats()
	st.mu.Lock()
	defer st.mu.Unlock()
	total := 0
	for _, n := range st.sizes {
		if n > 16 {
			t.Fatalf("batch of %d > MaxBatch", n)
		}
		total += n
	}
	if total != 32*20 || stats.BatchedSpends != int64(total) || stats.Batches != int64(len(st.sizes)) || stats.MaxBatch > 16 {
		t.Fatalf("stats %+v, %d spends in %d batches", stats, total, len(st.sizes))
	}
}

// With MaxWait a lone caller still completes (after the wait), and a full
// batch does not wait.
// MaxWait makes a group commit wait for more spends once the queue is
// empty: a lone debit is committed only after MaxWait, a debit that arrives
// meanwhile joins its batch, and batches still respect MaxBatch.
func TestGroupCommitMaxWait(t *testing.T) {
	const wait = 300 * time.Millisecond
	svc, st := newBatching(t, wait)
	debit := func(key string) {
		t.Helper()
		if _, err := svc.Debit(context.Background(), credits.DebitParams{AccountID: "acct_1", Amount: credits.AmountFromInt(1), IdempotencyKey: key}); err != nil {
			t.Error(err)
		}
	}
	start := time.Now()
	debit("lone")
	if d := time.Since(start); d < wait {
		t.Fatalf("a lone debit committed after %v; the batch should wait %v for more", d, wait)
	}

	st.mu.Lock()
	before := len(st.sizes)
	st.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); debit("first") }()
	time.Sleep(wait / 6) // the committer now waits for more
	go func() { defer wg.Done(); debit("second") }()
	wg.Wait()
	st.mu.Lock()
	got := slices.Clone(st.sizes[before:])
	st.mu.Unlock()
	if len(got) != 1 || got[0] != 2 {
		t.Fatalf("batches %v; the second debit should have joined the first's batch", got)
	}

	for i := range 40 {
		wg.Add(1)
		go func() { defer wg.Done(); debit(fmt.Sprint("p", i)) }()
	}
	wg.Wait()
	if a, _ := svc.Account(context.Background(), "acct_1"); !a.Balance.Equal(credits.AmountFromInt(1000 - 43)) {
		t.Fatalf("balance %s", a.Balance)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, n := range st.sizes {
		if n > 16 {
			t.Fatalf("batch of %d", n)
		}
	}
}

func TestGroupCommitSystemErrorReachesCallers(t *testing.T) {
	svc, st := newBatching(t)
	boom := errors.New("disk on fire")
	st.mu.Lock()
	st.fail = boom
	st.mu.Unlock()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := svc.Debit(context.Background(), credits.DebitParams{AccountID: "acct_1", Amount: credits.AmountFromInt(1), IdempotencyKey: fmt.Sprint(i)})
			if !errors.Is(err, boom) {
				t.Errorf("caller %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
}

// A caller whose context ends while its debit waits gets ctx.Err(), and
// the batcher skips the debit if it has not started it.
func TestGroupCommitCanceledCaller(t *testing.T) {
	svc, st := newBatching(t)
	st.mu.Lock()
	st.entered, st.gate = make(chan struct{}, 4), make(chan struct{})
	st.mu.Unlock()
	first := make(chan error)
	go func() {
		_, err := svc.Debit(context.Background(), credits.DebitParams{AccountID: "acct_1", Amount: credits.AmountFromInt(1), IdempotencyKey: "first"})
		first <- err
	}()
	<-st.entered // the first batch is in the store, held at the gate
	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan error)
	go func() {
		_, err := svc.Debit(ctx, credits.DebitParams{AccountID: "acct_1", Amount: credits.AmountFromInt(2), IdempotencyKey: "second"})
		second <- err
	}()
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled caller: %v", err)
	}
	close(st.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(context.Background()); err != nil { // flushes the queue
		t.Fatal(err)
	}
	a, _ := svc.Account(context.Background(), "acct_1")
	if !a.Balance.Equal(credits.AmountFromInt(999)) {
		t.Fatalf("balance %s: the canceled debit was applied", a.Balance)
	}
}

// Close with an ended context cancels running recharges, which count as
// failed.
func TestCloseCancelsRecharges(t *testing.T) {
	started := make(chan struct{})
	var failures []error
	var mu sync.Mutex
	rech := credits.Recharger(func(ctx context.Context, r credits.RechargeRequest) (credits.RechargeResult, error) {
		close(started)
		<-ctx.Done()
		return credits.RechargeResult{}, ctx.Err()
	})
	svc, err := credits.NewService(store.Driver(memstore.New()), &credits.Options{
		Recharger: rech, Logger: quiet(),
		OnRechargeError: func(_ credits.RechargeRequest, err error) { mu.Lock(); failures = append(failures, err); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ar := credits.AutoRecharge{Enabled: true, Threshold: credits.AmountFromInt(10), Amount: credits.AmountFromInt(100)}
	if _, err := svc.Open(ctx, "acct_1", credits.Policy{AutoRecharge: ar}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Grant(ctx, credits.CreditParams{AccountID: "acct_1", Amount: credits.AmountFromInt(20), IdempotencyKey: "g"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Debit(ctx, credits.DebitParams{AccountID: "acct_1", Amount: credits.AmountFromInt(15), IdempotencyKey: "d"}); err != nil {
		t.Fatal(err)
	}
	<-started
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := svc.Close(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close: %v", err)
	}
	if st := svc.Stats(); st.RechargesFailed != 1 || len(failures) != 1 {
		t.Fatalf("stats %+v, failures %v", st, failures)
	}
}

// A Recharger whose payment is also credited another way (a webhook that
// lands first) returns that purchase's key and description: the ledger
// writes one purchase, whichever path comes first.
func TestRechargeResultKeyCreditsOnce(t *testing.T) {
	var svc *credits.Service
	paid := make(chan struct{})
	params := func(r credits.RechargeRequest) credits.CreditParams {
		return credits.CreditParams{AccountID: r.AccountID, Amount: r.Amount, Reference: "order_1",
			Description: "order order_1", IdempotencyKey: "order:order_1"}
	}
	webhookFirst := credits.Recharger(func(ctx context.Context, r credits.RechargeRequest) (credits.RechargeResult, error) {
		p := params(r)
		_, err := svc.Purchase(ctx, p) // the webhook wins the race
		close(paid)
		if err != nil {
			return credits.RechargeResult{}, err
		}
		return credits.RechargeResult{Reference: p.Reference, IdempotencyKey: p.IdempotencyKey, Description: p.Description}, nil
	})
	var err error
	svc, err = credits.NewService(store.Driver(memstore.New()), &credits.Options{Recharger: webhookFirst, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ar := credits.AutoRecharge{Enabled: true, Threshold: credits.AmountFromInt(10), Amount: credits.AmountFromInt(100)}
	if _, err := svc.Open(ctx, "acct_1", credits.Policy{AutoRecharge: ar}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Grant(ctx, credits.CreditParams{AccountID: "acct_1", Amount: credits.AmountFromInt(20), IdempotencyKey: "g"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Debit(ctx, credits.DebitParams{AccountID: "acct_1", Amount: credits.AmountFromInt(15), IdempotencyKey: "d"}); err != nil {
		t.Fatal(err)
	}
	<-paid // Close refuses new purchases, so let the "webhook" in first
	if err := svc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st := svc.Stats()
	if st.RechargesSucceeded != 1 || st.RechargesFailed != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Close stops mutations, not reads.
	bal, err := svc.Balance(ctx, "acct_1")
	if err != nil || !bal.Equal(credits.AmountFromInt(105)) {
		t.Fatalf("balance %s, %v; want 105 (one purchase)", bal, err)
	}
}

// stallStore group-commits and holds its first ApplySpends until release
// is closed, so a test can end the caller's context while its spend is
// being written.
type stallStore struct {
	storewrap.Base
	entered, release chan struct{}
	once             sync.Once
}

func (s *stallStore) GroupCommit() bool { return true }

func (s *stallStore) ApplySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	s.once.Do(func() {
		close(s.entered)
		<-s.release
	})
	return s.Store.ApplySpends(ctx, now, reqs, res)
}

// A spend that commits after its caller stopped waiting still starts the
// auto-recharge of its threshold crossing: the crossing is used up by the
// commit, so skipping the Recharger would lose it.
func TestRechargeStartsWhenCallerLeaves(t *testing.T) {
	st := &stallStore{Base: storewrap.Base{Store: store.Driver(memstore.New())}, entered: make(chan struct{}), release: make(chan struct{})}
	var calls sync.WaitGroup
	var n int
	var mu sync.Mutex
	rech := credits.Recharger(func(ctx context.Context, r credits.RechargeRequest) (credits.RechargeResult, error) {
		mu.Lock()
		n++
		mu.Unlock()
		return credits.RechargeResult{Reference: "pay_1"}, nil
	})
	svc, err := credits.NewService(st, &credits.Options{Recharger: rech, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ar := credits.AutoRecharge{Enabled: true, Threshold: credits.AmountFromInt(10), Amount: credits.AmountFromInt(100)}
	if _, err := svc.Open(ctx, "acct_1", credits.Policy{AutoRecharge: ar}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Grant(ctx, credits.CreditParams{AccountID: "acct_1", Amount: credits.AmountFromInt(20), IdempotencyKey: "g"}); err != nil {
		t.Fatal(err)
	}
	callerCtx, cancel := context.WithCancel(ctx)
	calls.Add(1)
	go func() {
		defer calls.Done()
		_, err := svc.Debit(callerCtx, credits.DebitParams{AccountID: "acct_1", Amount: credits.AmountFromInt(15), IdempotencyKey: "d"})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Debit: %v, want context.Canceled", err)
		}
	}()
	<-st.entered
	cancel()
	calls.Wait() // the caller has given up; now let the write commit
	close(st.release)
	if err := svc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("Recharger called %d times, want 1 (stats %+v)", n, svc.Stats())
	}
	if bal, _ := svc.Balance(ctx, "acct_1"); !bal.Equal(credits.AmountFromInt(105)) {
		t.Fatalf("balance %s, want 105", bal)
	}
}

// Debits racing Close: every committed crossing either starts its recharge
// (and Close waits for it) or, once Close is waiting, fails with ErrClosed;
// none is lost and the WaitGroup is never added to while Close waits.
func TestRechargesRacingClose(t *testing.T) {
	const accounts = 64
	var closedErrs atomic.Int64
	rech := credits.Recharger(func(ctx context.Context, r credits.RechargeRequest) (credits.RechargeResult, error) {
		return credits.RechargeResult{Reference: "pay_" + r.AccountID}, nil
	})
	svc, err := credits.NewService(store.Driver(memstore.New()), &credits.Options{Recharger: rech, Logger: quiet(),
		OnRechargeError: func(_ credits.RechargeRequest, err error) {
			if errors.Is(err, credits.ErrClosed) {
				closedErrs.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ar := credits.AutoRecharge{Enabled: true, Threshold: credits.AmountFromInt(10), Amount: credits.AmountFromInt(100)}
	for i := range accounts {
		a := fmt.Sprint("acct_", i)
		if _, err := svc.Open(ctx, a, credits.Policy{AutoRecharge: ar}); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Grant(ctx, credits.CreditParams{AccountID: a, Amount: credits.AmountFromInt(20), IdempotencyKey: "g"}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var debited atomic.Int64
	start := make(chan struct{})
	for i := range accounts {
		wg.Go(func() {
			<-start
			_, err := svc.Debit(ctx, credits.DebitParams{AccountID: fmt.Sprint("acct_", i), Amount: credits.AmountFromInt(15), IdempotencyKey: "d"})
			if err == nil {
				debited.Add(1)
			} else if !errors.Is(err, credits.ErrClosed) {
				t.Error(err)
			}
		})
	}
	close(start)
	if err := svc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	st := svc.Stats()
	if st.RechargesSucceeded+closedErrs.Load() != debited.Load() || st.RechargesSucceeded != st.RechargesStarted {
		t.Fatalf("%d debits crossed; stats %+v, %d refused after Close", debited.Load(), st, closedErrs.Load())
	}
}
