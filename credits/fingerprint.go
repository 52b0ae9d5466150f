package credits

import (
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// fingerprint is the SHA-256 of a request's canonical encoding: the
// operation, then every field length-prefixed, amounts by value (2.50 and
// 2.5 encode alike), so that two requests share a fingerprint exactly when
// all their fields are equal. Typical requests are encoded in a stack
// buffer.
func fingerprint(op byte, id, kind string, amt Amount, n int64, t time.Time, ref, desc string) [32]byte {
	var arr [256]byte
	b := append(arr[:0], 'k', 'l', 1, op)
	b = appendString(b, id)
	b = appendString(b, kind)
	b = appendAmount(b, amt)
	b = binary.AppendVarint(b, n)
	if t.IsZero() {
		b = binary.AppendVarint(b, 0)
	} else {
		b = binary.AppendVarint(b, t.UnixNano())
	}
	b = appendString(b, ref)
	b = appendString(b, desc)
	return sha256.Sum256(b)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendAmount encodes a by value: its coefficient without trailing zeros
// and the matching exponent, or its canonical text when the coefficient
// does not fit in an int64 even without its trailing zeros.
func appendAmount(b []byte, a Amount) []byte {
	if a.big != nil {
		t := a.String() // canonical: no trailing zeros
		small, ok := parseSmall(t)
		if !ok {
			return appendString(append(b, 's'), t)
		}
		a = small
	}
	c, e := a.coef, int64(a.exp)
	if c == 0 {
		e = 0
	}
	for c != 0 && c%10 == 0 {
		c /= 10
		e++
	}
	b = binary.AppendVarint(append(b, 'i'), c)
	return binary.AppendVarint(b, e)
}
