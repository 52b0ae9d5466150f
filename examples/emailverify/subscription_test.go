package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/e2e"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/examples/internal/subscription"
	"github.com/keyledger/keyledger/internal/pgtest"
)

// monthlyTenant is an account on plan, created without any credit (the
// month's are granted on its first request), with a live key and no
// effective rate limit.
func monthlyTenant(t *testing.T, g *inproc, email, plan string) (account.Account, string) {
	t.Helper()
	ctx := context.Background()
	a, err := g.s.kl.Signup(ctx, account.CreateParams{Name: "Ada", Email: email, Plan: plan})
	if err != nil {
		t.Fatal(err)
	}
	unlimited := account.Limits{RequestsPerMinute: account.MaxPerMinute}
	if _, err := g.s.kl.UpdateAccount(ctx, a.ID, account.UpdateParams{Limits: &unlimited}); err != nil {
		t.Fatal(err)
	}
	raw, _, err := g.s.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	return a, raw.Reveal()
}

type accountCredits struct {
	Balance       credits.Amount  `json:"balance"`
	UsedThisMonth credits.Amount  `json:"used_this_month"`
	MonthlyLimit  *credits.Amount `json:"monthly_limit"`
}

func getCredits(t *testing.T, g *inproc, key string) accountCredits {
	t.Helper()
	rec := e2e.Serve(g.h, "GET", "/v1/account", "", "Bearer "+key, nil)
	var env struct {
		Data struct {
			Credits accountCredits `json:"credits"`
		} `json:"data"`
	}
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &env) != nil {
		t.Fatalf("GET /v1/account: %d %s", rec.Code, rec.Body)
	}
	return env.Data.Credits
}

// subGrants returns the account's subscription grants by idempotency key
// (failing on a key written twice) after checking that the ledger
// reconciles: its entries sum to its balance, and its spend entries to
// what the responses said was charged.
func subGrants(t *testing.T, g *inproc, accountID string, charged credits.Amount) map[string]credits.Amount {
	t.Helper()
	ctx := context.Background()
	if _, err := g.s.kl.Credits.ExpireDue(ctx); err != nil {
		t.Fatal(err)
	}
	out := map[string]credits.Amount{}
	var sum, spent credits.Amount
	cursor := ""
	for {
		pg, err := g.s.kl.Credits.Entries(ctx, accountID, credits.EntryFilter{}, cursor, 500)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range pg.Entries {
			sum = sum.Add(e.Amount)
			if e.Type == credits.EntryDebit {
				spent = spent.Sub(e.Amount)
			}
			if strings.HasPrefix(e.IdempotencyKey, "sub:") {
				if _, dup := out[e.IdempotencyKey]; dup {
					t.Fatalf("two grants under %s", e.IdempotencyKey)
				}
				out[e.IdempotencyKey] = e.Amount
			}
		}
		if pg.NextCursor == "" {
			break
		}
		cursor = pg.NextCursor
	}
	bal, err := g.s.kl.Credits.Balance(ctx, accountID)
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Equal(bal) || !spent.Equal(charged) {
		t.Fatalf("entries sum to %s (balance %s), spend entries to %s (charged %s): the ledger does not reconcile", sum, bal, spent, charged)
	}
	return out
}

func verifyCharge(t *testing.T, g *inproc, key, email string) credits.Amount {
	t.Helper()
	rec := e2e.Serve(g.h, "POST", "/v1/verify", "", "Bearer "+key, []byte(`{"email":"`+email+`"}`))
	var env struct {
		Data verifyResponse `json:"data"`
	}
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &env) != nil {
		t.Errorf("verify %s: %d %s", email, rec.Code, rec.Body)
	}
	return env.Data.CreditsCharged
}

