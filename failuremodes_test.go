package keyledger_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/internal/faultproxy"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/ratelimit"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/store/pgstore"
	"github.com/keyledger/keyledger/store/storefault"
)

// The failure modes of README "Failure modes", one test each: a database
// that stalls or resets, a rate limiter that is down, an instance that
// dies with requests in flight, a Complete whose store keeps failing.

// PostgreSQL black-holed: Authorize answers ErrUnavailable within its
// store timeout instead of waiting on the stall, serves nothing, and works
// again by itself once the partition heals.
func TestAuthorizeFailsFastWhenPostgresStalls(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	px, err := faultproxy.Start(pgtest.Target(t, dsn))
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	via, _ := pgtest.Via(t, dsn, px.Addr())
	quiet := slog.New(slog.DiscardHandler)
	st, err := pgstore.Open(ctx, via, &pgstore.Options{Logger: quiet, TxTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const storeTimeout = 300 * time.Millisecond
	kl, err := keyledger.New(st, &keyledger.Options{Logger: quiet, Prices: prices(t), Catalog: bigCatalog(t),
		StoreTimeout: storeTimeout, Accounts: &account.Options{Argon2: fastArgon}})
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close(ctx)
	a, err := kl.Signup(ctx, account.CreateParams{Name: "S", Email: "stall@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	paid := keyledger.Request{Endpoint: "/v1/op", Method: "POST", Units: 1}
	g, err := kl.Authorize(ctx, raw, paid) // the key and account are cached now
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, Units: 1}); err != nil {
		t.Fatal(err)
	}

	px.Set(faultproxy.Blackhole, 0)
	for i := range 3 {
		start := time.Now()
		g, err := kl.Authorize(ctx, raw, paid) // the hold needs the database
		el := time.Since(start)
		if !errors.Is(err, keyledger.ErrUnavailable) {
			if g != nil {
				g.Cancel(ctx)
			}
			t.Fatalf("attempt %d on a black-holed database: %v, want ErrUnavailable", i, err)
		}
		// The stated bound is the store timeout; checked with a wide margin
		// (without the bound the call would wait for as long as the stall).
		if el > 10*storeTimeout {
			t.Fatalf("attempt %d took %v with a store timeout of %v", i, el, storeTimeout)
		}
	}

	px.Set(faultproxy.Pass, 0)
	var g2 *keyledger.Grant
	eventually(t, 15*time.Second, "Authorize works again after the partition heals", func() bool {
		g2, err = kl.Authorize(ctx, raw, paid)
		return err == nil
	})
	if _, err := g2.Complete(ctx, keyledger.Outcome{StatusCode: 200, Units: 1}); err != nil {
		t.Fatal(err)
	}
	// A reset of every connection (a database restart) is survived too.
	px.Reset()
	eventually(t, 15*time.Second, "Authorize works again after a reset", func() bool {
		g2, err = kl.Authorize(ctx, raw, paid)
		return err == nil
	})
	if _, err := g2.Complete(ctx, keyledger.Outcome{StatusCode: 200, Units: 1}); err != nil {
		t.Fatal(err)
	}
	// Past every hold's deadline (holds of refused attempts may have
	// committed after their caller gave up) the account holds nothing, and
	// the three completed requests are charged exactly.
	acct, err := kl.Credits.Account(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := acct.Balance; !got.Equal(amt("47")) {
		t.Fatalf("balance %s, want 50 − 3 completed requests = 47", got)
	}
}

// eventually polls cond until it holds, failing after within.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// downLimiter is a rate limiter whose backend is down.
type downLimiter struct{}

var errRedisDown = errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")

func (downLimiter) Allow(context.Context, ...ratelimit.Request) (ratelimit.Decision, error) {
	return ratelimit.Decision{}, errRedisDown
}
func (downLimiter) Adjust(context.Context, ...ratelimit.Request) error { return errRedisDown }

// A rate limiter that is down refuses with ErrUnavailable (a 503, not a
// 500 and not a 429), and takes nothing from the balance.
func TestLimiterDownIsUnavailableAndFree(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnvWith(t, b, func(o *keyledger.Options) { o.Limiter = downLimiter{} })
		a, raw, _ := e.signup(t, "limiter@example.com", "")
		_, err := e.kl.Authorize(context.Background(), raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 10})
		if !errors.Is(err, keyledger.ErrUnavailable) || !errors.Is(err, errRedisDown) {
			t.Fatalf("limiter down: %v, want ErrUnavailable wrapping the cause", err)
		}
		acct, err := e.kl.Credits.Account(context.Background(), a.ID)
		if err != nil || !acct.Held.IsZero() || !acct.Balance.Equal(amt("50")) {
			t.Fatalf("after a refusal: balance %s held %s (%v)", acct.Balance, acct.Held, err)
		}
	})
}

// A Complete whose metering write fails several times in a row (more than
// any fixed attempt count) keeps retrying under its idempotency key and
// charges once.
func TestCompleteRetriesUntilTheStoreReturns(t *testing.T) {
	for _, m := range ambiguousModes {
		t.Run(m.String(), func(t *testing.T) {
			e, fs := faultEnv(t, backends[0])
			ctx := context.Background()
			a, raw, _ := e.signup(t, "retry@example.com", "")
			g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op", Method: "POST", Units: 1, ID: "req-retry"})
			if err != nil {
				t.Fatal(err)
			}
			fs.SetRules(storefault.Rule{Methods: []string{"MeterUsage"}, Mode: m, Count: 5})
			res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, Units: 1})
			if err != nil || !res.Charged.Equal(amt("1")) {
				t.Fatalf("Complete through 5 failures: %+v %v", res, err)
			}
			au := auditAccount(t, fs.Inner(), a.ID, "log_", e.clk.Now())
			if len(au.records) != 1 || !au.state.Balance.Equal(amt("49")) || !au.state.Held.IsZero() {
				t.Fatalf("records %d, balance %s, held %s: want 1, 49, 0", len(au.records), au.state.Balance, au.state.Held)
			}
		})
	}
}

