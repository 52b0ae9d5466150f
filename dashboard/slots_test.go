package dashboard

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A new key's slot opens once, only for its account, and not after its
// TTL; the sealed bytes never contain the secret.
func TestSecretSlots(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	spy := &spySlots{}
	h := &Handler{secret: []byte(strings.Repeat("k", 32)), slots: spy, o: Options{Now: func() time.Time { return now }}}
	s := slotSecret{Raw: "forii_sk_secretsecretsecret", KeyID: "key_1"}
	id, err := h.putSecret(ctx, "acct_a", s)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(spy.last), s.Raw) {
		t.Fatal("the slot holds the secret in clear")
	}
	if _, err := h.takeSecret(ctx, "acct_b", id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another account opened the slot: %v", err)
	}
	// Taking consumed it (even the failed attempt): one more slot for A.
	id, _ = h.putSecret(ctx, "acct_a", s)
	got, err := h.takeSecret(ctx, "acct_a", id)
	if err != nil || got != s {
		t.Fatalf("take: %+v %v", got, err)
	}
	if _, err := h.takeSecret(ctx, "acct_a", id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a slot opened twice: %v", err)
	}
	id, _ = h.putSecret(ctx, "acct_a", s)
	now = now.Add(slotTTL)
	if _, err := h.takeSecret(ctx, "acct_a", id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an expired slot opened: %v", err)
	}
	for _, bad := range []string{"", "zz", strings.Repeat("g", 32), "../../etc"} {
		if _, err := h.takeSecret(ctx, "acct_a", bad); !errors.Is(err, ErrNotFound) {
			t.Fatalf("slot id %q: %v", bad, err)
		}
	}
}

type spySlots struct {
	memSlots
	last []byte
}

func (s *spySlots) Put(ctx context.Context, id string, sealed []byte, exp time.Time) error {
	s.last = append([]byte(nil), sealed...)
	return s.memSlots.Put(ctx, id, sealed, exp)
}

// Through the handler: another signed-in account cannot open a slot.
func TestNewKeyPageIsTheCreatorsOnly(t *testing.T) {
	e := newEnv(t)
	b, _ := e.signup("Asha")
	r := b.submit("/dashboard/keys", "/dashboard/keys", url.Values{"name": {"k"}, "type": {"sdk"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("create: %d", r.status)
	}
	other, _ := e.signup("Bela")
	if o := other.get(r.location); o.status != http.StatusSeeOther || strings.Contains(o.body, "readonly value=") {
		t.Fatalf("another account's view of the slot: %d", o.status)
	}
}
