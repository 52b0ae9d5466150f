package storetest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
)

func runCredits(t *testing.T, newStore NewStoreFunc) {
	t.Run("OpenAndPolicy", func(t *testing.T) { testLedgerOpen(t, newStore) })
	t.Run("EntriesAndBalance", func(t *testing.T) { testLedgerEntries(t, newStore) })
	t.Run("ExactSubPaisa", func(t *testing.T) { testLedgerExact(t, newStore) })
	t.Run("Idempotency", func(t *testing.T) { testLedgerIdempotency(t, newStore) })
	t.Run("Overdraft", func(t *testing.T) { testLedgerOverdraft(t, newStore) })
	t.Run("BadInputWritesNothing", func(t *testing.T) { testLedgerBadInput(t, newStore) })
	t.Run("GrantExpiry", func(t *testing.T) { testLedgerExpiry(t, newStore) })
	t.Run("Holds", func(t *testing.T) { testLedgerHolds(t, newStore) })
	t.Run("ExtendHold", func(t *testing.T) { testLedgerExtend(t, newStore) })
	t.Run("Debt", func(t *testing.T) { testLedgerDebt(t, newStore) })
	t.Run("ExpiredHoldFreesFunds", func(t *testing.T) { testLedgerExpiredHoldFrees(t, newStore) })
	t.Run("MonthlyCap", func(t *testing.T) { testLedgerCap(t, newStore) })
	t.Run("AutoRecharge", func(t *testing.T) { testLedgerRecharge(t, newStore) })
	t.Run("ConcurrentSpends", func(t *testing.T) { testLedgerConcurrent(t, newStore) })
	t.Run("ConcurrentReplays", func(t *testing.T) { testLedgerConcurrentReplays(t, newStore) })
	t.Run("Invariants", func(t *testing.T) { testLedgerInvariants(t, newStore) })
}

// ledger returns a credits.Service over e's store and clock; Close runs at
// cleanup.
func (e *env) ledger(t testing.TB, opts *credits.Options) *credits.Service {
	t.Helper()
	var o credits.Options
	if opts != nil {
		o = *opts
	}
	o.Now = e.clk.Now
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	svc, err := credits.NewService(e.st, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return svc
}

func openLedger(t testing.TB, svc *credits.Service, id string, p credits.Policy) {
	t.Helper()
	if _, err := svc.Open(ctx(), id, p); err != nil {
		t.Fatalf("Open(%s): %v", id, err)
	}
}

func mustCredit(t testing.TB, f func(context.Context, credits.CreditParams) (credits.Entry, error), p credits.CreditParams) credits.Entry {
	t.Helper()
	e, err := f(ctx(), p)
	if err != nil {
		t.Fatalf("credit %s to %s: %v", p.Amount, p.AccountID, err)
	}
	return e
}

func mustDebit(t testing.TB, svc *credits.Service, acct, amount, key string) credits.Entry {
	t.Helper()
	e, err := svc.Debit(ctx(), credits.DebitParams{AccountID: acct, Amount: amt(t, amount), IdempotencyKey: key})
	if err != nil {
		t.Fatalf("Debit(%s, %s): %v", acct, amount, err)
	}
	return e
}

func wantAmount(t testing.TB, what string, got credits.Amount, want string) {
	t.Helper()
	if !got.Equal(amt(t, want)) {
		t.Fatalf("%s = %s, want %s", what, got, want)
	}
}

func wantBalance(t testing.TB, svc *credits.Service, acct, want string) credits.Account {
	t.Helper()
	a, err := svc.Account(ctx(), acct)
	if err != nil {
		t.Fatal(err)
	}
	wantAmount(t, "balance of "+acct, a.Balance, want)
	return a
}

// ledgerSum checks Σ entries == balance and returns the entries.
func ledgerSum(t testing.TB, svc *credits.Service, acct string) []credits.Entry {
	t.Helper()
	es := allEntries(t, svc, acct)
	var sum credits.Amount
	for _, e := range es {
		sum = sum.Add(e.Amount)
	}
	bal, err := svc.Balance(ctx(), acct)
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Equal(bal) {
		t.Fatalf("Σ %d entries = %s, balance %s", len(es), sum, bal)
	}
	return es
}

func testLedgerOpen(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := e.ledger(t, nil)
	p := credits.Policy{Overdraft: amt(t, "5"), MonthlyCap: amt(t, "1000"), TimeZone: " Asia/Kolkata "}
	a, err := svc.Open(ctx(), "acct_1", p)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != "acct_1" || a.Unit != "INR" || a.Policy.TimeZone != "Asia/Kolkata" || !a.Balance.IsZero() || !a.OpenedAt.Equal(epoch) {
		t.Fatalf("opened %+v", a)
	}
	if _, err := svc.Open(ctx(), "acct_1", credits.Policy{}); !errors.Is(err, credits.ErrAlreadyOpen) {
		t.Fatalf("second Open: %v, want ErrAlreadyOpen", err)
	}
	got, err := svc.Account(ctx(), "acct_1")
	if err != nil || !got.Policy.Overdraft.Equal(amt(t, "5")) || !got.Policy.MonthlyCap.Equal(amt(t, "1000")) || got.Policy.TimeZone != "Asia/Kolkata" {
		t.Fatalf("Account = %+v, %v", got, err)
	}
	e.clk.Advance(time.Minute)
	up, err := svc.SetPolicy(ctx(), "acct_1", credits.Policy{AutoRecharge: credits.AutoRecharge{Enabled: true, Threshold: amt(t, "10"), Amount: amt(t, "100")}})
	if err != nil || up.Policy.TimeZone != "UTC" || !up.Policy.Overdraft.IsZero() || !up.Policy.AutoRecharge.Enabled || !up.UpdatedAt.Equal(e.clk.Now()) {
		t.Fatalf("SetPolicy = %+v, %v", up, err)
	}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"account unknown", func() error { _, err := svc.Account(ctx(), "acct_none"); return err }()},
		{"balance unknown", func() error { _, err := svc.Balance(ctx(), "acct_none"); return err }()},
		{"policy unknown", func() error { _, err := svc.SetPolicy(ctx(), "acct_none", credits.Policy{}); return err }()},
		{"entries unknown", func() error { _, err := svc.Entries(ctx(), "acct_none", credits.EntryFilter{}, "", 0); return err }()},
		{"balance at unknown", func() error { _, err := svc.BalanceAt(ctx(), "acct_none", epoch); return err }()},
	} {
		if !errors.Is(c.err, credits.ErrUnknownAccount) {
			t.Errorf("%s: %v, want ErrUnknownAccount", c.name, c.err)
		}
	}
	bad := []credits.Policy{
		{Overdraft: amt(t, "-1")},
		{MonthlyCap: amt(t, "-1")},
		{TimeZone: "Mars/Olympus"},
		{TimeZone: "Local"},
		{AutoRecharge: credits.AutoRecharge{Enabled: true}}, // no amount
		{AutoRecharge: credits.AutoRecharge{Enabled: true, Amount: amt(t, "0.001")}},        // finer than a paisa
		{AutoRecharge: credits.AutoRecharge{Threshold: amt(t, "-2"), Amount: amt(t, "10")}}, // negative threshold
	}
	for i, p := range bad {
		if _, err := svc.Open(ctx(), fmt.Sprintf("acct_bad%d", i), p); !errors.Is(err, credits.ErrInvalidPolicy) {
			t.Errorf("bad policy %d: %v, want ErrInvalidPolicy", i, err)
		}
		if _, err := svc.SetPolicy(ctx(), "acct_1", p); !errors.Is(err, credits.ErrInvalidPolicy) {
			t.Errorf("bad policy %d via SetPolicy: %v", i, err)
		}
	}
	for _, id := range []string{"", strings.Repeat("a", 129), "bad\x00id"} {
		if _, err := svc.Open(ctx(), id, credits.Policy{}); !errors.Is(err, credits.ErrInvalidAccountID) {
			t.Errorf("Open(%q): %v, want ErrInvalidAccountID", id, err)
		}
	}
	// An account opened by a Service of another unit refuses this one.
	other := e.ledger(t, &credits.Options{Unit: credits.WholeCredits()})
	openLedger(t, other, "acct_credits", credits.Policy{})
	if _, err := svc.Grant(ctx(), credits.CreditParams{AccountID: "acct_credits", Amount: amt(t, "1"), IdempotencyKey: "g"}); !errors.Is(err, credits.ErrUnitMismatch) {
		t.Fatalf("grant in the wrong unit: %v, want ErrUnitMismatch", err)
	}
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_credits", Amount: amt(t, "1"), IdempotencyKey: "d"}); !errors.Is(err, credits.ErrUnitMismatch) {
		t.Fatalf("debit in the wrong unit: %v, want ErrUnitMismatch", err)
	}
}