// A store that stays down past Options.CompleteTimeout: Complete gives up
// with ErrUnavailable, charges nothing, and the hold is freed (released
// now, or at its deadline if the release fails too).
func TestCompleteGivesUpAfterItsDeadline(t *testing.T) {
	st := storefault.New(store.Driver(memstore.New()), nil)
	clk := fakeclock.New(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
	kl, err := keyledger.New(store.Wrap(st), &keyledger.Options{Now: clk.Now, Prices: prices(t), Catalog: bigCatalog(t), HoldTTL: time.Minute,
		CompleteTimeout: time.Millisecond, Logger: slog.New(slog.DiscardHandler), Accounts: &account.Options{Argon2: fastArgon}})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{kl: kl, clk: clk, st: st}
	defer func() { st.SetRules(); kl.Close(context.Background()) }()
	ctx := context.Background()
	a, raw, _ := e.signup(t, "giveup@example.com", "")
	g, err := kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op", Method: "POST", Units: 1})
	if err != nil {
		t.Fatal(err)
	}
	st.SetRules(storefault.Rule{Methods: []string{"MeterUsage", "ReleaseHold"}, Mode: storefault.Before})
	if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, Units: 1}); !errors.Is(err, keyledger.ErrUnavailable) {
		t.Fatalf("Complete on a store that stays down: %v, want ErrUnavailable", err)
	}
	st.SetRules()
	clk.Advance(2 * time.Minute)
	au := auditAccount(t, st.Inner(), a.ID, "log_", clk.Now())
	if len(au.records) != 0 || !au.state.Balance.Equal(amt("50")) || !au.state.Held.IsZero() {
		t.Fatalf("records %d, balance %s, held %s: want nothing recorded or charged and nothing held", len(au.records), au.state.Balance, au.state.Held)
	}
}

// An instance dies with requests in flight (its grants never complete);
// the clients retry on another instance with the same request IDs. A
// request that had completed is refused as a duplicate, not run again; one
// whose hold is still active reuses that hold and is charged once; holds
// of requests never retried free themselves at their deadline.
func TestKilledInstanceRetriesChargeOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		st := b.open(t)
		clk := fakeclock.New(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
		instance := func() *keyledger.KeyLedger {
			kl, err := keyledger.New(store.Wrap(st), &keyledger.Options{Now: clk.Now, Prices: prices(t), Catalog: bigCatalog(t), HoldTTL: time.Minute,
				Logger: slog.New(slog.DiscardHandler), Accounts: &account.Options{Argon2: fastArgon}})
			if err != nil {
				t.Fatal(err)
			}
			return kl
		}
		dead, live := instance(), instance()
		defer live.Close(ctx)
		defer dead.Close(ctx) // only its goroutines: its grants stay abandoned
		e := &env{kl: live, clk: clk, st: st}
		a, raw, _ := e.signup(t, "killed@example.com", "")
		op := func(id string) keyledger.Request {
			return keyledger.Request{Endpoint: "/v1/op", Method: "POST", Units: 2, ID: id}
		}
		// On the instance about to die: r1 completes (its response is then
		// lost), r2 and r3 are in flight.
		g1, err := dead.Authorize(ctx, raw, op("r1"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g1.Complete(ctx, keyledger.Outcome{StatusCode: 200, Units: 2}); err != nil {
			t.Fatal(err)
		}
		g2, err := dead.Authorize(ctx, raw, op("r2"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dead.Authorize(ctx, raw, op("r3")); err != nil {
			t.Fatal(err)
		}
		// dead is gone: nothing more of it runs (its grants are abandoned).

		if _, err := live.Authorize(ctx, raw, op("r1")); !errors.Is(err, keyledger.ErrDuplicateRequest) {
			t.Fatalf("retrying a completed request: %v, want ErrDuplicateRequest", err)
		}
		g2b, err := live.Authorize(ctx, raw, op("r2"))
		if err != nil {
			t.Fatal(err)
		}
		if g2b.Hold.ID != g2.Hold.ID {
			t.Fatalf("the retry took hold %s, want the dead instance's %s", g2b.Hold.ID, g2.Hold.ID)
		}
		if _, err := g2b.Complete(ctx, keyledger.Outcome{StatusCode: 200, Units: 2}); err != nil {
			t.Fatal(err)
		}
		acct, err := live.Credits.Account(ctx, a.ID)
		if err != nil || !acct.Held.Equal(amt("2")) {
			t.Fatalf("held %s (%v): want r3's hold of 2 until its deadline", acct.Held, err)
		}
		clk.Advance(time.Minute + time.Second)
		au := auditAccount(t, st, a.ID, "log_", clk.Now())
		if len(au.records) != 2 || !au.state.Balance.Equal(amt("46")) || !au.state.Held.IsZero() {
			t.Fatalf("records %d, balance %s, held %s: want r1 and r2 once each (46) and nothing held", len(au.records), au.state.Balance, au.state.Held)
		}
		seen := map[string]bool{}
		for _, r := range au.records {
			if seen[r.ID] {
				t.Fatalf("record %s twice", r.ID)
			}
			seen[r.ID] = true
		}
		if _, err := live.Authorize(ctx, raw, op("r3")); err == nil {
			t.Fatal("a request whose hold expired unused ran again under its ID")
		} else if !errors.Is(err, keyledger.ErrDuplicateRequest) {
			t.Fatalf("retrying a request whose hold expired: %v", err)
		}
	})
}
