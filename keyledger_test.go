package keyledger_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/internal/storewrap"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/usage"
)

var fastArgon = account.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 16}

type backend struct {
	name string
	open func(t testing.TB) store.Store
}

var backends = []backend{
	{"memory", func(testing.TB) store.Store { return store.Driver(memstore.New()) }},
	{"sqlite", func(t testing.TB) store.Store {
		st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "k.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return store.Driver(st)
	}},
	// Holds kept in the process (sqlitestore.Options.ProcessHolds): every
	// test of the facade runs on them too.
	{"sqlite-process-holds", func(t testing.TB) store.Store {
		st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "k.db"),
			&sqlitestore.Options{ProcessHolds: true, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return store.Driver(st)
	}},
}

func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

func d(s string) decimal.Decimal { return decimal.RequireFromString(s) }

// prices: the test model costs 0.1 per prompt token and 0.2 per completion
// token; "/v1/op" costs 1 per call.
func prices(t testing.TB) *usage.PriceBook {
	pb, err := usage.NewPriceBook(
		[]usage.ModelPrice{{Model: "test-model", PromptPerMillion: d("100000"), CompletionPerMillion: d("200000")}},
		[]usage.OperationPrice{{Operation: "/v1/op", PerUnit: d("1")}})
	if err != nil {
		t.Fatal(err)
	}
	return pb
}

type env struct {
	kl  *keyledger.KeyLedger
	clk *fakeclock.Clock
	st  store.Store
}

func newEnv(t testing.TB, b backend, catalog *account.Catalog) *env {
	t.Helper()
	return newEnvWith(t, b, func(o *keyledger.Options) { o.Catalog = catalog })
}

// newEnvWith is newEnv with options changed by set.
func newEnvWith(t testing.TB, b backend, set func(*keyledger.Options)) *env {
	t.Helper()
	st := b.open(t)
	clk := fakeclock.New(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
	o := &keyledger.Options{
		Now: clk.Now, Prices: prices(t),
		Accounts: &account.Options{Argon2: fastArgon},
	}
	if set != nil {
		set(o)
	}
	kl, err := keyledger.New(store.Wrap(st), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := kl.Close(context.Background()); err != nil {
			t.Error(err)
		}
		st.Close()
	})
	return &env{kl: kl, clk: clk, st: st}
}

// signup creates an account on plan with its signup grant and one key.
func (e *env) signup(t testing.TB, email, plan string) (account.Account, apikey.RawKey, apikey.APIKey) {
	t.Helper()
	ctx := context.Background()
	a, err := e.kl.Signup(ctx, account.CreateParams{Name: "T", Email: email, Plan: plan})
	if err != nil {
		t.Fatal(err)
	}
	raw, k, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return a, raw, k
}

func (e *env) balance(t testing.TB, accountID string) credits.Amount {
	t.Helper()
	b, err := e.kl.Credits.Balance(context.Background(), accountID)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bigCatalog has a default plan without rate limits and a ₹50 grant.
func bigCatalog(t testing.TB) *account.Catalog {
	c, err := account.NewCatalog("big", account.Plan{ID: "big", Name: "Big", SignupGrant: d("50")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSignupGrant(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		a, _, _ := e.signup(t, "s@example.com", "")
		if got := e.balance(t, a.ID); !got.Equal(credits.NewAmount(d("50"))) {
			t.Fatalf("free plan signup balance %s, want 50", got)
		}
		if err := e.kl.EnsureLedger(context.Background(), a); err != nil { // idempotent
			t.Fatal(err)
		}
		if got := e.balance(t, a.ID); !got.Equal(credits.NewAmount(d("50"))) {
			t.Fatalf("EnsureLedger granted twice: %s", got)
		}
	})
}

func TestAuthorizeCompleteChargesExactly(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		ctx := context.Background()
		a, raw, k := e.signup(t, "c@example.com", "free")
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 100, MaxCompletionTokens: 100, Endpoint: "/v1/chat/completions", Method: "POST"})
		if err != nil {
			t.Fatal(err)
		}
		if g.Key.KeyID != k.ID || !g.Estimate.Equal(credits.NewAmount(d("30"))) || g.Hold.ID == "" {
			t.Fatalf("grant %+v", g)
		}
		if g.Budget.Requests.Limit != 60 || g.Budget.Requests.Remaining != 59 {
			t.Fatalf("budget %+v", g.Budget.Requests)
		}
		res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 100, CompletionTokens: 10})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Charged.Equal(credits.NewAmount(d("12"))) {
			t.Fatalf("charged %s, want 12 (100×0.1 + 10×0.2)", res.Charged)
		}
		again, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 999})
		if err != nil || again.Record.ID != res.Record.ID {
			t.Fatalf("second Complete must return the first result: %+v %v", again, err)
		}
		if got := e.balance(t, a.ID); !got.Equal(credits.NewAmount(d("38"))) {
			t.Fatalf("balance %s, want 38", got)
		}
		acct, _ := e.kl.Credits.Account(ctx, a.ID)
		if !acct.Held.IsZero() {
			t.Fatalf("hold left: %s", acct.Held)
		}
	})
}

