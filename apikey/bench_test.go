package apikey_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/store/pgstore"
	"github.com/keyledger/keyledger/store/sqlitestore"
)

// benchKey returns a Service over st (with opts) and one active key.
func benchKey(b *testing.B, st store.Store, opts *apikey.Options) (*apikey.Service, apikey.RawKey) {
	b.Helper()
	ctx := context.Background()
	acc, err := account.NewService(st, &account.Options{Argon2: account.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 16}})
	if err != nil {
		b.Fatal(err)
	}
	a, err := acc.Create(ctx, account.CreateParams{Name: "Bench", Email: "bench@example.com"})
	if err != nil {
		b.Fatal(err)
	}
	svc, err := apikey.NewService(st, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = svc.Close(ctx) })
	raw, _, err := svc.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "bench", Models: []string{"forii/deepseek-v3"}})
	if err != nil {
		b.Fatal(err)
	}
	return svc, raw
}

func sqliteStore(b *testing.B) store.Store {
	b.Helper()
	st, err := sqlitestore.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"),
		&sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	return store.Driver(st)
}

// postgresStore is a store on a schema of its own at
// KEYLEDGER_TEST_POSTGRES; the postgres benchmarks skip when it is unset.
func postgresStore(b *testing.B) store.Store {
	b.Helper()
	st, err := pgstore.Open(context.Background(), pgtest.DSN(b), &pgstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	return store.Driver(st)
}

// BenchmarkVerifyCached is the hot path: a known key served from the
// cache. Budget: ≤ 250 ns/op, ≤ 1 alloc/op.
func BenchmarkVerifyCached(b *testing.B) {
	svc, raw := benchKey(b, store.Driver(memstore.New()), nil)
	ctx := context.Background()
	if _, err := svc.Verify(ctx, raw); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := svc.Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCachedParallel verifies one key from every P: the cache
// takes shared locks only, so there is no convoy.
func BenchmarkVerifyCachedParallel(b *testing.B) {
	svc, raw := benchKey(b, store.Driver(memstore.New()), nil)
	ctx := context.Background()
	if _, err := svc.Verify(ctx, raw); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := svc.Verify(ctx, raw); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkVerifyBadChecksum is a mistyped or forged key: rejected by the
// checksum before any hash or store call. Budget: ≤ 100 ns/op; the store
// call count is asserted (0).
func BenchmarkVerifyBadChecksum(b *testing.B) {
	st := &countingStore{Store: store.Driver(memstore.New())}
	svc, raw := benchKey(b, st, nil)
	bad := corrupt(raw)
	ctx := context.Background()
	before := st.calls.Load()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := svc.Verify(ctx, bad); err != apikey.ErrMalformed {
			b.Fatal(err)
		}
	}
	if n := st.calls.Load() - before; n != 0 {
		b.Fatalf("%d store calls for malformed keys", n)
	}
}

// BenchmarkVerifyMiss is a known key read from the store on every call
// (caches disabled). Budget on SQLite: ≤ 20 µs/op; on PostgreSQL it is one
// network round trip.
func BenchmarkVerifyMiss(b *testing.B) {
	for _, c := range []struct {
		name string
		st   func(*testing.B) store.Store
	}{
		{"sqlite", sqliteStore},
		{"postgres", postgresStore},
		{"memory", func(*testing.B) store.Store { return store.Driver(memstore.New()) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			svc, raw := benchKey(b, c.st(b), &apikey.Options{RefreshInterval: -1})
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := svc.Verify(ctx, raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyBcryptPeer is what a naive implementation does: keys
// stored as bcrypt hashes (cost 10), found by an ID embedded in the key and
// checked with bcrypt on every request, without a cache (a cache keyed by
// the raw key would keep raw keys in memory).
func BenchmarkVerifyBcryptPeer(b *testing.B) {
	raw := "sk_live_0123456789abcdefghijklmnopqrstuvwxyzAB"
	hash, err := bcrypt.GenerateFromPassword([]byte(raw), 10)
	if err != nil {
		b.Fatal(err)
	}
	byID := map[string][]byte{raw[:16]: hash}
	b.ReportAllocs()
	for b.Loop() {
		h, ok := byID[raw[:16]]
		if !ok || bcrypt.CompareHashAndPassword(h, []byte(raw)) != nil {
			b.Fatal("naive verify failed")
		}
	}
}

// BenchmarkVerifyAndBind is a request's whole key work: Verify from the
// cache, Bind the request context, release it at the end.
func BenchmarkVerifyAndBind(b *testing.B) {
	svc, raw := benchKey(b, store.Driver(memstore.New()), nil)
	parent, cancel := context.WithCancel(context.Background()) // like a request context
	defer cancel()
	if _, err := svc.Verify(parent, raw); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		v, err := svc.Verify(parent, raw)
		if err != nil {
			b.Fatal(err)
		}
		_, release := svc.Bind(parent, v)
		release()
	}
}