func testLedgerEntries(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := e.ledger(t, nil)
	openLedger(t, svc, "acct_1", credits.Policy{})
	t0 := e.clk.Now()
	g := mustCredit(t, svc.Grant, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "50"), Description: "signup grant", IdempotencyKey: "signup"})
	if g.Type != credits.EntryGrant || g.Seq != 1 || !g.Amount.Equal(amt(t, "50")) || !g.BalanceAfter.Equal(amt(t, "50")) ||
		g.Description != "signup grant" || g.IdempotencyKey != "signup" || !g.CreatedAt.Equal(t0) || !strings.HasPrefix(g.ID, "txn_") {
		t.Fatalf("grant entry %+v", g)
	}
	e.clk.Advance(time.Hour)
	t1 := e.clk.Now()
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "100.50"), Reference: "pay_123", IdempotencyKey: "pay_123"})
	d := mustDebit(t, svc, "acct_1", "20.25", "use_1")
	if d.Type != credits.EntryDebit || !d.Amount.Equal(amt(t, "-20.25")) || !d.BalanceAfter.Equal(amt(t, "130.25")) {
		t.Fatalf("debit entry %+v", d)
	}
	e.clk.Advance(time.Hour)
	t2 := e.clk.Now()
	mustCredit(t, svc.Refund, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "0.25"), Reference: d.ID, IdempotencyKey: "refund_1"})
	mustCredit(t, svc.Adjust, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "-0.50"), Description: "correction", IdempotencyKey: "adj_1"})
	wantBalance(t, svc, "acct_1", "130")
	es := ledgerSum(t, svc, "acct_1")
	types := []credits.EntryType{credits.EntryAdjustment, credits.EntryRefund, credits.EntryDebit, credits.EntryPurchase, credits.EntryGrant}
	if len(es) != len(types) {
		t.Fatalf("%d entries, want %d", len(es), len(types))
	}
	prev := credits.Amount{}
	for i := len(es) - 1; i >= 0; i-- { // oldest first: the balance chain
		if es[i].Type != types[i] || es[i].Seq != int64(len(es)-i) || !es[i].BalanceAfter.Equal(prev.Add(es[i].Amount)) {
			t.Fatalf("entry %d: %+v (previous balance %s)", i, es[i], prev)
		}
		prev = es[i].BalanceAfter
	}
	// Filters and pages.
	pg, err := svc.Entries(ctx(), "acct_1", credits.EntryFilter{Types: []credits.EntryType{credits.EntryDebit, credits.EntryRefund}}, "", 0)
	if err != nil || len(pg.Entries) != 2 || pg.Entries[0].Type != credits.EntryRefund || pg.NextCursor != "" {
		t.Fatalf("type filter: %+v, %v", pg, err)
	}
	pg, err = svc.Entries(ctx(), "acct_1", credits.EntryFilter{From: t1, To: t2}, "", 0)
	if err != nil || len(pg.Entries) != 2 || pg.Entries[0].Type != credits.EntryDebit || pg.Entries[1].Type != credits.EntryPurchase {
		t.Fatalf("time filter: %+v, %v", pg, err)
	}
	var seen []int64
	cursor := ""
	for {
		pg, err := svc.Entries(ctx(), "acct_1", credits.EntryFilter{}, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range pg.Entries {
			seen = append(seen, x.Seq)
		}
		if pg.NextCursor == "" {
			break
		}
		cursor = pg.NextCursor
	}
	if fmt.Sprint(seen) != "[5 4 3 2 1]" {
		t.Fatalf("pages gave seqs %v", seen)
	}
	for _, c := range []string{"x", "-1", "0"} {
		if _, err := svc.Entries(ctx(), "acct_1", credits.EntryFilter{}, c, 0); !errors.Is(err, credits.ErrInvalidCursor) {
			t.Errorf("cursor %q: %v", c, err)
		}
	}
	if _, err := svc.Entries(ctx(), "acct_1", credits.EntryFilter{Types: []credits.EntryType{"bogus"}}, "", 0); !errors.Is(err, credits.ErrInvalidOptions) {
		t.Errorf("bogus type: %v", err)
	}
	// BalanceAt walks back through history.
	for _, c := range []struct {
		at   time.Time
		want string
	}{{t0.Add(-time.Second), "0"}, {t0, "50"}, {t1.Add(-time.Second), "50"}, {t1, "130.25"}, {t2, "130"}, {t2.Add(time.Hour), "130"}} {
		got, err := svc.BalanceAt(ctx(), "acct_1", c.at)
		if err != nil || !got.Equal(amt(t, c.want)) {
			t.Errorf("BalanceAt(%s) = %s, %v; want %s", c.at, got, err, c.want)
		}
	}
	// Returned values are copies.
	pg, _ = svc.Entries(ctx(), "acct_1", credits.EntryFilter{}, "", 0)
	pg.Entries[0].Description = "changed"
	pg2, _ := svc.Entries(ctx(), "acct_1", credits.EntryFilter{}, "", 0)
	if pg2.Entries[0].Description != "correction" {
		t.Fatal("a returned entry shares memory with the store")
	}
}

func testLedgerExact(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := e.ledger(t, nil)
	openLedger(t, svc, "acct_1", credits.Policy{})
	mustCredit(t, svc.Grant, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "50"), IdempotencyKey: "g"})
	// 800 per-token costs of ₹0.0000125 from 8 callers: exactly ₹0.01.
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "0.0000125"), IdempotencyKey: fmt.Sprintf("tok_%d_%d", g, i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	a := wantBalance(t, svc, "acct_1", "49.99")
	wantAmount(t, "used this month", a.UsedThisMonth, "0.01")
	if s := svc.Unit().Format(a.Balance); s != "49.99" {
		t.Fatalf("formatted %q", s)
	}
	ledgerSum(t, svc, "acct_1")
}

