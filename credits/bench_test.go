package credits_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/store/pgstore"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/store/storetest"
)

// The benchmarks the credits issue names, side by side with the naive
// alternative (one SQLite transaction per debit) in the same run. The
// bodies are storetest's shared ledger benchmarks.

func newMemory(testing.TB) store.Store { return memstore.New() }

func newSQLite(tb testing.TB) store.Store {
	st, err := sqlitestore.Open(context.Background(), filepath.Join(tb.TempDir(), "bench.db"), &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// newPostgres is a store on a schema of its own at KEYLEDGER_TEST_POSTGRES;
// the postgres benchmarks skip when it is unset.
func newPostgres(tb testing.TB) store.Store {
	st, err := pgstore.Open(context.Background(), pgtest.DSN(tb), &pgstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func BenchmarkDebit(b *testing.B) {
	b.Run("memory", func(b *testing.B) { storetest.BenchLedgerDebit(b, newMemory) })
	b.Run("sqlite", func(b *testing.B) { storetest.BenchLedgerDebit(b, newSQLite) })
	b.Run("postgres", func(b *testing.B) { storetest.BenchLedgerDebit(b, newPostgres) })
}

// BenchmarkDebitParallel: 64 callers (32 × GOMAXPROCS) in flight, spread
// over 64 accounts (one per caller: many customers), or all on one account
// (-hot: one busy customer). On SQLite and PostgreSQL the Service
// group-commits them.
func BenchmarkDebitParallel(b *testing.B) {
	b.Run("memory", func(b *testing.B) { storetest.BenchLedgerDebitParallel(b, newMemory, 64, 0) })
	b.Run("sqlite", func(b *testing.B) { storetest.BenchLedgerDebitParallel(b, newSQLite, 64, 0) })
	b.Run("sqlite-hot", func(b *testing.B) { storetest.BenchLedgerDebitParallel(b, newSQLite, 1, 0) })
	b.Run("postgres", func(b *testing.B) { storetest.BenchLedgerDebitParallel(b, newPostgres, 64, 0) })
	b.Run("postgres-hot", func(b *testing.B) { storetest.BenchLedgerDebitParallel(b, newPostgres, 1, 0) })
}

// BenchmarkDebitNaive is BenchmarkDebitParallel without group commit: one
// transaction per debit, as a hand-written ledger would do.
func BenchmarkDebitNaive(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { storetest.BenchLedgerDebitParallel(b, newSQLite, 64, 1) })
	b.Run("sqlite-hot", func(b *testing.B) { storetest.BenchLedgerDebitParallel(b, newSQLite, 1, 1) })
	b.Run("postgres", func(b *testing.B) { storetest.BenchLedgerDebitParallel(b, newPostgres, 64, 1) })
	b.Run("postgres-hot", func(b *testing.B) { storetest.BenchLedgerDebitParallel(b, newPostgres, 1, 1) })
}

func BenchmarkReserveSettle(b *testing.B) {
	b.Run("memory", func(b *testing.B) { storetest.BenchLedgerReserveSettle(b, newMemory) })
	b.Run("sqlite", func(b *testing.B) { storetest.BenchLedgerReserveSettle(b, newSQLite) })
}
