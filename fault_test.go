package keyledger_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/storefault"
	"github.com/keyledger/keyledger/usage"
)

// Fault injection: the facade, the ledger and the usage Recorder over a
// store that fails calls before they reach it (nothing written) or after
// they commit (written, but the caller sees an error). Whatever fails, no
// money is created or lost, and a retry with the same idempotency key
// charges once.

// faultEnv is env over a storefault wrapper, with a one-minute hold TTL and
// quiet logs (injected failures are logged as warnings).
func faultEnv(t testing.TB, b backend) (*env, *storefault.Store) {
	t.Helper()
	fs := storefault.New(b.open(t), nil)
	clk := fakeclock.New(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
	kl, err := keyledger.New(store.Wrap(fs), &keyledger.Options{
		Now: clk.Now, Prices: prices(t), Catalog: bigCatalog(t), HoldTTL: time.Minute,
		Logger: slog.New(slog.DiscardHandler), Accounts: &account.Options{Argon2: fastArgon},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		fs.SetRules()
		if err := kl.Close(context.Background()); err != nil {
			t.Error(err)
		}
		fs.Close()
	})
	return &env{kl: kl, clk: clk, st: fs}, fs
}

var ambiguousModes = []storefault.Mode{storefault.Before, storefault.After, storefault.TimeoutBefore, storefault.TimeoutAfter}

func forEachMode(t *testing.T, fn func(t *testing.T, b backend, m storefault.Mode)) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range ambiguousModes {
			t.Run(m.String(), func(t *testing.T) { fn(t, b, m) })
		}
	})
}

func amt(s string) credits.Amount { return credits.NewAmount(d(s)) }

// injected fails the test unless err is an injected failure.
func injected(t testing.TB, what string, err error) {
	t.Helper()
	if !errors.Is(err, storefault.ErrInjected) {
		t.Fatalf("%s: want an injected failure, got %v", what, err)
	}
}

