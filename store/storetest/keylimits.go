package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
)

// runKeyLimits is the conformance group of per-key spend limits (issue
// 21): enforced with the funds check, atomically, on every backend.
func runKeyLimits(t *testing.T, newStore NewStoreFunc) {
	t.Run("ConcurrentEdge", func(t *testing.T) { testKeyLimitConcurrent(t, newStore) })
	t.Run("Bookkeeping", func(t *testing.T) { testKeyLimitBookkeeping(t, newStore) })
	t.Run("PeriodIST", func(t *testing.T) { testKeyLimitIST(t, newStore) })
	t.Run("PeriodDST", func(t *testing.T) { testKeyLimitDST(t, newStore) })
	t.Run("Lifetime", func(t *testing.T) { testKeyLimitLifetime(t, newStore) })
	t.Run("LoweredBelowSpend", func(t *testing.T) { testKeyLimitLowered(t, newStore) })
	t.Run("OtherAccount", func(t *testing.T) { testKeyLimitOtherAccount(t, newStore) })
	t.Run("Bounded", func(t *testing.T) { testKeyLimitBounded(t, newStore) })
	t.Run("KeyRateLimits", func(t *testing.T) { testKeyRateLimits(t, newStore) })
	t.Run("Persisted", func(t *testing.T) { testKeyLimitPersisted(t, newStore) })
}

// testKeyRateLimits: a key's own rate limits are stored, read back by ID,
// list and hash (Verify, from a second service standing in for another
// process), and cleared.
func testKeyRateLimits(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "rl@example.com")
	raw, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "rl"})
	if k.RateLimits != (apikey.RateLimits{}) {
		t.Fatalf("new key has rate limits %+v", k.RateLimits)
	}
	rl := apikey.RateLimits{RequestsPerMinute: 5, CompletionTokensPerMinute: 700}
	if _, err := e.keys.Update(ctx(), a.ID, k.ID, apikey.UpdateParams{RateLimits: &rl}); err != nil {
		t.Fatal(err)
	}
	got, err := e.keys.Get(ctx(), a.ID, k.ID)
	if err != nil || got.RateLimits != rl {
		t.Fatalf("Get: %+v, %v", got.RateLimits, err)
	}
	page, err := e.keys.List(ctx(), a.ID, apikey.ListParams{})
	if err != nil || len(page.Keys) != 1 || page.Keys[0].RateLimits != rl {
		t.Fatalf("List: %+v, %v", page.Keys, err)
	}
	v, err := e.service(t, nil).Verify(ctx(), raw)
	if err != nil || v.RateLimits != rl {
		t.Fatalf("Verify: %+v, %v", v.RateLimits, err)
	}
	bad := apikey.RateLimits{PromptTokensPerMinute: -1}
	if _, err := e.keys.Update(ctx(), a.ID, k.ID, apikey.UpdateParams{RateLimits: &bad}); !errors.Is(err, apikey.ErrInvalidRateLimits) {
		t.Fatalf("negative limit: %v", err)
	}
	zero := apikey.RateLimits{}
	if _, err := e.keys.Update(ctx(), a.ID, k.ID, apikey.UpdateParams{RateLimits: &zero}); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.keys.Get(ctx(), a.ID, k.ID); got.RateLimits != zero {
		t.Fatalf("cleared: %+v", got.RateLimits)
	}
}

