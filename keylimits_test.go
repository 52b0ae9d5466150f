package keyledger_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
)

// Two instances on one PostgreSQL database never let a key spend past its
// limit: the limit and its counters are read and updated under the ledger
// row's lock, in the transaction that takes the hold.
func TestMultiInstanceKeyLimitNeverOverspends(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, bigCatalog(t)) // no rate limits; ₹50 signup grant
	a, raw, k := c.signup(t, "keylimit@example.com")
	if _, err := c.a.SetKeySpendLimit(ctx, a.ID, k.ID, &keyledger.SpendLimit{Amount: credits.AmountFromInt(12), Period: credits.PeriodDay}); err != nil {
		t.Fatal(err)
	}
	paid := keyledger.Request{Endpoint: "/v1/op", Method: "POST", Units: 1} // ₹1 per call
	var served, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 40 {
		kl := c.a
		if i%2 == 1 {
			kl = c.b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := kl.Authorize(ctx, raw, paid)
			switch {
			case errors.Is(err, credits.ErrKeyBudgetExceeded):
				if errkind.Of(err) != errkind.PaymentRequired {
					t.Errorf("key budget refusal of kind %v", errkind.Of(err))
				}
				refused.Add(1)
				return
			case err != nil:
				t.Error(err)
				return
			}
			if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, Units: 1}); err != nil {
				t.Error(err)
				return
			}
			served.Add(1)
		}()
	}
	wg.Wait()
	if served.Load() != 12 || refused.Load() != 28 {
		t.Fatalf("served %d, refused %d; want 12 and 28 under a ₹12 key limit", served.Load(), refused.Load())
	}
	for _, kl := range []*keyledger.KeyLedger{c.a, c.b} {
		ks, ok, err := kl.KeySpend(ctx, a.ID, k.ID)
		if err != nil || !ok || !ks.Spent.Equal(credits.AmountFromInt(12)) || !ks.Held.IsZero() || !ks.Remaining.IsZero() {
			t.Fatalf("key spend: %+v, %v, %v", ks, ok, err)
		}
	}
	acct, err := c.b.Credits.Account(ctx, a.ID)
	if err != nil || !acct.Balance.Equal(credits.AmountFromInt(38)) {
		t.Fatalf("balance %s (%v), want 38", acct.Balance, err)
	}
	// Another account's key ID is not found, and its limit is untouched.
	b, _, _ := c.signup(t, "other@example.com")
	if _, err := c.a.SetKeySpendLimit(ctx, b.ID, k.ID, nil); !errors.Is(err, apikey.ErrNotFound) {
		t.Fatalf("setting another account's key: %v", err)
	}
	if _, _, err := c.b.KeySpend(ctx, b.ID, k.ID); !errors.Is(err, apikey.ErrNotFound) {
		t.Fatalf("reading another account's key: %v", err)
	}
}

// A key's spend limit on every backend (process holds included): a request
// larger than the whole limit is a 400, one larger than what remains a 402
// with the reset time, a stream stops at the key's budget rather than the
// balance, and the next day the key works again.
func TestKeySpendLimitInAuthorizeAndStreams(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnvWith(t, b, func(o *keyledger.Options) { o.Catalog = bigCatalog(t) })
		ctx := context.Background()
		a, raw, k := e.signup(t, "limit@example.com", "")
		ks, err := e.kl.SetKeySpendLimit(ctx, a.ID, k.ID, &keyledger.SpendLimit{Amount: credits.AmountFromInt(25), Period: credits.PeriodDay})
		if err != nil || !ks.Remaining.Equal(credits.AmountFromInt(25)) {
			t.Fatalf("SetKeySpendLimit: %+v, %v", ks, err)
		}
		// 10×0.1 + 200×0.2 = 41 > 25: never fits.
		_, err = e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 200})
		if !errors.Is(err, credits.ErrKeyLimitExceeded) || errkind.Of(err) != errkind.Invalid {
			t.Fatalf("whole-limit request: %v", err)
		}
		// A stream held at 21 grows to the key's 25, not to the balance of 50.
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 100_000, HoldCompletionTokens: 100})
		if err != nil {
			t.Fatal(err)
		}
		got, stopped := stream(t, g, 10, 7, 100_000)
		if !stopped || got < 120 || got > 120+7 { // 25 funds 10 prompt + 120 completion tokens
			t.Fatalf("stream stopped=%v at %d tokens, want at 120..127", stopped, got)
		}
		if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 10, CompletionTokens: 120}); err != nil {
			t.Fatal(err)
		}
		_, err = e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op", Method: "POST", Units: 1})
		var kb *credits.KeyBudgetError
		if !errors.As(err, &kb) || errkind.Of(err) != errkind.PaymentRequired || !kb.ResetAt.Equal(time.Date(2026, 5, 2, 0, 0, 0, 0, time.UTC)) {
			t.Fatalf("spent key: %v", err)
		}
		if !keyledger.RecordableRefusal(err) {
			t.Fatal("a key-budget refusal is not recordable")
		}
		if got := e.balance(t, a.ID); !got.Equal(credits.AmountFromInt(25)) {
			t.Fatalf("balance %s, want 25", got)
		}
		e.clk.Set(kb.ResetAt)
		g, err = e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op", Method: "POST", Units: 1})
		if err != nil {
			t.Fatalf("after the reset: %v", err)
		}
		_ = g.Cancel(ctx)
		if _, err := e.kl.SetKeySpendLimit(ctx, a.ID, k.ID, nil); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := e.kl.KeySpend(ctx, a.ID, k.ID); ok || err != nil {
			t.Fatalf("removed limit: %v, %v", ok, err)
		}
	})
}

