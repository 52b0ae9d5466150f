package apikey

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/keyledger/keyledger/internal/norm"
)

const (
	maxModels   = 256
	maxModelLen = 200
	maxScopes   = 32
	maxScopeLen = 64
)

// DefaultScopes returns the scopes a Service accepts when Options.Scopes is
// nil: "inference" and "read" (Forii's coming inference-only and read-only
// keys) and "manage" (key and account management).
func DefaultScopes() []string { return []string{"inference", "read", "manage"} }

func normalizeName(s string) (string, error) {
	n, ok := norm.Name(s)
	if !ok {
		return "", ErrInvalidName
	}
	return n, nil
}

// normalizeModels checks model names (1-200 bytes of printable UTF-8 without
// spaces, at most 256 of them) and drops duplicates, keeping the order.
func normalizeModels(ms []string) ([]string, error) {
	if len(ms) > maxModels {
		return nil, fmt.Errorf("%w: more than %d models", ErrInvalidModels, maxModels)
	}
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		if m == "" || len(m) > maxModelLen || !utf8.ValidString(m) || strings.ContainsFunc(m, func(r rune) bool {
			return unicode.IsSpace(r) || !unicode.IsPrint(r)
		}) {
			return nil, fmt.Errorf("%w: model %q", ErrInvalidModels, m)
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return nilIfEmpty(out), nil
}

// normalizeScopes checks scopes against the allowed set and drops
// duplicates, keeping the order.
func normalizeScopes(ss, allowed []string) ([]string, error) {
	if len(ss) > maxScopes {
		return nil, fmt.Errorf("%w: more than %d scopes", ErrInvalidScopes, maxScopes)
	}
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		if !slices.Contains(allowed, s) {
			return nil, fmt.Errorf("%w: unknown scope %q", ErrInvalidScopes, s)
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return nilIfEmpty(out), nil
}

// validScopeName: 1-64 characters of a-z, 0-9, '_', '.', ':', '-', starting
// with a letter or digit.
func validScopeName(s string) bool {
	if s == "" || len(s) > maxScopeLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == ':' || c == '-'):
		default:
			return false
		}
	}
	return true
}

func validateMetadata(m map[string]string) error {
	if err := norm.Metadata(m); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidMetadata, err)
	}
	return nil
}
