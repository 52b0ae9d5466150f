package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

// meterEnv is a store with funded accounts and a credits Service to build
// meter requests, for tests that call MeterUsage with batches of their own.
type meterEnv struct {
	s   *db
	led *credits.Service
	now time.Time
}

func newMeterEnv(t *testing.T, accounts ...string) *meterEnv {
	t.Helper()
	ctx := context.Background()
	s, err := open(ctx, filepath.Join(t.TempDir(), "k.db"), &Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	led, err := credits.NewService(s, &credits.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close(ctx) })
	for _, id := range accounts {
		if _, err := led.Open(ctx, id, credits.Policy{}); err != nil {
			t.Fatal(err)
		}
		if _, err := led.Purchase(ctx, credits.CreditParams{AccountID: id, Amount: credits.AmountFromInt(100), IdempotencyKey: "funds"}); err != nil {
			t.Fatal(err)
		}
	}
	return &meterEnv{s: s, led: led, now: time.Now().UTC()}
}

// debit is a meter request charging cost to acct under key.
func (e *meterEnv) debit(t *testing.T, acct, key string, cost int64) usage.MeterRequest {
	t.Helper()
	amt := credits.AmountFromInt(cost)
	sp, err := e.led.PrepareDebit(credits.DebitParams{AccountID: acct, Amount: amt, Reference: "log_" + key, Description: "m", IdempotencyKey: key})
	if err != nil {
		t.Fatal(err)
	}
	return e.req(acct, key, amt, sp)
}

func (e *meterEnv) req(acct, key string, cost credits.Amount, sp credits.SpendRequest) usage.MeterRequest {
	r := usage.MeterRequest{
		Record: usage.Record{ID: "log_" + key, AccountID: acct, Model: "m", StatusCode: 200, PromptTokens: 10,
			Cost: cost, CreatedAt: e.now},
		TimeZone: "UTC", Day: e.now.Format(time.DateOnly), IdempotencyKey: key, Spend: sp,
	}
	copy(r.Fingerprint[:], key)
	return r
}

func (e *meterEnv) meter(t *testing.T, reqs ...usage.MeterRequest) []usage.MeterOutcome {
	t.Helper()
	res := make([]usage.MeterOutcome, len(reqs))
	if err := e.s.MeterUsage(context.Background(), e.now, reqs, res); err != nil {
		t.Fatal(err)
	}
	return res
}

func (e *meterEnv) balance(t *testing.T, acct string) credits.Amount {
	t.Helper()
	st, err := e.s.LedgerAccount(context.Background(), acct, e.now)
	if err != nil {
		t.Fatal(err)
	}
	return st.Balance
}

func (e *meterEnv) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := e.s.r.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A statement of the batch's flush that fails for one request (here a
// trigger refusing its record) rolls the batch back; the requests then run
// one per transaction, so its batch mates commit and it alone fails,
// leaving nothing behind: no record, no meter key, no charge.
func TestMeterBatchIsolatesAFailingStatement(t *testing.T) {
	e := newMeterEnv(t, "acct_1", "acct_2")
	if _, err := e.s.w.Exec(`CREATE TRIGGER poison BEFORE INSERT ON usage_records WHEN NEW.id = 'log_bad'
		BEGIN SELECT RAISE(ABORT, 'poisoned record'); END`); err != nil {
		t.Fatal(err)
	}
	res := e.meter(t, e.debit(t, "acct_1", "a", 1), e.debit(t, "acct_2", "bad", 2), e.debit(t, "acct_2", "b", 3),
		e.debit(t, "acct_1", "c", 4))
	for i, want := range []bool{true, false, true, true} {
		if ok := res[i].Err == nil; ok != want {
			t.Fatalf("request %d: err %v", i, res[i].Err)
		}
	}
	if b := e.balance(t, "acct_1"); !b.Equal(credits.AmountFromInt(95)) {
		t.Errorf("acct_1 balance %s, want 95", b)
	}
	if b := e.balance(t, "acct_2"); !b.Equal(credits.AmountFromInt(97)) {
		t.Errorf("acct_2 balance %s, want 97", b)
	}
	if n := e.count(t, `SELECT count(*) FROM usage_ops WHERE key = 'bad'`); n != 0 {
		t.Errorf("failed request left %d meter keys", n)
	}
	if n := e.count(t, `SELECT count(*) FROM credit_ops WHERE key = 'bad'`); n != 0 {
		t.Errorf("failed request left %d ledger keys", n)
	}
	if n := e.count(t, `SELECT count(*) FROM usage_records`); n != 3 {
		t.Errorf("%d records, want 3", n)
	}
	if n := e.count(t, `SELECT requests FROM usage_rollups WHERE account_id = 'acct_2'`); n != 1 {
		t.Errorf("acct_2 rollup counts %d requests, want 1", n)
	}
}