func testLedgerIdempotency(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := e.ledger(t, nil)
	openLedger(t, svc, "acct_1", credits.Policy{})
	openLedger(t, svc, "acct_2", credits.Policy{})
	g1 := mustCredit(t, svc.Grant, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "10"), IdempotencyKey: "k"})
	again := mustCredit(t, svc.Grant, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "10.00"), IdempotencyKey: "k"})
	if again.ID != g1.ID || again.Seq != g1.Seq {
		t.Fatalf("replay returned %+v, first %+v", again, g1)
	}
	// Keys are per account: the same key credits another account.
	mustCredit(t, svc.Grant, credits.CreditParams{AccountID: "acct_2", Amount: amt(t, "10"), IdempotencyKey: "k"})
	wantBalance(t, svc, "acct_1", "10")
	wantBalance(t, svc, "acct_2", "10")
	for _, c := range []struct {
		name string
		f    func() error
	}{
		{"grant other amount", func() error {
			_, err := svc.Grant(ctx(), credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "11"), IdempotencyKey: "k"})
			return err
		}},
		{"purchase same key", func() error {
			_, err := svc.Purchase(ctx(), credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "10"), IdempotencyKey: "k"})
			return err
		}},
		{"grant other reference", func() error {
			_, err := svc.Grant(ctx(), credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "10"), Reference: "x", IdempotencyKey: "k"})
			return err
		}},
		{"debit same key", func() error {
			_, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "1"), IdempotencyKey: "k"})
			return err
		}},
		{"reserve same key", func() error {
			if processHolds(e.st) {
				// Process holds keep reserve keys in memory: they do not
				// meet the keys of the store's writes (DESIGN.md).
				return credits.ErrIdempotencyConflict
			}
			_, err := svc.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_1", Amount: amt(t, "1"), TTL: time.Minute, IdempotencyKey: "k"})
			return err
		}},
	} {
		if err := c.f(); !errors.Is(err, credits.ErrIdempotencyConflict) {
			t.Errorf("%s: %v, want ErrIdempotencyConflict", c.name, err)
		}
	}
	d := mustDebit(t, svc, "acct_1", "7", "d1")
	// A replay returns the first result although the debit would now fail.
	if d2 := mustDebit(t, svc, "acct_1", "7", "d1"); d2.ID != d.ID || !d2.BalanceAfter.Equal(amt(t, "3")) {
		t.Fatalf("debit replay %+v, first %+v", d2, d)
	}
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "8"), IdempotencyKey: "d1"}); !errors.Is(err, credits.ErrIdempotencyConflict) {
		t.Fatalf("debit conflict: %v", err)
	}
	// A failed request records nothing: after a top-up the same key works.
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "5"), IdempotencyKey: "d2"}); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("overspend: %v", err)
	}
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "5"), IdempotencyKey: "p"})
	mustDebit(t, svc, "acct_1", "5", "d2")
	h, err := svc.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_1", Amount: amt(t, "1"), TTL: time.Minute, IdempotencyKey: "r"})
	if err != nil {
		t.Fatal(err)
	}
	h2, err := svc.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_1", Amount: amt(t, "1"), TTL: time.Minute, IdempotencyKey: "r"})
	if err != nil || h2.ID != h.ID {
		t.Fatalf("reserve replay %+v, %v; first %s", h2, err, h.ID)
	}
	a := wantBalance(t, svc, "acct_1", "3")
	wantAmount(t, "held", a.Held, "1")
	if es := ledgerSum(t, svc, "acct_1"); len(es) != 4 {
		t.Fatalf("%d entries, want 4 (grant, debit, purchase, debit)", len(es))
	}
}

func testLedgerOverdraft(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := e.ledger(t, nil)
	openLedger(t, svc, "acct_1", credits.Policy{Overdraft: amt(t, "10")})
	mustCredit(t, svc.Grant, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "5"), IdempotencyKey: "g"})
	mustDebit(t, svc, "acct_1", "12", "d1")
	mustDebit(t, svc, "acct_1", "3", "d2")
	wantBalance(t, svc, "acct_1", "-10")
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "0.01"), IdempotencyKey: "d3"}); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("beyond overdraft: %v", err)
	}
	if _, err := svc.Adjust(ctx(), credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "-1"), IdempotencyKey: "a1"}); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("negative adjustment beyond overdraft: %v", err)
	}
	wantBalance(t, svc, "acct_1", "-10")
	if es := ledgerSum(t, svc, "acct_1"); len(es) != 3 {
		t.Fatalf("%d entries", len(es))
	}
	// Without an overdraft the balance stops at zero.
	openLedger(t, svc, "acct_2", credits.Policy{})
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_2", Amount: amt(t, "1"), IdempotencyKey: "p"})
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_2", Amount: amt(t, "1.0000001"), IdempotencyKey: "d"}); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("overspend by 10^-7: %v", err)
	}
	mustDebit(t, svc, "acct_2", "1", "d")
	wantBalance(t, svc, "acct_2", "0")
}