func TestAmbiguousDebitChargesOnce(t *testing.T) {
	forEachMode(t, func(t *testing.T, b backend, m storefault.Mode) {
		e, fs := faultEnv(t, b)
		ctx := context.Background()
		a, _, _ := e.signup(t, "debit@example.com", "")
		p := credits.DebitParams{AccountID: a.ID, Amount: amt("7"), Reference: "order-1", IdempotencyKey: "order-1"}
		fs.SetRules(storefault.Rule{Methods: []string{"ApplySpends"}, Mode: m, Count: 1})
		_, err := e.kl.Credits.Debit(ctx, p)
		injected(t, "debit", err)
		first, err := e.kl.Credits.Debit(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		again, err := e.kl.Credits.Debit(ctx, p)
		if err != nil || again.ID != first.ID {
			t.Fatalf("replay %+v %v, first %+v", again, err, first)
		}
		au := auditAccount(t, fs.Inner(), a.ID, "log_", e.clk.Now())
		if !au.state.Balance.Equal(amt("43")) || !au.other.Equal(amt("7")) {
			t.Fatalf("balance %s, debited %s: want 43 and 7", au.state.Balance, au.other)
		}
	})
}

func TestAmbiguousMeterChargesOnce(t *testing.T) {
	forEachMode(t, func(t *testing.T, b backend, m storefault.Mode) {
		e, fs := faultEnv(t, b)
		ctx := context.Background()
		a, _, _ := e.signup(t, "meter@example.com", "")
		p := usage.MeterParams{
			Record:         usage.Record{AccountID: a.ID, Endpoint: "/v1/op", Units: 1, StatusCode: 200, Cost: amt("3")},
			IdempotencyKey: "call-1",
		}
		fs.SetRules(storefault.Rule{Methods: []string{"MeterUsage"}, Mode: m, Count: 1})
		_, err := e.kl.Usage.Meter(ctx, p)
		injected(t, "meter", err)
		res, err := e.kl.Usage.Meter(ctx, p)
		if err != nil || !res.Charged.Equal(amt("3")) || res.Replayed != (m == storefault.After || m == storefault.TimeoutAfter) {
			t.Fatalf("retry: %+v %v", res, err)
		}
		au := auditAccount(t, fs.Inner(), a.ID, "log_", e.clk.Now())
		if len(au.records) != 1 || au.records[0].ID != res.Record.ID || !au.state.Balance.Equal(amt("47")) {
			t.Fatalf("records %d, balance %s: want 1 and 47", len(au.records), au.state.Balance)
		}
	})
}

// The Recorder fails a whole group commit at once; every caller retries.
func TestAmbiguousRecorderChargesOnce(t *testing.T) {
	forEachMode(t, func(t *testing.T, b backend, m storefault.Mode) {
		e, fs := faultEnv(t, b)
		ctx := context.Background()
		a, _, _ := e.signup(t, "recorder@example.com", "")
		const n = 64
		fs.SetRules(storefault.Rule{Methods: []string{"MeterUsage"}, Mode: m, Count: 2})
		var wg sync.WaitGroup
		var mu sync.Mutex
		ids := map[string]bool{}
		failed := 0
		for i := range n {
			wg.Go(func() {
				p := usage.MeterParams{
					Record:         usage.Record{AccountID: a.ID, Endpoint: "/v1/op", Units: 1, StatusCode: 200, Cost: amt("0.5")},
					IdempotencyKey: fmt.Sprint("call-", i),
				}
				for {
					res, err := e.kl.Usage.Meter(ctx, p)
					if errors.Is(err, storefault.ErrInjected) {
						mu.Lock()
						failed++
						mu.Unlock()
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					ids[res.Record.ID] = true
					mu.Unlock()
					return
				}
			})
		}
		wg.Wait()
		if failed == 0 {
			t.Fatal("no Meter call saw the injected failures")
		}
		au := auditAccount(t, fs.Inner(), a.ID, "log_", e.clk.Now())
		if len(au.records) != n || len(ids) != n || !au.charged.Equal(amt("32")) || !au.state.Balance.Equal(amt("18")) {
			t.Fatalf("records %d (acknowledged %d), charged %s, balance %s: want %d, 32, 18",
				len(au.records), len(ids), au.charged, au.state.Balance, n)
		}
		for _, r := range au.records {
			if !ids[r.ID] {
				t.Fatalf("record %s was not acknowledged to any caller", r.ID)
			}
		}
	})
}

// An ambiguous failure of the metering write inside Grant.Complete: the
// request is charged once and Complete reports what was charged.
func TestAmbiguousCompleteChargesOnce(t *testing.T) {
	forEachMode(t, func(t *testing.T, b backend, m storefault.Mode) {
		e, fs := faultEnv(t, b)
		ctx := context.Background()
		a, raw, _ := e.signup(t, "complete@example.com", "")
		req := keyledger.Request{Model: "test-model", PromptTokens: 100, MaxCompletionTokens: 100, ID: "req-1"}
		g, err := e.kl.Authorize(ctx, raw, req)
		if err != nil {
			t.Fatal(err)
		}
		fs.SetRules(storefault.Rule{Methods: []string{"MeterUsage"}, Mode: m, Count: 1})
		res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 100, CompletionTokens: 10, Latency: time.Second})
		if err != nil || !res.Charged.Equal(amt("12")) {
			t.Fatalf("Complete after one %s failure: %+v %v", m, res, err)
		}
		if fs.Injected() != 1 {
			t.Fatalf("%d failures injected, want 1", fs.Injected())
		}
		if _, err := e.kl.Authorize(ctx, raw, req); !errors.Is(err, keyledger.ErrDuplicateRequest) {
			t.Fatalf("re-authorizing the completed request: %v", err)
		}
		au := auditAccount(t, fs.Inner(), a.ID, "log_", e.clk.Now())
		if len(au.records) != 1 || !au.state.Balance.Equal(amt("38")) || !au.state.Held.IsZero() {
			t.Fatalf("records %d, balance %s, held %s: want 1, 38, 0", len(au.records), au.state.Balance, au.state.Held)
		}
	})
}