// testKeyLimitPersisted: the limit, the counters and a hold's key survive
// a new service (another process) on the same store, and the hold's
// release still frees the key.
func testKeyLimitPersisted(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := keyLedger(t, e, "acct-p", "100", "Asia/Kolkata")
	setKeyLimit(t, svc, "acct-p", "key-1", "10", credits.PeriodMonth)
	setKeyLimit(t, svc, "acct-p", "key-0", "3", credits.PeriodLifetime)
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct-p", KeyID: "key-1", Amount: amt(t, "2.5"), IdempotencyKey: "p-1"}); err != nil {
		t.Fatal(err)
	}
	h, err := reserveKey(svc, "acct-p", "key-1", amt(t, "4"))
	if err != nil {
		t.Fatal(err)
	}
	other := e.ledger(t, nil)
	ks := keySpend(t, other, "acct-p", "key-1")
	wantAmount(t, "spent", ks.Spent, "2.5")
	wantAmount(t, "held", ks.Held, "4")
	wantAmount(t, "remaining", ks.Remaining, "3.5")
	if ks.Period != credits.PeriodMonth || !ks.ResetsAt.Equal(time.Date(2026, 3, 31, 18, 30, 0, 0, time.UTC)) {
		t.Fatalf("persisted period: %+v", ks)
	}
	if _, err := other.Release(ctx(), h.ID); err != nil {
		t.Fatal(err)
	}
	wantAmount(t, "held after release by another service", keySpend(t, svc, "acct-p", "key-1").Held, "0")
	a, err := other.Account(ctx(), "acct-p")
	if err != nil || len(a.Keys) != 2 || a.Keys[0].KeyID != "key-0" || a.Keys[1].KeyID != "key-1" {
		t.Fatalf("Account.Keys: %+v, %v", a.Keys, err)
	}
}

// keyLedger opens account acct with balance in zone tz and returns the
// service.
func keyLedger(t *testing.T, e *env, acct, balance, tz string) *credits.Service {
	t.Helper()
	svc := e.ledger(t, nil)
	openLedger(t, svc, acct, credits.Policy{TimeZone: tz})
	mustCredit(t, svc.Grant, credits.CreditParams{AccountID: acct, Amount: amt(t, balance), IdempotencyKey: "g-" + acct})
	return svc
}

func setKeyLimit(t *testing.T, svc *credits.Service, acct, key, limit string, p credits.Period) credits.KeySpend {
	t.Helper()
	var l credits.Amount
	if limit != "" {
		l = amt(t, limit)
	}
	ks, err := svc.SetKeyLimit(ctx(), acct, key, l, p)
	if err != nil {
		t.Fatalf("SetKeyLimit(%s, %s, %s %s): %v", acct, key, limit, p, err)
	}
	return ks
}

func keySpend(t *testing.T, svc *credits.Service, acct, key string) credits.KeySpend {
	t.Helper()
	ks, ok, err := svc.KeySpend(ctx(), acct, key)
	if err != nil || !ok {
		t.Fatalf("KeySpend(%s, %s) = %v, %v", acct, key, ok, err)
	}
	return ks
}

var keyReserves atomic.Int64

func reserveKey(svc *credits.Service, acct, key string, a credits.Amount) (credits.Hold, error) {
	return svc.Reserve(ctx(), credits.ReserveParams{
		AccountID: acct, KeyID: key, Amount: a, TTL: time.Minute,
		IdempotencyKey: fmt.Sprintf("kr-%d", keyReserves.Add(1)),
	})
}

// wantBudgetErr checks err is the 402 of a spent key budget resetting at reset.
func wantBudgetErr(t *testing.T, err error, reset time.Time) *credits.KeyBudgetError {
	t.Helper()
	var kb *credits.KeyBudgetError
	if !errors.As(err, &kb) || !errors.Is(err, credits.ErrKeyBudgetExceeded) || errkind.Of(err) != errkind.PaymentRequired {
		t.Fatalf("err = %v, want a *KeyBudgetError (402)", err)
	}
	if !kb.ResetAt.Equal(reset) {
		t.Fatalf("ResetAt = %v, want %v", kb.ResetAt, reset)
	}
	return kb
}

