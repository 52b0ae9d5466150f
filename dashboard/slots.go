package dashboard

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// SecretSlots holds a new (or rotated) key's secret for the moment between
// the form's POST and the GET that shows it once (POST → redirect → GET),
// so that reloading the page never creates a second key. The dashboard
// stores only ciphertext (AES-GCM under a key derived from CSRFSecret,
// bound to the slot id and the account), never the secret itself.
//
// Several instances behind one load balancer need a shared implementation
// (and the same CSRFSecret); the default keeps the slots in the process.
type SecretSlots interface {
	// Put stores sealed under id until expires.
	Put(ctx context.Context, id string, sealed []byte, expires time.Time) error
	// Take returns and deletes the slot id. It returns ErrNotFound if there
	// is none or it expired at or before now.
	Take(ctx context.Context, id string, now time.Time) ([]byte, error)
}

// slotTTL is how long a new key waits for its page.
const slotTTL = 5 * time.Minute

// memSlots is the in-process SecretSlots.
type memSlots struct {
	mu sync.Mutex
	m  map[string]memSlot
}

type memSlot struct {
	sealed  []byte
	expires time.Time
}

func (s *memSlots) Put(_ context.Context, id string, sealed []byte, expires time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]memSlot{}
	}
	for k, v := range s.m { // the map stays as small as the slots in flight
		if v.expires.Before(expires.Add(-slotTTL)) {
			delete(s.m, k)
		}
	}
	s.m[id] = memSlot{sealed: append([]byte(nil), sealed...), expires: expires}
	return nil
}

func (s *memSlots) Take(_ context.Context, id string, now time.Time) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[id]
	delete(s.m, id)
	if !ok || !now.Before(v.expires) {
		return nil, ErrNotFound
	}
	return v.sealed, nil
}

// slotSecret is what a slot holds.
type slotSecret struct {
	Raw, KeyID string
	Rotated    bool
}

func (h *Handler) slotAEAD() (cipher.AEAD, error) {
	m := hmac.New(sha256.New, h.secret)
	m.Write([]byte("keyledger dashboard new-key slot v1"))
	block, err := aes.NewCipher(m.Sum(nil))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// putSecret seals s for the account into a new slot and returns its id.
func (h *Handler) putSecret(ctx context.Context, accountID string, s slotSecret) (string, error) {
	var idb [16]byte
	_, _ = rand.Read(idb[:])
	id := hex.EncodeToString(idb[:])
	aead, err := h.slotAEAD()
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(s.Raw)+64)
	_, _ = rand.Read(nonce)
	rot := "0"
	if s.Rotated {
		rot = "1"
	}
	plain := s.Raw + "\x00" + s.KeyID + "\x00" + rot
	sealed := aead.Seal(nonce, nonce, []byte(plain), []byte(id+"|"+accountID))
	if err := h.slots.Put(ctx, id, sealed, h.o.Now().Add(slotTTL)); err != nil {
		return "", fmt.Errorf("dashboard: storing the new key's slot: %w", err)
	}
	return id, nil
}

// takeSecret opens and empties a slot of the account; ErrNotFound if it
// is gone, expired or another account's.
func (h *Handler) takeSecret(ctx context.Context, accountID, id string) (slotSecret, error) {
	if len(id) != 32 {
		return slotSecret{}, ErrNotFound
	}
	if _, err := hex.DecodeString(id); err != nil {
		return slotSecret{}, ErrNotFound
	}
	sealed, err := h.slots.Take(ctx, id, h.o.Now())
	if err != nil {
		return slotSecret{}, err
	}
	aead, err := h.slotAEAD()
	if err != nil {
		return slotSecret{}, err
	}
	if len(sealed) < aead.NonceSize() {
		return slotSecret{}, ErrNotFound
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(id+"|"+accountID))
	if err != nil {
		return slotSecret{}, ErrNotFound
	}
	parts := strings.Split(string(plain), "\x00")
	if len(parts) != 3 {
		return slotSecret{}, errors.New("dashboard: malformed slot")
	}
	return slotSecret{Raw: parts[0], KeyID: parts[1], Rotated: parts[2] == "1"}, nil
}
