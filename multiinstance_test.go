package keyledger_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/ratelimit/redislimit"
	"github.com/keyledger/keyledger/store/pgstore"
)

// The scale-out setup: two keyledger instances, each with its own
// PostgreSQL pool (pgstore) and Redis client (redislimit), on one database
// schema and one Redis. It needs KEYLEDGER_TEST_POSTGRES and
// KEYLEDGER_TEST_REDIS (skipped when either is unset, failed when set but
// unreachable).

// redisClient connects to KEYLEDGER_TEST_REDIS.
func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	addr := os.Getenv("KEYLEDGER_TEST_REDIS")
	if addr == "" {
		t.Skip("KEYLEDGER_TEST_REDIS is not set; set it (host:port) and KEYLEDGER_TEST_POSTGRES to run the multi-instance tests")
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("KEYLEDGER_TEST_REDIS=%s is set but Redis does not answer: %v", addr, err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// cluster is two instances, A and B.
type cluster struct {
	a, b *keyledger.KeyLedger
	dsn  string
}

// newCluster starts two instances over one fresh schema and one Redis key
// prefix. The rate limiters share a frozen clock, so that budgets do not
// refill while the test runs; everything else runs on real time, as the
// change notifications do.
func newCluster(t *testing.T, catalog *account.Catalog) *cluster {
	t.Helper()
	return newClusterLeased(t, catalog, false)
}

// newClusterLeased is newCluster with pgstore.Options.LeasedHolds set to
// leased.
func newClusterLeased(t *testing.T, catalog *account.Catalog, leased bool) *cluster {
	t.Helper()
	rdbA := redisClient(t)
	dsn := pgtest.DSN(t)
	rdbB := redisClient(t)
	var rb [8]byte
	_, _ = rand.Read(rb[:])
	prefix := "kltest:" + hex.EncodeToString(rb[:]) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdbA.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdbA.Del(ctx, iter.Val())
		}
	})
	frozen := fakeclock.New(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
	quiet := slog.New(slog.DiscardHandler)
	instance := func(rdb *redis.Client) *keyledger.KeyLedger {
		st, err := pgstore.Open(context.Background(), dsn, &pgstore.Options{Logger: quiet, MaxConns: 8, LeasedHolds: leased})
		if err != nil {
			t.Fatal(err)
		}
		kl, err := keyledger.New(st, &keyledger.Options{
			Logger: quiet, Prices: prices(t), Catalog: catalog,
			Limiter:  redislimit.New(rdb, &redislimit.Options{Prefix: prefix, Now: frozen.Now}),
			Accounts: &account.Options{Argon2: fastArgon},
			// Without notifications, B would serve a revoked key for an hour.
			Keys: &apikey.Options{RefreshInterval: time.Hour},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := kl.Close(context.Background()); err != nil {
				t.Error(err)
			}
			st.Close()
		})
		return kl
	}
	return &cluster{a: instance(rdbA), b: instance(rdbB), dsn: dsn}
}

// signup creates an account and a key through A.
func (c *cluster) signup(t *testing.T, email string) (account.Account, apikey.RawKey, apikey.APIKey) {
	t.Helper()
	ctx := context.Background()
	a, err := c.a.Signup(ctx, account.CreateParams{Name: "M", Email: email})
	if err != nil {
		t.Fatal(err)
	}
	raw, k, err := c.a.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	return a, raw, k
}

var freeCall = keyledger.Request{Endpoint: "/v1/free", Method: "GET"}

// A revocation in A rejects the key in B on its next request after the
// notification, and cancels the request B is running with it.
func TestMultiInstanceRevocation(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, nil)
	a, raw, k := c.signup(t, "revoke@example.com")
	g, err := c.b.Authorize(ctx, raw, freeCall) // B has the key cached now
	if err != nil {
		t.Fatal(err)
	}
	defer g.Cancel(ctx)
	if _, err := c.a.Keys.Revoke(ctx, a.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	select {
	case <-g.Context().Done():
	case <-timer.C:
		t.Fatal("B's in-flight request is still running 1s after A revoked its key")
	}
	if cause := context.Cause(g.Context()); !errors.Is(cause, apikey.ErrRevoked) {
		t.Fatalf("B's request ended with %v, want ErrRevoked", cause)
	}
	if _, err := c.b.Authorize(ctx, raw, freeCall); !errors.Is(err, apikey.ErrRevoked) {
		t.Fatalf("B authorizes a key A revoked: %v", err)
	}
}

// The free plan's 60 requests per minute hold for the account across both
// instances together.
func TestMultiInstanceCombinedRPM(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, nil)
	_, raw, _ := c.signup(t, "rpm@example.com")
	var admitted, limited atomic.Int64
	var wg sync.WaitGroup
	for i := range 100 {
		kl := c.a
		if i%2 == 1 {
			kl = c.b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := kl.Authorize(ctx, raw, freeCall)
			switch {
			case err == nil:
				admitted.Add(1)
				if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200}); err != nil {
					t.Error(err)
				}
			case errors.Is(err, keyledger.ErrRateLimited):
				limited.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if admitted.Load() != 60 || limited.Load() != 40 {
		t.Fatalf("admitted %d and limited %d of 100 across two instances, want 60 and 40 (free plan: 60 RPM)",
			admitted.Load(), limited.Load())
	}
}