func TestRefusalsAreNotCharged(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		ctx := context.Background()
		a, raw, _ := e.signup(t, "r@example.com", "free")
		cases := []struct {
			raw  apikey.RawKey
			req  keyledger.Request
			want error
		}{
			{"garbage", keyledger.Request{Model: "test-model"}, apikey.ErrMalformed},
			{raw, keyledger.Request{Model: "nope"}, usage.ErrUnknownModel},
			{raw, keyledger.Request{Model: "test-model", PromptTokens: 1000, MaxCompletionTokens: 1000}, credits.ErrInsufficientFunds},
			{raw, keyledger.Request{Model: "test-model", PromptTokens: -1}, keyledger.ErrInvalidRequest},
		}
		for _, c := range cases {
			if _, err := e.kl.Authorize(ctx, c.raw, c.req); !errors.Is(err, c.want) {
				t.Errorf("%+v: %v, want %v", c.req, err, c.want)
			}
		}
		if got := e.balance(t, a.ID); !got.Equal(credits.NewAmount(d("50"))) {
			t.Fatalf("refusals charged: balance %s", got)
		}
		// The refused requests took nothing from the budgets either.
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 1})
		if err != nil {
			t.Fatal(err)
		}
		if g.Budget.Requests.Remaining != 59 {
			t.Fatalf("refused requests used the request budget: remaining %d", g.Budget.Requests.Remaining)
		}
		g.Cancel(ctx)
	})
}

func TestFreePlan61stRequestIs429AndFree(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		ctx := context.Background()
		a, raw, _ := e.signup(t, "l@example.com", "free")
		for i := range 60 {
			endpoint := "/v1/free" // unpriced: free
			if i < 10 {
				endpoint = "/v1/op" // 1 each
			}
			g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: endpoint})
			if err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
			if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200}); err != nil {
				t.Fatal(err)
			}
		}
		_, err := e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op"})
		var le *keyledger.LimitError
		if !errors.As(err, &le) || !errors.Is(err, keyledger.ErrRateLimited) || le.RetryAfter() != time.Second {
			t.Fatalf("61st: %v", err)
		}
		if le.Budget.Requests.Remaining != 0 || le.Budget.Requests.Limit != 60 {
			t.Fatalf("429 budget %+v", le.Budget.Requests)
		}
		if got := e.balance(t, a.ID); !got.Equal(credits.NewAmount(d("40"))) {
			t.Fatalf("balance %s, want 40: the 429 must not be charged", got)
		}
		e.clk.Advance(time.Second)
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op"})
		if err != nil {
			t.Fatalf("after refill: %v", err)
		}
		g.Cancel(ctx)
	})
}

