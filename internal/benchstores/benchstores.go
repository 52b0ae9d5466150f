// Package benchstores opens the three backends for the domain packages'
// benchmarks, each as a storetest.NewStoreFunc: a fresh memstore, a SQLite
// file in the benchmark's temp dir, and a PostgreSQL schema of its own at
// KEYLEDGER_TEST_POSTGRES (skipped when it is unset). Logs are discarded.
package benchstores

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
)

// Memory returns an empty memstore.
func Memory(testing.TB) store.Store { return store.Driver(memstore.New()) }

// SQLite returns a sqlitestore on a new file.
func SQLite(tb testing.TB) store.Store {
	st, err := sqlitestore.Open(context.Background(), filepath.Join(tb.TempDir(), "bench.db"), &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return store.Driver(st)
}

// Postgres returns a pgstore on a schema of its own, or skips.
func Postgres(tb testing.TB) store.Store {
	st, err := pgstore.Open(context.Background(), pgtest.DSN(tb), &pgstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return store.Driver(st)
}
