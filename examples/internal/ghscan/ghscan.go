// Package ghscan verifies the signatures of GitHub secret scanning partner
// alerts: GitHub signs each alert body with ECDSA (P-256, SHA-256) and names
// the key in the Github-Public-Key-Identifier header; the signature, base64
// of an ASN.1 DER ECDSA signature, is in Github-Public-Key-Signature. The
// public keys come from a JSON document in the shape of
// https://api.github.com/meta/public_keys/secret_scanning, read from a file
// or fetched from a URL and cached.
package ghscan

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Header names of a signed alert.
const (
	HeaderKeyID     = "Github-Public-Key-Identifier"
	HeaderSignature = "Github-Public-Key-Signature"
)

// Errors.
var (
	ErrNoSignature  = errors.New("ghscan: the alert is not signed")
	ErrUnknownKey   = errors.New("ghscan: the alert is signed with an unknown key")
	ErrBadSignature = errors.New("ghscan: the alert's signature does not verify")
	ErrInvalidKeys  = errors.New("ghscan: invalid public key document")
)

// maxKeysDoc bounds a key document; GitHub's is a few KiB.
const maxKeysDoc = 1 << 20

// KeySet is a set of GitHub's public keys by identifier.
type KeySet struct {
	keys map[string]*ecdsa.PublicKey
}

// Len is the number of keys.
func (ks KeySet) Len() int { return len(ks.keys) }

// ParseKeys parses a public key document:
// {"public_keys":[{"key_identifier":"…","key":"-----BEGIN PUBLIC KEY-----…","is_current":true}]}.
// Every key must be an ECDSA P-256 key in PEM (PKIX); it returns
// ErrInvalidKeys otherwise, or when there is none.
func ParseKeys(b []byte) (KeySet, error) {
	if len(b) > maxKeysDoc {
		return KeySet{}, fmt.Errorf("%w: larger than %d bytes", ErrInvalidKeys, maxKeysDoc)
	}
	var doc struct {
		PublicKeys []struct {
			ID  string `json:"key_identifier"`
			Key string `json:"key"`
		} `json:"public_keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return KeySet{}, fmt.Errorf("%w: %v", ErrInvalidKeys, err)
	}
	ks := KeySet{keys: make(map[string]*ecdsa.PublicKey, len(doc.PublicKeys))}
	for _, k := range doc.PublicKeys {
		if k.ID == "" || len(k.ID) > 256 {
			return KeySet{}, fmt.Errorf("%w: key identifier must be 1-256 bytes", ErrInvalidKeys)
		}
		blk, _ := pem.Decode([]byte(k.Key))
		if blk == nil || blk.Type != "PUBLIC KEY" {
			return KeySet{}, fmt.Errorf("%w: key %q is not a PEM public key", ErrInvalidKeys, k.ID)
		}
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return KeySet{}, fmt.Errorf("%w: key %q: %v", ErrInvalidKeys, k.ID, err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok || ec.Curve != elliptic.P256() {
			return KeySet{}, fmt.Errorf("%w: key %q is not an ECDSA P-256 key", ErrInvalidKeys, k.ID)
		}
		ks.keys[k.ID] = ec
	}
	if len(ks.keys) == 0 {
		return KeySet{}, fmt.Errorf("%w: no keys", ErrInvalidKeys)
	}
	return ks, nil
}

// Verify checks body's signature with the key named keyID. It returns
// ErrNoSignature, ErrUnknownKey or ErrBadSignature.
func (ks KeySet) Verify(body []byte, keyID, signature string) error {
	if keyID == "" || signature == "" {
		return ErrNoSignature
	}
	pub, ok := ks.keys[keyID]
	if !ok {
		return ErrUnknownKey
	}
	if len(signature) > 512 {
		return ErrBadSignature
	}
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return ErrBadSignature
	}
	sum := sha256.Sum256(body)
	if !ecdsa.VerifyASN1(pub, sum[:], sig) {
		return ErrBadSignature
	}
	return nil
}

// Options configure a Verifier. nil means defaults.
type Options struct {
	// Client fetches the key URL (a client with a 10-second timeout by
	// default).
	Client *http.Client
	// Refresh is the least time between two fetches of the key URL (one
	// minute by default): an unknown key identifier triggers a refetch
	// (GitHub rotates keys), but a flood of them cannot make the server
	// fetch more often than this.
	Refresh time.Duration
	// Now is the clock (time.Now by default).
	Now func() time.Time
}

// Verifier verifies alerts with a fixed key set (a file) and, if it has a
// URL, with keys fetched from it and cached. It is safe for concurrent use.
type Verifier struct {
	fixed KeySet
	url   string
	opt   Options

	mu        sync.Mutex
	fetched   KeySet
	fetchedAt time.Time
}

// NewVerifier returns a Verifier over fixed keys (may be empty) and a key
// URL ("" for none). opts may be nil.
func NewVerifier(fixed KeySet, url string, opts *Options) *Verifier {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Refresh <= 0 {
		o.Refresh = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Verifier{fixed: fixed, url: url, opt: o}
}

// Verify checks a signed alert. Keys from the file are tried first; then
// the cached keys of the URL, fetched again (at most once per Refresh) if
// the identifier is unknown. It returns ErrNoSignature, ErrUnknownKey,
// ErrBadSignature, or a fetch failure.
func (v *Verifier) Verify(ctx context.Context, body []byte, keyID, signature string) error {
	if keyID == "" || signature == "" {
		return ErrNoSignature
	}
	if _, ok := v.fixed.keys[keyID]; ok {
		return v.fixed.Verify(body, keyID, signature)
	}
	if v.url == "" {
		return ErrUnknownKey
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.fetched.keys[keyID]; !ok && (v.fetchedAt.IsZero() || v.opt.Now().Sub(v.fetchedAt) >= v.opt.Refresh) {
		v.fetchedAt = v.opt.Now()
		ks, err := v.fetch(ctx)
		if err != nil {
			return err
		}
		v.fetched = ks
	}
	return v.fetched.Verify(body, keyID, signature)
}

func (v *Verifier) fetch(ctx context.Context) (KeySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.url, nil)
	if err != nil {
		return KeySet{}, fmt.Errorf("ghscan: fetch keys: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.opt.Client.Do(req)
	if err != nil {
		return KeySet{}, fmt.Errorf("ghscan: fetch keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return KeySet{}, fmt.Errorf("ghscan: fetch keys: %w: status %d", ErrInvalidKeys, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxKeysDoc+1))
	if err != nil {
		return KeySet{}, fmt.Errorf("ghscan: fetch keys: %w", err)
	}
	return ParseKeys(b)
}