func TestTokenBudgetsSeparately(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, err := account.NewCatalog("tpm", account.Plan{ID: "tpm", Name: "TPM",
			Limits: account.Limits{RequestsPerMinute: 1000, PromptTokensPerMinute: 1000, CompletionTokensPerMinute: 100}, SignupGrant: d("100000")})
		if err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, b, c)
		ctx := context.Background()
		_, raw, _ := e.signup(t, "tpm@example.com", "")
		// Prompt budget: 900 then 200 refused; completion still free.
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 900, MaxCompletionTokens: 10})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 900, CompletionTokens: 10}); err != nil {
			t.Fatal(err)
		}
		_, err = e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 200, MaxCompletionTokens: 10})
		var le *keyledger.LimitError
		if !errors.As(err, &le) || le.Budget.PromptTokens.Allowed || !le.Budget.CompletionTokens.Allowed {
			t.Fatalf("prompt budget must refuse alone: %v", err)
		}
		// Completion budget: reserving 95 leaves 5 after the first 10 ... 100 - 10 = 90 left; 95 refused.
		_, err = e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 1, MaxCompletionTokens: 95})
		if !errors.As(err, &le) || !le.Budget.PromptTokens.Allowed || le.Budget.CompletionTokens.Allowed {
			t.Fatalf("completion budget must refuse alone: %v", err)
		}
		// Reserved max completion is corrected by the actual count.
		g, err = e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 1, MaxCompletionTokens: 90})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 1, CompletionTokens: 5}); err != nil {
			t.Fatal(err)
		}
		g, err = e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 1, MaxCompletionTokens: 80})
		if err != nil {
			t.Fatalf("unused completion reservation not returned: %v", err)
		}
		g.Cancel(ctx)
	})
}

func TestConcurrentRequestsNeverOverspend(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, bigCatalog(t))
		ctx := context.Background()
		a, raw, _ := e.signup(t, "o@example.com", "")
		var ok, refused atomic.Int64
		var wg sync.WaitGroup
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 10})
				if errors.Is(err, credits.ErrInsufficientFunds) {
					refused.Add(1)
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				// Half the requests use all they reserved, half a little less.
				comp := int64(10)
				if i%2 == 0 {
					comp = 5
				}
				if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 10, CompletionTokens: comp}); err != nil {
					t.Error(err)
					return
				}
				ok.Add(1)
			}()
		}
		wg.Wait()
		bal := e.balance(t, a.ID)
		if bal.IsNegative() {
			t.Fatalf("overspent: balance %s", bal)
		}
		pg, err := e.kl.Credits.Entries(ctx, a.ID, credits.EntryFilter{}, "", 500)
		if err != nil {
			t.Fatal(err)
		}
		sum := credits.Amount{}
		for _, en := range pg.Entries {
			sum = sum.Add(en.Amount)
		}
		if !sum.Equal(bal) {
			t.Fatalf("Σ entries %s != balance %s", sum, bal)
		}
		if ok.Load()+refused.Load() != 200 || ok.Load() < 16 {
			t.Fatalf("ok %d refused %d", ok.Load(), refused.Load())
		}
		acct, _ := e.kl.Credits.Account(ctx, a.ID)
		if !acct.Held.IsZero() {
			t.Fatalf("holds left: %s", acct.Held)
		}
	})
}

func TestCancelGivesBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, err := account.NewCatalog("tpm", account.Plan{ID: "tpm", Name: "TPM",
			Limits: account.Limits{RequestsPerMinute: 60, PromptTokensPerMinute: 100_000, CompletionTokensPerMinute: 10_000}, SignupGrant: d("50000")})
		if err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, b, c)
		ctx := context.Background()
		a, raw, _ := e.signup(t, "cancel@example.com", "")
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 90_000, MaxCompletionTokens: 100})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		if err := g.Cancel(ctx); err != nil { // once
			t.Fatal(err)
		}
		if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 1}); err != nil {
			t.Fatalf("Complete after Cancel must return Cancel's result: %v", err)
		}
		acct, _ := e.kl.Credits.Account(ctx, a.ID)
		if !acct.Held.IsZero() || !acct.Balance.Equal(credits.NewAmount(d("50000"))) {
			t.Fatalf("after cancel: held %s balance %s", acct.Held, acct.Balance)
		}
		// The prompt reservation (90K of 100K TPM) came back.
		g, err = e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 90_000})
		if err != nil {
			t.Fatalf("prompt reservation not returned: %v", err)
		}
		if g.Budget.Requests.Remaining != 58 { // the cancelled request still counts
			t.Fatalf("requests remaining %d, want 58", g.Budget.Requests.Remaining)
		}
		g.Cancel(ctx)
	})
}

func TestUpdateAccountTakesEffectAtOnce(t *testing.T) {
	testUpdateTakesEffect(t, func(ctx context.Context, kl *keyledger.KeyLedger, id string, p account.UpdateParams) error {
		_, err := kl.UpdateAccount(ctx, id, p)
		return err
	})
}

