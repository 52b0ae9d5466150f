package keyledger_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/ratelimit"
	"github.com/keyledger/keyledger/ratelimit/redislimit"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/sqlitestore"
)

// throttleFixture is an account service on SQLite with one account, and a
// throttle over a memory limiter, both on one fake clock.
func throttleFixture(t *testing.T) (*account.Service, *keyledger.AuthThrottle, *fakeclock.Clock) {
	t.Helper()
	ctx := context.Background()
	clk := fakeclock.New(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "k.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	acc, err := account.NewService(store.Driver(st), &account.Options{Now: clk.Now, Argon2: fastArgon})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acc.Create(ctx, account.CreateParams{Name: "Owner", Email: "owner@example.com", Password: "right password"}); err != nil {
		t.Fatal(err)
	}
	th, err := keyledger.NewAuthThrottle(ratelimit.NewMemory(&ratelimit.MemoryOptions{Now: clk.Now}), nil)
	if err != nil {
		t.Fatal(err)
	}
	return acc, th, clk
}

func TestAuthThrottleFailedLoginsPerAddress(t *testing.T) {
	acc, th, clk := throttleFixture(t)
	ctx := context.Background()
	const attacker = "203.0.113.7"
	for i := range 10 {
		if _, _, err := th.Login(ctx, acc, "owner@example.com", "wrong guess", attacker); !errors.Is(err, account.ErrInvalidCredentials) {
			t.Fatalf("guess %d: %v, want invalid credentials", i, err)
		}
	}
	// The 11th attempt is refused before any password check, even with the
	// right password, and says when to come back (never beyond 60 s).
	_, _, err := th.Login(ctx, acc, "OWNER@example.com ", "right password", attacker)
	var te *keyledger.ThrottleError
	if !errors.As(err, &te) || !errors.Is(err, keyledger.ErrRateLimited) {
		t.Fatalf("11th attempt: %v, want a ThrottleError", err)
	}
	if te.RetryAfter <= 0 || te.RetryAfter > time.Minute || te.Limit != "10 failed logins per minute for this email and address" {
		t.Fatalf("throttle error %+v", te)
	}
	// Another address is not affected: the owner still signs in.
	if _, _, err := th.Login(ctx, acc, "owner@example.com", "right password", "198.51.100.1"); err != nil {
		t.Fatalf("owner from another address: %v", err)
	}
	// Once the window passes the right password works from the attacker's
	// address too, and a success is not counted.
	clk.Advance(time.Minute)
	for range 3 {
		if _, _, err := th.Login(ctx, acc, "owner@example.com", "right password", attacker); err != nil {
			t.Fatalf("after the window: %v", err)
		}
	}
}

func TestAuthThrottleDoesNotRevealEmails(t *testing.T) {
	acc, th, _ := throttleFixture(t)
	ctx := context.Background()
	errsFor := func(email string) []string {
		var out []string
		for range 12 {
			_, _, err := th.Login(ctx, acc, email, "wrong guess", "203.0.113.9")
			var te *keyledger.ThrottleError
			if errors.As(err, &te) {
				out = append(out, fmt.Sprintf("throttled %s %s", te.Limit, te.RetryAfter))
			} else {
				out = append(out, fmt.Sprint(err))
			}
		}
		return out
	}
	known, unknown := errsFor("owner@example.com"), errsFor("nobody@example.com")
	if fmt.Sprint(known) != fmt.Sprint(unknown) {
		t.Fatalf("an existing email is throttled differently:\n%v\n%v", known, unknown)
	}
}

