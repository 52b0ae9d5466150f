package keyledger_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/httpapi"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/pgstore"
	"github.com/keyledger/keyledger/usage"
)

// moneyBackends are the backends of the money tests: memstore, SQLite and,
// when KEYLEDGER_TEST_POSTGRES is set, PostgreSQL (a fresh schema each).
var moneyBackends = append(backends[:len(backends):len(backends)], backend{"postgres", func(t testing.TB) store.Store {
	st, err := pgstore.Open(context.Background(), pgtest.DSN(t), &pgstore.Options{Logger: slog.New(slog.DiscardHandler), MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	return store.Driver(st)
}}, backend{"postgres-leased", func(t testing.TB) store.Store {
	st, err := pgstore.Open(context.Background(), pgtest.DSN(t), &pgstore.Options{Logger: slog.New(slog.DiscardHandler), MaxConns: 8, LeasedHolds: true})
	if err != nil {
		t.Fatal(err)
	}
	return store.Driver(st)
}})

func forEachMoneyBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range moneyBackends {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

// The money edges of real traffic: holds that expire, requests that can
// never fit a plan, streams that outgrow their hold. Prices: 0.1 a prompt
// token, 0.2 a completion token; the free plan grants 50 and allows 10,000
// completion tokens a minute.

func TestExpiredHoldFreesFundsForTheNextAuthorize(t *testing.T) {
	forEachMoneyBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		ctx := context.Background()
		_, raw, _ := e.signup(t, "edge@example.com", "free")
		all := keyledger.Request{Model: "test-model", PromptTokens: 0, MaxCompletionTokens: 250} // 50: the whole balance
		g, err := e.kl.Authorize(ctx, raw, all)
		if err != nil {
			t.Fatal(err)
		}
		e.clk.Advance(5*time.Minute + time.Second) // g's hold expires; nothing sweeps
		g2, err := e.kl.Authorize(ctx, raw, all)
		if err != nil {
			t.Fatalf("Authorize after another request's hold expired: %v", err)
		}
		if _, err := g2.Complete(ctx, keyledger.Outcome{StatusCode: 200, CompletionTokens: 100}); err != nil {
			t.Fatal(err)
		}
		// The first request completes late: its work is still charged.
		res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, CompletionTokens: 100})
		if err != nil || !res.Charged.Equal(credits.NewAmount(d("20"))) {
			t.Fatalf("late completion: %+v, %v", res, err)
		}
		if got := e.balance(t, g.Key.AccountID); !got.Equal(credits.NewAmount(d("10"))) {
			t.Fatalf("balance %s, want 10", got)
		}
	})
}

func TestRequestAboveThePlansMinuteIsNotRateLimited(t *testing.T) {
	e := newEnv(t, backends[0], nil)
	ctx := context.Background()
	_, raw, _ := e.signup(t, "big@example.com", "free")
	_, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 12_000})
	var tl *keyledger.TooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, keyledger.ErrRequestTooLarge) || errors.Is(err, keyledger.ErrRateLimited) {
		t.Fatalf("Authorize of 12,000 completion tokens on a 10,000/min plan: %v", err)
	}
	if tl.Budget != "completion tokens" || tl.Requested != 12_000 || tl.Limit != 10_000 {
		t.Fatalf("TooLargeError = %+v", tl)
	}
	he := httpapi.Classify(err)
	if he.Status != 400 || he.RetryAfter != 0 || he.Code != httpapi.CodeRequestTooLarge ||
		he.Message != "This request reserves 12,000 completion tokens, more than the plan's 10,000 completion tokens per minute: lower max_tokens (or the input) below the limit." {
		t.Fatalf("Classify = %+v", he)
	}
	// Nothing was taken: a request that fits is admitted at once.
	g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	_ = g.Cancel(ctx)
}

// stream reports delivered completion tokens in chunks of chunk until the
// grant says stop or total is reached; it returns what was delivered.
func stream(t *testing.T, g *keyledger.Grant, prompt, chunk, total int64) (delivered int64, stopped bool) {
	t.Helper()
	for delivered < total {
		delivered = min(delivered+chunk, total)
		if err := g.Progress(context.Background(), keyledger.Delivered{PromptTokens: prompt, CompletionTokens: delivered}); err != nil {
			if !errors.Is(err, keyledger.ErrBudgetExhausted) {
				t.Fatalf("Progress: %v", err)
			}
			if context.Cause(g.Context()) != keyledger.ErrBudgetExhausted {
				t.Fatalf("grant context cause = %v", context.Cause(g.Context()))
			}
			return delivered, true
		}
		if g.Context().Err() != nil {
			t.Fatalf("grant context ended while funded: %v", context.Cause(g.Context()))
		}
	}
	return delivered, false
}

