package storefault_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/store/storefault"
	"github.com/keyledger/keyledger/store/storetest"
)

// A debit whose commit acknowledgement is lost is retried with the same
// idempotency key and charged once.
func Example() {
	ctx := context.Background()
	st := storefault.New(store.Driver(memstore.New()), nil)
	ledger, _ := credits.NewService(st, nil)
	defer ledger.Close(ctx)
	_, _ = ledger.Open(ctx, "acct_1", credits.Policy{})
	_, _ = ledger.Grant(ctx, credits.CreditParams{AccountID: "acct_1", Amount: credits.AmountFromInt(10), IdempotencyKey: "g"})

	st.SetRules(storefault.Rule{Methods: []string{"ApplySpends"}, Mode: storefault.After, Count: 1})
	p := credits.DebitParams{AccountID: "acct_1", Amount: credits.AmountFromInt(3), IdempotencyKey: "order-7"}
	_, err := ledger.Debit(ctx, p)
	fmt.Println(errors.Is(err, storefault.ErrInjected))
	_, err = ledger.Debit(ctx, p) // the retry replays the committed debit
	bal, _ := ledger.Balance(ctx, "acct_1")
	fmt.Println(err, bal)
	// Output:
	// true
	// <nil> 7
}

// With no rules the wrapper is a complete, conforming store.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(testing.TB) store.Store { return storefault.New(store.Driver(memstore.New()), nil) })
}

func TestRules(t *testing.T) {
	ctx := context.Background()
	st := storefault.New(store.Driver(memstore.New()), &storefault.Options{Seed: 1})
	open := func(id string) error {
		_, err := st.OpenLedger(ctx, id, "INR", credits.Policy{TimeZone: "UTC"}, time.Now())
		return err
	}
	has := func(id string) bool {
		_, err := st.Inner().LedgerAccount(ctx, id, time.Now())
		return err == nil
	}

	// Skip and Count: the second and third calls fail before the store.
	st.SetRules(storefault.Rule{Methods: []string{"OpenLedger"}, Skip: 1, Count: 2})
	var got []bool
	for i := range 4 {
		id := fmt.Sprint("a", i)
		err := open(id)
		if err != nil && !errors.Is(err, storefault.ErrInjected) {
			t.Fatal(err)
		}
		got = append(got, err == nil)
		if has(id) != (err == nil) {
			t.Fatalf("call %d: Before fault wrote (or success did not): %v", i, err)
		}
	}
	if fmt.Sprint(got) != "[true false false true]" {
		t.Fatalf("outcomes %v", got)
	}

	// After: the write happens and the call still fails.
	st.SetRules(storefault.Rule{Mode: storefault.After})
	if err := open("b"); !errors.Is(err, storefault.ErrInjected) || !has("b") {
		t.Fatalf("After: err %v, written %v", err, has("b"))
	}
	var fe *storefault.Error
	if err := open("c"); !errors.As(err, &fe) || fe.Method != "OpenLedger" || fe.Mode != storefault.After {
		t.Fatalf("error %#v", err)
	}

	// Timeouts match context.DeadlineExceeded and the rule's Err.
	errDisk := errors.New("disk full")
	st.SetRules(storefault.Rule{Methods: []string{"OpenLedger"}, Mode: storefault.TimeoutBefore, Err: errDisk, Delay: time.Hour})
	cctx, cancel := context.WithCancel(ctx)
	cancel() // the delay ends with the context
	_, err := st.OpenLedger(cctx, "d", "INR", credits.Policy{TimeZone: "UTC"}, time.Now())
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errDisk) || !errors.Is(err, storefault.ErrInjected) || has("d") {
		t.Fatalf("timeout: %v", err)
	}

	// Other methods are not matched; Probability fails about that share.
	st.SetRules(storefault.Rule{Methods: []string{"ApplySpends"}}, storefault.Rule{Methods: []string{"OpenLedger"}, Probability: 0.5})
	failed := 0
	for i := range 400 {
		if err := open(fmt.Sprint("p", i)); err != nil {
			failed++
		}
	}
	if failed < 100 || failed > 300 {
		t.Fatalf("probability 0.5 failed %d of 400", failed)
	}
	if st.Injected() == 0 {
		t.Fatal("Injected not counted")
	}
	st.SetRules()
	if err := open("z"); err != nil {
		t.Fatal(err)
	}
}

// capable is a store with the optional capabilities memstore lacks.
type capable struct {
	store.Store
	watching func(apikey.Change)
	stopped  bool
}

func (c *capable) GroupCommit() bool      { return true }
func (c *capable) UsageGroupCommit() bool { return true }
func (c *capable) WatchKeyChanges(fn func(apikey.Change)) (stop func()) {
	c.watching = fn
	return func() { c.stopped = true }
}

// The wrapper has the optional capabilities of the store it wraps, and
// only those: group commit (so that services batch through it as they
// would without it) and key change notifications.
func TestCapabilitiesForwarded(t *testing.T) {
	plain := storefault.New(store.Driver(memstore.New()), nil)
	if plain.GroupCommit() || plain.UsageGroupCommit() {
		t.Fatal("memstore has no group commit; the wrapper must not claim it")
	}
	plain.WatchKeyChanges(func(apikey.Change) { t.Error("memstore reports no key changes") })()

	inner := &capable{Store: store.Driver(memstore.New())}
	st := storefault.New(inner, nil)
	if !st.GroupCommit() || !st.UsageGroupCommit() {
		t.Fatal("the wrapped store's group commit is hidden by the wrapper")
	}
	var got []apikey.Change
	stop := st.WatchKeyChanges(func(c apikey.Change) { got = append(got, c) })
	if inner.watching == nil {
		t.Fatal("WatchKeyChanges did not reach the wrapped store")
	}
	inner.watching(apikey.Change{KeyID: "key_1"})
	if len(got) != 1 || got[0].KeyID != "key_1" {
		t.Fatalf("changes seen through the wrapper: %+v", got)
	}
	stop()
	if !inner.stopped {
		t.Fatal("stop did not reach the wrapped store")
	}
}