func testLedgerBadInput(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	inr := e.ledger(t, nil)
	half := e.ledger(t, &credits.Options{Unit: credits.HalfCredits()})
	openLedger(t, inr, "acct_inr", credits.Policy{})
	openLedger(t, half, "acct_half", credits.Policy{})
	mustCredit(t, inr.Grant, credits.CreditParams{AccountID: "acct_inr", Amount: amt(t, "100"), IdempotencyKey: "g"})
	mustCredit(t, half.Grant, credits.CreditParams{AccountID: "acct_half", Amount: amt(t, "100"), IdempotencyKey: "g"})
	mustDebit(t, inr, "acct_inr", "1", "used-key")
	settled, err := inr.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_inr", Amount: amt(t, "1"), TTL: time.Hour, IdempotencyKey: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inr.Settle(ctx(), credits.SettleParams{HoldID: settled.ID, Actual: amt(t, "1")}); err != nil {
		t.Fatal(err)
	}
	released, _ := inr.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_inr", Amount: amt(t, "1"), TTL: time.Hour, IdempotencyKey: "h2"})
	if _, err := inr.Release(ctx(), released.ID); err != nil {
		t.Fatal(err)
	}
	expired, _ := inr.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_inr", Amount: amt(t, "1"), TTL: time.Minute, IdempotencyKey: "h3"})
	e.clk.Advance(time.Minute)
	beforeINR, beforeHalf := ledgerSum(t, inr, "acct_inr"), ledgerSum(t, half, "acct_half")

	debit := func(svc *credits.Service, acct, amount, key string) func() error {
		return func() error {
			_, err := svc.Debit(ctx(), credits.DebitParams{AccountID: acct, Amount: amt(t, amount), IdempotencyKey: key})
			return err
		}
	}
	grant := func(svc *credits.Service, p credits.CreditParams) func() error {
		return func() error { _, err := svc.Grant(ctx(), p); return err }
	}
	settle := func(id, actual string) func() error {
		return func() error {
			_, err := inr.Settle(ctx(), credits.SettleParams{HoldID: id, Actual: amt(t, actual)})
			return err
		}
	}
	cases := []struct {
		name string
		f    func() error
		want error
	}{
		{"zero debit", debit(inr, "acct_inr", "0", "k1"), credits.ErrInvalidAmount},
		{"negative debit", debit(inr, "acct_inr", "-1", "k1"), credits.ErrInvalidAmount},
		{"huge debit", func() error {
			_, err := inr.Debit(ctx(), credits.DebitParams{AccountID: "acct_inr", Amount: credits.AmountFromInt(1e15), IdempotencyKey: "k1"})
			return err
		}, credits.ErrInvalidAmount},
		{"too many decimals", func() error {
			_, err := inr.Debit(ctx(), credits.DebitParams{AccountID: "acct_inr", Amount: credits.AmountFromMinor(1, 19), IdempotencyKey: "k1"})
			return err
		}, credits.ErrInvalidAmount},
		{"zero grant", grant(inr, credits.CreditParams{AccountID: "acct_inr", IdempotencyKey: "k1"}), credits.ErrInvalidAmount},
		{"negative grant", grant(inr, credits.CreditParams{AccountID: "acct_inr", Amount: amt(t, "-5"), IdempotencyKey: "k1"}), credits.ErrInvalidAmount},
		{"sub-paisa grant", grant(inr, credits.CreditParams{AccountID: "acct_inr", Amount: amt(t, "1.001"), IdempotencyKey: "k1"}), credits.ErrAmountPrecision},
		{"third of a credit", debit(half, "acct_half", "0.3", "k1"), credits.ErrAmountPrecision},
		{"quarter credit grant", grant(half, credits.CreditParams{AccountID: "acct_half", Amount: amt(t, "0.25"), IdempotencyKey: "k1"}), credits.ErrAmountPrecision},
		{"unknown account debit", debit(inr, "acct_none", "1", "k1"), credits.ErrUnknownAccount},
		{"unknown account grant", grant(inr, credits.CreditParams{AccountID: "acct_none", Amount: amt(t, "1"), IdempotencyKey: "k1"}), credits.ErrUnknownAccount},
		{"empty account", debit(inr, "", "1", "k1"), credits.ErrUnknownAccount},
		{"empty key", debit(inr, "acct_inr", "1", ""), credits.ErrInvalidIdempotencyKey},
		{"long key", debit(inr, "acct_inr", "1", strings.Repeat("k", 256)), credits.ErrInvalidIdempotencyKey},
		{"long reference", func() error {
			_, err := inr.Debit(ctx(), credits.DebitParams{AccountID: "acct_inr", Amount: amt(t, "1"), Reference: strings.Repeat("r", 256), IdempotencyKey: "k1"})
			return err
		}, credits.ErrInvalidText},
		{"invalid UTF-8 description", grant(inr, credits.CreditParams{AccountID: "acct_inr", Amount: amt(t, "1"), Description: "\xff", IdempotencyKey: "k1"}), credits.ErrInvalidText},
		{"past expiry", grant(inr, credits.CreditParams{AccountID: "acct_inr", Amount: amt(t, "1"), ExpiresAt: e.clk.Now(), IdempotencyKey: "k1"}), credits.ErrInvalidExpiry},
		{"expiry after 2200", grant(inr, credits.CreditParams{AccountID: "acct_inr", Amount: amt(t, "1"), ExpiresAt: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), IdempotencyKey: "k1"}), credits.ErrInvalidExpiry},
		{"expiring purchase", func() error {
			_, err := inr.Purchase(ctx(), credits.CreditParams{AccountID: "acct_inr", Amount: amt(t, "1"), ExpiresAt: e.clk.Now().Add(time.Hour), IdempotencyKey: "k1"})
			return err
		}, credits.ErrInvalidExpiry},
		{"zero TTL", func() error {
			_, err := inr.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_inr", Amount: amt(t, "1"), IdempotencyKey: "k1"})
			return err
		}, credits.ErrInvalidTTL},
		{"TTL too long", func() error {
			_, err := inr.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_inr", Amount: amt(t, "1"), TTL: 25 * time.Hour, IdempotencyKey: "k1"})
			return err
		}, credits.ErrInvalidTTL},
		{"insufficient", debit(inr, "acct_inr", "500", "k1"), credits.ErrInsufficientFunds},
		{"reserve insufficient", func() error {
			_, err := inr.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_inr", Amount: amt(t, "500"), TTL: time.Hour, IdempotencyKey: "k1"})
			return err
		}, credits.ErrInsufficientFunds},
		{"key reused", debit(inr, "acct_inr", "2", "used-key"), credits.ErrIdempotencyConflict},
		{"settle unknown hold", settle("hold_none", "1"), credits.ErrHoldNotFound},
		{"settle released hold", settle(released.ID, "1"), credits.ErrHoldReleased},
		{"settle expired hold", settle(expired.ID, "1"), credits.ErrHoldExpired},
		{"settle settled hold again", settle(settled.ID, "0.5"), credits.ErrHoldSettled},
		{"settle negative", settle(settled.ID, "-1"), credits.ErrInvalidAmount},
		{"release settled hold", func() error { _, err := inr.Release(ctx(), settled.ID); return err }, credits.ErrHoldSettled},
		{"release unknown hold", func() error { _, err := inr.Release(ctx(), "hold_none"); return err }, credits.ErrHoldNotFound},
	}
	for _, c := range cases {
		if err := c.f(); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	afterINR, afterHalf := ledgerSum(t, inr, "acct_inr"), ledgerSum(t, half, "acct_half")
	if len(afterINR) != len(beforeINR) || len(afterHalf) != len(beforeHalf) {
		t.Fatalf("bad input wrote entries: %d→%d, %d→%d", len(beforeINR), len(afterINR), len(beforeHalf), len(afterHalf))
	}
	a := wantBalance(t, inr, "acct_inr", "98")
	wantAmount(t, "held", a.Held, "0")
	if h, _ := inr.Hold(ctx(), released.ID); h.State != credits.HoldReleased {
		t.Fatalf("released hold now %s", h.State)
	}
	// Releasing a released or expired hold is a no-op, not an error.
	for _, id := range []string{released.ID, expired.ID} {
		if h, err := inr.Release(ctx(), id); err != nil || h.State == credits.HoldActive {
			t.Errorf("release of a free hold: %+v, %v", h, err)
		}
	}
	// Half credits: 0.5 and 1 are fine.
	mustDebit(t, half, "acct_half", "0.5", "cached")
	mustDebit(t, half, "acct_half", "1", "miss")
	wantBalance(t, half, "acct_half", "98.5")
}