// Requests spending one account's credit from both instances at once never
// take it below zero: every admitted request holds its cost first, and
// holds are shared through the database, so exactly the funded number of
// requests run and the ledger stays the sum of its entries.
func TestMultiInstanceConcurrentSpendNeverOverspends(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, bigCatalog(t)) // no rate limits; ₹50 signup grant
	a, raw, _ := c.signup(t, "spend@example.com")
	paid := keyledger.Request{Endpoint: "/v1/op", Method: "POST", Units: 1} // ₹1 per call

	// A hold taken by A is seen by B.
	g, err := c.a.Authorize(ctx, raw, paid)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := c.b.Credits.Account(ctx, a.ID)
	if err != nil || !acct.Held.Equal(credits.AmountFromInt(1)) {
		t.Fatalf("B sees held %s (%v), want A's hold of 1", acct.Held, err)
	}
	if err := g.Cancel(ctx); err != nil {
		t.Fatal(err)
	}

	served, refused := c.raceSpend(t, raw, paid, 80)
	if served != 50 || refused != 30 {
		t.Fatalf("served %d, refused %d of 80 on a balance of 50 at 1 each; want 50 and 30", served, refused)
	}
	for _, kl := range []*keyledger.KeyLedger{c.a, c.b} {
		acct, err := kl.Credits.Account(ctx, a.ID)
		if err != nil || !acct.Balance.IsZero() || !acct.Held.IsZero() {
			t.Fatalf("account after the run: balance %s held %s (%v), want 0 and 0", acct.Balance, acct.Held, err)
		}
	}
	page, err := c.b.Credits.Entries(ctx, a.ID, credits.EntryFilter{}, "", 500)
	if err != nil {
		t.Fatal(err)
	}
	sum := credits.Amount{}
	for _, e := range page.Entries {
		sum = sum.Add(e.Amount)
	}
	if !sum.IsZero() || len(page.Entries) != 51 {
		t.Fatalf("%d entries summing to %s, want the grant and 50 debits summing to 0", len(page.Entries), sum)
	}
}

// With leased holds (pgstore.Options.LeasedHolds) each instance sets funds
// aside in one stored hold per account and key and draws its requests'
// holds from it in memory. Racing one account's last funds from both
// instances still never takes it below zero, every admitted request is
// charged exactly once, and once the instances close nothing is held. An
// instance may refuse a request while the other's lease still has room
// (the documented price of leasing), so the count served may fall short of
// the funds; it may never exceed them.
func TestMultiInstanceLeasedSpendNeverOverspends(t *testing.T) {
	ctx := context.Background()
	c := newClusterLeased(t, bigCatalog(t), true) // no rate limits; ₹50 signup grant
	a, raw, _ := c.signup(t, "leased@example.com")
	paid := keyledger.Request{Endpoint: "/v1/op", Method: "POST", Units: 1} // ₹1 per call

	// A's lease is a stored hold: B sees its funds as held.
	g, err := c.a.Authorize(ctx, raw, paid)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := c.b.Credits.Account(ctx, a.ID)
	if err != nil || acct.Held.Cmp(credits.AmountFromInt(1)) < 0 {
		t.Fatalf("B sees held %s (%v), want at least A's hold of 1", acct.Held, err)
	}
	if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, Units: 1}); err != nil {
		t.Fatal(err)
	}

	served, refused := c.raceSpend(t, raw, paid, 120)
	if served > 49 || refused < 71 || served+refused != 120 {
		t.Fatalf("served %d, refused %d of 120 on a balance of 49 at 1 each", served, refused)
	}
	t.Logf("served %d, refused %d", served, refused)
	if served < 40 {
		t.Errorf("served only %d of 49 funded requests: the leases starve the instances", served)
	}
	if err := c.a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := pgstore.Open(ctx, c.dsn, &pgstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kl, err := keyledger.New(st, &keyledger.Options{Logger: slog.New(slog.DiscardHandler), Prices: prices(t), Catalog: bigCatalog(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close(ctx)
	acct, err = kl.Credits.Account(ctx, a.ID)
	if want := credits.AmountFromInt(49 - served); err != nil || !acct.Balance.Equal(want) || !acct.Held.IsZero() {
		t.Fatalf("account after the run: balance %s held %s (%v), want %s and 0", acct.Balance, acct.Held, err, want)
	}
	page, err := kl.Credits.Entries(ctx, a.ID, credits.EntryFilter{}, "", 500)
	if err != nil {
		t.Fatal(err)
	}
	sum := credits.Amount{}
	for _, e := range page.Entries {
		sum = sum.Add(e.Amount)
	}
	if !sum.Equal(acct.Balance) || len(page.Entries) != int(served)+2 {
		t.Fatalf("%d entries summing to %s, want the grant and %d debits summing to the balance %s", len(page.Entries), sum, served+1, acct.Balance)
	}
}

// raceSpend runs n paid requests of raw at once, alternating between the
// instances, each completed at a charge of 1, and counts those served and
// those refused for funds.
func (c *cluster) raceSpend(t *testing.T, raw apikey.RawKey, paid keyledger.Request, n int) (served, refused int64) {
	t.Helper()
	ctx := context.Background()
	var s, r atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		kl := c.a
		if i%2 == 1 {
			kl = c.b
		}
		wg.Go(func() {
			g, err := kl.Authorize(ctx, raw, paid)
			switch {
			case errors.Is(err, credits.ErrInsufficientFunds):
				r.Add(1)
				return
			case err != nil:
				t.Error(err)
				return
			}
			res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, Units: 1})
			if err != nil || !res.Charged.Equal(credits.AmountFromInt(1)) {
				t.Errorf("complete: charged %s, %v", res.Charged, err)
				return
			}
			s.Add(1)
		})
	}
	wg.Wait()
	return s.Load(), r.Load()
}
