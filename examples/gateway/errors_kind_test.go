package main

import (
	"fmt"
	"testing"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
)

// TestClassifyByKind checks that the management API answers a sentinel it
// has no row for by its kind, and that the rows folded into the kind table
// answer as before.
func TestClassifyByKind(t *testing.T) {
	want := map[errkind.Kind]int{
		errkind.Invalid: 400, errkind.NotFound: 404, errkind.Conflict: 409, errkind.Unauthenticated: 401,
		errkind.Forbidden: 403, errkind.PaymentRequired: 402, errkind.RateLimited: 429, errkind.TooLarge: 413,
		errkind.Unavailable: 503, errkind.Internal: 500,
	}
	for _, k := range errkind.Kinds() {
		err := fmt.Errorf("op: %w", errkind.New(k, "widgets: "+k.String()))
		if e := classify(err); e.status != want[k] || e.code == "" || e.message == "" {
			t.Errorf("kind %v: %d %q %q, want %d", k, e.status, e.code, e.message, want[k])
		}
	}
	for _, err := range []error{errNotFound, account.ErrNotFound, apikey.ErrNotFound, credits.ErrUnknownAccount} {
		if e := classify(err); e.status != 404 || e.code != "not_found" || e.message != "Not found." {
			t.Errorf("%v: %d %q %q", err, e.status, e.code, e.message)
		}
	}
}
