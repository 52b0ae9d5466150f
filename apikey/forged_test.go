package apikey_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"sync"
	"testing"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// Why verification time does not depend on how much of a forged key
// matches a real one, asserted structurally rather than timed: a
// well-formed key is hashed whole (SHA-256 over a fixed-length input) and
// the store is asked for that hash and nothing else — the only argument of
// the lookup is the 32-byte digest, so no comparison anywhere sees the
// raw key's bytes, and a forged key sharing any prefix with a real one
// hashes to an unrelated digest. BenchmarkVerifyForged shows the costs.

// hashLog records the hash of every APIKeyByHash call and counts the
// other read calls through which a key could be found by its bytes.
type hashLog struct {
	store.Store
	mu     sync.Mutex
	hashes [][32]byte
	other  int
}

func (h *hashLog) APIKeyByHash(ctx context.Context, hash [32]byte) (apikey.Match, error) {
	h.mu.Lock()
	h.hashes = append(h.hashes, hash)
	h.mu.Unlock()
	return h.Store.APIKeyByHash(ctx, hash)
}

func (h *hashLog) APIKey(ctx context.Context, accountID, keyID string) (apikey.APIKey, error) {
	h.mu.Lock()
	h.other++
	h.mu.Unlock()
	return h.Store.APIKey(ctx, accountID, keyID)
}

func (h *hashLog) ListAPIKeys(ctx context.Context, accountID, afterID string, limit int) ([]apikey.APIKey, error) {
	h.mu.Lock()
	h.other++
	h.mu.Unlock()
	return h.Store.ListAPIKeys(ctx, accountID, afterID, limit)
}