func testLedgerExpiry(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := e.ledger(t, nil)
	openLedger(t, svc, "acct_1", credits.Policy{})
	t0 := e.clk.Now()
	late := mustCredit(t, svc.Grant, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "10"), ExpiresAt: t0.Add(48 * time.Hour), IdempotencyKey: "late"})
	early := mustCredit(t, svc.Grant, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "10"), ExpiresAt: t0.Add(24 * time.Hour), IdempotencyKey: "early"})
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "10"), IdempotencyKey: "paid"})
	if !late.ExpiresAt.Equal(t0.Add(48 * time.Hour)) {
		t.Fatalf("grant entry lost its expiry: %+v", late)
	}
	// Spending draws on the earliest-expiring grant first.
	mustDebit(t, svc, "acct_1", "12", "d1") // early: 10 → 0, late: 10 → 8
	// After the late grant's expiry only the purchase is left.
	e.clk.Set(t0.Add(48 * time.Hour))
	wantBalance(t, svc, "acct_1", "10") // a read, before anything is written
	if got, _ := svc.BalanceAt(ctx(), "acct_1", t0.Add(48*time.Hour-time.Nanosecond)); !got.Equal(amt(t, "18")) {
		t.Fatalf("BalanceAt just before expiry = %s, want 18", got)
	}
	if got, _ := svc.BalanceAt(ctx(), "acct_1", t0.Add(48*time.Hour)); !got.Equal(amt(t, "10")) {
		t.Fatalf("BalanceAt at expiry = %s, want 10", got)
	}
	es := ledgerSum(t, svc, "acct_1") // Entries writes the due expiry first
	x := es[0]
	if x.Type != credits.EntryExpiry || !x.Amount.Equal(amt(t, "-8")) || !x.BalanceAfter.Equal(amt(t, "10")) || x.Reference != late.ID ||
		!x.CreatedAt.Equal(t0.Add(48*time.Hour)) || x.ID != ledger.ExpiryEntryID(late.ID) || len(es) != 5 {
		t.Fatalf("expiry entry %+v of %d", x, len(es))
	}
	if got, _ := svc.BalanceAt(ctx(), "acct_1", t0.Add(47*time.Hour)); !got.Equal(amt(t, "18")) {
		t.Fatalf("BalanceAt after the expiry entry = %s, want 18", got)
	}
	// The fully spent early grant wrote no expiry.
	for _, en := range es {
		if en.Reference == early.ID {
			t.Fatalf("spent grant expired: %+v", en)
		}
	}
	// A second account's expiry is written lazily by its next debit …
	openLedger(t, svc, "acct_2", credits.Policy{})
	mustCredit(t, svc.Grant, credits.CreditParams{AccountID: "acct_2", Amount: amt(t, "5"), ExpiresAt: e.clk.Now().Add(time.Hour), IdempotencyKey: "g"})
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_2", Amount: amt(t, "1"), IdempotencyKey: "p"})
	e.clk.Advance(2 * time.Hour)
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_2", Amount: amt(t, "2"), IdempotencyKey: "d"}); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("debit of expired credit: %v", err)
	}
	mustDebit(t, svc, "acct_2", "1", "d")
	wantBalance(t, svc, "acct_2", "0")
	ledgerSum(t, svc, "acct_2")
	// … and a third account's by the sweep.
	openLedger(t, svc, "acct_3", credits.Policy{})
	mustCredit(t, svc.Grant, credits.CreditParams{AccountID: "acct_3", Amount: amt(t, "5"), ExpiresAt: e.clk.Now().Add(time.Hour), IdempotencyKey: "g"})
	if _, err := svc.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_3", Amount: amt(t, "1"), TTL: 30 * time.Minute, IdempotencyKey: "r"}); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Hour)
	rep, err := svc.ExpireDue(ctx())
	wantHolds := 1
	if processHolds(e.st) {
		wantHolds = 0 // the hold expired in memory; the store never had it
	}
	if err != nil || rep.Entries != 1 || rep.Holds != wantHolds || rep.Accounts != 1 {
		t.Fatalf("ExpireDue = %+v, %v", rep, err)
	}
	if rep, err := svc.ExpireDue(ctx()); err != nil || rep != (credits.ExpiryReport{}) {
		t.Fatalf("second sweep = %+v, %v", rep, err)
	}
	a := wantBalance(t, svc, "acct_3", "0")
	wantAmount(t, "held", a.Held, "0")
	ledgerSum(t, svc, "acct_3")
}

func testLedgerHolds(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := e.ledger(t, nil)
	openLedger(t, svc, "acct_1", credits.Policy{Overdraft: amt(t, "2")})
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "10"), IdempotencyKey: "p"})
	reserve := func(amount string, ttl time.Duration, key string) (credits.Hold, error) {
		return svc.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_1", Amount: amt(t, amount), TTL: ttl, Reference: "req_" + key, IdempotencyKey: key})
	}
	h1, err := reserve("4", time.Minute, "a")
	if err != nil || h1.State != credits.HoldActive || !h1.ExpiresAt.Equal(e.clk.Now().Add(time.Minute)) || !strings.HasPrefix(h1.ID, "hold_") {
		t.Fatalf("Reserve = %+v, %v", h1, err)
	}
	a := wantBalance(t, svc, "acct_1", "10")
	wantAmount(t, "available", a.Available, "6")
	if _, err := reserve("8.01", time.Minute, "b"); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("reserve beyond available + overdraft: %v", err)
	}
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "8.01"), IdempotencyKey: "d"}); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("debit beyond available: %v", err)
	}
	h2, err := reserve("8", time.Minute, "c") // available + overdraft
	if err != nil {
		t.Fatal(err)
	}
	// Settle below the hold: charge the actual, free the rest.
	s, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h1.ID, Actual: amt(t, "3"), Description: "42 tokens"})
	if err != nil || !s.Charged.Equal(amt(t, "3")) || !s.Shortfall.IsZero() || s.Hold.State != credits.HoldSettled ||
		s.Entry.HoldID != h1.ID || s.Entry.Reference != "req_a" || !s.Entry.Amount.Equal(amt(t, "-3")) || s.Hold.EntryID != s.Entry.ID {
		t.Fatalf("Settle = %+v, %v", s, err)
	}
	if again, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h1.ID, Actual: amt(t, "3"), Description: "42 tokens"}); err != nil || again.Entry.ID != s.Entry.ID {
		t.Fatalf("settle replay = %+v, %v", again, err)
	}
	a = wantBalance(t, svc, "acct_1", "7")
	wantAmount(t, "held", a.Held, "8")
	wantAmount(t, "available", a.Available, "-1")
	// Settle above the hold with a write-off: charge up to balance +
	// overdraft, report the rest.
	s, err = svc.Settle(ctx(), credits.SettleParams{HoldID: h2.ID, Actual: amt(t, "12"), Overrun: credits.OverrunWriteOff})
	if err != nil || !s.Charged.Equal(amt(t, "9")) || !s.Shortfall.Equal(amt(t, "3")) || !s.Hold.Actual.Equal(amt(t, "12")) {
		t.Fatalf("settle above hold = %+v, %v", s, err)
	}
	a = wantBalance(t, svc, "acct_1", "-2")
	wantAmount(t, "available", a.Available, "-2")
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "10"), IdempotencyKey: "p2"})
	// Settle with zero and release.
	h3, _ := reserve("1", time.Minute, "e")
	if s, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h3.ID, Actual: credits.Amount{}}); err != nil || s.Entry.ID != "" || !s.Charged.IsZero() {
		t.Fatalf("zero settle = %+v, %v", s, err)
	}
	h4, _ := reserve("2", time.Minute, "f")
	if r, err := svc.Release(ctx(), h4.ID); err != nil || r.State != credits.HoldReleased || !r.ResolvedAt.Equal(e.clk.Now()) {
		t.Fatalf("Release = %+v, %v", r, err)
	}
	// A hold past its deadline frees itself at once for reads.
	h5, _ := reserve("5", time.Minute, "g")
	wantAmount(t, "available with hold", wantBalance(t, svc, "acct_1", "8").Available, "3")
	e.clk.Advance(time.Minute)
	wantAmount(t, "available after deadline", wantBalance(t, svc, "acct_1", "8").Available, "8")
	if h, err := svc.Hold(ctx(), h5.ID); err != nil || h.State != credits.HoldExpired || !h.ResolvedAt.Equal(h5.ExpiresAt) {
		t.Fatalf("Hold after deadline = %+v, %v", h, err)
	}
	if _, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h5.ID, Actual: amt(t, "1")}); !errors.Is(err, credits.ErrHoldExpired) {
		t.Fatalf("settle after deadline: %v", err)
	}
	mustDebit(t, svc, "acct_1", "8", "all") // the expired hold no longer blocks
	a = wantBalance(t, svc, "acct_1", "0")
	wantAmount(t, "held", a.Held, "0")
	es := ledgerSum(t, svc, "acct_1")
	settles := map[string]int{}
	for _, en := range es {
		if en.HoldID != "" {
			settles[en.HoldID]++
		}
	}
	if len(settles) != 2 || settles[h1.ID] != 1 || settles[h2.ID] != 1 {
		t.Fatalf("settle entries per hold: %v", settles)
	}
	// A second Service (another process) sees and resolves the same holds.
	other := e.ledger(t, nil)
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "3"), IdempotencyKey: "p3"})
	h6, _ := reserve("3", time.Minute, "h")
	if _, err := other.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "2.01"), IdempotencyKey: "o"}); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("other process overspent a hold: %v", err)
	}
	if _, err := other.Release(ctx(), h6.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h6.ID, Actual: amt(t, "1")}); !errors.Is(err, credits.ErrHoldReleased) {
		t.Fatalf("settle of a hold released elsewhere: %v", err)
	}
}