func testKeyLimitConcurrent(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := keyLedger(t, e, "acct-kc", "1000", "UTC")
	setKeyLimit(t, svc, "acct-kc", "key-a", "10", credits.PeriodDay)
	setKeyLimit(t, svc, "acct-kc", "key-d", "5", credits.PeriodDay)
	const n = 32
	hold := amt(t, "0.7") // floor(10 / 0.7) = 14 fit
	var (
		wg                 sync.WaitGroup
		ok, refused, other atomic.Int64
		debits             atomic.Int64
	)
	for i := range n {
		wg.Add(3)
		go func() {
			defer wg.Done()
			_, err := reserveKey(svc, "acct-kc", "key-a", hold)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, credits.ErrKeyBudgetExceeded):
				refused.Add(1)
			default:
				t.Errorf("reserve: %v", err)
			}
		}()
		go func() { // a key without a limit is not held back
			defer wg.Done()
			if _, err := reserveKey(svc, "acct-kc", "key-free", hold); err != nil {
				t.Errorf("reserve of a key without a limit: %v", err)
				return
			}
			other.Add(1)
		}()
		go func() { // direct debits at the edge of another key
			defer wg.Done()
			_, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct-kc", KeyID: "key-d", Amount: amt(t, "0.4"),
				IdempotencyKey: fmt.Sprintf("kd-%d", i)})
			switch {
			case err == nil:
				debits.Add(1)
			case errors.Is(err, credits.ErrKeyBudgetExceeded):
			default:
				t.Errorf("debit: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 14 || refused.Load() != n-14 || other.Load() != n {
		t.Fatalf("reserves: %d ok, %d refused, %d of the free key; want 14, %d, %d", ok.Load(), refused.Load(), other.Load(), n-14, n)
	}
	if debits.Load() != 12 { // floor(5 / 0.4)
		t.Fatalf("%d debits of the 5.00 key went through, want 12", debits.Load())
	}
	ks := keySpend(t, svc, "acct-kc", "key-a")
	wantAmount(t, "held", ks.Held, "9.8")
	wantAmount(t, "remaining", ks.Remaining, "0.2")
	ks = keySpend(t, svc, "acct-kc", "key-d")
	wantAmount(t, "spent", ks.Spent, "4.8")
	a := wantBalance(t, svc, "acct-kc", "995.2")
	wantAmount(t, "account held", a.Held, "32.2") // 9.8 + 32 × 0.7
	ledgerSum(t, svc, "acct-kc")
}

