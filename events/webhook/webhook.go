// Package webhook signs and verifies keyledger's webhook deliveries,
// Stripe-style. A delivery carries the header
//
//	Keyledger-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//
// The sender (keyledger's dispatcher) calls Sign; a receiver calls Verify
// with the endpoint's secret (shown once, when the endpoint was created)
// and a tolerance for the timestamp, which bounds replays of a captured
// request. Comparison is constant-time. Several v1 values may appear (a
// receiver accepts any match), so secrets can be rolled without downtime.
// It imports only the standard library.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/keyledger/keyledger/errkind"
)

// Header is the name of the signature header.
const Header = "Keyledger-Signature"

// DefaultTolerance is how far a signature's timestamp may be from now
// when Verify is given a tolerance of zero.
const DefaultTolerance = 5 * time.Minute

// maxHeader bounds the header a receiver parses.
const maxHeader = 4096

// Errors of Verify and ParseHeader.
var (
	ErrMalformedHeader = errkind.New(errkind.Unauthenticated, "webhook: malformed signature header")
	ErrNoSignature     = errkind.New(errkind.Unauthenticated, "webhook: no v1 signature in header")
	ErrBadSignature    = errkind.New(errkind.Unauthenticated, "webhook: signature does not match")
	ErrTooOld          = errkind.New(errkind.Unauthenticated, "webhook: signature timestamp outside the tolerance")
)

// Sign returns the header value for body sent at t under secret.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Signature is a parsed header: the timestamp and the v1 signatures.
type Signature struct {
	Timestamp int64
	V1        [][]byte
}

// ParseHeader parses a Keyledger-Signature value. Unknown schemes are
// ignored; a header without t, with a non-numeric t, with a v1 that is not
// 32 bytes of hex, or longer than 4 KiB is ErrMalformedHeader, one without
// v1 ErrNoSignature.
func ParseHeader(h string) (Signature, error) {
	var s Signature
	if len(h) > maxHeader {
		return s, ErrMalformedHeader
	}
	haveT := false
	for part := range strings.SplitSeq(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return Signature{}, ErrMalformedHeader
		}
		switch k {
		case "t":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || haveT {
				return Signature{}, ErrMalformedHeader
			}
			s.Timestamp, haveT = n, true
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return Signature{}, ErrMalformedHeader
			}
			s.V1 = append(s.V1, b)
		}
	}
	if !haveT {
		return Signature{}, ErrMalformedHeader
	}
	if len(s.V1) == 0 {
		return Signature{}, ErrNoSignature
	}
	return s, nil
}

// Verify checks header (a Keyledger-Signature value) against body and
// secret at now: the timestamp must be within tolerance of now
// (DefaultTolerance if tolerance is 0) and one v1 signature must match. It
// returns ErrMalformedHeader, ErrNoSignature, ErrTooOld or ErrBadSignature.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	s, err := ParseHeader(header)
	if err != nil {
		return err
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	d := now.Unix() - s.Timestamp
	if d < 0 {
		d = -d
	}
	if time.Duration(d)*time.Second > tolerance {
		return ErrTooOld
	}
	want := mac(secret, strconv.FormatInt(s.Timestamp, 10), body)
	match := false
	for _, v := range s.V1 {
		match = hmac.Equal(v, want) || match // constant-time, every value compared
	}
	if !match {
		return ErrBadSignature
	}
	return nil
}