// testLedgerExtend: an active hold grows from Available (checked like a
// reserve of the difference) and its deadline moves; a repeat is a no-op;
// a resolved hold cannot grow; another process sees the new amount.
func testLedgerExtend(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := e.ledger(t, nil)
	openLedger(t, svc, "acct_1", credits.Policy{MonthlyCap: amt(t, "9")})
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "10"), IdempotencyKey: "p"})
	h, err := svc.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_1", Amount: amt(t, "2"), TTL: time.Minute, IdempotencyKey: "r"})
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(50 * time.Second)
	x, err := svc.Extend(ctx(), credits.ExtendParams{HoldID: h.ID, Amount: amt(t, "5"), TTL: time.Minute})
	if err != nil || !x.Amount.Equal(amt(t, "5")) || !x.ExpiresAt.Equal(e.clk.Now().Add(time.Minute)) || x.State != credits.HoldActive {
		t.Fatalf("Extend = %+v, %v", x, err)
	}
	wantAmount(t, "available after extend", wantBalance(t, svc, "acct_1", "10").Available, "5")
	// A repeat, a smaller amount and a shorter TTL change nothing.
	if y, err := svc.Extend(ctx(), credits.ExtendParams{HoldID: h.ID, Amount: amt(t, "3"), TTL: time.Second}); err != nil || !y.Amount.Equal(amt(t, "5")) || !y.ExpiresAt.Equal(x.ExpiresAt) {
		t.Fatalf("shrinking Extend = %+v, %v", y, err)
	}
	// The old deadline has passed; the hold lives on.
	e.clk.Advance(30 * time.Second)
	if got, err := svc.Hold(ctx(), h.ID); err != nil || got.State != credits.HoldActive || !got.Amount.Equal(amt(t, "5")) {
		t.Fatalf("Hold after the first deadline = %+v, %v", got, err)
	}
	// Funds: 5 more would leave −0 available but pass the cap of 9.
	if _, err := svc.Extend(ctx(), credits.ExtendParams{HoldID: h.ID, Amount: amt(t, "10")}); !errors.Is(err, credits.ErrMonthlyLimit) {
		t.Fatalf("extend past the cap: %v", err)
	}
	if _, err := svc.Extend(ctx(), credits.ExtendParams{HoldID: h.ID, Amount: amt(t, "10.5")}); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("extend past the funds: %v", err)
	}
	// Another process sees the grown hold.
	other := e.ledger(t, nil)
	if _, err := other.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "5.5"), IdempotencyKey: "d"}); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("other process spent an extended hold: %v", err)
	}
	s, err := other.Settle(ctx(), credits.SettleParams{HoldID: h.ID, Actual: amt(t, "4")})
	if err != nil || !s.Charged.Equal(amt(t, "4")) {
		t.Fatalf("Settle of an extended hold = %+v, %v", s, err)
	}
	a := wantBalance(t, svc, "acct_1", "6")
	wantAmount(t, "held", a.Held, "0")
	if _, err := svc.Extend(ctx(), credits.ExtendParams{HoldID: h.ID, Amount: amt(t, "6")}); !errors.Is(err, credits.ErrHoldSettled) {
		t.Fatalf("extend a settled hold: %v", err)
	}
	h2, _ := svc.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_1", Amount: amt(t, "1"), TTL: time.Minute, IdempotencyKey: "r2"})
	e.clk.Advance(time.Minute)
	if _, err := svc.Extend(ctx(), credits.ExtendParams{HoldID: h2.ID, Amount: amt(t, "2"), TTL: time.Minute}); !errors.Is(err, credits.ErrHoldExpired) {
		t.Fatalf("extend an expired hold: %v", err)
	}
	if _, err := svc.Extend(ctx(), credits.ExtendParams{HoldID: "hold_nope", Amount: amt(t, "2")}); !errors.Is(err, credits.ErrHoldNotFound) {
		t.Fatalf("extend an unknown hold: %v", err)
	}
	ledgerSum(t, svc, "acct_1")
}

// testLedgerDebt: delivered work above its hold is charged in full, the
// balance goes below −Overdraft by the overshoot, spending is refused with
// a *DebtError naming it, and a purchase pays it first.
func testLedgerDebt(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := e.ledger(t, nil)
	openLedger(t, svc, "acct_1", credits.Policy{Overdraft: amt(t, "1"), MonthlyCap: amt(t, "50")})
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "10"), IdempotencyKey: "p"})
	h, err := svc.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_1", Amount: amt(t, "8"), TTL: time.Minute, IdempotencyKey: "r"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h.ID, Actual: amt(t, "14.25")})
	if err != nil || !s.Charged.Equal(amt(t, "14.25")) || !s.Shortfall.IsZero() || !s.Entry.Amount.Equal(amt(t, "-14.25")) {
		t.Fatalf("settle into debt = %+v, %v", s, err)
	}
	a := wantBalance(t, svc, "acct_1", "-4.25")
	wantAmount(t, "debt", a.Debt, "3.25")
	wantAmount(t, "used this month", a.UsedThisMonth, "14.25")
	for _, try := range []func() error{
		func() error {
			_, err := svc.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_1", Amount: amt(t, "0.01"), TTL: time.Minute, IdempotencyKey: "r2"})
			return err
		},
		func() error {
			_, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "0.01"), IdempotencyKey: "d"})
			return err
		},
	} {
		err := try()
		var de *credits.DebtError
		if !errors.Is(err, credits.ErrInsufficientFunds) || !errors.Is(err, credits.ErrInDebt) || !errors.As(err, &de) || !de.Debt.Equal(amt(t, "3.25")) {
			t.Fatalf("spend in debt: %v", err)
		}
	}
	// A debit for delivered work may go deeper (debt) or stop at the funds (write-off).
	if en, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "0.75"), IdempotencyKey: "dd", Overrun: credits.OverrunDebt}); err != nil || !en.Amount.Equal(amt(t, "-0.75")) {
		t.Fatalf("delivered debit in debt = %+v, %v", en, err)
	}
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "0.75"), IdempotencyKey: "dw", Overrun: credits.OverrunWriteOff}); !errors.Is(err, credits.ErrInDebt) {
		t.Fatalf("write-off debit with nothing to take: %v", err)
	}
	// A purchase pays the debt first; spending resumes once Available covers it.
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "4"), IdempotencyKey: "p2"})
	a = wantBalance(t, svc, "acct_1", "-1")
	wantAmount(t, "debt after top-up", a.Debt, "0")
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "3"), IdempotencyKey: "p3"})
	en, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "5"), IdempotencyKey: "dw2", Overrun: credits.OverrunWriteOff})
	if err != nil || !en.Amount.Equal(amt(t, "-3")) {
		t.Fatalf("write-off debit charges what funds cover: %+v, %v", en, err)
	}
	if again, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "5"), IdempotencyKey: "dw2", Overrun: credits.OverrunWriteOff}); err != nil || again.ID != en.ID {
		t.Fatalf("write-off debit replay = %+v, %v", again, err)
	}
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "5"), IdempotencyKey: "dw2", Overrun: credits.OverrunDebt}); !errors.Is(err, credits.ErrIdempotencyConflict) {
		t.Fatalf("same key, other overrun: %v", err)
	}
	wantBalance(t, svc, "acct_1", "-1")
	ledgerSum(t, svc, "acct_1")
}