func testKeyLimitBookkeeping(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := keyLedger(t, e, "acct-kb", "100", "UTC")
	ks := setKeyLimit(t, svc, "acct-kb", "key-1", "10", credits.PeriodDay)
	reset := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	if !ks.ResetsAt.Equal(reset) || !ks.PeriodStart.Equal(reset.AddDate(0, 0, -1)) || !ks.Remaining.Equal(amt(t, "10")) {
		t.Fatalf("new limit = %+v", ks)
	}
	// Larger than the whole limit: 400 naming it.
	_, err := reserveKey(svc, "acct-kb", "key-1", amt(t, "10.5"))
	var kb *credits.KeyBudgetError
	if !errors.As(err, &kb) || !kb.Whole || !errors.Is(err, credits.ErrKeyLimitExceeded) || errkind.Of(err) != errkind.Invalid || !kb.Limit.Equal(amt(t, "10")) {
		t.Fatalf("whole-limit reserve: %v", err)
	}
	h, err := reserveKey(svc, "acct-kb", "key-1", amt(t, "4"))
	if err != nil || h.KeyID != "key-1" {
		t.Fatalf("reserve: %+v, %v", h, err)
	}
	wantAmount(t, "held", keySpend(t, svc, "acct-kb", "key-1").Held, "4")
	// Settling above the hold records the actual charge.
	if _, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h.ID, Actual: amt(t, "5")}); err != nil {
		t.Fatal(err)
	}
	ks = keySpend(t, svc, "acct-kb", "key-1")
	wantAmount(t, "spent", ks.Spent, "5")
	wantAmount(t, "held after settle", ks.Held, "0")
	// A replayed settle changes nothing.
	if _, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h.ID, Actual: amt(t, "5")}); err != nil {
		t.Fatal(err)
	}
	wantAmount(t, "spent after replay", keySpend(t, svc, "acct-kb", "key-1").Spent, "5")
	// More than remains: 402 with the reset time.
	_, err = reserveKey(svc, "acct-kb", "key-1", amt(t, "6"))
	wantAmount(t, "remaining named", wantBudgetErr(t, err, reset).Remaining, "5")
	// Release frees the key's part.
	h2, err := reserveKey(svc, "acct-kb", "key-1", amt(t, "3"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Release(ctx(), h2.ID); err != nil {
		t.Fatal(err)
	}
	wantAmount(t, "held after release", keySpend(t, svc, "acct-kb", "key-1").Held, "0")
	// Extensions respect the limit.
	h3, err := reserveKey(svc, "acct-kb", "key-1", amt(t, "3"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.Extend(ctx(), credits.ExtendParams{HoldID: h3.ID, Amount: amt(t, "5.5")})
	wantBudgetErr(t, err, reset)
	if h3, err = svc.Extend(ctx(), credits.ExtendParams{HoldID: h3.ID, Amount: amt(t, "5")}); err != nil || !h3.Amount.Equal(amt(t, "5")) {
		t.Fatalf("extend to the edge: %+v, %v", h3, err)
	}
	ks = keySpend(t, svc, "acct-kb", "key-1")
	wantAmount(t, "held after extend", ks.Held, "5")
	wantAmount(t, "remaining after extend", ks.Remaining, "0")
	// An expired hold frees the key's part.
	e.clk.Advance(2 * time.Minute)
	ks = keySpend(t, svc, "acct-kb", "key-1")
	wantAmount(t, "held after expiry", ks.Held, "0")
	wantAmount(t, "remaining after expiry", ks.Remaining, "5")
	if _, err := svc.ExpireDue(ctx()); err != nil {
		t.Fatal(err)
	}
	// A direct debit counts; one past the limit is refused, writing nothing.
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct-kb", KeyID: "key-1", Amount: amt(t, "2"), IdempotencyKey: "kb-d1"}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Debit(ctx(), credits.DebitParams{AccountID: "acct-kb", KeyID: "key-1", Amount: amt(t, "3.01"), IdempotencyKey: "kb-d2"})
	wantBudgetErr(t, err, reset)
	// Delivered work (Overrun) is charged in full and counted.
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct-kb", KeyID: "key-1", Amount: amt(t, "4"), IdempotencyKey: "kb-d3", Overrun: credits.OverrunDebt}); err != nil {
		t.Fatal(err)
	}
	ks = keySpend(t, svc, "acct-kb", "key-1")
	wantAmount(t, "spent", ks.Spent, "11")
	wantAmount(t, "remaining when over", ks.Remaining, "0")
	wantBalance(t, svc, "acct-kb", "89")
	ledgerSum(t, svc, "acct-kb")
	// Removing the limit frees the key; its open holds settle normally.
	h4, err := svc.Reserve(ctx(), credits.ReserveParams{AccountID: "acct-kb", KeyID: "key-2", Amount: amt(t, "1"), TTL: time.Minute, IdempotencyKey: "kb-h4"})
	if err != nil {
		t.Fatal(err)
	}
	setKeyLimit(t, svc, "acct-kb", "key-1", "", "")
	if _, ok, err := svc.KeySpend(ctx(), "acct-kb", "key-1"); ok || err != nil {
		t.Fatalf("removed limit still read: %v, %v", ok, err)
	}
	if _, err := reserveKey(svc, "acct-kb", "key-1", amt(t, "20")); err != nil {
		t.Fatalf("reserve after removal: %v", err)
	}
	if _, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h4.ID, Actual: amt(t, "1")}); err != nil {
		t.Fatal(err)
	}
	// Bad limits are refused.
	for _, c := range []struct {
		key   string
		limit credits.Amount
		p     credits.Period
	}{{"key-1", amt(t, "0"), credits.PeriodDay}, {"key-1", amt(t, "-1"), credits.PeriodDay}, {"key-1", amt(t, "1"), "year"}, {"", amt(t, "1"), credits.PeriodDay}} {
		if _, err := svc.SetKeyLimit(ctx(), "acct-kb", c.key, c.limit, c.p); errkind.Of(err) != errkind.Invalid {
			t.Fatalf("SetKeyLimit(%q, %s, %q) = %v, want Invalid", c.key, c.limit, c.p, err)
		}
	}
	if _, err := svc.SetKeyLimit(ctx(), "acct-none", "key-1", amt(t, "1"), credits.PeriodDay); !errors.Is(err, credits.ErrUnknownAccount) {
		t.Fatalf("SetKeyLimit of an unknown account: %v", err)
	}
}

