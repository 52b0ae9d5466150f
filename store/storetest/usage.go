package storetest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

func runUsage(t *testing.T, newStore NewStoreFunc) {
	t.Run("MeterDebitsAndRecords", func(t *testing.T) { testUsageMeter(t, newStore) })
	t.Run("ReplayChargesOnce", func(t *testing.T) { testUsageReplay(t, newStore) })
	t.Run("FailedDebitWritesNoUsage", func(t *testing.T) { testUsageFailedDebit(t, newStore) })
	t.Run("HoldsSettleAndRelease", func(t *testing.T) { testUsageHolds(t, newStore) })
	t.Run("ConcurrentBatchMates", func(t *testing.T) { testUsageConcurrent(t, newStore) })
	t.Run("SummaryEqualsBruteForce", func(t *testing.T) { testUsageSummaryProperty(t, newStore) })
	t.Run("DayBoundariesKolkataVsUTC", func(t *testing.T) { testUsageDayBoundaries(t, newStore) })
	t.Run("CursorUnderConcurrentInserts", func(t *testing.T) { testUsageCursor(t, newStore) })
	t.Run("LimitClamps", func(t *testing.T) { testUsageLimits(t, newStore) })
	t.Run("CountersAndRetention", func(t *testing.T) { testUsageCountersRetention(t, newStore) })
	t.Run("DuplicateRecordIDs", func(t *testing.T) { testUsageDuplicateIDs(t, newStore) })
	t.Run("TokenPartsAndDatedPrices", func(t *testing.T) { testUsageTokenParts(t, newStore) })
}

