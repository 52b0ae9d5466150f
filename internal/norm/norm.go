// Package norm holds the input rules that several domain packages share but
// cannot import from each other (account and apikey are independent):
// display names, metadata maps and page sizes.
package norm

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits of the shared rules.
const (
	MaxNameRunes     = 120
	MaxMetadataKeys  = 64
	MaxMetadataKey   = 64   // bytes
	MaxMetadataValue = 1024 // bytes
	DefaultPageLimit = 50
	MaxPageLimit     = 500
)

// Name trims s and reports whether it is a valid display name: 1 to 120
// runes of valid UTF-8 without control characters.
func Name(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > MaxNameRunes {
		return "", false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return "", false
		}
	}
	return s, true
}

// Metadata checks a metadata map: at most 64 keys, keys of 1 to 64 bytes,
// values of at most 1 KiB, all valid UTF-8. The error says what is wrong;
// callers wrap their own sentinel around it.
func Metadata(m map[string]string) error {
	if len(m) > MaxMetadataKeys {
		return fmt.Errorf("more than %d keys", MaxMetadataKeys)
	}
	for k, v := range m {
		if k == "" || len(k) > MaxMetadataKey || len(v) > MaxMetadataValue || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("key %q", k)
		}
	}
	return nil
}

// ClampLimit applies the page size rule shared by every list in keyledger:
// 50 when unset (zero or negative), at most 500.
func ClampLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultPageLimit
	case n > MaxPageLimit:
		return MaxPageLimit
	}
	return n
}