func testKeyLimitIST(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil) // epoch is 15:00 IST on 1 March
	svc := keyLedger(t, e, "acct-ist", "100", "Asia/Kolkata")
	ks := setKeyLimit(t, svc, "acct-ist", "key-1", "5", credits.PeriodDay)
	midnight := time.Date(2026, 3, 1, 18, 30, 0, 0, time.UTC) // 00:00 IST on 2 March
	if !ks.ResetsAt.Equal(midnight) || !ks.PeriodStart.Equal(midnight.Add(-24*time.Hour)) {
		t.Fatalf("IST day = [%v, %v)", ks.PeriodStart, ks.ResetsAt)
	}
	h, err := reserveKey(svc, "acct-ist", "key-1", amt(t, "5"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h.ID, Actual: amt(t, "5")}); err != nil {
		t.Fatal(err)
	}
	e.clk.Set(midnight.Add(-time.Second))
	_, err = reserveKey(svc, "acct-ist", "key-1", amt(t, "0.01"))
	wantBudgetErr(t, err, midnight)
	e.clk.Set(midnight)
	ks = keySpend(t, svc, "acct-ist", "key-1")
	if !ks.Spent.IsZero() || !ks.Remaining.Equal(amt(t, "5")) || !ks.ResetsAt.Equal(midnight.Add(24*time.Hour)) {
		t.Fatalf("after IST midnight: %+v", ks)
	}
	if _, err := reserveKey(svc, "acct-ist", "key-1", amt(t, "5")); err != nil {
		t.Fatalf("reserve after IST midnight: %v", err)
	}
	// A hold from the old period settled in the new one counts there, and
	// an old hold's release never frees the new period's counters.
	setKeyLimit(t, svc, "acct-ist", "key-w", "10", credits.PeriodWeek)
	// 2 March 2026 is a Monday: the IST week ends at 00:00 IST on 9 March.
	weekEnd := time.Date(2026, 3, 8, 18, 30, 0, 0, time.UTC)
	if ks := keySpend(t, svc, "acct-ist", "key-w"); !ks.ResetsAt.Equal(weekEnd) {
		t.Fatalf("IST week resets at %v, want %v", ks.ResetsAt, weekEnd)
	}
	e.clk.Set(weekEnd.Add(-30 * time.Second))
	old, err := reserveKey(svc, "acct-ist", "key-w", amt(t, "4"))
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Set(weekEnd)
	h2, err := reserveKey(svc, "acct-ist", "key-w", amt(t, "7"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Release(ctx(), old.ID); err != nil {
		t.Fatal(err)
	}
	ks = keySpend(t, svc, "acct-ist", "key-w")
	wantAmount(t, "held in the new week", ks.Held, "7")
	if _, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h2.ID, Actual: amt(t, "7")}); err != nil {
		t.Fatal(err)
	}
	ks = keySpend(t, svc, "acct-ist", "key-w")
	wantAmount(t, "spent in the new week", ks.Spent, "7")
	wantAmount(t, "held", ks.Held, "0")
	ledgerSum(t, svc, "acct-ist")
}

