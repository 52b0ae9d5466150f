package account

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2Params are the argon2id cost parameters for password hashes. Hashes
// made with other parameters still verify, and are re-hashed with these on
// the next successful login.
type Argon2Params struct {
	Time      uint32 // passes over memory
	MemoryKiB uint32
	Threads   uint8
	KeyLen    uint32
	SaltLen   uint32
}

// DefaultArgon2Params are OWASP's recommended minimum for argon2id
// (19 MiB, 2 passes, 1 thread) with a 16-byte salt and a 32-byte key.
func DefaultArgon2Params() Argon2Params {
	return Argon2Params{Time: 2, MemoryKiB: 19 * 1024, Threads: 1, KeyLen: 32, SaltLen: 16}
}

func (p Argon2Params) valid() bool {
	return p.Time >= 1 && p.MemoryKiB >= 8*uint32(p.Threads) && p.Threads >= 1 &&
		p.KeyLen >= 16 && p.KeyLen <= 64 && p.SaltLen >= 8 && p.SaltLen <= 64 && p.MemoryKiB <= 4<<20
}

var b64 = base64.RawStdEncoding

// hashPassword returns the PHC string form:
// $argon2id$v=19$m=<KiB>,t=<time>,p=<threads>$<salt>$<key>.
func hashPassword(p Argon2Params, password string) string {
	salt := make([]byte, p.SaltLen)
	_, _ = rand.Read(salt) // never fails (Go ≥ 1.24)
	key := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, p.KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.MemoryKiB, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// parseHash parses a PHC argon2id string. It bounds the cost parameters so
// that a corrupted or hostile stored hash cannot make verification allocate
// gigabytes.
func parseHash(encoded string) (p Argon2Params, salt, key []byte, ok bool) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return p, nil, nil, false
	}
	var threads uint32
	if n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &threads); err != nil || n != 3 || threads == 0 || threads > 255 {
		return p, nil, nil, false
	}
	if fmt.Sprintf("m=%d,t=%d,p=%d", p.MemoryKiB, p.Time, threads) != parts[3] {
		return p, nil, nil, false // trailing garbage or non-canonical numbers
	}
	p.Threads = uint8(threads)
	var err error
	if salt, err = b64.DecodeString(parts[4]); err != nil {
		return p, nil, nil, false
	}
	if key, err = b64.DecodeString(parts[5]); err != nil {
		return p, nil, nil, false
	}
	p.SaltLen, p.KeyLen = uint32(len(salt)), uint32(len(key))
	if !p.valid() || p.Time > 64 {
		return p, nil, nil, false
	}
	return p, salt, key, true
}

// checkPassword reports whether password matches encoded (in constant time
// over the derived key) and whether encoded was made with parameters other
// than want, so the caller should store a fresh hash.
func checkPassword(encoded, password string, want Argon2Params) (match, rehash bool) {
	p, salt, key, ok := parseHash(encoded)
	if !ok {
		return false, false
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, p.KeyLen)
	match = subtle.ConstantTimeCompare(got, key) == 1
	return match, match && p != want
}