// testLedgerExpiredHoldFrees: a hold past its deadline frees its funds for
// the next reserve at once, with no sweep and no other write in between,
// also when the first hold was made by another process.
func testLedgerExpiredHoldFrees(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := e.ledger(t, nil)
	other := e.ledger(t, nil)
	openLedger(t, svc, "acct_1", credits.Policy{})
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "10"), IdempotencyKey: "p"})
	for i, s := range []*credits.Service{svc, other, svc} {
		if _, err := s.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_1", Amount: amt(t, "10"), TTL: time.Minute, IdempotencyKey: fmt.Sprint("r", i)}); err != nil {
			t.Fatalf("reserve %d after the previous hold expired: %v", i, err)
		}
		e.clk.Advance(time.Minute)
	}
	if _, err := other.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "10"), IdempotencyKey: "d"}); err != nil {
		t.Fatalf("debit after every hold expired: %v", err)
	}
	ledgerSum(t, svc, "acct_1")
}

func testLedgerCap(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := e.ledger(t, &credits.Options{Unit: credits.HalfCredits()})
	// 2026-03-31 23:00 in Kolkata is 17:30 UTC; April starts there at 18:30 UTC.
	e.clk.Set(time.Date(2026, 3, 31, 17, 30, 0, 0, time.UTC))
	openLedger(t, svc, "acct_1", credits.Policy{MonthlyCap: amt(t, "10"), TimeZone: "Asia/Kolkata"})
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "100"), IdempotencyKey: "p"})
	mustDebit(t, svc, "acct_1", "6", "d1")
	if _, err := svc.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_1", Amount: amt(t, "3"), TTL: 3 * time.Hour, IdempotencyKey: "r"}); err != nil {
		t.Fatal(err)
	}
	// Spend 6 + held 3: a debit of 1.5 would pass the cap of 10.
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "1.5"), IdempotencyKey: "d2"}); !errors.Is(err, credits.ErrMonthlyLimit) {
		t.Fatalf("debit past the cap: %v", err)
	}
	mustDebit(t, svc, "acct_1", "1", "d3")
	if used, _ := svc.UsedThisMonth(ctx(), "acct_1"); !used.Equal(amt(t, "7")) {
		t.Fatalf("UsedThisMonth = %s", used)
	}
	wantBalance(t, svc, "acct_1", "93")
	// Still March in Kolkata at 18:29:59 UTC.
	e.clk.Set(time.Date(2026, 3, 31, 18, 29, 59, 0, time.UTC))
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "0.5"), IdempotencyKey: "d4"}); !errors.Is(err, credits.ErrMonthlyLimit) {
		t.Fatalf("cap before the Kolkata month ends: %v", err)
	}
	// April in Kolkata (still March 31 in UTC): the spend counter starts again.
	e.clk.Set(time.Date(2026, 3, 31, 18, 30, 0, 0, time.UTC))
	if used, _ := svc.UsedThisMonth(ctx(), "acct_1"); !used.IsZero() {
		t.Fatalf("UsedThisMonth in a new month = %s", used)
	}
	mustDebit(t, svc, "acct_1", "7", "d5") // the hold (3) still counts against the new month's cap
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "0.5"), IdempotencyKey: "d6"}); !errors.Is(err, credits.ErrMonthlyLimit) {
		t.Fatalf("cap in April: %v", err)
	}
	if used, _ := svc.UsedThisMonth(ctx(), "acct_1"); !used.Equal(amt(t, "7")) {
		t.Fatalf("UsedThisMonth = %s", used)
	}
	ledgerSum(t, svc, "acct_1")
	// The account override: raise the cap.
	if _, err := svc.SetPolicy(ctx(), "acct_1", credits.Policy{MonthlyCap: amt(t, "20"), TimeZone: "Asia/Kolkata"}); err != nil {
		t.Fatal(err)
	}
	mustDebit(t, svc, "acct_1", "0.5", "d6")
}

// recorder is a Recharger that reports each call and waits for a verdict.
type recorder struct {
	calls   chan credits.RechargeRequest
	verdict chan error
}

func (r *recorder) Recharge(ctx context.Context, req credits.RechargeRequest) (credits.RechargeResult, error) {
	r.calls <- req
	select {
	case err := <-r.verdict:
		if err != nil {
			return credits.RechargeResult{}, err
		}
		return credits.RechargeResult{Reference: "pay_" + req.IdempotencyKey}, nil
	case <-ctx.Done():
		return credits.RechargeResult{}, ctx.Err()
	}
}