// TestServiceUpdateTakesEffectAtOnce is TestUpdateAccountTakesEffectAtOnce
// through the account service the facade exposes: a host calling
// kl.Accounts.Update directly cannot skip the cache sync and the ledger
// policy update (the hook New installs runs them), so no stale limit,
// monthly cap or account status survives the call.
func TestServiceUpdateTakesEffectAtOnce(t *testing.T) {
	testUpdateTakesEffect(t, func(ctx context.Context, kl *keyledger.KeyLedger, id string, p account.UpdateParams) error {
		_, err := kl.Accounts.Update(ctx, id, p)
		return err
	})
}

func testUpdateTakesEffect(t *testing.T, update func(context.Context, *keyledger.KeyLedger, string, account.UpdateParams) error) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, err := account.NewCatalog("small",
			account.Plan{ID: "small", Name: "Small", Limits: account.Limits{RequestsPerMinute: 1}, SignupGrant: d("10")},
			account.Plan{ID: "capped", Name: "Capped", Limits: account.Limits{RequestsPerMinute: 100}, MonthlyCap: d("2")})
		if err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, b, c)
		ctx := context.Background()
		a, raw, _ := e.signup(t, "up@example.com", "")
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op"})
		if err != nil {
			t.Fatal(err)
		}
		g.Complete(ctx, keyledger.Outcome{StatusCode: 200})
		if _, err := e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op"}); !errors.Is(err, keyledger.ErrRateLimited) {
			t.Fatalf("second request on 1 RPM: %v", err)
		}
		plan := "capped"
		if err := update(ctx, e.kl, a.ID, account.UpdateParams{Plan: &plan}); err != nil {
			t.Fatal(err)
		}
		// New limits apply to the very next request; the new monthly cap (2, with 1 spent) too.
		g, err = e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op"})
		if err != nil {
			t.Fatalf("after plan change: %v", err)
		}
		g.Complete(ctx, keyledger.Outcome{StatusCode: 200})
		if _, err := e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op"}); !errors.Is(err, credits.ErrMonthlyLimit) {
			t.Fatalf("monthly cap of the new plan: %v", err)
		}
		// Suspending the account stops its keys at once.
		st := account.StatusSuspended
		if err := update(ctx, e.kl, a.ID, account.UpdateParams{Status: &st}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op"}); !errors.Is(err, apikey.ErrAccountInactive) {
			t.Fatalf("suspended account: %v", err)
		}
	})
}

// revokingStore revokes a key in the middle of Authorize: while the credit
// hold is being written, after Verify and before Bind.
type revokingStore struct {
	storewrap.Base
	hook func()
}

func (s *revokingStore) ApplySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	if h := s.hook; h != nil {
		s.hook = nil
		h()
	}
	return s.Store.ApplySpends(ctx, now, reqs, res)
}

func TestRevokeDuringAuthorizeRefuses(t *testing.T) {
	st := &revokingStore{Base: storewrap.Base{Store: store.Driver(memstore.New())}}
	e := newEnv(t, backend{"memory", func(testing.TB) store.Store { return st }}, nil)
	ctx := context.Background()
	a, raw, k := e.signup(t, "race@example.com", "free")
	st.hook = func() {
		if _, err := e.kl.Keys.Revoke(ctx, a.ID, k.ID); err != nil {
			t.Error(err)
		}
	}
	if _, err := e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op"}); !errors.Is(err, apikey.ErrRevoked) {
		t.Fatalf("Authorize across a Revoke: %v, want ErrRevoked", err)
	}
	acct, _ := e.kl.Credits.Account(ctx, a.ID)
	if !acct.Held.IsZero() || !acct.Balance.Equal(credits.NewAmount(d("50"))) {
		t.Fatalf("held %s balance %s", acct.Held, acct.Balance)
	}
}

