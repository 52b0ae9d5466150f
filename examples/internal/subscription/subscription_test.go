package subscription_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/examples/internal/subscription"
	"github.com/keyledger/keyledger/store/memstore"
)

type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func newClock(t time.Time) *clock    { c := &clock{}; c.set(t); return c }
func at(s string) time.Time          { t, _ := time.Parse(time.RFC3339, s); return t }
func amt(n int64) credits.Amount     { return credits.AmountFromInt(n) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

type fixture struct {
	st  *memstore.Store
	kl  *keyledger.KeyLedger
	r   *subscription.Renewer
	clk *clock
	n   *atomic.Int32
}

// open returns a KeyLedger of the emailverify profile on a fresh memory
// store and its Renewer, both on the fake clock.
func open(t *testing.T, start string) fixture {
	t.Helper()
	clk := newClock(at(start))
	prof, _ := profiles.Get(profiles.EmailVerify)
	st := memstore.New()
	kl, err := keyledger.New(st, prof.Options(clk.now, slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl.Close(context.Background()) })
	r, err := subscription.New(kl, prof.MonthlyGrants, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{st, kl, r, clk, new(atomic.Int32)}
}

func (f fixture) signup(t *testing.T, plan, tz string) account.Account {
	t.Helper()
	email := fmt.Sprintf("u%d@example.com", f.n.Add(1))
	a, err := f.kl.Signup(context.Background(), account.CreateParams{Name: "Ada", Email: email, Plan: plan, TimeZone: tz})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (f fixture) balance(t *testing.T, id string) credits.Amount {
	t.Helper()
	b, err := f.kl.Credits.Balance(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// grants lists the account's subscription grants by idempotency key, and
// checks that the ledger reconciles: its entries sum to its balance.
func (f fixture) grants(t *testing.T, id string) map[string]credits.Amount {
	t.Helper()
	ctx := context.Background()
	if _, err := f.kl.Credits.ExpireDue(ctx); err != nil {
		t.Fatal(err)
	}
	out := map[string]credits.Amount{}
	sum := credits.Amount{}
	cursor := ""
	for {
		pg, err := f.kl.Credits.Entries(ctx, id, credits.EntryFilter{}, cursor, 500)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range pg.Entries {
			sum = sum.Add(e.Amount)
			if strings.HasPrefix(e.IdempotencyKey, "sub:") {
				if _, dup := out[e.IdempotencyKey]; dup {
					t.Fatalf("two entries under %s", e.IdempotencyKey)
				}
				out[e.IdempotencyKey] = e.Amount
			}
		}
		if pg.NextCursor == "" {
			break
		}
		cursor = pg.NextCursor
	}
	if b := f.balance(t, id); !sum.Equal(b) {
		t.Fatalf("entries sum to %s, balance %s: the ledger does not reconcile", sum, b)
	}
	return out
}

func mustEnsure(t *testing.T, r *subscription.Renewer, a account.Account) {
	t.Helper()
	if err := r.Ensure(context.Background(), a); err != nil {
		t.Fatal(err)
	}
}

func TestPeriodAt(t *testing.T) {
	ist, _ := time.LoadLocation("Asia/Kolkata")
	for _, c := range []struct {
		t     string
		loc   *time.Location
		label string
		end   string
	}{
		{"2026-12-31T23:59:59Z", time.UTC, "2026-12", "2027-01-01T00:00:00Z"},
		{"2026-12-31T18:30:00Z", ist, "2027-01", "2027-02-01T00:00:00+05:30"}, // midnight IST
		{"2026-12-31T18:29:59Z", ist, "2026-12", "2027-01-01T00:00:00+05:30"},
		{"2028-02-29T12:00:00Z", time.UTC, "2028-02", "2028-03-01T00:00:00Z"},
	} {
		p := subscription.PeriodAt(at(c.t), c.loc)
		if p.Label != c.label || !p.End.Equal(at(c.end)) || !p.Start.Before(at(c.t).Add(time.Nanosecond)) {
			t.Errorf("PeriodAt(%s, %s) = %+v, want %s ending %s", c.t, c.loc, p, c.label, c.end)
		}
	}
}

// Credits are granted for the period, expire at its end, and the next
// period's are granted on the first use after the boundary.
func TestMonthBoundary(t *testing.T) {
	f := open(t, "2026-11-30T23:00:00Z")
	a := f.signup(t, "professional", "")
	if b := f.balance(t, a.ID); !b.IsZero() {
		t.Fatalf("balance %s before the first use, want 0 (no signup grant)", b)
	}
	mustEnsure(t, f.r, a)
	mustEnsure(t, f.r, a) // again: nothing more
	if b := f.balance(t, a.ID); !b.Equal(amt(25_000)) {
		t.Fatalf("balance %s, want 25000", b)
	}
	f.clk.add(time.Hour) // 2026-12-01 00:00 UTC: November's credits expired
	if b := f.balance(t, a.ID); !b.IsZero() {
		t.Fatalf("balance %s after the boundary, want 0", b)
	}
	if err := f.r.EnsureID(context.Background(), a.ID, a.Plan); err != nil {
		t.Fatal(err)
	}
	if b := f.balance(t, a.ID); !b.Equal(amt(25_000)) {
		t.Fatalf("balance %s in December, want 25000", b)
	}
	g := f.grants(t, a.ID)
	if len(g) != 2 || !g[subscription.Key(a.ID, "2026-11")].Equal(amt(25_000)) || !g[subscription.Key(a.ID, "2026-12")].Equal(amt(25_000)) {
		t.Fatalf("grants %v", g)
	}
}

// Two months pass without any use (the server was down): only the
// current period is granted, once.
func TestMissedMonths(t *testing.T) {
	f := open(t, "2026-11-15T12:00:00Z")
	a := f.signup(t, "starter", "")
	mustEnsure(t, f.r, a)
	f.clk.set(at("2027-02-03T08:00:00Z"))
	mustEnsure(t, f.r, a)
	if _, err := f.r.Sweep(context.Background(), "", 100); err != nil {
		t.Fatal(err)
	}
	g := f.grants(t, a.ID)
	if len(g) != 2 || !g[subscription.Key(a.ID, "2027-02")].Equal(amt(5_000)) {
		t.Fatalf("grants %v, want 2026-11 and 2027-02 only", g)
	}
	if b := f.balance(t, a.ID); !b.Equal(amt(5_000)) {
		t.Fatalf("balance %s, want 5000", b)
	}
}

// The period is the account's calendar month: an IST account's December
// starts at 18:30 UTC on 30 November.
func TestTimeZone(t *testing.T) {
	f := open(t, "2026-11-30T18:00:00Z")
	a := f.signup(t, "free", "Asia/Kolkata")
	mustEnsure(t, f.r, a)
	f.clk.set(at("2026-11-30T18:30:00Z"))
	mustEnsure(t, f.r, a)
	g := f.grants(t, a.ID)
	if len(g) != 2 || g[subscription.Key(a.ID, "2026-11")].IsZero() || g[subscription.Key(a.ID, "2026-12")].IsZero() {
		t.Fatalf("grants %v", g)
	}
}

// 100 concurrent first uses of a new period, spread over two processes
// (two KeyLedgers and Renewers on one store), write exactly one grant.
func TestConcurrentFirstUse(t *testing.T) {
	f := open(t, "2026-12-01T00:00:01Z")
	prof, _ := profiles.Get(profiles.EmailVerify)
	kl2, err := keyledger.New(f.st, prof.Options(f.clk.now, slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl2.Close(context.Background()) })
	r2, err := subscription.New(kl2, prof.MonthlyGrants, f.clk.now)
	if err != nil {
		t.Fatal(err)
	}
	a := f.signup(t, "business", "")
	var wg sync.WaitGroup
	for i := range 100 {
		r := f.r
		if i%2 == 1 {
			r = r2
		}
		wg.Go(func() {
			if err := r.EnsureID(context.Background(), a.ID, a.Plan); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	g := f.grants(t, a.ID)
	if len(g) != 1 || !g[subscription.Key(a.ID, "2026-12")].Equal(amt(100_000)) {
		t.Fatalf("grants %v, want one of 100000", g)
	}
}

// An upgrade within a period adds the difference at once, whatever the
// path; a downgrade keeps what was granted, and upgrading again grants
// nothing more. The next period is granted at the plan of the time.
func TestPlanChanges(t *testing.T) {
	ctx := context.Background()
	f := open(t, "2026-12-10T00:00:00Z")
	setPlan := func(a account.Account, plan string) account.Account {
		t.Helper()
		a, err := f.kl.UpdateAccount(ctx, a.ID, account.UpdateParams{Plan: &plan})
		if err != nil {
			t.Fatal(err)
		}
		mustEnsure(t, f.r, a)
		return a
	}
	step := f.signup(t, "free", "")
	mustEnsure(t, f.r, step)
	step = setPlan(step, "starter")
	step = setPlan(step, "professional")
	direct, err := f.kl.Signup(ctx, account.CreateParams{Name: "Bo", Email: "bo@example.com", Plan: "free"})
	if err != nil {
		t.Fatal(err)
	}
	mustEnsure(t, f.r, direct)
	direct = setPlan(direct, "professional")
	for _, a := range []account.Account{step, direct} {
		if b := f.balance(t, a.ID); !b.Equal(amt(25_000)) {
			t.Fatalf("balance %s after upgrading to professional, want 25000", b)
		}
	}
	step = setPlan(step, "free") // downgrade: keeps the credits
	if b := f.balance(t, step.ID); !b.Equal(amt(25_000)) {
		t.Fatalf("balance %s after a downgrade, want 25000 until the period ends", b)
	}
	step = setPlan(step, "professional") // and back: nothing more
	if b := f.balance(t, step.ID); !b.Equal(amt(25_000)) {
		t.Fatalf("balance %s after upgrading again, want 25000", b)
	}
	step = setPlan(step, "starter")
	f.clk.set(at("2027-01-01T00:00:00Z"))
	mustEnsure(t, f.r, step)
	if b := f.balance(t, step.ID); !b.Equal(amt(5_000)) {
		t.Fatalf("balance %s in the next period on starter, want 5000", b)
	}
	g := f.grants(t, step.ID)
	if len(g) != 4 || !g[subscription.Key(step.ID, "2026-12")+":professional"].Equal(amt(20_000)) {
		t.Fatalf("grants %v", g)
	}

	// A plan changed by another process, before this one granted the
	// period at the old plan: the base grant conflicts, is found, and the
	// difference is added.
	late := f.signup(t, "starter", "")
	mustEnsure(t, f.r, late)
	pro := "business"
	late, err = f.kl.Accounts.Update(ctx, late.ID, account.UpdateParams{Plan: &pro}) // no UpdateAccount: this process's caches are stale
	if err != nil {
		t.Fatal(err)
	}
	prof, _ := profiles.Get(profiles.EmailVerify)
	fresh, err := subscription.New(f.kl, prof.MonthlyGrants, f.clk.now)
	if err != nil {
		t.Fatal(err)
	}
	mustEnsure(t, fresh, late)
	if b := f.balance(t, late.ID); !b.Equal(amt(100_000)) {
		t.Fatalf("balance %s after another process's upgrade, want 100000", b)
	}
}

// Suspended and closed accounts get no grant; a reactivated account gets
// the period's grant on its next use.
func TestInactiveAccounts(t *testing.T) {
	ctx := context.Background()
	f := open(t, "2026-12-10T00:00:00Z")
	a := f.signup(t, "starter", "")
	st := account.StatusSuspended
	a, err := f.kl.UpdateAccount(ctx, a.ID, account.UpdateParams{Status: &st})
	if err != nil {
		t.Fatal(err)
	}
	mustEnsure(t, f.r, a)
	if _, err := f.r.Sweep(ctx, "", 100); err != nil {
		t.Fatal(err)
	}
	if b := f.balance(t, a.ID); !b.IsZero() {
		t.Fatalf("suspended account granted %s", b)
	}
	st = account.StatusActive
	if a, err = f.kl.UpdateAccount(ctx, a.ID, account.UpdateParams{Status: &st}); err != nil {
		t.Fatal(err)
	}
	if err := f.r.EnsureID(ctx, a.ID, a.Plan); err != nil {
		t.Fatal(err)
	}
	if b := f.balance(t, a.ID); !b.Equal(amt(5_000)) {
		t.Fatalf("reactivated account: balance %s, want 5000", b)
	}
	c := f.signup(t, "starter", "")
	if _, err := f.kl.Accounts.Close(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.Sweep(ctx, "", 100); err != nil {
		t.Fatal(err)
	}
	if b := f.balance(t, c.ID); !b.IsZero() {
		t.Fatalf("closed account granted %s", b)
	}
}

// The sweep walks every account in bounded pages and grants each once.
func TestSweepPages(t *testing.T) {
	ctx := context.Background()
	f := open(t, "2026-12-10T00:00:00Z")
	var ids []string
	for i := range 7 {
		a, err := f.kl.Signup(ctx, account.CreateParams{Name: "N", Email: "n" + string(rune('a'+i)) + "@example.com", Plan: "free"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	cursor, pages := "", 0
	for {
		next, err := f.r.Sweep(ctx, cursor, 3)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if next == "" {
			break
		}
		cursor = next
	}
	if pages != 3 {
		t.Fatalf("%d pages of 3 for 7 accounts", pages)
	}
	for _, id := range ids {
		if g := f.grants(t, id); len(g) != 1 {
			t.Fatalf("account %s: grants %v", id, g)
		}
	}
}

// Closing an account and signing up again with its email does not refill
// the month: the new account is granted from the next month.
func TestClosedEmailResignup(t *testing.T) {
	ctx := context.Background()
	f := open(t, "2026-12-10T00:00:00Z")
	a, err := f.kl.Signup(ctx, account.CreateParams{Name: "Ada", Email: "ada@example.com", Plan: "free"})
	if err != nil {
		t.Fatal(err)
	}
	mustEnsure(t, f.r, a)
	if _, err := f.kl.Accounts.Close(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	b, err := f.kl.Signup(ctx, account.CreateParams{Name: "Ada", Email: "ADA@example.com", Plan: "free"})
	if err != nil {
		t.Fatal(err)
	}
	mustEnsure(t, f.r, b)
	if bal := f.balance(t, b.ID); !bal.IsZero() {
		t.Fatalf("re-signup granted %s in the closed account's month", bal)
	}
	f.clk.set(at("2027-01-01T00:00:00Z"))
	mustEnsure(t, f.r, b)
	if bal := f.balance(t, b.ID); !bal.Equal(amt(100)) {
		t.Fatalf("next month: balance %s, want 100", bal)
	}
}
