package usage_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/benchstores"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/store/storetest"
	"github.com/keyledger/keyledger/usage"
)

// The benchmarks the usage issue names, each beside its naive alternative
// in the same run. Meter bodies are storetest's shared benchmarks.

var (
	newMemory   = benchstores.Memory
	newSQLite   = benchstores.SQLite
	newPostgres = benchstores.Postgres // skips without KEYLEDGER_TEST_POSTGRES
)

func BenchmarkMeter(b *testing.B) {
	b.Run("memory", func(b *testing.B) { storetest.BenchMeter(b, newMemory) })
	b.Run("sqlite", func(b *testing.B) { storetest.BenchMeter(b, newSQLite) })
	b.Run("postgres", func(b *testing.B) { storetest.BenchMeter(b, newPostgres) })
}

// BenchmarkMeterParallel: storetest.MeterCallers (1,024) callers in flight
// over 64 accounts; on SQLite and PostgreSQL the Recorder group-commits
// them.
func BenchmarkMeterParallel(b *testing.B) {
	b.Run("memory", func(b *testing.B) { storetest.BenchMeterParallel(b, newMemory, 0, storetest.MeterCallers) })
	b.Run("sqlite", func(b *testing.B) { storetest.BenchMeterParallel(b, newSQLite, 0, storetest.MeterCallers) })
	b.Run("postgres", func(b *testing.B) { storetest.BenchMeterParallel(b, newPostgres, 0, storetest.MeterCallers) })
}

// BenchmarkMeterNaive is BenchmarkMeterParallel without group commit: one
// transaction per record, as a hand-written meter would do, with the same
// callers.
func BenchmarkMeterNaive(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { storetest.BenchMeterParallel(b, newSQLite, 1, storetest.MeterCallers) })
	b.Run("postgres", func(b *testing.B) { storetest.BenchMeterParallel(b, newPostgres, 1, storetest.MeterCallers) })
}

// BenchmarkMeterCallers shows how SQLite's durable meter throughput
// depends on the calls in flight, group commit beside one transaction per
// record: with 64 callers on 64 accounts no two records of a batch share
// an account's pages, so every record pays for its own. (BenchmarkMeter is
// the one-caller point; the counts are multiples of GOMAXPROCS up to 16,
// as RunParallel needs.)
func BenchmarkMeterCallers(b *testing.B) {
	for _, n := range []int{16, 64, 256, 1024} {
		b.Run(fmt.Sprintf("sqlite/callers=%d/group", n), func(b *testing.B) { storetest.BenchMeterParallel(b, newSQLite, 0, n) })
		b.Run(fmt.Sprintf("sqlite/callers=%d/naive", n), func(b *testing.B) { storetest.BenchMeterParallel(b, newSQLite, 1, n) })
	}
}

// The 1M-record data set of the Summary benchmarks: one account, 30 days ×
// 5 models × 20 keys, about 333 records per (day, model, key). It is built
// once per process through sqlitestore's bulk import (not 1M Meter calls)
// and cached in os.TempDir, keyed by schema version, so later runs reuse
// it. Only these benchmarks build it; tests never do.
var summary1M struct {
	once sync.Once
	path string
	err  error
}

const (
	summaryAccount = "acct_summary1m"
	summaryRecords = 1_000_000
)

var summaryMonth = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func summaryDB(b *testing.B) string {
	summary1M.once.Do(func() {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("keyledger-usage-summary1m-v%d.db", sqlitestore.LatestVersion()))
		if _, err := os.Stat(path); err == nil {
			summary1M.path = path
			return
		}
		summary1M.path, summary1M.err = path, buildSummaryDB(path)
	})
	if summary1M.err != nil {
		b.Fatal(summary1M.err)
	}
	return summary1M.path
}

func buildSummaryDB(path string) error {
	ctx := context.Background()
	tmp := path + ".building"
	for _, suffix := range []string{"", "-wal", "-shm"} {
		_ = os.Remove(tmp + suffix)
	}
	st, err := sqlitestore.Open(ctx, tmp, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	models := []string{"forii/deepseek-v3", "forii/llama-3.3-70b", "forii/qwen-2.5-72b", "forii/mistral-large", "forii/gemma-2-27b"}
	rng := rand.New(rand.NewPCG(1, 1))
	const chunk = 10_000
	recs := make([]usage.Record, 0, chunk)
	step := 30 * 24 * time.Hour / summaryRecords
	for i := range summaryRecords {
		recs = append(recs, usage.Record{
			ID: fmt.Sprintf("log_%08d", i), AccountID: summaryAccount, KeyID: fmt.Sprintf("key_%02d", rng.IntN(20)),
			AuthSource: "api_key", Endpoint: "/v1/chat/completions", Method: "POST", Model: models[rng.IntN(len(models))],
			StatusCode: 200, PromptTokens: rng.Int64N(4000), CompletionTokens: rng.Int64N(800),
			Cost: credits.AmountFromMinor(rng.Int64N(10_000_000), 7), CreatedAt: summaryMonth.Add(time.Duration(i) * step),
		})
		if len(recs) == chunk {
			if err := store.Driver(st).(interface {
				ImportUsage(context.Context, []usage.Record, string) error
			}).ImportUsage(ctx, recs, "UTC"); err != nil {
				st.Close()
				return err
			}
			recs = recs[:0]
		}
	}
	if err := st.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func benchSummary1M(b *testing.B, raw bool) {
	st, err := sqlitestore.Open(context.Background(), summaryDB(b), &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	svc, err := usage.NewService(store.Driver(st), nil)
	if err != nil {
		b.Fatal(err)
	}
	q := usage.SummaryQuery{AccountID: summaryAccount, From: "2025-01-01", To: "2025-01-30",
		GroupBy: []usage.GroupField{usage.GroupDate, usage.GroupModel}, TimeZone: "UTC", Raw: raw}
	b.ReportAllocs()
	for b.Loop() {
		rows, err := svc.Summary(context.Background(), q)
		if err != nil {
			b.Fatal(err)
		}
		if len(rows) != 30*5 {
			b.Fatalf("%d rows, want 150", len(rows))
		}
	}
}

// BenchmarkSummary1M: one month grouped by date × model from the daily
// rollups (3,000 rows for 1M records).
func BenchmarkSummary1M(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchSummary1M(b, false) })
}

// BenchmarkSummary1MRaw: the same query as a raw scan over the 1M records,
// what a schema without rollups would do.
func BenchmarkSummary1MRaw(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchSummary1M(b, true) })
}
