package apikey

import (
	"fmt"
	"log/slog"
)

// RawKey is a full API key as the client sends it. It redacts itself in fmt
// verbs (%v, %s, %q, %#v, …), log/slog and JSON output so it cannot reach a
// log by accident; Reveal returns the value, for the one response that shows
// a new key to its owner.
type RawKey string

const redacted = "[REDACTED]"

// Reveal returns the key.
func (k RawKey) Reveal() string { return string(k) }

// String returns a redacted placeholder.
func (RawKey) String() string { return redacted }

// GoString returns a redacted placeholder for %#v.
func (RawKey) GoString() string { return `apikey.RawKey("` + redacted + `")` }

// Format writes a redacted placeholder for every verb.
func (RawKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue redacts the key in log/slog output.
func (RawKey) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON redacts the key in JSON output; send Reveal() explicitly where
// the key must be shown. Decoding a JSON string into a RawKey works as for
// any string.
func (RawKey) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