func TestAuthThrottleFailedLoginsPerEmail(t *testing.T) {
	acc, th, clk := throttleFixture(t)
	ctx := context.Background()
	// 100 failures from 100 addresses within the hour spend the email's
	// budget; then even a new address is refused.
	for i := range 100 {
		if _, _, err := th.Login(ctx, acc, "owner@example.com", "wrong guess", fmt.Sprintf("10.0.%d.%d", i/250, i%250)); !errors.Is(err, account.ErrInvalidCredentials) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	_, _, err := th.Login(ctx, acc, "owner@example.com", "right password", "192.0.2.50")
	var te *keyledger.ThrottleError
	if !errors.As(err, &te) || te.Limit != "100 failed logins per hour for this email" || te.RetryAfter > time.Minute {
		t.Fatalf("101st failure: %v", err)
	}
	clk.Advance(te.RetryAfter)
	if _, _, err := th.Login(ctx, acc, "owner@example.com", "right password", "192.0.2.50"); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}
}

func TestAuthThrottleSignups(t *testing.T) {
	_, th, clk := throttleFixture(t)
	ctx := context.Background()
	for i := range 10 {
		if err := th.Signup(ctx, "203.0.113.7"); err != nil {
			t.Fatalf("sign-up %d: %v", i, err)
		}
	}
	err := th.Signup(ctx, "203.0.113.7")
	var te *keyledger.ThrottleError
	if !errors.As(err, &te) || te.RetryAfter != time.Minute || te.Limit != "10 sign-ups per hour per address" {
		t.Fatalf("11th sign-up: %v (%+v), want Retry-After capped at 60s", err, te)
	}
	if err := th.Signup(ctx, "198.51.100.1"); err != nil {
		t.Fatalf("another address: %v", err)
	}
	clk.Advance(6 * time.Minute) // one sign-up refills every 6 minutes
	if err := th.Signup(ctx, "203.0.113.7"); err != nil {
		t.Fatalf("after refill: %v", err)
	}
}

func TestAuthThrottleOptions(t *testing.T) {
	if _, err := keyledger.NewAuthThrottle(nil, nil); !errors.Is(err, keyledger.ErrInvalidOptions) {
		t.Fatalf("nil limiter: %v", err)
	}
	if _, err := keyledger.NewAuthThrottle(ratelimit.NewMemory(nil), &keyledger.AuthThrottleOptions{
		SignupsPerAddress: ratelimit.Limit{Rate: 10, Period: -time.Hour}}); !errors.Is(err, keyledger.ErrInvalidOptions) {
		t.Fatalf("bad limit: %v", err)
	}
	// A disabled limit never refuses.
	th, err := keyledger.NewAuthThrottle(ratelimit.NewMemory(nil), &keyledger.AuthThrottleOptions{SignupsPerAddress: ratelimit.Limit{Rate: -1}})
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if err := th.Signup(context.Background(), "203.0.113.7"); err != nil {
			t.Fatal(err)
		}
	}
}

// Two instances throttling through one Redis share the budgets: failed
// logins spread over both count together.
func TestAuthThrottleAcrossInstancesWithRedis(t *testing.T) {
	rdb := redisClient(t)
	acc, _, clk := throttleFixture(t)
	prefix := fmt.Sprintf("kltest:auth:%d:", time.Now().UnixNano())
	var ths [2]*keyledger.AuthThrottle
	for i := range ths {
		th, err := keyledger.NewAuthThrottle(redislimit.New(rdb, &redislimit.Options{Prefix: prefix, Now: clk.Now}), nil)
		if err != nil {
			t.Fatal(err)
		}
		ths[i] = th
	}
	ctx := context.Background()
	for i := range 10 {
		if _, _, err := ths[i%2].Login(ctx, acc, "owner@example.com", "wrong guess", "203.0.113.7"); !errors.Is(err, account.ErrInvalidCredentials) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	for _, th := range ths {
		var te *keyledger.ThrottleError
		if _, _, err := th.Login(ctx, acc, "owner@example.com", "right password", "203.0.113.7"); !errors.As(err, &te) {
			t.Fatalf("11th attempt on either instance: %v, want a ThrottleError", err)
		}
	}
	clk.Advance(time.Minute)
	if _, _, err := ths[1].Login(ctx, acc, "owner@example.com", "right password", "203.0.113.7"); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}