// Random failures of every kind on every write (and some reads) while
// workers run the facade, the Recorder and the ledger directly. Each
// direct call is retried with its idempotency key until it gives a
// definite answer; Complete and Cancel run once. Afterwards the books
// must balance to the cent against what the callers were told.
func TestFaultsNeverCreateOrLoseMoney(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	workers, iters := 8, 120
	if testing.Short() {
		iters = 30
	}
	forEachBackend(t, func(t *testing.T, b backend) {
		e, fs := faultEnv(t, b)
		ctx := context.Background()
		const nAcct = 3
		var accts [nAcct]account.Account
		var raws [nAcct]apikey.RawKey
		for i := range accts {
			accts[i], raws[i], _ = e.signup(t, fmt.Sprintf("f%d@example.com", i), "")
			if _, err := e.kl.Credits.Purchase(ctx, credits.CreditParams{AccountID: accts[i].ID, Amount: amt("950"), IdempotencyKey: "topup"}); err != nil {
				t.Fatal(err)
			}
		}
		writes := storefault.WriteMethods()
		reads := []string{"LedgerAccount", "LedgerHold", "APIKeyByHash", "Account", "LedgerEntries"}
		fs.SetRules(
			storefault.Rule{Methods: writes, Mode: storefault.Before, Probability: 0.04},
			storefault.Rule{Methods: writes, Mode: storefault.After, Probability: 0.04},
			storefault.Rule{Methods: writes, Mode: storefault.TimeoutAfter, Probability: 0.02},
			storefault.Rule{Methods: reads, Mode: storefault.TimeoutBefore, Probability: 0.03},
		)

		// What the callers were told, per account.
		type told struct {
			records map[string]bool // acknowledged record IDs
			direct  credits.Amount  // acknowledged direct debits and settlements
		}
		var mu sync.Mutex
		var tell [nAcct]told
		for i := range tell {
			tell[i].records = map[string]bool{}
		}
		ack := func(i int, recordID string, direct credits.Amount) {
			mu.Lock()
			defer mu.Unlock()
			if recordID != "" {
				if tell[i].records[recordID] {
					t.Errorf("record %s acknowledged twice", recordID)
				}
				tell[i].records[recordID] = true
			}
			tell[i].direct = tell[i].direct.Add(direct)
		}
		// retry repeats an idempotent call until it stops failing by
		// injection.
		retry := func(f func() error) error {
			for range 50 {
				if err := f(); !errors.Is(err, storefault.ErrInjected) {
					return err
				}
			}
			t.Error("50 injected failures in a row")
			return storefault.ErrInjected
		}
		definite := func(what string, err error) bool {
			if err != nil && !errors.Is(err, credits.ErrInsufficientFunds) {
				t.Errorf("%s: %v", what, err)
			}
			return err == nil
		}

		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(seed, uint64(w)))
				for it := range iters {
					i := rng.IntN(nAcct)
					acct := accts[i].ID
					key := fmt.Sprintf("w%d-%d", w, it)
					switch op := rng.IntN(10); {
					case op < 4: // the facade: Authorize, then Complete or Cancel
						req := keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 10, ID: key}
						var g *keyledger.Grant
						err := retry(func() (err error) { g, err = e.kl.Authorize(ctx, raws[i], req); return err })
						if err != nil {
							if !errors.Is(err, credits.ErrInsufficientFunds) && !errors.Is(err, keyledger.ErrDuplicateRequest) {
								t.Errorf("authorize: %v", err)
							}
							continue
						}
						if w == 0 && it%10 == 9 {
							e.clk.Advance(20 * time.Second) // some holds expire before completion
						}
						if op == 0 {
							_ = g.Cancel(ctx) // a failed release leaves the hold to expire
							continue
						}
						res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 10, CompletionTokens: rng.Int64N(16)})
						if err == nil {
							ack(i, res.Record.ID, credits.Amount{})
						} else if !errors.Is(err, storefault.ErrInjected) {
							t.Errorf("complete: %v", err)
						}
					case op < 6: // the Recorder: plain debits
						p := usage.MeterParams{
							Record:         usage.Record{AccountID: acct, Endpoint: "/v1/op", Units: 1, StatusCode: 200, Cost: amt("0.25")},
							IdempotencyKey: key,
						}
						var res usage.MeterResult
						if definite("meter", retry(func() (err error) { res, err = e.kl.Usage.Meter(ctx, p); return err })) {
							ack(i, res.Record.ID, credits.Amount{})
						}
					case op < 8: // the ledger: a debit
						p := credits.DebitParams{AccountID: acct, Amount: amt("0.5"), Reference: "direct:" + key, IdempotencyKey: key}
						if definite("debit", retry(func() error { _, err := e.kl.Credits.Debit(ctx, p); return err })) {
							ack(i, "", p.Amount)
						}
					default: // the ledger: reserve, then settle or release
						var h credits.Hold
						p := credits.ReserveParams{AccountID: acct, Amount: amt("2"), TTL: time.Minute, Reference: "direct:" + key, IdempotencyKey: key}
						if !definite("reserve", retry(func() (err error) { h, err = e.kl.Credits.Reserve(ctx, p); return err })) {
							continue
						}
						if op == 8 {
							_ = retry(func() error { _, err := e.kl.Credits.Release(ctx, h.ID); return err })
							continue
						}
						var st credits.Settlement
						sp := credits.SettleParams{HoldID: h.ID, Actual: amt("1.5"), Reference: "direct:" + key}
						err := retry(func() (err error) { st, err = e.kl.Credits.Settle(ctx, sp); return err })
						switch {
						case err == nil:
							ack(i, "", st.Charged)
						case !errors.Is(err, credits.ErrHoldExpired):
							t.Errorf("settle: %v", err)
						}
					}
				}
			})
		}
		wg.Wait()
		fs.SetRules()
		if fs.Injected() == 0 {
			t.Fatal("no failures injected")
		}
		// Past every hold's deadline nothing may stay held.
		e.clk.Advance(2 * time.Minute)
		for i, a := range accts {
			au := auditAccount(t, fs.Inner(), a.ID, "log_", e.clk.Now())
			if !au.state.Held.IsZero() || !au.state.Available.Equal(au.state.Balance) {
				t.Fatalf("account %d: held %s after every deadline", i, au.state.Held)
			}
			stored := map[string]bool{}
			for _, r := range au.records {
				stored[r.ID] = true
			}
			for id := range tell[i].records {
				if !stored[id] {
					t.Fatalf("account %d: acknowledged record %s is missing", i, id)
				}
			}
			if !au.other.Equal(tell[i].direct) {
				t.Fatalf("account %d: direct debits and settlements %s in the ledger, %s acknowledged", i, au.other, tell[i].direct)
			}
			want := amt("1000").Sub(au.charged).Sub(tell[i].direct)
			if !au.state.Balance.Equal(want) {
				t.Fatalf("account %d: balance %s, want 1000 − %s (records) − %s (direct) = %s",
					i, au.state.Balance, au.charged, tell[i].direct, want)
			}
			t.Logf("account %d: %d records (%d acknowledged), charged %s, direct %s, balance %s",
				i, len(au.records), len(tell[i].records), au.charged, tell[i].direct, au.state.Balance)
		}
		t.Logf("%d failures injected", fs.Injected())
	})
}

