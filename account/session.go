package account

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"time"
)

// Session is a logged-in management session. The token itself is never
// stored: TokenHash is its SHA-256.
type Session struct {
	TokenHash [32]byte  `json:"-"`
	AccountID string    `json:"account_id"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	RevokedAt time.Time `json:"revoked_at,omitzero"` // zero while the session is live
}

// tokenBytes is the random part of a session token: 256 bits.
const tokenBytes = 32

var tokenEncoding = base64.RawURLEncoding

// tokenBodyLen is the encoded length of the random part.
var tokenBodyLen = tokenEncoding.EncodedLen(tokenBytes)

func newToken(prefix string) Secret {
	var b [tokenBytes]byte
	_, _ = rand.Read(b[:]) // never fails (Go ≥ 1.24)
	return Secret(prefix + tokenEncoding.EncodeToString(b[:]))
}

// hashToken checks the token's shape (prefix, length, alphabet) before
// hashing, so forged garbage costs no hash and no store call.
func hashToken(prefix string, tok Secret) ([32]byte, bool) {
	s := string(tok)
	if len(s) != len(prefix)+tokenBodyLen || s[:len(prefix)] != prefix {
		return [32]byte{}, false
	}
	for i := len(prefix); i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return [32]byte{}, false
		}
	}
	var buf [128]byte // tokens fit: hashing them costs no allocation
	return sha256.Sum256(append(buf[:0], s...)), true
}
