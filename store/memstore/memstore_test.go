package memstore_test

import (
	"testing"

	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/store/storetest"
)

func newStore(testing.TB) store.Store { return store.Driver(memstore.New()) }

func TestConformance(t *testing.T) { storetest.Run(t, newStore) }

func BenchmarkStore(b *testing.B) { storetest.Bench(b, newStore) }
