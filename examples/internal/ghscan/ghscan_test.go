package ghscan

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/fakeclock"
)

// keyPair is a P-256 key made in the test, as GitHub's would be.
type keyPair struct {
	id   string
	priv *ecdsa.PrivateKey
}

func newKeyPair(t testing.TB, id string) keyPair {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{id: id, priv: k}
}

func (k keyPair) sign(t testing.TB, body []byte) string {
	t.Helper()
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// keyDoc is a public key document listing the pairs' public halves.
func keyDoc(t testing.TB, pairs ...keyPair) []byte {
	t.Helper()
	type entry struct {
		ID      string `json:"key_identifier"`
		Key     string `json:"key"`
		Current bool   `json:"is_current"`
	}
	var doc struct {
		PublicKeys []entry `json:"public_keys"`
	}
	for _, p := range pairs {
		der, err := x509.MarshalPKIXPublicKey(&p.priv.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		doc.PublicKeys = append(doc.PublicKeys, entry{ID: p.id, Key: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), Current: true})
	}
	b, _ := json.Marshal(doc)
	return b
}

func TestKeySetVerify(t *testing.T) {
	k := newKeyPair(t, "abc123")
	ks, err := ParseKeys(keyDoc(t, k))
	if err != nil || ks.Len() != 1 {
		t.Fatalf("ParseKeys: %v", err)
	}
	body := []byte(`[{"token":"forii_x","type":"forii_api_key","url":"https://github.com/a/b"}]`)
	sig := k.sign(t, body)
	if err := ks.Verify(body, "abc123", sig); err != nil {
		t.Fatalf("good signature: %v", err)
	}
	if err := ks.Verify(append(body, ' '), "abc123", sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("changed body: %v", err)
	}
	other := newKeyPair(t, "abc123")
	if err := ks.Verify(body, "abc123", other.sign(t, body)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another key's signature: %v", err)
	}
	if err := ks.Verify(body, "nope", sig); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
	if err := ks.Verify(body, "", ""); !errors.Is(err, ErrNoSignature) {
		t.Fatalf("unsigned: %v", err)
	}
	if err := ks.Verify(body, "abc123", "!!!"); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("garbage signature: %v", err)
	}
	for _, bad := range []string{``, `{}`, `{"public_keys":[]}`, `{"public_keys":[{"key_identifier":"x","key":"nope"}]}`} {
		if _, err := ParseKeys([]byte(bad)); !errors.Is(err, ErrInvalidKeys) {
			t.Errorf("ParseKeys(%q): %v", bad, err)
		}
	}
}

// The Verifier fetches the key URL (a local fake of GitHub's endpoint),
// caches it, refetches for an unknown identifier at most once per Refresh,
// and picks up a rotated key.
func TestVerifierFetchesAndCaches(t *testing.T) {
	old, rotated := newKeyPair(t, "old"), newKeyPair(t, "new")
	var fetches atomic.Int32
	var doc atomic.Value
	doc.Store(keyDoc(t, old))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc.Load().([]byte))
	}))
	defer srv.Close()
	clk := fakeclock.New(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	v := NewVerifier(KeySet{}, srv.URL, &Options{Now: clk.Now, Client: srv.Client()})
	ctx := context.Background()
	body := []byte(`[]`)
	for range 3 {
		if err := v.Verify(ctx, body, "old", old.sign(t, body)); err != nil {
			t.Fatal(err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for one key, want 1 (cached)", n)
	}
	// GitHub rotates: the new key is unknown until a refetch, which waits
	// for Refresh.
	doc.Store(keyDoc(t, old, rotated))
	if err := v.Verify(ctx, body, "new", rotated.sign(t, body)); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("before Refresh: %v", err)
	}
	for range 5 { // a flood of unknown ids fetches nothing more
		_ = v.Verify(ctx, body, "bogus", "AAAA")
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches within Refresh, want 1", n)
	}
	clk.Advance(time.Minute)
	if err := v.Verify(ctx, body, "new", rotated.sign(t, body)); err != nil {
		t.Fatalf("after Refresh: %v", err)
	}
	// A fixed key set (a file) needs no URL.
	fixed, _ := ParseKeys(keyDoc(t, old))
	if err := NewVerifier(fixed, "", nil).Verify(ctx, body, "old", old.sign(t, body)); err != nil {
		t.Fatal(err)
	}
	if err := NewVerifier(fixed, "", nil).Verify(ctx, body, "new", rotated.sign(t, body)); !errors.Is(err, ErrUnknownKey) {
		t.Fatal(err)
	}
}

func FuzzParseKeysAndVerify(f *testing.F) {
	k := newKeyPair(f, "k1")
	doc := keyDoc(f, k)
	f.Add(doc, []byte(`[]`), "k1", k.sign(f, []byte(`[]`)))
	f.Add([]byte(`{"public_keys":[{"key_identifier":"x","key":"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}]}`), []byte("x"), "x", "AAAA")
	f.Fuzz(func(t *testing.T, doc, body []byte, id, sig string) {
		ks, err := ParseKeys(doc)
		if err != nil {
			if !errors.Is(err, ErrInvalidKeys) {
				t.Fatalf("ParseKeys error %v is not ErrInvalidKeys", err)
			}
			return
		}
		err = ks.Verify(body, id, sig)
		if err != nil && !errors.Is(err, ErrNoSignature) && !errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrBadSignature) {
			t.Fatalf("Verify: unexpected %v", err)
		}
	})
}