// metering returns a credits and a usage Service over e's store and clock;
// both close at cleanup.
func (e *env) metering(t testing.TB, copts *credits.Options, uopts *usage.Options) (*credits.Service, *usage.Service) {
	t.Helper()
	led := e.ledger(t, copts)
	var o usage.Options
	if uopts != nil {
		o = *uopts
	}
	o.Now, o.Credits = e.clk.Now, led
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	svc, err := usage.NewService(e.st, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return led, svc
}

func fundedAccount(t testing.TB, led *credits.Service, id, amount string, p credits.Policy) {
	t.Helper()
	openLedger(t, led, id, p)
	if amount != "0" {
		mustCredit(t, led.Purchase, credits.CreditParams{AccountID: id, Amount: amt(t, amount), IdempotencyKey: "fund-" + id})
	}
}

func mustMeter(t testing.TB, svc *usage.Service, p usage.MeterParams) usage.MeterResult {
	t.Helper()
	r, err := svc.Meter(ctx(), p)
	if err != nil {
		t.Fatalf("Meter(%s, %s): %v", p.Record.AccountID, p.IdempotencyKey, err)
	}
	return r
}

// allRecords pages through List and returns every record, newest first.
func allRecords(t testing.TB, svc *usage.Service, acct string) []usage.Record {
	t.Helper()
	var out []usage.Record
	cursor := ""
	for {
		pg, err := svc.List(ctx(), usage.ListQuery{AccountID: acct, Cursor: cursor, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pg.Records...)
		if pg.NextCursor == "" {
			return out
		}
		cursor = pg.NextCursor
	}
}

func testUsageMeter(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	pb, err := usage.NewPriceBook(nil, []usage.OperationPrice{{Operation: "/v1/tools/inspect_domain", PerUnit: amt(t, "3").Decimal()}})
	if err != nil {
		t.Fatal(err)
	}
	led, svc := e.metering(t, &credits.Options{Unit: credits.WholeCredits()}, nil)
	fundedAccount(t, led, "acct_or", "10", credits.Policy{})
	rec := usage.Record{AccountID: "acct_or", KeyID: "cred_1", AuthSource: "api_key", Endpoint: "/v1/tools/inspect_domain",
		Method: "POST", StatusCode: 200, ResponseTime: 842 * time.Millisecond, RequestBytes: 52, ResponseBytes: 4096,
		Metadata: map[string]string{"tool": "inspect_domain"}}
	if err := pb.Rate(&rec); err != nil {
		t.Fatal(err)
	}
	res := mustMeter(t, svc, usage.MeterParams{Record: rec, IdempotencyKey: "req-1"})
	if res.Replayed || !res.Charged.Equal(amt(t, "3")) || !res.Record.Cost.Equal(amt(t, "3")) || res.Entry.ID == "" {
		t.Fatalf("first meter: %+v", res)
	}
	if len(res.Record.ID) < 5 || res.Record.ID[:4] != "log_" || !res.Record.CreatedAt.Equal(epoch) {
		t.Fatalf("record ID/time not filled: %q %v", res.Record.ID, res.Record.CreatedAt)
	}
	if res.Entry.Reference != res.Record.ID || res.Entry.IdempotencyKey != "req-1" {
		t.Fatalf("debit entry does not name the record: %+v", res.Entry)
	}
	wantAmount(t, "balance", must(led.Balance(ctx(), "acct_or")), "7")

	// A failed request is recorded at zero cost and charges nothing.
	bad := rec
	bad.StatusCode, bad.ErrorType, bad.ErrorMessage = 502, "upstream_error", "bad gateway"
	res2 := mustMeter(t, svc, usage.MeterParams{Record: bad, IdempotencyKey: "req-2"})
	if !res2.Charged.IsZero() || !res2.Record.Cost.IsZero() || res2.Entry.ID != "" {
		t.Fatalf("failed request charged: %+v", res2)
	}
	wantAmount(t, "balance", must(led.Balance(ctx(), "acct_or")), "7")

	recs := allRecords(t, svc, "acct_or")
	if len(recs) != 2 || recs[0].ID != res2.Record.ID || recs[1].ID != res.Record.ID {
		t.Fatalf("List: %+v", recs)
	}
	got := recs[1]
	if got.Metadata["tool"] != "inspect_domain" || got.ResponseTime != 842*time.Millisecond || got.KeyID != "cred_1" ||
		got.RequestBytes != 52 || !got.Cost.Equal(amt(t, "3")) {
		t.Fatalf("stored record differs: %+v", got)
	}
	// Values are copied: changing a returned record changes nothing stored.
	got.Metadata["tool"] = "changed"
	if again := allRecords(t, svc, "acct_or"); again[1].Metadata["tool"] != "inspect_domain" {
		t.Fatal("stored metadata changed through a returned record")
	}
	// Invalid input writes nothing.
	for _, p := range []usage.MeterParams{
		{Record: usage.Record{AccountID: "acct_or"}},                                        // no key
		{Record: usage.Record{}, IdempotencyKey: "k"},                                       // no account
		{Record: usage.Record{AccountID: "acct_or", PromptTokens: -1}, IdempotencyKey: "k"}, // negative
		{Record: usage.Record{AccountID: "acct_or"}, IdempotencyKey: "k", TimeZone: "Mars/Base"},
		{Record: usage.Record{AccountID: "acct_or", CreatedAt: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}, IdempotencyKey: "k"}, // beyond int64 nanoseconds
	} {
		if _, err := svc.Meter(ctx(), p); err == nil {
			t.Errorf("Meter(%+v) succeeded", p)
		}
	}
	if n := len(allRecords(t, svc, "acct_or")); n != 2 {
		t.Fatalf("invalid meters wrote records: %d", n)
	}
	// Pricing is the caller's step: an operation the book does not list
	// is refused there, before anything is metered.
	if err := pb.Rate(&usage.Record{AccountID: "acct_or", Endpoint: "/unpriced"}); !errors.Is(err, usage.ErrUnknownOperation) {
		t.Fatalf("Rate(/unpriced) = %v, want ErrUnknownOperation", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func testUsageReplay(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	led, svc := e.metering(t, nil, nil)
	fundedAccount(t, led, "acct_r", "100", credits.Policy{})
	rec := usage.Record{AccountID: "acct_r", Model: "forii/deepseek-v3", PromptTokens: 1000, CompletionTokens: 10, StatusCode: 200,
		Cost: amt(t, "0.2564500")}
	first := mustMeter(t, svc, usage.MeterParams{Record: rec, IdempotencyKey: "chat-1", TimeZone: "Asia/Kolkata"})
	e.clk.Advance(time.Minute)
	again := mustMeter(t, svc, usage.MeterParams{Record: rec, IdempotencyKey: "chat-1", TimeZone: "Asia/Kolkata"})
	if !again.Replayed || again.Record.ID != first.Record.ID || again.Entry.ID != first.Entry.ID ||
		!again.Charged.Equal(first.Charged) || !again.Record.CreatedAt.Equal(first.Record.CreatedAt) {
		t.Fatalf("replay differs:\nfirst %+v\nagain %+v", first, again)
	}
	wantAmount(t, "balance", must(led.Balance(ctx(), "acct_r")), "99.74355")
	if n := len(allRecords(t, svc, "acct_r")); n != 1 {
		t.Fatalf("replay wrote a record: %d", n)
	}
	// Concurrent replays of one new key: one charge, one record.
	var wg sync.WaitGroup
	results := make([]usage.MeterResult, 16)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = mustMeter(t, svc, usage.MeterParams{Record: rec, IdempotencyKey: "chat-2"})
		}()
	}
	wg.Wait()
	replays := 0
	for _, r := range results {
		if r.Record.ID != results[0].Record.ID {
			t.Fatalf("concurrent replays returned different records")
		}
		if r.Replayed {
			replays++
		}
	}
	if replays != len(results)-1 {
		t.Fatalf("%d replays of %d", replays, len(results))
	}
	wantAmount(t, "balance", must(led.Balance(ctx(), "acct_r")), "99.48710")
	// The same key with another request is a conflict that writes nothing.
	other := rec
	other.PromptTokens++
	if _, err := svc.Meter(ctx(), usage.MeterParams{Record: other, IdempotencyKey: "chat-1"}); !errors.Is(err, usage.ErrIdempotencyConflict) {
		t.Fatalf("conflicting reuse: %v", err)
	}
	// Keys are per account.
	fundedAccount(t, led, "acct_r2", "1", credits.Policy{})
	rec2 := rec
	rec2.AccountID = "acct_r2"
	if r := mustMeter(t, svc, usage.MeterParams{Record: rec2, IdempotencyKey: "chat-1"}); r.Replayed {
		t.Fatal("a key of another account replayed")
	}
	if n := len(allRecords(t, svc, "acct_r")); n != 2 {
		t.Fatalf("records: %d", n)
	}
}

func testUsageFailedDebit(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	led, svc := e.metering(t, nil, nil)
	fundedAccount(t, led, "acct_poor", "1", credits.Policy{})
	rec := usage.Record{AccountID: "acct_poor", Model: "m", StatusCode: 200, Cost: amt(t, "1.5")}
	if _, err := svc.Meter(ctx(), usage.MeterParams{Record: rec, IdempotencyKey: "big"}); !errors.Is(err, credits.ErrInsufficientFunds) {
		t.Fatalf("Meter beyond the balance: %v", err)
	}
	if n := len(allRecords(t, svc, "acct_poor")); n != 0 {
		t.Fatalf("a failed debit wrote %d usage records", n)
	}
	rows, err := svc.Summary(ctx(), usage.SummaryQuery{AccountID: "acct_poor", From: "2026-03-01", To: "2026-03-01", GroupBy: []usage.GroupField{usage.GroupDate}})
	if err != nil || len(rows) != 0 {
		t.Fatalf("a failed debit reached the rollups: %+v %v", rows, err)
	}
	wantAmount(t, "balance", must(led.Balance(ctx(), "acct_poor")), "1")
	// The key was not used up: once funded, the same request succeeds.
	mustCredit(t, led.Purchase, credits.CreditParams{AccountID: "acct_poor", Amount: amt(t, "1"), IdempotencyKey: "more"})
	if r := mustMeter(t, svc, usage.MeterParams{Record: rec, IdempotencyKey: "big"}); r.Replayed || !r.Charged.Equal(amt(t, "1.5")) {
		t.Fatalf("retry after funding: %+v", r)
	}
	// Unknown ledger account, monthly cap: errors, nothing written.
	if _, err := svc.Meter(ctx(), usage.MeterParams{Record: usage.Record{AccountID: "acct_none", Cost: amt(t, "1")}, IdempotencyKey: "x"}); !errors.Is(err, credits.ErrUnknownAccount) {
		t.Fatalf("unknown account: %v", err)
	}
	fundedAccount(t, led, "acct_cap", "100", credits.Policy{MonthlyCap: amt(t, "2")})
	if _, err := svc.Meter(ctx(), usage.MeterParams{Record: usage.Record{AccountID: "acct_cap", Cost: amt(t, "3")}, IdempotencyKey: "x"}); !errors.Is(err, credits.ErrMonthlyLimit) {
		t.Fatalf("over the cap: %v", err)
	}
	if n := len(allRecords(t, svc, "acct_none")) + len(allRecords(t, svc, "acct_cap")); n != 0 {
		t.Fatalf("failed meters wrote %d records", n)
	}
}

func testUsageHolds(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	led, svc := e.metering(t, nil, nil)
	fundedAccount(t, led, "acct_h", "10", credits.Policy{})
	hold, err := led.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_h", Amount: amt(t, "2"), TTL: time.Minute, IdempotencyKey: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	// Settle below the hold: charge the actual cost, free the rest.
	r := mustMeter(t, svc, usage.MeterParams{Record: usage.Record{AccountID: "acct_h", Model: "m", StatusCode: 200, Cost: amt(t, "0.75")},
		HoldID: hold.ID, IdempotencyKey: "req-1"})
	if !r.Charged.Equal(amt(t, "0.75")) || !r.Shortfall.IsZero() || r.Entry.HoldID != hold.ID || !r.Record.Cost.Equal(amt(t, "0.75")) {
		t.Fatalf("settle: %+v", r)
	}
	a := must(led.Account(ctx(), "acct_h"))
	wantAmount(t, "balance", a.Balance, "9.25")
	wantAmount(t, "held", a.Held, "0")
	if again := mustMeter(t, svc, usage.MeterParams{Record: usage.Record{AccountID: "acct_h", Model: "m", StatusCode: 200, Cost: amt(t, "0.75")},
		HoldID: hold.ID, IdempotencyKey: "req-1"}); !again.Replayed || again.Entry.ID != r.Entry.ID || !again.Charged.Equal(r.Charged) {
		t.Fatalf("settle replay: %+v", again)
	}
	// Settle above the balance with a write-off: the excess is the
	// shortfall; the record costs what was charged.
	h2 := must(led.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_h", Amount: amt(t, "9"), TTL: time.Minute, IdempotencyKey: "r2"}))
	r2 := mustMeter(t, svc, usage.MeterParams{Record: usage.Record{AccountID: "acct_h", Model: "m", StatusCode: 200, Cost: amt(t, "12")},
		HoldID: h2.ID, IdempotencyKey: "req-2", Overrun: credits.OverrunWriteOff})
	if !r2.Charged.Equal(amt(t, "9.25")) || !r2.Shortfall.Equal(amt(t, "2.75")) || !r2.Record.Cost.Equal(amt(t, "9.25")) {
		t.Fatalf("settle above balance: %+v", r2)
	}
	// The default charges delivered work in full: the balance goes into
	// debt by the overshoot, and the record costs all of it.
	mustCredit(t, led.Purchase, credits.CreditParams{AccountID: "acct_h", Amount: amt(t, "1"), IdempotencyKey: "some"})
	hd := must(led.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_h", Amount: amt(t, "1"), TTL: time.Minute, IdempotencyKey: "rd"}))
	rd := mustMeter(t, svc, usage.MeterParams{Record: usage.Record{AccountID: "acct_h", Model: "m", StatusCode: 200, Cost: amt(t, "3.5")},
		HoldID: hd.ID, IdempotencyKey: "req-d"})
	if !rd.Charged.Equal(amt(t, "3.5")) || !rd.Shortfall.IsZero() || !rd.Record.Cost.Equal(amt(t, "3.5")) {
		t.Fatalf("settle into debt: %+v", rd)
	}
	if a := must(led.Account(ctx(), "acct_h")); !a.Balance.Equal(amt(t, "-2.5")) || !a.Debt.Equal(amt(t, "2.5")) {
		t.Fatalf("after settling into debt: balance %s debt %s", a.Balance, a.Debt)
	}
	// A plain debit for delivered work: refused by default, charged in
	// full with OverrunDebt, as far as funds go with OverrunWriteOff.
	if _, err := svc.Meter(ctx(), usage.MeterParams{Record: usage.Record{AccountID: "acct_h", Model: "m", StatusCode: 200, Cost: amt(t, "1")},
		IdempotencyKey: "req-dr"}); !errors.Is(err, credits.ErrInDebt) {
		t.Fatalf("plain debit in debt: %v", err)
	}
	rdd := mustMeter(t, svc, usage.MeterParams{Record: usage.Record{AccountID: "acct_h", Model: "m", StatusCode: 200, Cost: amt(t, "0.5")},
		IdempotencyKey: "req-dd", Overrun: credits.OverrunDebt})
	if !rdd.Charged.Equal(amt(t, "0.5")) || !rdd.Record.Cost.Equal(amt(t, "0.5")) {
		t.Fatalf("delivered debit in debt: %+v", rdd)
	}
	mustCredit(t, led.Purchase, credits.CreditParams{AccountID: "acct_h", Amount: amt(t, "4"), IdempotencyKey: "pay-debt"})
	rdw := mustMeter(t, svc, usage.MeterParams{Record: usage.Record{AccountID: "acct_h", Model: "m", StatusCode: 200, Cost: amt(t, "2")},
		IdempotencyKey: "req-dw", Overrun: credits.OverrunWriteOff})
	if !rdw.Charged.Equal(amt(t, "1")) || !rdw.Shortfall.Equal(amt(t, "1")) || !rdw.Record.Cost.Equal(amt(t, "1")) {
		t.Fatalf("write-off debit: %+v", rdw)
	}
	// A failed request releases its hold and costs nothing.
	mustCredit(t, led.Purchase, credits.CreditParams{AccountID: "acct_h", Amount: amt(t, "5"), IdempotencyKey: "more"})
	h3 := must(led.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_h", Amount: amt(t, "1"), TTL: time.Minute, IdempotencyKey: "r3"}))
	r3 := mustMeter(t, svc, usage.MeterParams{Record: usage.Record{AccountID: "acct_h", Model: "m", StatusCode: 429, ErrorType: "rate_limited", Cost: amt(t, "1")},
		HoldID: h3.ID, IdempotencyKey: "req-3"})
	if !r3.Charged.IsZero() || !r3.Record.Cost.IsZero() {
		t.Fatalf("429 charged: %+v", r3)
	}
	if h := must(led.Hold(ctx(), h3.ID)); h.State != credits.HoldReleased {
		t.Fatalf("hold of a failed request is %s", h.State)
	}
	wantAmount(t, "balance", must(led.Balance(ctx(), "acct_h")), "5")
	// Another account's hold is not found; nothing written.
	fundedAccount(t, led, "acct_other", "5", credits.Policy{})
	h4 := must(led.Reserve(ctx(), credits.ReserveParams{AccountID: "acct_other", Amount: amt(t, "1"), TTL: time.Minute, IdempotencyKey: "r4"}))
	if _, err := svc.Meter(ctx(), usage.MeterParams{Record: usage.Record{AccountID: "acct_h", Cost: amt(t, "1")}, HoldID: h4.ID, IdempotencyKey: "req-4"}); !errors.Is(err, credits.ErrHoldNotFound) {
		t.Fatalf("settling another account's hold: %v", err)
	}
	if _, err := svc.Meter(ctx(), usage.MeterParams{Record: usage.Record{AccountID: "acct_h", Cost: amt(t, "1")}, HoldID: "hold_missing", IdempotencyKey: "req-5"}); !errors.Is(err, credits.ErrHoldNotFound) {
		t.Fatalf("settling a missing hold: %v", err)
	}
	if n := len(allRecords(t, svc, "acct_h")); n != 6 {
		t.Fatalf("records: %d, want 6", n)
	}
}

// testUsageConcurrent meters from many goroutines at once, some of them
// bound to fail, and checks that every success is recorded and charged,
// every failure left nothing, and the totals agree.
func testUsageConcurrent(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	led, svc := e.metering(t, nil, &usage.Options{MaxBatch: 32})
	const accounts, callers, per = 4, 16, 20
	for i := range accounts {
		fundedAccount(t, led, fmt.Sprintf("acct_c%d", i), "30", credits.Policy{})
	}
	var mu sync.Mutex
	ok := map[string]credits.Amount{}
	failed := 0
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				acct := fmt.Sprintf("acct_c%d", (c+i)%accounts)
				cost := amt(t, "0.5")
				if i%7 == 3 {
					cost = amt(t, "1000") // always insufficient
				}
				rec := usage.Record{AccountID: acct, Model: "m", StatusCode: 200, Cost: cost}
				if i%5 == 1 {
					// The same record ID again and again: the debit
					// applies before the insert fails, so the rollback
					// must undo the charge too.
					rec.ID = "log_dup_" + acct
				}
				r, err := svc.Meter(ctx(), usage.MeterParams{Record: rec, IdempotencyKey: fmt.Sprintf("c%d-%d", c, i)})
				mu.Lock()
				switch {
				case err == nil:
					ok[acct] = ok[acct].Add(r.Charged)
				case errors.Is(err, credits.ErrInsufficientFunds), errors.Is(err, usage.ErrDuplicateRecord):
					failed++
				default:
					t.Errorf("Meter: %v", err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed < callers*per/7 {
		t.Fatalf("only %d failures", failed)
	}
	for i := range accounts {
		acct := fmt.Sprintf("acct_c%d", i)
		recs := allRecords(t, svc, acct)
		var sum credits.Amount
		for _, r := range recs {
			sum = sum.Add(r.Cost)
		}
		if !sum.Equal(ok[acct]) {
			t.Errorf("%s: records cost %s, successes charged %s", acct, sum, ok[acct])
		}
		wantAmount(t, acct+" balance", must(led.Balance(ctx(), acct)), amt(t, "30").Sub(sum).String())
		rows := must(svc.Summary(ctx(), usage.SummaryQuery{AccountID: acct, From: "2026-03-01", To: "2026-03-01"}))
		if len(rows) != 1 || rows[0].Requests != int64(len(recs)) || !rows[0].Cost.Equal(sum) {
			t.Errorf("%s: summary %+v, records %d cost %s", acct, rows, len(recs), sum)
		}
	}
	if st := svc.Stats(); st.Failures != int64(failed) || st.Metered != int64(callers*per-failed) {
		t.Errorf("stats %+v, failed %d", st, failed)
	}
}

// testUsageSummaryProperty meters random records over several days and
// checks every grouping of Summary, in the metering zone (rollups) and in
// another zone (raw fallback), against a brute-force sum over the records.
func testUsageSummaryProperty(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	led, svc := e.metering(t, nil, nil)
	fundedAccount(t, led, "acct_p", "1000000", credits.Policy{})
	rng := rand.New(rand.NewPCG(6, 1))
	models, keys, eps := []string{"m1", "m2", "m3"}, []string{"k1", "k2"}, []string{"/chat", "/embed"}
	const tz = "Asia/Kolkata"
	var recs []usage.Record
	n := 300
	if testing.Short() {
		n = 120
	}
	for i := range n {
		r := usage.Record{
			AccountID: "acct_p", Model: models[rng.IntN(3)], KeyID: keys[rng.IntN(2)], Endpoint: eps[rng.IntN(2)], StatusCode: 200,
			PromptTokens: rng.Int64N(5000), CompletionTokens: rng.Int64N(500), Units: rng.Int64N(3),
			CreatedAt: epoch.Add(time.Duration(rng.Int64N(int64(6 * 24 * time.Hour)))),
			Cost:      credits.AmountFromMinor(rng.Int64N(1_000_000), 7),
		}
		if rng.IntN(10) == 0 {
			r.StatusCode, r.ErrorType = 500, "upstream"
		}
		if r.Units > 0 {
			r.CachedUnits = rng.Int64N(r.Units + 1)
		}
		if rng.IntN(2) == 0 { // token parts within their wholes
			r.CachedPromptTokens = rng.Int64N(r.PromptTokens + 1)
			r.CacheWriteTokens = rng.Int64N(r.PromptTokens - r.CachedPromptTokens + 1)
			r.ReasoningTokens = rng.Int64N(r.CompletionTokens + 1)
		}
		recs = append(recs, mustMeter(t, svc, usage.MeterParams{Record: r, IdempotencyKey: fmt.Sprint("p", i), TimeZone: tz}).Record)
	}
	from, to := "2026-03-02", "2026-03-05"
	groupings := [][]usage.GroupField{nil, {usage.GroupDate}, {usage.GroupModel}, {usage.GroupDate, usage.GroupModel},
		{usage.GroupKey, usage.GroupEndpoint}, {usage.GroupDate, usage.GroupModel, usage.GroupKey, usage.GroupEndpoint}}
	for _, zone := range []string{tz, "UTC", "America/New_York"} {
		loc := must(time.LoadLocation(zone))
		for _, g := range groupings {
			for _, raw := range []bool{false, true} {
				got, err := svc.Summary(ctx(), usage.SummaryQuery{AccountID: "acct_p", From: from, To: to, GroupBy: g, TimeZone: zone, Raw: raw})
				if err != nil {
					t.Fatal(err)
				}
				want := bruteSummary(recs, loc, from, to, g)
				if !equalRows(got, want) {
					t.Fatalf("zone %s group %v raw %v:\n got %+v\nwant %+v", zone, g, raw, got, want)
				}
			}
		}
	}
	// A filter narrows both paths alike.
	got := must(svc.Summary(ctx(), usage.SummaryQuery{AccountID: "acct_p", From: from, To: to, GroupBy: []usage.GroupField{usage.GroupDate}, TimeZone: tz, Model: "m2"}))
	var m2 []usage.Record
	for _, r := range recs {
		if r.Model == "m2" {
			m2 = append(m2, r)
		}
	}
	if want := bruteSummary(m2, must(time.LoadLocation(tz)), from, to, []usage.GroupField{usage.GroupDate}); !equalRows(got, want) {
		t.Fatalf("model filter:\n got %+v\nwant %+v", got, want)
	}
}

func bruteSummary(recs []usage.Record, loc *time.Location, from, to string, g []usage.GroupField) []usage.SummaryRow {
	m := map[[4]string]*usage.SummaryRow{}
	for _, r := range recs {
		day := r.CreatedAt.In(loc).Format(time.DateOnly)
		if day < from || day > to {
			continue
		}
		var k [4]string
		if slices.Contains(g, usage.GroupDate) {
			k[0] = day
		}
		if slices.Contains(g, usage.GroupModel) {
			k[1] = r.Model
		}
		if slices.Contains(g, usage.GroupKey) {
			k[2] = r.KeyID
		}
		if slices.Contains(g, usage.GroupEndpoint) {
			k[3] = r.Endpoint
		}
		row := m[k]
		if row == nil {
			row = &usage.SummaryRow{Date: k[0], Model: k[1], KeyID: k[2], Endpoint: k[3]}
			m[k] = row
		}
		row.Requests++
		if !r.Billable() {
			row.Errors++
		}
		row.PromptTokens += r.PromptTokens
		row.CompletionTokens += r.CompletionTokens
		row.TotalTokens += r.PromptTokens + r.CompletionTokens
		row.Units += r.Units
		row.CachedUnits += r.CachedUnits
		row.CachedPromptTokens += r.CachedPromptTokens
		row.CacheWriteTokens += r.CacheWriteTokens
		row.ReasoningTokens += r.ReasoningTokens
		row.Cost = row.Cost.Add(r.Cost)
	}
	out := make([]usage.SummaryRow, 0, len(m))
	for _, r := range m {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return a.Date+"\x00"+a.Model+"\x00"+a.KeyID+"\x00"+a.Endpoint < b.Date+"\x00"+b.Model+"\x00"+b.KeyID+"\x00"+b.Endpoint
	})
	return out
}

func equalRows(a, b []usage.SummaryRow) bool {
	return slices.EqualFunc(a, b, func(x, y usage.SummaryRow) bool {
		c1, c2 := x.Cost, y.Cost
		x.Cost, y.Cost = credits.Amount{}, credits.Amount{}
		return x == y && c1.Equal(c2)
	})
}

// testUsageDayBoundaries: 20:00 UTC on March 1 is 01:30 on March 2 in
// Asia/Kolkata (UTC+5:30); each zone puts the record on its own day.
func testUsageDayBoundaries(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	led, svc := e.metering(t, nil, nil)
	fundedAccount(t, led, "acct_in", "100", credits.Policy{TimeZone: "Asia/Kolkata"})
	fundedAccount(t, led, "acct_utc", "100", credits.Policy{})
	times := []time.Time{
		time.Date(2026, 3, 1, 18, 29, 59, 0, time.UTC), // 23:59:59 IST, Mar 1
		time.Date(2026, 3, 1, 18, 30, 0, 0, time.UTC),  // 00:00 IST, Mar 2
		time.Date(2026, 3, 1, 20, 0, 0, 0, time.UTC),   // 01:30 IST, Mar 2
		time.Date(2026, 3, 1, 23, 59, 59, 0, time.UTC), // still Mar 1 in UTC
		time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC),    // Mar 2 in UTC
	}
	for i, at := range times {
		for _, a := range []struct{ acct, tz string }{{"acct_in", "Asia/Kolkata"}, {"acct_utc", "UTC"}} {
			mustMeter(t, svc, usage.MeterParams{Record: usage.Record{AccountID: a.acct, Model: "m", StatusCode: 200, CreatedAt: at, Cost: amt(t, "1")},
				IdempotencyKey: fmt.Sprint("b", i), TimeZone: a.tz})
		}
	}
	want := map[string]map[string]int64{
		"acct_in":  {"2026-03-01": 1, "2026-03-02": 4},
		"acct_utc": {"2026-03-01": 4, "2026-03-02": 1},
	}
	for acct, days := range want {
		tz := "UTC"
		if acct == "acct_in" {
			tz = "Asia/Kolkata"
		}
		rows := must(svc.Summary(ctx(), usage.SummaryQuery{AccountID: acct, From: "2026-03-01", To: "2026-03-02", GroupBy: []usage.GroupField{usage.GroupDate}, TimeZone: tz}))
		got := map[string]int64{}
		for _, r := range rows {
			got[r.Date] = r.Requests
			if !r.Cost.Equal(credits.AmountFromInt(r.Requests)) {
				t.Errorf("%s %s: cost %s for %d requests", acct, r.Date, r.Cost, r.Requests)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(days) {
			t.Errorf("%s days %v, want %v", acct, got, days)
		}
	}
	// Asking for the Kolkata account's days in UTC falls back to the raw
	// records and still counts by UTC days.
	rows := must(svc.Summary(ctx(), usage.SummaryQuery{AccountID: "acct_in", From: "2026-03-01", To: "2026-03-02", GroupBy: []usage.GroupField{usage.GroupDate}, TimeZone: "UTC"}))
	if len(rows) != 2 || rows[0].Requests != 4 || rows[1].Requests != 1 {
		t.Errorf("Kolkata account in UTC days: %+v", rows)
	}
	// One day only: the range is inclusive at both ends.
	rows = must(svc.Summary(ctx(), usage.SummaryQuery{AccountID: "acct_in", From: "2026-03-02", To: "2026-03-02", TimeZone: "Asia/Kolkata"}))
	if len(rows) != 1 || rows[0].Requests != 4 || rows[0].Date != "" {
		t.Errorf("one Kolkata day, no grouping: %+v", rows)
	}
}

// testUsageCursor pages through an account's records while other
// goroutines keep metering into it: every record that existed before the
// first page is seen exactly once, and no record twice.
func testUsageCursor(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	led, svc := e.metering(t, nil, nil)
	fundedAccount(t, led, "acct_l", "0", credits.Policy{})
	const initial = 60
	before := map[string]bool{}
	for i := range initial {
		r := mustMeter(t, svc, usage.MeterParams{Record: usage.Record{AccountID: "acct_l", Endpoint: "/free", StatusCode: 200}, IdempotencyKey: fmt.Sprint("i", i)})
		before[r.Record.ID] = true
		if i%3 == 0 {
			e.clk.Advance(time.Millisecond) // some records share a timestamp
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if i%2 == 0 {
					e.clk.Advance(time.Microsecond)
				}
				// Some concurrent records are back-dated into the pages
				// being read.
				rec := usage.Record{AccountID: "acct_l", Endpoint: "/free", StatusCode: 200}
				if i%5 == 0 {
					rec.CreatedAt = epoch.Add(time.Duration(i%20) * time.Millisecond)
				}
				if _, err := svc.Meter(ctx(), usage.MeterParams{Record: rec, IdempotencyKey: fmt.Sprint("w", w, "-", i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	seen := map[string]int{}
	cursor := ""
	for pages := 0; ; pages++ {
		pg, err := svc.List(ctx(), usage.ListQuery{AccountID: "acct_l", Cursor: cursor, Limit: 4})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range pg.Records {
			seen[r.ID]++
			if i > 0 {
				p := pg.Records[i-1]
				if r.CreatedAt.After(p.CreatedAt) || (r.CreatedAt.Equal(p.CreatedAt) && r.ID > p.ID) {
					t.Fatalf("page not newest first: %v %s after %v %s", p.CreatedAt, p.ID, r.CreatedAt, r.ID)
				}
			}
		}
		if pg.NextCursor == "" {
			break
		}
		cursor = pg.NextCursor
	}
	close(stop)
	wg.Wait()
	for id, n := range seen {
		if n != 1 {
			t.Errorf("record %s listed %d times", id, n)
		}
	}
	for id := range before {
		if seen[id] != 1 {
			t.Errorf("record %s that existed before paging was listed %d times", id, seen[id])
		}
	}
	if _, err := svc.List(ctx(), usage.ListQuery{AccountID: "acct_l", Cursor: "not a cursor"}); !errors.Is(err, usage.ErrInvalidCursor) {
		t.Fatalf("bad cursor: %v", err)
	}
}

func testUsageLimits(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	led, svc := e.metering(t, nil, nil)
	fundedAccount(t, led, "acct_lim", "0", credits.Policy{})
	for i := range 503 {
		mustMeter(t, svc, usage.MeterParams{Record: usage.Record{AccountID: "acct_lim", Endpoint: "/status"}, IdempotencyKey: fmt.Sprint("k", i)})
	}
	for _, c := range []struct{ limit, want int }{{0, 1}, {-5, 1}, {1, 1}, {50, 50}, {500, 500}, {501, 500}, {10_000, 500}} {
		pg, err := svc.List(ctx(), usage.ListQuery{AccountID: "acct_lim", Limit: c.limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(pg.Records) != c.want || pg.NextCursor == "" {
			t.Errorf("limit %d: %d records (cursor %q), want %d", c.limit, len(pg.Records), pg.NextCursor, c.want)
		}
	}
	if pg := must(svc.List(ctx(), usage.ListQuery{AccountID: "acct_none", Limit: 10})); len(pg.Records) != 0 || pg.NextCursor != "" {
		t.Errorf("unknown account: %+v", pg)
	}
}

func testUsageCountersRetention(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	led, svc := e.metering(t, &credits.Options{Unit: credits.HalfCredits()}, nil)
	fundedAccount(t, led, "acct_ev", "100", credits.Policy{})
	// Email-verify: 1 credit a verification, 0.5 for a cached one. Three
	// days ago and today.
	meter := func(key string, cached bool, at time.Time) {
		r := usage.Record{AccountID: "acct_ev", Endpoint: "verify", StatusCode: 200, Units: 1, Cost: amt(t, "1"), CreatedAt: at}
		if cached {
			r.CachedUnits, r.Cost = 1, amt(t, "0.5")
		}
		mustMeter(t, svc, usage.MeterParams{Record: r, IdempotencyKey: key})
	}
	old := epoch.Add(-72 * time.Hour) // 2026-02-26: last month
	meter("o1", false, old)
	meter("m1", false, epoch.Add(-30*time.Minute)) // still Mar 1 (epoch is 09:30 UTC)
	meter("t1", false, epoch)
	meter("t2", true, epoch)
	meter("t3", true, epoch)
	c := must(svc.Counters(ctx(), "acct_ev", ""))
	if c.Today.Requests != 4 || c.Today.Units != 4 || c.ThisMonth.Units != 4 || c.ThisMonth.CachedUnits != 2 ||
		!c.Today.Cost.Equal(amt(t, "3")) || c.CacheHitRate != 0.5 || c.Day != "2026-03-01" {
		t.Fatalf("counters %+v", c)
	}
	e.clk.Advance(24 * time.Hour)
	meter("d2", true, time.Time{})
	c = must(svc.Counters(ctx(), "acct_ev", ""))
	if c.Today.Requests != 1 || c.ThisMonth.Requests != 5 || c.ThisMonth.CachedUnits != 3 {
		t.Fatalf("next day counters %+v", c)
	}
	// Retention: delete what is older than a day; rollups stay.
	n, err := svc.DeleteRecordsBefore(ctx(), e.clk.Now().Add(-24*time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("DeleteRecordsBefore: %d %v", n, err)
	}
	if recs := allRecords(t, svc, "acct_ev"); len(recs) != 4 {
		t.Fatalf("%d records left, want 4", len(recs))
	}
	rows := must(svc.Summary(ctx(), usage.SummaryQuery{AccountID: "acct_ev", From: "2026-02-01", To: "2026-03-31", GroupBy: []usage.GroupField{usage.GroupDate}}))
	if len(rows) != 3 || rows[0].Date != "2026-02-26" || rows[0].Requests != 1 {
		t.Fatalf("rollups after retention: %+v", rows)
	}
	// A replay of a deleted record's key still charges nothing new.
	bal := must(led.Balance(ctx(), "acct_ev"))
	r := mustMeter(t, svc, usage.MeterParams{Record: usage.Record{AccountID: "acct_ev", Endpoint: "verify", StatusCode: 200, Units: 1, Cost: amt(t, "1"), CreatedAt: old}, IdempotencyKey: "o1"})
	if !r.Replayed || !r.Charged.Equal(amt(t, "1")) || r.Record.ID == "" {
		t.Fatalf("replay after retention: %+v", r)
	}
	wantAmount(t, "balance", must(led.Balance(ctx(), "acct_ev")), bal.String())
}

// testUsageDuplicateIDs: a record ID is unique per account, whatever its
// creation time; another account may use the same ID. A duplicate charges
// nothing and writes nothing.
func testUsageDuplicateIDs(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	led, svc := e.metering(t, nil, nil)
	fundedAccount(t, led, "acct_a", "10", credits.Policy{})
	fundedAccount(t, led, "acct_b", "10", credits.Policy{})
	at := e.clk.Now()
	rec := usage.Record{ID: "log_same", AccountID: "acct_a", Model: "m", StatusCode: 200, Cost: amt(t, "1"), CreatedAt: at}
	mustMeter(t, svc, usage.MeterParams{Record: rec, IdempotencyKey: "first"})
	for i, when := range []time.Time{at, at.Add(time.Second), at.Add(-time.Hour)} {
		dup := rec
		dup.CreatedAt = when
		if _, err := svc.Meter(ctx(), usage.MeterParams{Record: dup, IdempotencyKey: fmt.Sprint("dup-", i)}); !errors.Is(err, usage.ErrDuplicateRecord) {
			t.Fatalf("same ID at %s: %v, want ErrDuplicateRecord", when.Sub(at), err)
		}
	}
	wantAmount(t, "balance after duplicates", must(led.Balance(ctx(), "acct_a")), "9")
	if n := len(allRecords(t, svc, "acct_a")); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
	other := rec
	other.AccountID = "acct_b"
	mustMeter(t, svc, usage.MeterParams{Record: other, IdempotencyKey: "first"})
	wantAmount(t, "other account's balance", must(led.Balance(ctx(), "acct_b")), "9")
}