// A key's own rate limits apply below the plan's; one above is refused
// naming the limit; zero restores the plan's.
func TestKeyRateLimitsBelowThePlan(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil) // free plan: 60 requests a minute
		ctx := context.Background()
		a, raw, k := e.signup(t, "rpm@example.com", "free")
		_, err := e.kl.SetKeyRateLimits(ctx, a.ID, k.ID, apikey.RateLimits{RequestsPerMinute: 61})
		if !errors.Is(err, keyledger.ErrKeyRateLimitAbovePlan) || errkind.Of(err) != errkind.Invalid || !strings.Contains(err.Error(), "requests_per_minute 61") {
			t.Fatalf("above the plan: %v", err)
		}
		if _, err := e.kl.SetKeyRateLimits(ctx, a.ID, k.ID, apikey.RateLimits{RequestsPerMinute: -1}); !errors.Is(err, apikey.ErrInvalidRateLimits) {
			t.Fatalf("negative: %v", err)
		}
		got, err := e.kl.SetKeyRateLimits(ctx, a.ID, k.ID, apikey.RateLimits{RequestsPerMinute: 3})
		if err != nil || got.RateLimits.RequestsPerMinute != 3 {
			t.Fatalf("set: %+v %v", got, err)
		}
		if g, _ := e.kl.Keys.Get(ctx, a.ID, k.ID); g.RateLimits.RequestsPerMinute != 3 {
			t.Fatalf("stored: %+v", g.RateLimits)
		}
		free := keyledger.Request{Endpoint: "/v1/free", Method: "GET"}
		for i := range 3 {
			g, err := e.kl.Authorize(ctx, raw, free)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			_ = g.Cancel(ctx)
		}
		_, err = e.kl.Authorize(ctx, raw, free)
		var le *keyledger.LimitError
		if !errors.As(err, &le) || le.Budget.Requests.Limit != 3 {
			t.Fatalf("4th request under a key limit of 3: %v", err)
		}
		// Another key of the account still has the plan's 60.
		raw2, _, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "other"})
		if err != nil {
			t.Fatal(err)
		}
		if g, err := e.kl.Authorize(ctx, raw2, free); err != nil {
			t.Fatalf("other key: %v", err)
		} else if g.Budget.Requests.Limit != 60 {
			t.Fatalf("other key's budget %+v", g.Budget.Requests)
		}
		if _, err := e.kl.SetKeyRateLimits(ctx, a.ID, k.ID, apikey.RateLimits{}); err != nil {
			t.Fatal(err)
		}
		if g, err := e.kl.Authorize(ctx, raw, free); err != nil {
			t.Fatalf("after clearing the key's limit: %v", err)
		} else {
			_ = g.Cancel(ctx)
		}
		other, _, _ := e.signup(t, "rpm2@example.com", "free")
		if _, err := e.kl.SetKeyRateLimits(ctx, other.ID, k.ID, apikey.RateLimits{}); !errors.Is(err, apikey.ErrNotFound) {
			t.Fatalf("another account's key: %v", err)
		}
	})
}

// At the ledger's bound of 100 limited keys, a new limit first removes the
// limits of revoked keys; with every limited key live it is refused.
func TestKeySpendLimitsMakeRoomFromRevokedKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		a, _, first := e.signup(t, "manykeys@example.com", "free")
		ctx := context.Background()
		lim := &keyledger.SpendLimit{Amount: credits.AmountFromInt(5), Period: credits.PeriodDay}
		ids := []string{first.ID}
		for range 100 {
			_, k, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k"})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, k.ID)
		}
		for _, id := range ids[:100] {
			if _, err := e.kl.SetKeySpendLimit(ctx, a.ID, id, lim); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.kl.SetKeySpendLimit(ctx, a.ID, ids[100], lim); !errors.Is(err, credits.ErrTooManyKeyLimits) {
			t.Fatalf("a 101st limit with every limited key live = %v, want ErrTooManyKeyLimits", err)
		}
		if _, err := e.kl.Keys.Revoke(ctx, a.ID, ids[3]); err != nil {
			t.Fatal(err)
		}
		if _, err := e.kl.SetKeySpendLimit(ctx, a.ID, ids[100], lim); err != nil {
			t.Fatalf("a 101st limit after a revocation: %v", err)
		}
		spends, err := e.kl.KeySpends(ctx, a.ID)
		if err != nil || len(spends) != 100 {
			t.Fatalf("limited keys %d (%v), want 100", len(spends), err)
		}
		if _, ok := spends[ids[3]]; ok {
			t.Fatal("the revoked key's limit stayed")
		}
		if _, ok := spends[ids[100]]; !ok {
			t.Fatal("the new limit is missing")
		}
	})
}
