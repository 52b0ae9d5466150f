package pgstore_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/pgstore"
	"github.com/keyledger/keyledger/store/storetest"
)

// open opens a Store on dsn that the test closes.
func open(tb testing.TB, dsn string, opts *pgstore.Options) *pgstore.Store {
	tb.Helper()
	var o pgstore.Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		// Migration logs would interleave with benchmark result lines.
		o.Logger = slog.New(slog.DiscardHandler)
	}
	st, err := pgstore.Open(context.Background(), dsn, &o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

// newStore is a Store on a fresh schema of its own.
func newStore(tb testing.TB) store.Store { return store.Driver(open(tb, pgtest.DSN(tb), nil)) }

func TestConformance(t *testing.T) { storetest.Run(t, newStore) }

func BenchmarkStore(b *testing.B) { storetest.Bench(b, newStore) }