func TestStreamExtendsItsHoldThenStopsAtTheBalance(t *testing.T) {
	forEachMoneyBackend(t, func(t *testing.T, b backend) {
		e := newEnvWith(t, b, func(o *keyledger.Options) { o.Catalog = bigCatalog(t) })
		ctx := context.Background()
		a, raw, _ := e.signup(t, "stream@example.com", "")
		// A long max_tokens: only a 100-token estimate is held at first.
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 100_000, HoldCompletionTokens: 100})
		if err != nil {
			t.Fatal(err)
		}
		if !g.Hold.Amount.Equal(credits.NewAmount(d("21"))) { // 10×0.1 + 100×0.2
			t.Fatalf("initial hold %s, want 21", g.Hold.Amount)
		}
		// 200 tokens cost 41: the hold grows from the balance; not cut.
		if got, stopped := stream(t, g, 10, 7, 200); stopped || got != 200 {
			t.Fatalf("stream within the balance stopped at %d", got)
		}
		if h, _ := e.kl.Credits.Hold(ctx, g.Hold.ID); h.Amount.Cmp(credits.NewAmount(d("41"))) < 0 || h.State != credits.HoldActive {
			t.Fatalf("hold after 200 tokens: %+v", h)
		}
		// The balance (50) funds 245 tokens: the stream stops there, not before.
		got, stopped := stream(t, g, 10, 7, 100_000)
		if !stopped || got < 245 || got > 245+7 {
			t.Fatalf("stream stopped=%v at %d tokens, want at 245..252", stopped, got)
		}
		if err := g.Progress(ctx, keyledger.Delivered{PromptTokens: 10, CompletionTokens: got}); !errors.Is(err, keyledger.ErrBudgetExhausted) {
			t.Fatalf("Progress after exhaustion: %v", err)
		}
		res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 10, CompletionTokens: got})
		want, _ := e.kl.Prices.TokenCost("test-model", 10, got)
		if err != nil || !res.Charged.Equal(want) || !res.Record.Cost.Equal(want) {
			t.Fatalf("Complete: %+v %v, want charged %s", res, err, want)
		}
		// Charged = delivered; the overshoot is at most the last chunk.
		acc, _ := e.kl.Credits.Account(ctx, a.ID)
		if floor := credits.NewAmount(d("-1.4")); acc.Balance.Cmp(floor) < 0 || !acc.Held.IsZero() {
			t.Fatalf("balance %s held %s after the stream", acc.Balance, acc.Held)
		}
	})
}

func TestStreamKeepsItsHoldAlive(t *testing.T) {
	forEachMoneyBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		ctx := context.Background()
		a, raw, _ := e.signup(t, "long@example.com", "free")
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 100})
		if err != nil {
			t.Fatal(err)
		}
		// Twenty minutes of a slow stream against a 5-minute hold TTL.
		for i := int64(1); i <= 80; i++ {
			e.clk.Advance(15 * time.Second)
			if err := g.Progress(ctx, keyledger.Delivered{PromptTokens: 10, CompletionTokens: i}); err != nil {
				t.Fatalf("Progress at %s: %v", time.Duration(i)*15*time.Second, err)
			}
		}
		if h, _ := e.kl.Credits.Hold(ctx, g.Hold.ID); h.State != credits.HoldActive {
			t.Fatalf("hold after 20 minutes of progress: %s", h.State)
		}
		// Another request may not take the funds of the running one.
		other, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", MaxCompletionTokens: 245})
		if !errors.Is(err, credits.ErrInsufficientFunds) {
			t.Fatalf("Authorize over a live stream's hold: %v", err)
		}
		_ = other
		res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 10, CompletionTokens: 80})
		if err != nil || res.Entry.HoldID != g.Hold.ID || !res.Charged.Equal(credits.NewAmount(d("17"))) {
			t.Fatalf("Complete: %+v %v", res, err)
		}
		if got := e.balance(t, a.ID); !got.Equal(credits.NewAmount(d("33"))) {
			t.Fatalf("balance %s, want 33", got)
		}
	})
}