func testKeyLimitDST(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skip("no time zone database") // every supported platform has one; the Go toolchain embeds it with time/tzdata
	}
	e.clk.Set(time.Date(2026, 3, 7, 12, 0, 0, 0, ny)) // Saturday before the spring-forward Sunday
	svc := keyLedger(t, e, "acct-ny", "100", "America/New_York")
	day := setKeyLimit(t, svc, "acct-ny", "key-d", "5", credits.PeriodDay)
	week := setKeyLimit(t, svc, "acct-ny", "key-w", "5", credits.PeriodWeek)
	month := setKeyLimit(t, svc, "acct-ny", "key-m", "5", credits.PeriodMonth)
	sunday := time.Date(2026, 3, 8, 0, 0, 0, 0, ny)
	monday := time.Date(2026, 3, 9, 0, 0, 0, 0, ny)
	if !day.ResetsAt.Equal(sunday) || !week.ResetsAt.Equal(monday) || !week.PeriodStart.Equal(time.Date(2026, 3, 2, 0, 0, 0, 0, ny)) ||
		!month.ResetsAt.Equal(time.Date(2026, 4, 1, 0, 0, 0, 0, ny)) {
		t.Fatalf("NY periods: day %v, week [%v, %v), month %v", day.ResetsAt, week.PeriodStart, week.ResetsAt, month.ResetsAt)
	}
	for _, k := range []string{"key-d", "key-w"} {
		if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct-ny", KeyID: k, Amount: amt(t, "5"), IdempotencyKey: "ny-" + k}); err != nil {
			t.Fatal(err)
		}
	}
	// Sunday 8 March has 23 hours: its day ends at 04:00 UTC on Monday, not 05:00.
	e.clk.Set(sunday)
	ks := keySpend(t, svc, "acct-ny", "key-d")
	if !ks.Spent.IsZero() || !ks.ResetsAt.Equal(monday) || monday.Sub(sunday) != 23*time.Hour {
		t.Fatalf("spring-forward day: %+v", ks)
	}
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct-ny", KeyID: "key-d", Amount: amt(t, "5"), IdempotencyKey: "ny-sun"}); err != nil {
		t.Fatal(err)
	}
	e.clk.Set(monday.Add(-time.Second))
	_, err = reserveKey(svc, "acct-ny", "key-d", amt(t, "1"))
	wantBudgetErr(t, err, monday)
	_, err = reserveKey(svc, "acct-ny", "key-w", amt(t, "1"))
	wantBudgetErr(t, err, monday)
	e.clk.Set(monday)
	for _, k := range []string{"key-d", "key-w"} {
		if _, err := reserveKey(svc, "acct-ny", k, amt(t, "5")); err != nil {
			t.Fatalf("%s after its reset: %v", k, err)
		}
	}
	if ks := keySpend(t, svc, "acct-ny", "key-w"); !ks.ResetsAt.Equal(time.Date(2026, 3, 16, 0, 0, 0, 0, ny)) {
		t.Fatalf("next NY week resets at %v", ks.ResetsAt)
	}
}

func testKeyLimitLifetime(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := keyLedger(t, e, "acct-life", "100", "UTC")
	ks := setKeyLimit(t, svc, "acct-life", "key-1", "5", credits.PeriodLifetime)
	if !ks.ResetsAt.IsZero() || !ks.PeriodStart.IsZero() {
		t.Fatalf("lifetime bounds: %+v", ks)
	}
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct-life", KeyID: "key-1", Amount: amt(t, "5"), IdempotencyKey: "life-1"}); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(400 * 24 * time.Hour)
	_, err := reserveKey(svc, "acct-life", "key-1", amt(t, "0.01"))
	wantBudgetErr(t, err, time.Time{})
	// Switching to a monthly limit keeps the spend so far in the new period.
	ks = setKeyLimit(t, svc, "acct-life", "key-1", "8", credits.PeriodMonth)
	wantAmount(t, "carried spend", ks.Spent, "5")
	if _, err := reserveKey(svc, "acct-life", "key-1", amt(t, "3")); err != nil {
		t.Fatal(err)
	}
}

