package sqlitestore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/store/storetest"
)

func newStore(t testing.TB) store.Store {
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "keyledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestConformance(t *testing.T) { storetest.Run(t, newStore) }

func BenchmarkStore(b *testing.B) { storetest.Bench(b, newStore) }