func (h *hashLog) take() ([][32]byte, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hs, o := h.hashes, h.other
	h.hashes, h.other = nil, 0
	return hs, o
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// withChecksum appends the key format's checksum (CRC32 IEEE of prefix and
// body, base62, fixed width) so that a forged key passes the format check.
func withChecksum(prefixBody string) apikey.RawKey {
	sum := crc32.ChecksumIEEE([]byte(prefixBody))
	var enc [apikey.ChecksumLen]byte
	for i := apikey.ChecksumLen - 1; i >= 0; i-- {
		enc[i] = base62[sum%62]
		sum /= 62
	}
	return apikey.RawKey(prefixBody + string(enc[:]))
}

// forgeries returns keys that pass the format check and share ever more of
// real's body: only the prefix, the first half, all but the last character.
func forgeries(t testing.TB, f *apikey.Format, real apikey.RawKey) map[string]apikey.RawKey {
	t.Helper()
	p, err := f.Parse(real)
	if err != nil {
		t.Fatal(err)
	}
	prefix := p.Type.Prefix
	body := real.Reveal()[len(prefix) : len(prefix)+apikey.BodyLen]
	other := []byte(body)
	for i := range other { // a body differing from real's in every character
		other[i] = base62[(indexOf(body[i])+31)%62]
	}
	out := map[string]apikey.RawKey{
		"prefix-match":  withChecksum(prefix + string(other)),
		"half-match":    withChecksum(prefix + body[:apikey.BodyLen/2] + string(other[apikey.BodyLen/2:])),
		"all-but-one":   withChecksum(prefix + body[:apikey.BodyLen-1] + string(other[apikey.BodyLen-1:])),
		"full-mismatch": withChecksum(prefix[:len(prefix)-1] + "x" + string(other)),
	}
	for name, k := range out {
		if _, err := f.Parse(k); err != nil && name != "full-mismatch" {
			t.Fatalf("%s forgery %q does not parse: %v", name, k.Reveal(), err)
		}
	}
	return out
}

func indexOf(c byte) int {
	for i := range len(base62) {
		if base62[i] == c {
			return i
		}
	}
	return 0
}

// newForgeryEnv returns a key Service over st and one real key.
func newForgeryEnv(t testing.TB, st store.Store, opts *apikey.Options) (*apikey.Service, apikey.RawKey) {
	t.Helper()
	ctx := context.Background()
	acc, err := account.NewService(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := acc.Create(ctx, account.CreateParams{Name: "T", Email: "t@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := apikey.NewService(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(ctx) })
	raw, _, err := svc.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "real"})
	if err != nil {
		t.Fatal(err)
	}
	return svc, raw
}

func TestForgedKeyCostsOneLookupOfItsOwnHash(t *testing.T) {
	ctx := context.Background()
	st := &hashLog{Store: store.Driver(memstore.New())}
	// No caches: every Verify reaches the store, so its calls are visible.
	svc, real := newForgeryEnv(t, st, &apikey.Options{RefreshInterval: -1, LastUsedInterval: -1})
	realHash := sha256.Sum256([]byte(real.Reveal()))
	st.take()

	if _, err := svc.Verify(ctx, real); err != nil {
		t.Fatal(err)
	}
	if hs, other := st.take(); len(hs) != 1 || hs[0] != realHash || other != 0 {
		t.Fatalf("real key: lookups %x, other reads %d; want one lookup of its SHA-256", hs, other)
	}
	for name, forged := range forgeries(t, svc.Format(), real) {
		_, err := svc.Verify(ctx, forged)
		hs, other := st.take()
		if name == "full-mismatch" { // the prefix is no key type's: rejected before any hash
			if !errors.Is(err, apikey.ErrMalformed) || len(hs) != 0 || other != 0 {
				t.Errorf("%s: %v, lookups %d, other reads %d; want ErrMalformed and no store call", name, err, len(hs), other)
			}
			continue
		}
		want := sha256.Sum256([]byte(forged.Reveal()))
		if !errors.Is(err, apikey.ErrUnknown) {
			t.Errorf("%s: Verify = %v, want ErrUnknown", name, err)
		}
		if len(hs) != 1 || hs[0] != want || hs[0] == realHash || other != 0 {
			t.Errorf("%s: lookups %x, other reads %d; want exactly one lookup, of the forged key's own SHA-256", name, hs, other)
		}
	}
}

func TestForgedKeyIsNegativelyCachedByHash(t *testing.T) {
	ctx := context.Background()
	st := &hashLog{Store: store.Driver(memstore.New())}
	svc, real := newForgeryEnv(t, st, &apikey.Options{LastUsedInterval: -1})
	for name, forged := range forgeries(t, svc.Format(), real) {
		if name == "full-mismatch" {
			continue
		}
		st.take()
		for range 3 {
			if _, err := svc.Verify(ctx, forged); !errors.Is(err, apikey.ErrUnknown) {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if hs, other := st.take(); len(hs) != 1 || other != 0 {
			t.Errorf("%s: 3 verifies made %d lookups and %d other reads, want 1 and 0", name, len(hs), other)
		}
	}
}

// BenchmarkVerifyForged measures Verify of forged keys that share ever more
// of a real key: the costs are equal (one SHA-256 of a fixed-length input
// and a lookup of the digest). "cached" serves the verdict from the
// negative cache, "store" reads memstore every time.
func BenchmarkVerifyForged(b *testing.B) {
	ctx := context.Background()
	for _, mode := range []struct {
		name string
		opts *apikey.Options
	}{
		{"cached", &apikey.Options{LastUsedInterval: -1}},
		{"store", &apikey.Options{RefreshInterval: -1, LastUsedInterval: -1}},
	} {
		svc, real := newForgeryEnv(b, store.Driver(memstore.New()), mode.opts)
		forged := forgeries(b, svc.Format(), real)
		for _, name := range []string{"prefix-match", "half-match", "all-but-one"} {
			k := forged[name]
			b.Run(mode.name+"/"+name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := svc.Verify(ctx, k); !errors.Is(err, apikey.ErrUnknown) {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// FuzzVerify: Verify never panics on any presented key, accepts exactly
// the real key, and refuses everything else as malformed or unknown.
func FuzzVerify(f *testing.F) {
	ctx := context.Background()
	svc, real := newForgeryEnv(f, store.Driver(memstore.New()), &apikey.Options{LastUsedInterval: -1})
	f.Add(real.Reveal())
	for _, k := range forgeries(f, svc.Format(), real) {
		f.Add(k.Reveal())
	}
	f.Add("")
	f.Add("forii_sk_\x00\xff")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := svc.Verify(ctx, apikey.RawKey(s))
		switch {
		case s == real.Reveal():
			if err != nil || v.KeyID == "" {
				t.Fatalf("the real key: %v", err)
			}
		case err == nil:
			t.Fatalf("accepted %q", s)
		case !errors.Is(err, apikey.ErrMalformed) && !errors.Is(err, apikey.ErrUnknown):
			t.Fatalf("%q: %v, want ErrMalformed or ErrUnknown", s, err)
		}
	})
}