func testKeyLimitLowered(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := keyLedger(t, e, "acct-low", "100", "UTC")
	setKeyLimit(t, svc, "acct-low", "key-1", "10", credits.PeriodMonth)
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: "acct-low", KeyID: "key-1", Amount: amt(t, "6"), IdempotencyKey: "low-1"}); err != nil {
		t.Fatal(err)
	}
	h, err := reserveKey(svc, "acct-low", "key-1", amt(t, "2"))
	if err != nil {
		t.Fatal(err)
	}
	ks := setKeyLimit(t, svc, "acct-low", "key-1", "5", credits.PeriodMonth)
	wantAmount(t, "spent", ks.Spent, "6")
	wantAmount(t, "remaining", ks.Remaining, "0")
	_, err = reserveKey(svc, "acct-low", "key-1", amt(t, "0.01"))
	wantBudgetErr(t, err, time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC))
	// The open hold still settles; nothing breaks.
	if _, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h.ID, Actual: amt(t, "2")}); err != nil {
		t.Fatal(err)
	}
	ks = keySpend(t, svc, "acct-low", "key-1")
	wantAmount(t, "spent", ks.Spent, "8")
	wantAmount(t, "held", ks.Held, "0")
	setKeyLimit(t, svc, "acct-low", "key-1", "20", credits.PeriodMonth)
	if _, err := reserveKey(svc, "acct-low", "key-1", amt(t, "12")); err != nil {
		t.Fatalf("after raising the limit: %v", err)
	}
	wantBalance(t, svc, "acct-low", "92")
	ledgerSum(t, svc, "acct-low")
}

func testKeyLimitOtherAccount(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := keyLedger(t, e, "acct-x", "100", "UTC")
	openLedger(t, svc, "acct-y", credits.Policy{})
	mustCredit(t, svc.Grant, credits.CreditParams{AccountID: "acct-y", Amount: amt(t, "100"), IdempotencyKey: "g-y"})
	setKeyLimit(t, svc, "acct-x", "key-1", "5", credits.PeriodDay)
	// The same key ID on another account is another key: no limit there.
	if _, err := reserveKey(svc, "acct-y", "key-1", amt(t, "50")); err != nil {
		t.Fatalf("reserve on another account: %v", err)
	}
	if _, ok, err := svc.KeySpend(ctx(), "acct-y", "key-1"); ok || err != nil {
		t.Fatalf("another account's key limit read: %v, %v", ok, err)
	}
	ks := keySpend(t, svc, "acct-x", "key-1")
	if !ks.Held.IsZero() || !ks.Remaining.Equal(amt(t, "5")) {
		t.Fatalf("acct-x's key changed by acct-y's spend: %+v", ks)
	}
}

// An account holds at most 100 limited keys (their state is rewritten with
// the ledger row on every spend): the 101st is refused with nothing
// changed; changing or removing an existing limit still works, and a
// removal makes room.
func testKeyLimitBounded(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	svc := keyLedger(t, e, "acct-many", "100", "UTC")
	for i := range 100 {
		setKeyLimit(t, svc, "acct-many", fmt.Sprintf("key-%03d", i), "5", credits.PeriodDay)
	}
	if _, err := svc.SetKeyLimit(ctx(), "acct-many", "key-100", amt(t, "5"), credits.PeriodDay); !errors.Is(err, credits.ErrTooManyKeyLimits) ||
		errkind.Of(err) != errkind.Invalid {
		t.Fatalf("the 101st key limit = %v, want ErrTooManyKeyLimits (Invalid)", err)
	}
	a, err := svc.Account(ctx(), "acct-many")
	if err != nil || len(a.Keys) != 100 {
		t.Fatalf("after the refusal: %d limited keys (%v), want 100", len(a.Keys), err)
	}
	if _, ok, _ := svc.KeySpend(ctx(), "acct-many", "key-100"); ok {
		t.Fatal("the refused limit was stored")
	}
	if ks := setKeyLimit(t, svc, "acct-many", "key-007", "9", credits.PeriodWeek); !ks.Limit.Equal(amt(t, "9")) {
		t.Fatalf("changing a limit at the bound: %+v", ks)
	}
	setKeyLimit(t, svc, "acct-many", "key-050", "", "")
	setKeyLimit(t, svc, "acct-many", "key-100", "5", credits.PeriodDay)
	if _, err := reserveKey(svc, "acct-many", "key-100", amt(t, "6")); !errors.Is(err, credits.ErrKeyLimitExceeded) {
		t.Fatalf("the new key's limit is not enforced: %v", err)
	}
}