// A replay in a batch makes the optimistic first attempt fail at flush
// (its key is taken); the batch runs again with lookups and the replay
// returns the first result while its batch mates commit once.
func TestMeterBatchWithReplays(t *testing.T) {
	e := newMeterEnv(t, "acct_1", "acct_2")
	first := e.meter(t, e.debit(t, "acct_1", "a", 5))
	if first[0].Err != nil {
		t.Fatal(first[0].Err)
	}
	res := e.meter(t, e.debit(t, "acct_2", "b", 1), e.debit(t, "acct_1", "a", 5), e.debit(t, "acct_1", "c", 2),
		e.debit(t, "acct_1", "c", 2))
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("request %d: %v", i, r.Err)
		}
	}
	if !res[1].Replayed || !res[3].Replayed || res[0].Replayed || res[2].Replayed {
		t.Fatalf("replayed flags %v %v %v %v", res[0].Replayed, res[1].Replayed, res[2].Replayed, res[3].Replayed)
	}
	if res[1].Entry.ID != first[0].Entry.ID || !res[1].Charged.Equal(credits.AmountFromInt(5)) {
		t.Errorf("replay returned entry %q charged %s, first %q", res[1].Entry.ID, res[1].Charged, first[0].Entry.ID)
	}
	if b := e.balance(t, "acct_1"); !b.Equal(credits.AmountFromInt(93)) {
		t.Errorf("acct_1 balance %s, want 93", b)
	}
	if n := e.count(t, `SELECT count(*) FROM usage_records WHERE account_id = 'acct_1'`); n != 2 {
		t.Errorf("%d records of acct_1, want 2", n)
	}
}

// The replay of a meter request that settled a hold must return the
// settlement, not ErrHoldSettled, when the optimistic attempt meets the
// settled hold before it knows the key is taken.
func TestMeterBatchReplaysASettlement(t *testing.T) {
	e := newMeterEnv(t, "acct_1")
	ctx := context.Background()
	h, err := e.led.Reserve(ctx, credits.ReserveParams{AccountID: "acct_1", Amount: credits.AmountFromInt(10), TTL: time.Hour,
		IdempotencyKey: "r"})
	if err != nil {
		t.Fatal(err)
	}
	cost := credits.AmountFromInt(4)
	sp, err := e.led.PrepareSettle(credits.SettleParams{HoldID: h.ID, Actual: cost, Reference: "log_s", Description: "m"})
	if err != nil {
		t.Fatal(err)
	}
	settle := e.req("acct_1", "s", cost, sp)
	if res := e.meter(t, settle); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	res := e.meter(t, e.debit(t, "acct_1", "x", 1), settle)
	if res[0].Err != nil || res[1].Err != nil || !res[1].Replayed || !res[1].Charged.Equal(cost) {
		t.Fatalf("results %+v / %+v", res[0], res[1])
	}
	if b := e.balance(t, "acct_1"); !b.Equal(credits.AmountFromInt(95)) {
		t.Errorf("balance %s, want 95", b)
	}
}

