package account_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// sessionLog records the token hash of every session lookup.
type sessionLog struct {
	store.Store
	mu     sync.Mutex
	hashes [][32]byte
}

func (s *sessionLog) Session(ctx context.Context, h [32]byte) (account.Session, error) {
	s.mu.Lock()
	s.hashes = append(s.hashes, h)
	s.mu.Unlock()
	return s.Store.Session(ctx, h)
}

func (s *sessionLog) take() [][32]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	hs := s.hashes
	s.hashes = nil
	return hs
}

// A forged session token that shares a real token's prefix, half or all
// but its last character is looked up by its own SHA-256 — the store sees
// only the 32-byte digest, so no comparison of token bytes exists whose
// time could depend on how much of the token matches — and is invalid.
func TestForgedSessionTokenCostsOneLookupOfItsOwnHash(t *testing.T) {
	ctx := context.Background()
	st := &sessionLog{Store: store.Driver(memstore.New())}
	svc, err := account.NewService(st, &account.Options{Argon2: account.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 16}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Create(ctx, account.CreateParams{Name: "T", Email: "t@example.com", Password: "correct horse battery"}); err != nil {
		t.Fatal(err)
	}
	tok, _, err := svc.Login(ctx, "t@example.com", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	real := tok.Reveal()
	flip := func(c byte) byte {
		if c == 'A' {
			return 'B'
		}
		return 'A'
	}
	forge := func(keep int) string {
		b := []byte(real)
		for i := keep; i < len(b); i++ {
			b[i] = flip(b[i])
		}
		return string(b)
	}
	realHash := sha256.Sum256([]byte(real))
	st.take()
	for name, forged := range map[string]string{
		"half-match": forge(len(real) / 2), "all-but-one": forge(len(real) - 1),
	} {
		if _, err := svc.VerifySession(ctx, account.Secret(forged)); !errors.Is(err, account.ErrSessionInvalid) {
			t.Errorf("%s: %v, want ErrSessionInvalid", name, err)
		}
		if hs := st.take(); len(hs) != 1 || hs[0] != sha256.Sum256([]byte(forged)) || hs[0] == realHash {
			t.Errorf("%s: lookups %x, want one of the forged token's own SHA-256", name, hs)
		}
	}
}