func testLedgerRecharge(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	rec := &recorder{calls: make(chan credits.RechargeRequest, 10), verdict: make(chan error)}
	var hookErrs atomic.Int64
	opts := &credits.Options{Recharger: rec.Recharge, OnRechargeError: func(credits.RechargeRequest, error) { hookErrs.Add(1) }}
	svc := e.ledger(t, opts)
	ar := credits.AutoRecharge{Enabled: true, Threshold: amt(t, "20"), Amount: amt(t, "100")}
	openLedger(t, svc, "acct_1", credits.Policy{AutoRecharge: ar})
	mustCredit(t, svc.Grant, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "50"), IdempotencyKey: "signup"})
	mustDebit(t, svc, "acct_1", "25", "d1") // 25: above the threshold
	mustDebit(t, svc, "acct_1", "10", "d2") // 15: crossing
	req := <-rec.calls
	if req.AccountID != "acct_1" || !req.Amount.Equal(amt(t, "100")) || req.Crossing != 1 || req.IdempotencyKey != "auto-recharge:1" {
		t.Fatalf("recharge request %+v", req)
	}
	// The recharge is still running; debits below the threshold go on and
	// do not call again.
	mustDebit(t, svc, "acct_1", "5", "d3")
	mustDebit(t, svc, "acct_1", "5", "d4")
	rec.verdict <- nil
	// A second Service stands in for a restart: it must not call for the
	// same crossing. Its Close waits for nothing; svc's waits for the
	// purchase to be written.
	if err := svc.Close(ctx()); err != nil {
		t.Fatal(err)
	}
	if st := svc.Stats(); st.RechargesStarted != 1 || st.RechargesSucceeded != 1 {
		t.Fatalf("stats %+v", st)
	}
	svc2 := e.ledger(t, opts)
	a := wantBalance(t, svc2, "acct_1", "105")
	es := ledgerSum(t, svc2, "acct_1")
	if p := es[0]; p.Type != credits.EntryPurchase || p.IdempotencyKey != "auto-recharge:1" || p.Reference != "pay_auto-recharge:1" {
		t.Fatalf("recharge entry %+v", p)
	}
	_ = a
	// The next crossing calls again; a failure is reported once and not retried.
	mustDebit(t, svc2, "acct_1", "90", "d5") // 15: crossing 2
	req = <-rec.calls
	if req.Crossing != 2 {
		t.Fatalf("second crossing %+v", req)
	}
	rec.verdict <- errors.New("card declined")
	mustDebit(t, svc2, "acct_1", "5", "d6")
	if err := svc2.Close(ctx()); err != nil {
		t.Fatal(err)
	}
	if st := svc2.Stats(); st.RechargesStarted != 1 || st.RechargesFailed != 1 || hookErrs.Load() != 1 {
		t.Fatalf("stats after failure %+v, hook %d", svc2.Stats(), hookErrs.Load())
	}
	select {
	case r := <-rec.calls:
		t.Fatalf("recharge retried: %+v", r)
	default:
	}
	svc3 := e.ledger(t, opts)
	wantBalance(t, svc3, "acct_1", "10")
	// A manual purchase above the threshold re-arms the trigger.
	mustCredit(t, svc3.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "20"), IdempotencyKey: "manual"})
	mustDebit(t, svc3, "acct_1", "15", "d7") // 15: crossing 3
	if req := <-rec.calls; req.Crossing != 3 {
		t.Fatalf("third crossing %+v", req)
	}
	rec.verdict <- nil
	if err := svc3.Close(ctx()); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, e.ledger(t, nil), "acct_1", "115")
	// Without a Recharger a crossing is only counted.
	svc4 := e.ledger(t, nil)
	mustDebit(t, svc4, "acct_1", "100", "d8")
	if st := svc4.Stats(); st.RechargesSkipped != 1 {
		t.Fatalf("stats without recharger %+v", st)
	}
}

// testLedgerConcurrent hammers one account with 10,000 debits and
// reserve/settle/release pairs from 50 goroutines (under -race in CI) and
// checks that no interleaving overspends.
func testLedgerConcurrent(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := e.ledger(t, nil)
	const (
		workers = 50
		ops     = 200 // per worker: 10,000 in all
		funds   = "2500"
		od      = "25"
	)
	openLedger(t, svc, "acct_1", credits.Policy{Overdraft: amt(t, od)})
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, funds), IdempotencyKey: "p"})
	var (
		wg               sync.WaitGroup
		mu               sync.Mutex
		charged          credits.Amount
		totalOver        credits.Amount // Σ (actual − hold) of settles charged into debt
		okOps, denied    atomic.Int64
		one, half, three = amt(t, "1"), amt(t, "0.5"), amt(t, "3")
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			var mine, overshoot credits.Amount
			for i := range ops {
				key := fmt.Sprintf("w%d-%d", w, i)
				switch r.IntN(3) {
				case 0:
					en, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: one, IdempotencyKey: key})
					if !countOutcome(t, err, &okOps, &denied) {
						continue
					}
					mine = mine.Sub(en.Amount)
				default:
					h, err := svc.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_1", Amount: one, TTL: time.Hour, IdempotencyKey: key})
					if !countOutcome(t, err, &okOps, &denied) {
						continue
					}
					if r.IntN(4) == 0 {
						if _, err := svc.Release(ctx(), h.ID); err != nil {
							t.Error(err)
						}
						continue
					}
					// Half the workers charge delivered work above its hold
					// into debt, half write it off.
					actual := []credits.Amount{half, one, three}[r.IntN(3)]
					ov := []credits.Overrun{credits.OverrunDebt, credits.OverrunWriteOff}[w%2]
					s, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h.ID, Actual: actual, Overrun: ov})
					if err != nil {
						t.Error(err)
						continue
					}
					mine = mine.Add(s.Charged)
					if over := actual.Sub(one); ov == credits.OverrunDebt && over.IsPositive() {
						overshoot = overshoot.Add(over)
					}
				}
			}
			mu.Lock()
			charged = charged.Add(mine)
			totalOver = totalOver.Add(overshoot)
			mu.Unlock()
		}()
	}
	wg.Wait()
	a, err := svc.Account(ctx(), "acct_1")
	if err != nil {
		t.Fatal(err)
	}
	// Only delivered work above its hold may pass the funds, and only by
	// its overshoot.
	limit := amt(t, funds).Add(amt(t, od)).Add(totalOver)
	if charged.Cmp(limit) > 0 || a.Balance.Cmp(amt(t, "-"+od).Sub(totalOver)) < 0 || !a.Held.IsZero() {
		t.Fatalf("charged %s of %s; balance %s, held %s", charged, limit, a.Balance, a.Held)
	}
	if !a.Balance.Equal(amt(t, funds).Sub(charged)) {
		t.Fatalf("balance %s, but %s − charged %s = %s", a.Balance, funds, charged, amt(t, funds).Sub(charged))
	}
	if denied.Load() == 0 || okOps.Load()+denied.Load() != workers*ops {
		t.Fatalf("%d ok, %d denied: the funds never ran out or requests went missing", okOps.Load(), denied.Load())
	}
	ledgerSum(t, svc, "acct_1")
}

// countOutcome counts a spend's result; only ErrInsufficientFunds may fail.
func countOutcome(t testing.TB, err error, ok, denied *atomic.Int64) bool {
	switch {
	case err == nil:
		ok.Add(1)
		return true
	case errors.Is(err, credits.ErrInsufficientFunds):
		denied.Add(1)
	default:
		t.Error(err)
	}
	return false
}

// testLedgerConcurrentReplays sends one request from many goroutines and
// two Services at once: exactly one entry is written.
func testLedgerConcurrentReplays(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svcs := []*credits.Service{e.ledger(t, nil), e.ledger(t, nil)}
	openLedger(t, svcs[0], "acct_1", credits.Policy{})
	mustCredit(t, svcs[0].Purchase, credits.CreditParams{AccountID: "acct_1", Amount: amt(t, "100"), IdempotencyKey: "p"})
	for round := range 20 {
		var wg sync.WaitGroup
		ids := make([]string, 16)
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				en, err := svcs[i%2].Debit(ctx(), credits.DebitParams{AccountID: "acct_1", Amount: amt(t, "1"), IdempotencyKey: fmt.Sprint("same-", round)})
				if err != nil {
					t.Error(err)
				}
				ids[i] = en.ID
			}()
		}
		wg.Wait()
		for _, id := range ids {
			if id != ids[0] {
				t.Fatalf("round %d: replays returned different entries %v", round, ids)
			}
		}
	}
	wantBalance(t, svcs[0], "acct_1", "80")
	if es := ledgerSum(t, svcs[0], "acct_1"); len(es) != 21 {
		t.Fatalf("%d entries, want 21", len(es))
	}
}

func testLedgerInvariants(t *testing.T, newStore NewStoreFunc) {
	st := newStore(t)
	t.Cleanup(func() { _ = st.Close() })
	seeds, steps := 4, 120
	if testing.Short() {
		seeds, steps = 2, 50
	}
	for seed := range seeds {
		LedgerInvariants(t, RandomLedgerProgram(uint64(seed), steps), st)
	}
}
