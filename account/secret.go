package account

import (
	"fmt"
	"log/slog"
)

// Secret is a password or a session token. It redacts itself in fmt verbs,
// %#v, slog and JSON output so it cannot reach a log by accident; Reveal
// returns the value.
type Secret string

const redacted = "[REDACTED]"

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// String returns a redacted placeholder.
func (Secret) String() string { return redacted }

// GoString returns a redacted placeholder for %#v.
func (Secret) GoString() string { return `account.Secret("` + redacted + `")` }

// Format writes a redacted placeholder for every verb.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue redacts the secret in log/slog output.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON redacts the secret in JSON output. Decoding a JSON string into
// a Secret works as for any string.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