func TestCompletionNeverDropsTheRecord(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		ctx := context.Background()
		a, raw, _ := e.signup(t, "late@example.com", "free")
		// A request that outlives its 5-minute hold is charged directly.
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 10})
		if err != nil {
			t.Fatal(err)
		}
		e.clk.Advance(6 * time.Minute)
		res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 10, CompletionTokens: 10})
		if err != nil || !res.Charged.Equal(credits.NewAmount(d("3"))) {
			t.Fatalf("late completion: %+v %v", res, err)
		}
		if got := e.balance(t, a.ID); !got.Equal(credits.NewAmount(d("47"))) {
			t.Fatalf("balance %s, want 47", got)
		}
		// A late completion the balance cannot pay is charged in full, into
		// debt, and the account is refused until a top-up pays it.
		g, err = e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 10})
		if err != nil {
			t.Fatal(err)
		}
		e.clk.Advance(6 * time.Minute)
		res, err = g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 100, CompletionTokens: 200}) // 50 > 47
		if err != nil || res.Record.ErrorType != "" || !res.Shortfall.IsZero() || !res.Charged.Equal(credits.NewAmount(d("50"))) {
			t.Fatalf("unpayable completion: %+v %v", res, err)
		}
		pg, err := e.kl.Usage.List(ctx, usage.ListQuery{AccountID: a.ID, Limit: 10})
		if err != nil || len(pg.Records) != 2 {
			t.Fatalf("records %d %v, want 2", len(pg.Records), err)
		}
		if got := e.balance(t, a.ID); !got.Equal(credits.NewAmount(d("-3"))) {
			t.Fatalf("balance %s, want -3", got)
		}
		var de *credits.DebtError
		if _, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 1, MaxCompletionTokens: 1}); !errors.As(err, &de) || !de.Debt.Equal(credits.NewAmount(d("3"))) {
			t.Fatalf("Authorize in debt: %v", err)
		}
		if _, err := e.kl.Credits.Purchase(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.NewAmount(d("10")), IdempotencyKey: "top-up"}); err != nil {
			t.Fatal(err)
		}
		g, err = e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 1, MaxCompletionTokens: 1})
		if err != nil {
			t.Fatalf("Authorize after paying the debt: %v", err)
		}
		_ = g.Cancel(ctx)
	})
}

func TestCompletionWriteOffPolicy(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnvWith(t, b, func(o *keyledger.Options) { o.Overrun = credits.OverrunWriteOff })
		ctx := context.Background()
		a, raw, _ := e.signup(t, "late@example.com", "free")
		// A late completion is charged what the balance covers, not ₹0.
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 10})
		if err != nil {
			t.Fatal(err)
		}
		e.clk.Advance(6 * time.Minute)
		res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 100, CompletionTokens: 250}) // 60 > 50
		if err != nil || !res.Charged.Equal(credits.NewAmount(d("50"))) || !res.Shortfall.Equal(credits.NewAmount(d("10"))) || !res.Record.Cost.Equal(credits.NewAmount(d("50"))) {
			t.Fatalf("late completion under write-off: %+v %v", res, err)
		}
		if got := e.balance(t, a.ID); !got.IsZero() {
			t.Fatalf("balance %s, want 0", got)
		}
		// Nothing left to take: recorded unpaid, not lost.
		if _, err := e.kl.Credits.Grant(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.NewAmount(d("1")), IdempotencyKey: "g"}); err != nil {
			t.Fatal(err)
		}
		g, err = e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 1, MaxCompletionTokens: 1})
		if err != nil {
			t.Fatal(err)
		}
		e.clk.Advance(6 * time.Minute)
		if _, err := e.kl.Credits.Debit(ctx, credits.DebitParams{AccountID: a.ID, Amount: credits.NewAmount(d("1")), IdempotencyKey: "drain"}); err != nil {
			t.Fatal(err)
		}
		res, err = g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 1, CompletionTokens: 1})
		if err != nil || res.Record.ErrorType != "unpaid" || !res.Shortfall.Equal(credits.NewAmount(d("0.3"))) || !res.Charged.IsZero() {
			t.Fatalf("unpayable completion under write-off: %+v %v", res, err)
		}
		if got := e.balance(t, a.ID); !got.IsZero() {
			t.Fatalf("balance %s, want 0", got)
		}
	})
}

func TestDuplicateRequestIDRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		ctx := context.Background()
		a, raw, _ := e.signup(t, "dup@example.com", "free")
		req := keyledger.Request{Endpoint: "/v1/op", ID: "req_client_1"}
		g, err := e.kl.Authorize(ctx, raw, req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.kl.Authorize(ctx, raw, req); !errors.Is(err, keyledger.ErrDuplicateRequest) {
			t.Fatalf("reused request ID: %v", err)
		}
		if got := e.balance(t, a.ID); !got.Equal(credits.NewAmount(d("49"))) {
			t.Fatalf("balance %s, want 49", got)
		}
	})
}