// An auto-recharge whose payment went through must be credited even if
// the store fails the purchase write: the customer has paid.
func TestPaidRechargeSurvivesStoreFailure(t *testing.T) {
	forEachMode(t, func(t *testing.T, b backend, m storefault.Mode) {
		ctx := context.Background()
		fs := storefault.New(b.open(t), nil)
		defer fs.Close()
		var mu sync.Mutex
		payments := 0
		pay := credits.Recharger(func(_ context.Context, r credits.RechargeRequest) (credits.RechargeResult, error) {
			mu.Lock()
			defer mu.Unlock()
			payments++
			// The purchase written after this payment fails once.
			fs.SetRules(storefault.Rule{Methods: []string{"LedgerCredit"}, Mode: m, Count: 1})
			return credits.RechargeResult{Reference: "pay_" + r.IdempotencyKey}, nil
		})
		var failures []error
		led, err := credits.NewService(fs, &credits.Options{Recharger: pay, Logger: slog.New(slog.DiscardHandler),
			OnRechargeError: func(_ credits.RechargeRequest, err error) { failures = append(failures, err) }})
		if err != nil {
			t.Fatal(err)
		}
		pol := credits.Policy{AutoRecharge: credits.AutoRecharge{Enabled: true, Threshold: amt("20"), Amount: amt("100")}}
		if _, err := led.Open(ctx, "acct", pol); err != nil {
			t.Fatal(err)
		}
		if _, err := led.Purchase(ctx, credits.CreditParams{AccountID: "acct", Amount: amt("50"), IdempotencyKey: "first"}); err != nil {
			t.Fatal(err)
		}
		if _, err := led.Debit(ctx, credits.DebitParams{AccountID: "acct", Amount: amt("40"), IdempotencyKey: "big"}); err != nil {
			t.Fatal(err)
		}
		if err := led.Close(ctx); err != nil { // waits for the recharge
			t.Fatal(err)
		}
		if fs.Injected() != 1 || payments != 1 || len(failures) != 0 {
			t.Fatalf("injected %d, payments %d, recharge failures %v: want 1, 1, none", fs.Injected(), payments, failures)
		}
		au := auditAccount(t, fs.Inner(), "acct", "log_", time.Now())
		if !au.state.Balance.Equal(amt("110")) {
			t.Fatalf("balance %s after a paid recharge of 100, want 110", au.state.Balance)
		}
	})
}
