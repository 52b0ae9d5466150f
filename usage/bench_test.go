package usage_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/store/storetest"
)

// The benchmarks the usage issue names, each beside its naive alternative
// in the same run. Meter bodies are storetest's shared benchmarks.

func newMemory(testing.TB) store.Store { return memstore.New() }

func newSQLite(tb testing.TB) store.Store {
	st, err := sqlitestore.Open(context.Background(), filepath.Join(tb.TempDir(), "bench.db"), &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func BenchmarkMeter(b *testing.B) {
	b.Run("memory", func(b *testing.B) { storetest.BenchMeter(b, newMemory) })
	b.Run("sqlite", func(b *testing.B) { storetest.BenchMeter(b, newSQLite) })
}

// BenchmarkMeterParallel: 64 callers (32 × GOMAXPROCS) in flight over 64
// accounts; on SQLite the Recorder group-commits them.
func BenchmarkMeterParallel(b *testing.B) {
	b.Run("memory", func(b *testing.B) { storetest.BenchMeterParallel(b, newMemory, 0) })
	b.Run("sqlite", func(b *testing.B) { storetest.BenchMeterParallel(b, newSQLite, 0) })
}

// BenchmarkMeterNaive is BenchmarkMeterParallel/sqlite without group
// commit: one transaction per record, as a hand-written meter would do.
func BenchmarkMeterNaive(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { storetest.BenchMeterParallel(b, newSQLite, 1) })
}
