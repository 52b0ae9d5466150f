package sqlitestore_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/store/storetest"
)

func newStore(t testing.TB) store.Store {
	// Migration logs would interleave with benchmark result lines.
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "keyledger.db"),
		&sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return store.Driver(st)
}

func TestConformance(t *testing.T) { storetest.Run(t, newStore) }

// TestConformanceProcessHolds runs the suite with holds kept in the
// process (Options.ProcessHolds), which its Service-level tests use.
func TestConformanceProcessHolds(t *testing.T) {
	storetest.Run(t, func(t testing.TB) store.Store {
		st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "keyledger.db"),
			&sqlitestore.Options{Logger: slog.New(slog.DiscardHandler), ProcessHolds: true})
		if err != nil {
			t.Fatal(err)
		}
		return store.Driver(st)
	})
}

func BenchmarkStore(b *testing.B) { storetest.Bench(b, newStore) }