// A request that fails its own checks in a batch (insufficient funds,
// after its meter key was staged) is dropped from the stage: its batch
// mates on the same account commit and its key stays free.
func TestMeterBatchDropsAFailedRequest(t *testing.T) {
	e := newMeterEnv(t, "acct_1")
	reqs := []usage.MeterRequest{e.debit(t, "acct_1", "a", 60), e.debit(t, "acct_1", "b", 60), e.debit(t, "acct_1", "c", 30)}
	res := e.meter(t, reqs...)
	if res[0].Err != nil || res[2].Err != nil || res[1].Err == nil {
		t.Fatalf("results %v %v %v", res[0].Err, res[1].Err, res[2].Err)
	}
	if b := e.balance(t, "acct_1"); !b.Equal(credits.AmountFromInt(10)) {
		t.Errorf("balance %s, want 10", b)
	}
	if n := e.count(t, `SELECT count(*) FROM usage_ops WHERE key = 'b'`); n != 0 {
		t.Errorf("failed request left its meter key")
	}
	if seq := e.count(t, `SELECT seq FROM credit_accounts WHERE account_id = 'acct_1'`); seq != 3 {
		t.Fatalf("seq %d, want 3: purchase and two debits", seq)
	}
}

// A batch of credits spends with a replayed key: the optimistic attempt
// fails at flush and the batch runs again with lookups.
func TestSpendBatchWithReplay(t *testing.T) {
	e := newMeterEnv(t, "acct_1")
	ctx := context.Background()
	debit := func(key string) credits.SpendRequest {
		sp, err := e.led.PrepareDebit(credits.DebitParams{AccountID: "acct_1", Amount: credits.AmountFromInt(1), IdempotencyKey: key})
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	a := debit("a")
	res := make([]credits.SpendResult, 3)
	if err := e.s.ApplySpends(ctx, e.now, []credits.SpendRequest{a}, res[:1]); err != nil || res[0].Err != nil {
		t.Fatal(err, res[0].Err)
	}
	first := res[0].Entry
	if err := e.s.ApplySpends(ctx, e.now, []credits.SpendRequest{debit("b"), a, debit("c")}, res); err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("request %d: %v", i, r.Err)
		}
	}
	if res[1].Entry.ID != first.ID || res[1].Entry.Seq != first.Seq {
		t.Errorf("replay returned %+v, want %+v", res[1].Entry, first)
	}
	if b := e.balance(t, "acct_1"); !b.Equal(credits.AmountFromInt(97)) {
		t.Errorf("balance %s, want 97", b)
	}
}

