package httpapi

import (
	"net/http"
	"strings"
)

// maxCredentialLen bounds what is read from a header as a credential; real
// keys and session tokens are far shorter.
const maxCredentialLen = 512

// Credential returns the credential a request presents: the token of an
// "Authorization: Bearer <token>" header (scheme case-insensitive), or else
// the value of an "X-Api-Key" header. It returns false when there is none,
// when several are given and disagree, or when the value is empty, too long,
// or contains spaces or control characters.
func Credential(r *http.Request) (string, bool) {
	auth := r.Header.Values("Authorization")
	apiKey := r.Header.Values("X-Api-Key")
	if len(auth)+len(apiKey) == 0 || len(auth) > 1 || len(apiKey) > 1 {
		return "", false
	}
	var tok string
	if len(auth) == 1 {
		t, ok := ParseBearer(auth[0])
		if !ok {
			return "", false
		}
		tok = t
	}
	if len(apiKey) == 1 {
		k := strings.TrimSpace(apiKey[0])
		if tok != "" && k != tok {
			return "", false
		}
		tok = k
	}
	if !validCredential(tok) {
		return "", false
	}
	return tok, true
}

// ParseBearer returns the token of an Authorization header value of the
// form "Bearer <token>" (RFC 6750; the scheme is case-insensitive).
func ParseBearer(h string) (string, bool) {
	const scheme = "bearer "
	h = strings.TrimSpace(h)
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimLeft(h[len(scheme):], " ")
	return tok, validCredential(tok)
}

func validCredential(s string) bool {
	if s == "" || len(s) > maxCredentialLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}