// The plan's credits are granted for the month on the first request,
// expire at the month's end, and are granted again on the first request
// of the next month: 100 concurrent first requests write one grant. After
// two months without a request, only the current month is granted.
func TestMonthlyCredits(t *testing.T) {
	c := newClock(time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC))
	g := openInproc(t, filepath.Join(t.TempDir(), "ev.db"), "", io.Discard, c.now)
	a, key := monthlyTenant(t, g, "monthly@example.com", "starter")
	other, otherKey := monthlyTenant(t, g, "other@example.com", "free")

	if cr := getCredits(t, g, key); !cr.Balance.Equal(credits.AmountFromInt(5_000)) || !cr.MonthlyLimit.Equal(credits.AmountFromInt(5_000)) {
		t.Fatalf("first balance read: %+v, want 5000 of 5000", cr)
	}
	charged := verifyCharge(t, g, key, "a@example.com")

	c.advance(time.Hour) // 1 December: November's credits have expired
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range 100 {
		wg.Go(func() {
			ch := verifyCharge(t, g, key, fmt.Sprintf("u%d@example.com", i))
			mu.Lock()
			charged = charged.Add(ch)
			mu.Unlock()
		})
	}
	wg.Wait()
	if !charged.Equal(credits.AmountFromInt(101)) {
		t.Fatalf("charged %s for 101 verifications", charged)
	}
	cr := getCredits(t, g, key)
	if !cr.Balance.Equal(credits.AmountFromInt(4_900)) || !cr.UsedThisMonth.Equal(credits.AmountFromInt(100)) {
		t.Fatalf("December: %+v, want 4900 left, 100 used", cr)
	}
	nov, dec := subscription.Key(a.ID, "2026-11"), subscription.Key(a.ID, "2026-12")
	if gr := subGrants(t, g, a.ID, charged); len(gr) != 2 || !gr[nov].Equal(credits.AmountFromInt(5_000)) || !gr[dec].Equal(credits.AmountFromInt(5_000)) {
		t.Fatalf("grants %v, want November's and December's", gr)
	}

	// Another tenant's requests grant nothing to this one.
	getCredits(t, g, otherKey)
	if gr := subGrants(t, g, other.ID, credits.Amount{}); len(gr) != 1 {
		t.Fatalf("other tenant's grants %v", gr)
	}

	// The server is down through January; the first request of February
	// is granted February's credits only.
	c.advance(63 * 24 * time.Hour) // 2 February 2027
	if cr := getCredits(t, g, key); !cr.Balance.Equal(credits.AmountFromInt(5_000)) || !cr.UsedThisMonth.IsZero() {
		t.Fatalf("February: %+v", cr)
	}
	gr := subGrants(t, g, a.ID, charged)
	if len(gr) != 3 || gr[subscription.Key(a.ID, "2027-01")].Sign() != 0 || !gr[subscription.Key(a.ID, "2027-02")].Equal(credits.AmountFromInt(5_000)) {
		t.Fatalf("grants %v, want no January grant and one for February", gr)
	}
}

// The sweep grants the month's credits to accounts that make no request.
func TestMonthlyCreditsSweep(t *testing.T) {
	c := newClock(time.Date(2026, 12, 31, 23, 59, 0, 0, time.UTC))
	g := openInproc(t, filepath.Join(t.TempDir(), "ev.db"), "", io.Discard, c.now)
	a, key := monthlyTenant(t, g, "idle@example.com", "professional")
	getCredits(t, g, key)
	c.advance(2 * time.Minute)
	if err := g.s.sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if gr := subGrants(t, g, a.ID, credits.Amount{}); len(gr) != 2 || !gr[subscription.Key(a.ID, "2027-01")].Equal(credits.AmountFromInt(25_000)) {
		t.Fatalf("grants after the sweep %v", gr)
	}
}