// Batches larger than the biggest multi-row chunk are cut into chunks.
func TestMeterBatchLargerThanAChunk(t *testing.T) {
	e := newMeterEnv(t, "acct_1", "acct_2", "acct_3")
	var reqs []usage.MeterRequest
	for i := range maxChunk*2 + 3 {
		reqs = append(reqs, e.req(fmt.Sprint("acct_", 1+i%3), fmt.Sprint("k", i), credits.Amount{}, credits.SpendRequest{}))
	}
	for i, r := range e.meter(t, reqs...) {
		if r.Err != nil {
			t.Fatalf("request %d: %v", i, r.Err)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM usage_records`); n != len(reqs) {
		t.Errorf("%d records, want %d", n, len(reqs))
	}
	if n := e.count(t, `SELECT sum(requests) FROM usage_rollups`); n != len(reqs) {
		t.Errorf("rollups count %d, want %d", n, len(reqs))
	}
}

// Under a steady write load the WAL stays bounded: the background
// checkpointer copies it and the writer restarts it past WALRestartPages.
func TestWALStaysBounded(t *testing.T) {
	// An hour keeps the background checkpointer out of the way, so the
	// writer's own restart at WALRestartPages is measured alone; the
	// default (0: every 20ms) adds the background checkpoints, which a
	// loaded machine may schedule so that they meet the writer's and make
	// it skip a few (SQLite runs one checkpoint at a time); -1 is SQLite's
	// own scheme. With no restart at all the WAL reaches ~3,400 pages.
	for _, interval := range []time.Duration{time.Hour, 0, -1} {
		t.Run(fmt.Sprint(interval), func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "k.db")
			s, err := open(ctx, path, &Options{Logger: slog.New(slog.DiscardHandler), CheckpointInterval: interval, WALRestartPages: 100})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if (s.ckpt != nil) != (interval >= 0) {
				t.Fatalf("checkpointer running: %v", s.ckpt != nil)
			}
			var recs []usage.Record
			for i := range 3000 {
				recs = append(recs, usage.Record{ID: fmt.Sprint("log_", i), AccountID: fmt.Sprint("acct_", i%50), Model: "m",
					CreatedAt: time.Unix(int64(i), 0)})
			}
			for i := 0; i < len(recs); i += 10 {
				if err := s.ImportUsage(ctx, recs[i:i+10], "UTC"); err != nil {
					t.Fatal(err)
				}
			}
			fi, err := os.Stat(path + "-wal")
			if err != nil {
				t.Fatal(err)
			}
			limit := int64(400) // past WALRestartPages, with one transaction's frames
			switch {
			case interval == 0:
				limit = 1000 // a few skipped restarts, far below no restart
			case interval < 0:
				limit = 1100 // SQLite's own scheme restarts past 1,000 pages
			}
			if pages := fi.Size() / 4120; pages > limit {
				t.Errorf("WAL of %d pages after 300 transactions", pages)
			}
		})
	}
}

// TestCloseTwice: a second Close must not panic (the background
// checkpointer's stop channel is closed once).
func TestCloseTwice(t *testing.T) {
	for _, iv := range []time.Duration{0, -1} {
		st, err := open(context.Background(), filepath.Join(t.TempDir(), "twice.db"), &Options{CheckpointInterval: iv, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Close(); err != nil {
			t.Fatalf("interval %v: first Close: %v", iv, err)
		}
		_ = st.Close() // may report the closed pools; must not panic
	}
}

// TestAccountCacheSeesOtherWriters: the account states a spend batch
// caches must never hide a change made by another db on the same file
// (another process, detected by data_version) or by another write path of
// the same db (which empties the cache).
func TestAccountCacheSeesOtherWriters(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cache.db")
	discard := &Options{Logger: slog.New(slog.DiscardHandler)}
	a, err := open(ctx, path, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := open(ctx, path, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	la, _ := credits.NewService(a, &credits.Options{Logger: slog.New(slog.DiscardHandler)})
	lb, _ := credits.NewService(b, &credits.Options{Logger: slog.New(slog.DiscardHandler)})
	if _, err := la.Open(ctx, "acct_c", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	debit := func(svc *credits.Service, key string, want error) {
		t.Helper()
		_, err := svc.Debit(ctx, credits.DebitParams{AccountID: "acct_c", Amount: credits.AmountFromInt(1), IdempotencyKey: key})
		if !errors.Is(err, want) {
			t.Fatalf("debit %s: %v, want %v", key, err, want)
		}
	}
	if _, err := la.Purchase(ctx, credits.CreditParams{AccountID: "acct_c", Amount: credits.AmountFromInt(1), IdempotencyKey: "p1"}); err != nil {
		t.Fatal(err)
	}
	debit(la, "d1", nil)                          // a caches the account at balance 0
	debit(la, "d2", credits.ErrInsufficientFunds) // from the cache: still 0
	if _, err := lb.Purchase(ctx, credits.CreditParams{AccountID: "acct_c", Amount: credits.AmountFromInt(2), IdempotencyKey: "p2"}); err != nil {
		t.Fatal(err)
	}
	debit(la, "d3", nil) // b's purchase is seen through data_version
	debit(lb, "d4", nil) // and a's debit by b
	debit(la, "d5", credits.ErrInsufficientFunds)
	if _, err := la.Purchase(ctx, credits.CreditParams{AccountID: "acct_c", Amount: credits.AmountFromInt(1), IdempotencyKey: "p3"}); err != nil {
		t.Fatal(err)
	}
	debit(la, "d6", nil) // a's own purchase emptied a's cache
	bal, err := la.Balance(ctx, "acct_c")
	if err != nil || !bal.IsZero() {
		t.Fatalf("balance %s, %v; want 0", bal, err)
	}
}

// A grouped rollup read returns one row per kept combination, summed in
// SQL, and the sums equal the raw rows added up in Go, costs exactly (whole
// parts above 10^9, fractions down to 10^-18).
func TestGroupedRollupsSumInSQL(t *testing.T) {
	e := newMeterEnv(t)
	ctx := context.Background()
	day := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	costs := []string{"99999999999999.999999999999999999", "0.000000000000000001", "123456789.5", "7"}
	var recs []usage.Record
	for i := range 16 {
		c, err := credits.ParseAmount(costs[i%len(costs)])
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, usage.Record{ID: fmt.Sprintf("log_%02d", i), AccountID: "acct_g", KeyID: fmt.Sprintf("key_%d", i%2),
			Model: fmt.Sprintf("m%d", i/2%2), Endpoint: "/v1/x", StatusCode: 200, PromptTokens: int64(i), Cost: c,
			CreatedAt: day.Add(time.Duration(i/4%2) * 24 * time.Hour)})
	}
	if err := e.s.ImportUsage(ctx, recs, "UTC"); err != nil {
		t.Fatal(err)
	}
	q := usage.RollupQuery{AccountID: "acct_g", TimeZone: "UTC", FromDay: "2025-03-01", ToDay: "2025-03-02"}
	raw, _, err := e.s.UsageRollups(ctx, q)
	if err != nil || len(raw) != 8 { // 2 days × 2 models × 2 keys
		t.Fatalf("raw rows: %d, %v", len(raw), err)
	}
	for _, keep := range []usage.Grouping{{}, {Day: true}, {Model: true, Key: true}, {Day: true, Model: true, Key: true, Endpoint: true}} {
		want := map[usage.Rollup]*usage.Rollup{}
		for _, r := range raw {
			k := usage.Rollup{AccountID: r.AccountID, TimeZone: r.TimeZone}
			if keep.Day {
				k.Day = r.Day
			}
			if keep.Model {
				k.Model = r.Model
			}
			if keep.Key {
				k.KeyID = r.KeyID
			}
			if keep.Endpoint {
				k.Endpoint = r.Endpoint
			}
			if want[k] == nil {
				sum := k
				want[k] = &sum
			}
			want[k].Merge(&r)
		}
		gq := q
		gq.Grouped, gq.Keep = true, keep
		got, _, err := e.s.UsageRollups(ctx, gq)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("keep %+v: %d rows, want %d", keep, len(got), len(want))
		}
		for _, g := range got {
			k := g
			k.Requests, k.Errors, k.PromptTokens, k.CompletionTokens, k.Units, k.CachedUnits, k.Cost = 0, 0, 0, 0, 0, 0, credits.Amount{}
			w := want[k]
			if w == nil || g.Requests != w.Requests || g.PromptTokens != w.PromptTokens || !g.Cost.Equal(w.Cost) {
				t.Fatalf("keep %+v: got %+v, want %+v", keep, g, w)
			}
		}
	}
	empty := q
	empty.AccountID, empty.Grouped = "acct_none", true
	if got, _, err := e.s.UsageRollups(ctx, empty); err != nil || len(got) != 0 {
		t.Fatalf("no rollups: %d rows, %v; want none", len(got), err)
	}
}
