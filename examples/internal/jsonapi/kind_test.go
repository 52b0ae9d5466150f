package jsonapi

import (
	"fmt"
	"testing"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
	"github.com/keyledger/keyledger/usage"
)

// TestClassifyByKind checks that the rows folded into httpapi's kind table
// answer as the one-row-per-sentinel table did, and that a new sentinel is
// answered by its kind.
func TestClassifyByKind(t *testing.T) {
	for _, c := range []struct {
		err     error
		status  int
		code    string
		message string
	}{
		{ErrNotFound, 404, CodeNotFound, "Not found."},
		{apikey.ErrNotFound, 404, CodeNotFound, "Not found."},
		{account.ErrNotFound, 404, CodeNotFound, "Not found."},
		{credits.ErrHoldNotFound, 404, CodeNotFound, "Not found."},
		{credits.ErrIdempotencyConflict, 409, CodeConflict, "The idempotency key was already used with a different request."},
		{Invalid("Bad thing."), 400, "invalid_request", "Bad thing."},
		{apikey.ErrInvalidModels, 400, "invalid_request", "The request is invalid."},
		{credits.ErrAmountPrecision, 400, "invalid_request", "The request is invalid."},
		{usage.ErrUnknownModel, 404, "model_not_found", "The model does not exist."},
		{fmt.Errorf("x: %w", errkind.New(errkind.Conflict, "widgets: taken")), 409, CodeConflict, "The request conflicts with the current state."},
	} {
		e := Classify(c.err)
		if e.Status != c.status || e.Code != c.code || e.Message != c.message {
			t.Errorf("Classify(%v) = %d %q %q, want %d %q %q", c.err, e.Status, e.Code, e.Message, c.status, c.code, c.message)
		}
	}
}
