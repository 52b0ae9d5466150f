package usage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/internal/storewrap"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/usage"
)

func TestOptions(t *testing.T) {
	st := memstore.New()
	if _, err := usage.NewService(nil, nil); !errors.Is(err, usage.ErrInvalidOptions) {
		t.Fatal(err)
	}
	for _, o := range []usage.Options{{MaxBatch: -1}, {MaxWait: -1}, {IDPrefix: strings.Repeat("x", 33)}} {
		if _, err := usage.NewService(store.Driver(st), &o); !errors.Is(err, usage.ErrInvalidOptions) {
			t.Errorf("%+v: %v", o, err)
		}
	}
	svc, err := usage.NewService(store.Driver(st), &usage.Options{IDPrefix: "req_"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := svc.Meter(context.Background(), usage.MeterParams{Record: usage.Record{AccountID: "a", Endpoint: "/free"}, IdempotencyKey: "k"})
	if err != nil || !strings.HasPrefix(r.Record.ID, "req_") {
		t.Fatalf("%+v %v", r, err)
	}
	// Without a ledger, anything that charges is refused.
	if _, err := svc.Meter(context.Background(), usage.MeterParams{Record: usage.Record{AccountID: "a", Cost: credits.AmountFromInt(1)}, IdempotencyKey: "k2"}); !errors.Is(err, usage.ErrNoLedger) {
		t.Fatal(err)
	}
}

// gatedMeter holds the first group commit until gate is closed, so that
// requests queue up behind it.
type gatedMeter struct {
	storewrap.Base
	once  sync.Once
	first chan int // the size of the first batch
	gate  chan struct{}
}

func (g *gatedMeter) MeterUsage(ctx context.Context, now time.Time, reqs []usage.MeterRequest, res []usage.MeterOutcome) error {
	g.once.Do(func() {
		g.first <- len(reqs)
		<-g.gate
	})
	return g.Store.MeterUsage(ctx, now, reqs, res)
}

// TestRecorderCloseFlushes: on a group-committing store, Close waits for
// the batch being written, commits every request queued behind it, answers
// every caller, and only then returns; later calls get ErrClosed.
func TestRecorderCloseFlushes(t *testing.T) {
	ctx := context.Background()
	sq, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "u.db"), &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	st := &gatedMeter{Base: storewrap.Base{Store: store.Driver(sq)}, first: make(chan int, 1), gate: make(chan struct{})}
	clk := fakeclock.New(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	led, _ := credits.NewService(st, &credits.Options{Now: clk.Now})
	defer led.Close(ctx)
	if _, err := led.Open(ctx, "acct", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := led.Purchase(ctx, credits.CreditParams{AccountID: "acct", Amount: credits.AmountFromInt(1000), IdempotencyKey: "f"}); err != nil {
		t.Fatal(err)
	}
	svc, err := usage.NewService(st, &usage.Options{Now: clk.Now, Credits: led, MaxBatch: 8})
	if err != nil {
		t.Fatal(err)
	}
	const n = 16 // fits the queue (2 × MaxBatch) behind the held batch
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = svc.Meter(ctx, usage.MeterParams{Record: usage.Record{AccountID: "acct", Cost: credits.AmountFromInt(1)}, IdempotencyKey: fmt.Sprint(i)})
		}()
	}
	held := <-st.first
	for deadline := time.Now().Add(10 * time.Second); svc.Stats().QueueDepth != int64(n-held); {
		if time.Now().After(deadline) {
			t.Fatalf("queue depth %d, want %d behind a batch of %d", svc.Stats().QueueDepth, n-held, held)
		}
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- svc.Close(ctx) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a batch was still being written", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(st.gate)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	// Everything queued before Close is committed by the time it returns.
	if bal, _ := led.Balance(ctx, "acct"); !bal.Equal(credits.AmountFromInt(1000 - n)) {
		t.Fatalf("balance %s when Close returned; want %d", bal, 1000-n)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	st2 := svc.Stats()
	if st2.Metered != n || st2.BatchedItems != n || st2.MaxBatch > 8 || st2.Batches < 2 {
		t.Fatalf("stats %+v", st2)
	}
	if _, err := svc.Meter(ctx, usage.MeterParams{Record: usage.Record{AccountID: "acct"}, IdempotencyKey: "late"}); !errors.Is(err, usage.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestRecordJSON(t *testing.T) {
	r := usage.Record{ID: "log_1", AccountID: "acct_1", KeyID: "cred_1", Endpoint: "/v1/tools/inspect_domain", StatusCode: 200,
		ResponseTime: 842 * time.Millisecond, PromptTokens: 2, CompletionTokens: 3, Cost: credits.AmountFromInt(3),
		UpstreamCost: credits.AmountFromMinor(125, 5), CreatedAt: time.Date(2026, 6, 26, 12, 0, 0, 0, time.UTC)}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"credits_charged":3`, `"upstream_cost":0.00125`, `"response_time_ms":842`, `"total_tokens":5`, `"credential_id":"cred_1"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s lacks %s", b, want)
		}
	}
	var back usage.Record
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.ResponseTime != r.ResponseTime || !back.Cost.Equal(r.Cost) || !back.CreatedAt.Equal(r.CreatedAt) {
		t.Fatalf("round trip: %+v", back)
	}
}

// stallStore group-commits and holds its first MeterUsage until release
// is closed, so a test can end the caller's context while its request is
// being written.
type stallStore struct {
	storewrap.Base
	entered, release chan struct{}
	once             sync.Once
}

func (s *stallStore) UsageGroupCommit() bool { return true }

func (s *stallStore) MeterUsage(ctx context.Context, now time.Time, reqs []usage.MeterRequest, res []usage.MeterOutcome) error {
	s.once.Do(func() {
		close(s.entered)
		<-s.release
	})
	return s.Store.MeterUsage(ctx, now, reqs, res)
}

// A metered debit that commits after its caller stopped waiting still
// starts the auto-recharge of its threshold crossing.
func TestRechargeStartsWhenMeterCallerLeaves(t *testing.T) {
	ctx := context.Background()
	st := &stallStore{Base: storewrap.Base{Store: store.Driver(memstore.New())}, entered: make(chan struct{}), release: make(chan struct{})}
	var mu sync.Mutex
	n := 0
	rech := credits.Recharger(func(ctx context.Context, r credits.RechargeRequest) (credits.RechargeResult, error) {
		mu.Lock()
		n++
		mu.Unlock()
		return credits.RechargeResult{Reference: "pay_1"}, nil
	})
	led, err := credits.NewService(st, &credits.Options{Recharger: rech, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ar := credits.AutoRecharge{Enabled: true, Threshold: credits.AmountFromInt(10), Amount: credits.AmountFromInt(100)}
	if _, err := led.Open(ctx, "acct", credits.Policy{AutoRecharge: ar}); err != nil {
		t.Fatal(err)
	}
	if _, err := led.Grant(ctx, credits.CreditParams{AccountID: "acct", Amount: credits.AmountFromInt(20), IdempotencyKey: "g"}); err != nil {
		t.Fatal(err)
	}
	svc, err := usage.NewService(st, &usage.Options{Credits: led})
	if err != nil {
		t.Fatal(err)
	}
	callerCtx, cancel := context.WithCancel(ctx)
	var caller sync.WaitGroup
	caller.Add(1)
	go func() {
		defer caller.Done()
		_, err := svc.Meter(callerCtx, usage.MeterParams{Record: usage.Record{AccountID: "acct", Cost: credits.AmountFromInt(15)}, IdempotencyKey: "m"})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Meter: %v, want context.Canceled", err)
		}
	}()
	<-st.entered
	cancel()
	caller.Wait()
	close(st.release)
	if err := svc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := led.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("Recharger called %d times, want 1 (stats %+v)", n, led.Stats())
	}
	if bal, _ := led.Balance(ctx, "acct"); !bal.Equal(credits.AmountFromInt(105)) {
		t.Fatalf("balance %s, want 105", bal)
	}
}
