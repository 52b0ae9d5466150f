package httpapi_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
	"github.com/keyledger/keyledger/httpapi"
	"github.com/keyledger/keyledger/usage"
)

// TestClassifyNewSentinelByKind checks that a sentinel this package has
// never heard of — as a domain would add one — is classified by its kind,
// wrapped or not, with no edit to httpapi.
func TestClassifyNewSentinelByKind(t *testing.T) {
	want := map[errkind.Kind]int{
		errkind.Invalid:         http.StatusBadRequest,
		errkind.NotFound:        http.StatusNotFound,
		errkind.Conflict:        http.StatusConflict,
		errkind.Unauthenticated: http.StatusUnauthorized,
		errkind.Forbidden:       http.StatusForbidden,
		errkind.PaymentRequired: http.StatusPaymentRequired,
		errkind.RateLimited:     http.StatusTooManyRequests,
		errkind.TooLarge:        http.StatusRequestEntityTooLarge,
		errkind.Unavailable:     http.StatusServiceUnavailable,
		errkind.Internal:        http.StatusInternalServerError,
	}
	for _, k := range errkind.Kinds() {
		status, ok := want[k]
		if !ok {
			t.Errorf("kind %v has no expected status in this test", k)
			continue
		}
		errNew := errkind.New(k, "widgets: something "+k.String())
		for _, err := range []error{errNew, fmt.Errorf("widgets: frob %q: %w", "w1", errNew)} {
			e := httpapi.Classify(err)
			if e.Status != status || e.Code == "" || e.Message == "" || e.Type == "" {
				t.Errorf("Classify(%v) = %d %q %q %q, want %d with a type, code and message", err, e.Status, e.Type, e.Code, e.Message, status)
			}
			if e.Message == err.Error() {
				t.Errorf("Classify(%v) shows the internal message", err)
			}
			if k == errkind.Unavailable && e.RetryAfter <= 0 {
				t.Errorf("Classify(%v): a 503 without Retry-After", err)
			}
		}
	}
	if e := httpapi.Classify(errors.New("driver: connection reset")); e.Status != 500 {
		t.Errorf("an error without a kind is %d, want 500", e.Status)
	}
}

// TestClassifyKeepsRows pins the responses of the sentinels that have rows
// of their own (custom codes or messages) and of those now classified by
// kind, to what the one-row-per-sentinel table answered.
func TestClassifyKeepsRows(t *testing.T) {
	for _, c := range []struct {
		err     error
		status  int
		code    string
		message string
	}{
		{apikey.ErrMalformed, 401, httpapi.CodeInvalidAPIKey, "Incorrect API key provided."},
		{apikey.ErrUnknown, 401, httpapi.CodeInvalidAPIKey, "Incorrect API key provided."},
		{apikey.ErrRevoked, 401, httpapi.CodeInvalidAPIKey, "This API key has been revoked."},
		{apikey.ErrModelNotAllowed, 403, httpapi.CodeModelNotAllowed, "This API key may not use this model."},
		{usage.ErrUnknownModel, 404, httpapi.CodeModelNotFound, "The model does not exist."},
		{credits.ErrInsufficientFunds, 402, httpapi.CodeInsufficientQuota, "Insufficient credits: add credits to continue."},
		{credits.ErrMonthlyLimit, 402, httpapi.CodeMonthlyLimit, "The monthly spend limit of this account is reached."},
		{keyledger.ErrInvalidRequest, 400, httpapi.CodeInvalidRequest, "The request is invalid."},
		{&httpapi.RequestError{Message: "Bad model."}, 400, httpapi.CodeInvalidRequest, "Bad model."},
		{fmt.Errorf("%w: verify: %w", keyledger.ErrUnavailable, errors.New("reset")), 503, httpapi.CodeUnavailable,
			"The service is temporarily unavailable: retry the request (with the same request id) shortly."},
		{credits.ErrIdempotencyConflict, 409, httpapi.CodeDuplicateRequest, "This request id was already used for a different request."},
		{account.ErrBusy, 503, httpapi.CodeBusy, "Too many password checks in progress; retry shortly."},
	} {
		e := httpapi.Classify(c.err)
		if e.Status != c.status || e.Code != c.code || e.Message != c.message {
			t.Errorf("Classify(%v) = %d %q %q, want %d %q %q", c.err, e.Status, e.Code, e.Message, c.status, c.code, c.message)
		}
	}
}
