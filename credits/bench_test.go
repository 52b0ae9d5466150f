package credits_test

import (
	"testing"

	"github.com/keyledger/keyledger/internal/benchstores"
	"github.com/keyledger/keyledger/store/storetest"
)

// The benchmarks the credits issue names, side by side with the naive
// alternative (one SQLite transaction per debit) in the same run. The
// bodies are storetest's shared ledger benchmarks.

var (
	newMemory   = benchstores.Memory
	newSQLite   = benchstores.SQLite
	newPostgres = benchstores.Postgres // skips without KEYLEDGER_TEST_POSTGRES
)

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
