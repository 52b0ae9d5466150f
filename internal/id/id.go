// Package id generates type-prefixed, time-sortable identifiers such as
// "acct_06bz1k8m3q2x9h5v7c4n0r1t2w" from UUIDv7 values.
//
// The 16 UUID bytes are encoded in lower-case Crockford base32 (26 characters),
// an alphabet whose byte order matches its numeric order, so identifiers from
// one Generator sort by creation time and, within a millisecond, by creation
// order.
package id

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// alphabet is Crockford's base32 in lower case; ASCII order equals digit order.
const alphabet = "0123456789abcdefghjkmnpqrstvwxyz"

// EncodedLen is the length of the encoded UUID part of an identifier.
const EncodedLen = 26

// ErrInvalid reports an identifier that is not prefix + 26 base32 characters.
var ErrInvalid = errors.New("id: invalid identifier")

// Generator makes UUIDv7-based identifiers. Its clock is injectable; within
// one process identifiers are strictly increasing even if the clock stands
// still or steps back. The zero value is not usable; call NewGenerator.
type Generator struct {
	now func() time.Time

	mu   sync.Mutex
	last uint64 // last (unix ms << 12 | sequence) handed out
	// rnd holds random bytes read from crypto/rand in bulk; rnd[used:] are
	// not handed out yet. IDs are identifiers, not secrets: batching the
	// reads only saves a call per ID.
	rnd  [256]byte
	used int
}

// NewGenerator returns a Generator reading time from now (time.Now if nil).
func NewGenerator(now func() time.Time) *Generator {
	if now == nil {
		now = time.Now
	}
	return &Generator{now: now}
}

// UUID returns a new version 7 UUID. The 12-bit rand_a field is used as a
// sequence so that UUIDs from one Generator are monotonic (RFC 9562 §6.2,
// method 1); the remaining 62 bits are from crypto/rand.
func (g *Generator) UUID() uuid.UUID {
	ms := uint64(g.now().UnixMilli())
	var u uuid.UUID
	g.mu.Lock()
	v := ms << 12
	if v <= g.last {
		v = g.last + 1 // same or earlier millisecond: next sequence number
	}
	g.last = v
	if g.used == 0 || g.used+8 > len(g.rnd) {
		_, _ = rand.Read(g.rnd[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
		g.used = 0
	}
	copy(u[8:], g.rnd[g.used:g.used+8])
	g.used += 8
	g.mu.Unlock()

	binary.BigEndian.PutUint16(u[6:8], uint16(v&0x0fff)|0x7000)
	ts := v >> 12
	u[0], u[1], u[2], u[3], u[4], u[5] = byte(ts>>40), byte(ts>>32), byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u
}

// New returns prefix followed by the encoding of a new UUIDv7.
func (g *Generator) New(prefix string) string {
	var enc [EncodedLen]byte
	encode(&enc, g.UUID())
	var b strings.Builder // one allocation: String does not copy
	b.Grow(len(prefix) + EncodedLen)
	b.WriteString(prefix)
	b.Write(enc[:])
	return b.String()
}

// Encode returns the 26-character base32 form of u.
func Encode(u uuid.UUID) string {
	var out [EncodedLen]byte
	encode(&out, u)
	return string(out[:])
}

// encode writes 128 bits as 26 groups of 5 bits, most significant first
// (the first character carries the top 3 bits only).
func encode(out *[EncodedLen]byte, u uuid.UUID) {
	hi := binary.BigEndian.Uint64(u[:8])
	lo := binary.BigEndian.Uint64(u[8:])
	for i := EncodedLen - 1; i >= 0; i-- {
		out[i] = alphabet[lo&0x1f]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
}

// Decode parses the 26-character base32 form produced by Encode.
func Decode(s string) (uuid.UUID, error) {
	var u uuid.UUID
	if len(s) != EncodedLen || s[0] > '7' {
		return u, ErrInvalid
	}
	var hi, lo uint64
	for i := 0; i < len(s); i++ {
		d := strings.IndexByte(alphabet, s[i])
		if d < 0 {
			return u, ErrInvalid
		}
		hi = hi<<5 | lo>>59
		lo = lo<<5 | uint64(d)
	}
	binary.BigEndian.PutUint64(u[:8], hi)
	binary.BigEndian.PutUint64(u[8:], lo)
	return u, nil
}

// Valid reports whether s is prefix followed by a well-formed encoded UUID.
func Valid(prefix, s string) bool {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return false
	}
	_, err := Decode(rest)
	return err == nil
}