// Concurrent streams on one account at the balance edge: each is cut only
// when the balance cannot fund it; together they never take more than the
// balance plus each stream's last chunk.
func TestConcurrentStreamsNeverOverspend(t *testing.T) {
	forEachMoneyBackend(t, func(t *testing.T, b backend) {
		e := newEnvWith(t, b, func(o *keyledger.Options) { o.Catalog = bigCatalog(t) })
		ctx := context.Background()
		a, raw, _ := e.signup(t, "many@example.com", "")
		const streams, chunk = 8, 5
		var (
			wg     sync.WaitGroup
			mu     sync.Mutex
			billed credits.Amount
		)
		for range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 5, MaxCompletionTokens: 50_000, HoldCompletionTokens: 20})
				if err != nil {
					if !errors.Is(err, credits.ErrInsufficientFunds) {
						t.Error(err)
					}
					return
				}
				got, stopped := stream(t, g, 5, chunk, 50_000)
				if !stopped {
					t.Error("a stream ran to 50,000 tokens on a balance of 50")
				}
				res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 5, CompletionTokens: got})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				billed = billed.Add(res.Charged)
				mu.Unlock()
			}()
		}
		wg.Wait()
		acc, _ := e.kl.Credits.Account(ctx, a.ID)
		if !acc.Balance.Equal(credits.NewAmount(d("50")).Sub(billed)) || !acc.Held.IsZero() {
			t.Fatalf("balance %s held %s, billed %s", acc.Balance, acc.Held, billed)
		}
		// At most one chunk (5 × 0.2 = 1) of overshoot per stream.
		if floor := credits.NewAmount(d("-8")); acc.Balance.Cmp(floor) < 0 {
			t.Fatalf("balance %s below %s", acc.Balance, floor)
		}
		reconcile(t, e, a.ID, credits.NewAmount(d("50")))
	})
}

// reconcile checks that the account's usage records add up to its debits,
// and the debits to what the balance lost since granted.
func reconcile(t *testing.T, e *env, accountID string, granted credits.Amount) {
	t.Helper()
	ctx := context.Background()
	var cost credits.Amount
	cursor := ""
	for {
		pg, err := e.kl.Usage.List(ctx, usage.ListQuery{AccountID: accountID, Limit: 500, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range pg.Records {
			cost = cost.Add(r.Cost)
			if r.Cost.IsZero() && r.CompletionTokens > 0 && r.ErrorType == "" && r.StatusCode < 400 {
				t.Errorf("record %s delivered %d tokens at zero cost", r.ID, r.CompletionTokens)
			}
		}
		if pg.NextCursor == "" {
			break
		}
		cursor = pg.NextCursor
	}
	acc, err := e.kl.Credits.Account(ctx, accountID)
	if err != nil {
		t.Fatal(err)
	}
	if !granted.Sub(cost).Equal(acc.Balance) {
		t.Errorf("granted %s − usage %s ≠ balance %s", granted, cost, acc.Balance)
	}
}

// A hold that already covers the request's whole limit is not grown early:
// a concurrent request at the balance edge keeps the funds it needs. Only
// a delivery past the limit (an upstream ignoring it) extends it.
func TestHoldCoveringTheLimitIsNotExtendedEarly(t *testing.T) {
	forEachMoneyBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		ctx := context.Background()
		_, raw, _ := e.signup(t, "cap@example.com", "free")
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", MaxCompletionTokens: 100}) // holds 20
		if err != nil {
			t.Fatal(err)
		}
		for n := int64(1); n <= 100; n++ {
			if err := g.Progress(ctx, keyledger.Delivered{CompletionTokens: n}); err != nil {
				t.Fatal(err)
			}
		}
		if h, _ := e.kl.Credits.Hold(ctx, g.Hold.ID); !h.Amount.Equal(credits.NewAmount(d("20"))) {
			t.Fatalf("hold grew to %s within its limit", h.Amount)
		}
		// The other 30 stay free for another request.
		other, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", MaxCompletionTokens: 150})
		if err != nil {
			t.Fatalf("a request for the rest of the balance: %v", err)
		}
		_ = other.Cancel(ctx)
		// Past the limit, the hold follows the delivery.
		if err := g.Progress(ctx, keyledger.Delivered{CompletionTokens: 130}); err != nil {
			t.Fatal(err)
		}
		if h, _ := e.kl.Credits.Hold(ctx, g.Hold.ID); h.Amount.Cmp(credits.NewAmount(d("26"))) < 0 {
			t.Fatalf("hold %s after 130 tokens delivered past a limit of 100", h.Amount)
		}
		_ = g.Cancel(ctx)
	})
}