// A month's grant that cannot be written fails the request (nothing is
// charged, the failure is logged) instead of serving it without the
// month's credits; the next request after the ledger recovers is granted
// and served.
func TestMonthlyGrantFailureIsLoud(t *testing.T) {
	s, fs, _ := newBatchAPI(t)
	var logs strings.Builder
	var mu sync.Mutex
	s.log = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	prof, _ := profiles.Get(profiles.EmailVerify)
	subs, err := subscription.New(s.kl, prof.MonthlyGrants, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	s.subs = subs
	h := s.routes()
	ctx := context.Background()
	a, err := s.kl.Signup(ctx, account.CreateParams{Name: "Bo", Email: "bo@example.com", Plan: "starter"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := s.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	down := errors.New("ledger unavailable")
	fs.creditErr.Store(&down)
	rec := e2e.Serve(h, "POST", "/v1/verify", "", "Bearer "+raw.Reveal(), []byte(`{"email":"a@example.com"}`))
	if rec.Code < 500 || !strings.Contains(rec.Body.String(), `"success":false`) {
		t.Fatalf("verify with the grant failing: %d %s", rec.Code, rec.Body)
	}
	mu.Lock()
	logged := strings.Contains(logs.String(), "ledger unavailable")
	mu.Unlock()
	if !logged {
		t.Fatalf("the failed grant was not logged:\n%s", logs.String())
	}
	if b, _ := s.kl.Credits.Balance(ctx, a.ID); !b.IsZero() {
		t.Fatalf("balance %s", b)
	}
	fs.creditErr.Store(nil)
	if r := verifyOn(t, &inproc{s: s, h: h}, raw.Reveal(), "a@example.com"); !r.CreditsCharged.Equal(credits.AmountFromInt(1)) {
		t.Fatalf("after recovery: %+v", r)
	}
	if b, _ := s.kl.Credits.Balance(ctx, a.ID); !b.Equal(credits.AmountFromInt(4_999)) {
		t.Fatalf("balance %s after recovery, want 4999", b)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Two instances on one database (SQLite file; PostgreSQL when
// KEYLEDGER_TEST_POSTGRES is set): 100 concurrent first requests of a new
// month, split between them, write exactly one grant, and the ledger
// reconciles.
func TestMonthlyGrantTwoInstances(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			path, dsn := "", ""
			if db == "postgres" {
				if os.Getenv(pgtest.Env) == "" {
					t.Skip(pgtest.Env + " is not set; skipping the two-instance grant on PostgreSQL (set it to e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
				}
				dsn = pgtest.DSN(t)
			} else {
				path = filepath.Join(t.TempDir(), "ev.db")
			}
			c := newClock(time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC))
			insts := [2]*inproc{openInproc(t, path, dsn, io.Discard, c.now), openInproc(t, path, dsn, io.Discard, c.now)}
			a, key := monthlyTenant(t, insts[0], "twice@example.com", "professional")
			var charged credits.Amount
			var mu sync.Mutex
			burst := func(prefix string) {
				var wg sync.WaitGroup
				for i := range 100 {
					wg.Go(func() {
						ch := verifyCharge(t, insts[i%2], key, fmt.Sprintf("%s%d@example.com", prefix, i))
						mu.Lock()
						charged = charged.Add(ch)
						mu.Unlock()
					})
				}
				wg.Wait()
			}
			burst("dec")
			c.advance(time.Hour) // January
			burst("jan")
			gr := subGrants(t, insts[1], a.ID, charged)
			if len(gr) != 2 || !gr[subscription.Key(a.ID, "2026-12")].Equal(credits.AmountFromInt(25_000)) || !gr[subscription.Key(a.ID, "2027-01")].Equal(credits.AmountFromInt(25_000)) {
				t.Fatalf("grants %v, want one for December and one for January", gr)
			}
			if cr := getCredits(t, insts[0], key); !cr.Balance.Equal(credits.AmountFromInt(24_900)) || !charged.Equal(credits.AmountFromInt(200)) {
				t.Fatalf("January: %+v after charging %s", cr, charged)
			}
		})
	}
}
