// Package jsonapi holds the request-reading and error-classifying code the
// example servers share: strict JSON bodies bounded to 1 MiB, and the
// management errors (not found, invalid input, conflicts) that extend
// httpapi.Classify's hot-path table. Each server renders the result in its
// own envelope.
package jsonapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
	"github.com/keyledger/keyledger/httpapi"
	"github.com/keyledger/keyledger/usage"
)

// MaxBody is the largest request body the servers read: 1 MiB.
const MaxBody = 1 << 20

// Errors the servers return from their own handlers.
var (
	ErrTooLarge = errkind.New(errkind.TooLarge, "request body larger than 1 MiB")
	ErrNotFound = errkind.New(errkind.NotFound, "not found")
	ErrConflict = errkind.New(errkind.Conflict, "conflict")
	ErrInvalid  = errkind.New(errkind.Invalid, "invalid request")
)

// Invalid returns an error that Classify turns into a 400 with msg as the
// public message.
func Invalid(msg string) error { return &publicError{err: ErrInvalid, msg: msg} }

// Invalidf is Invalid with formatting.
func Invalidf(format string, args ...any) error { return Invalid(fmt.Sprintf(format, args...)) }

// publicError carries a public message with a classifying sentinel.
type publicError struct {
	err error
	msg string
}

func (e *publicError) Error() string { return e.msg }
func (e *publicError) Unwrap() error { return e.err }

// LimitBody reads every request body into memory before next runs and
// answers 413 through ew when it is larger than MaxBody. Handlers (and the
// httpapi middleware) then read a body that is known to be bounded.
func LimitBody(ew httpapi.ErrorWriter) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Body != nil && r.Body != http.NoBody {
				b, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
				_ = r.Body.Close()
				if err != nil {
					ew.WriteError(w, r, Classify(Invalid("The request body could not be read.")))
					return
				}
				if len(b) > MaxBody {
					ew.WriteError(w, r, Classify(ErrTooLarge))
					return
				}
				r.Body = io.NopCloser(bytes.NewReader(b))
				r.ContentLength = int64(len(b))
			}
			next.ServeHTTP(w, r)
		})
	}
}

// Decode reads exactly one JSON object into v: unknown fields, wrong
// types, trailing data and an empty body are errors with a public message
// (Classify: 400).
func Decode(r *http.Request, v any) error {
	if r.Body == nil {
		return Invalid("A JSON request body is required.")
	}
	return DecodeBytes(readAll(r), v)
}

func readAll(r *http.Request) []byte {
	b, _ := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	r.Body = io.NopCloser(bytes.NewReader(b)) // readable again (request byte counts)
	return b
}

// DecodeBytes is Decode over a byte slice.
func DecodeBytes(b []byte, v any) error {
	if len(b) > MaxBody {
		return ErrTooLarge
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return Invalid("A JSON request body is required.")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return Invalidf("Field %q has the wrong type.", te.Field)
		case errors.As(err, &te):
			return Invalid("The request body must be a JSON object.")
		}
		return Invalidf("Malformed JSON: %s.", trim(err.Error(), 120))
	}
	if dec.More() {
		return Invalid("Malformed JSON: unexpected data after the object.")
	}
	if _, err := dec.Token(); err != io.EOF {
		return Invalid("Malformed JSON: unexpected data after the object.")
	}
	return nil
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Error codes beyond httpapi's.
const (
	CodeNotFound = httpapi.CodeNotFound
	CodeTooLarge = "request_too_large"
	CodeConflict = httpapi.CodeConflict
)

// Classify maps an error of a management route or a paid route to what the
// client is told: the rows below for the errors whose public message is
// this envelope's own, then httpapi.Classify, which classifies the rest by
// kind (a not-found is 404 not_found, a validation error 400
// invalid_request, …). A message given with Invalid replaces the generic
// one.
func Classify(err error) httpapi.Error {
	e := httpapi.Error{Err: err}
	switch {
	case errors.Is(err, ErrTooLarge):
		e.Status, e.Type, e.Code, e.Message = http.StatusRequestEntityTooLarge, "invalid_request_error", CodeTooLarge, "The request body is larger than 1 MiB."
	case errors.Is(err, credits.ErrIdempotencyConflict):
		e.Status, e.Type, e.Code, e.Message = http.StatusConflict, "invalid_request_error", CodeConflict,
			"The idempotency key was already used with a different request."
	case errors.Is(err, apikey.ErrInvalidName):
		e.Status, e.Type, e.Code, e.Message = 400, "invalid_request_error", httpapi.CodeInvalidRequest, "name must be 1-120 characters."
	case errors.Is(err, apikey.ErrInvalidExpiry):
		e.Status, e.Type, e.Code, e.Message = 400, "invalid_request_error", httpapi.CodeInvalidRequest, "expires_at must be in the future."
	case errors.Is(err, usage.ErrInvalidQuery), errors.Is(err, usage.ErrInvalidCursor), errors.Is(err, usage.ErrInvalidTimeZone):
		e.Status, e.Type, e.Code, e.Message = 400, "invalid_request_error", httpapi.CodeInvalidRequest, "Invalid query parameter: limit must be an integer and cursor a next_cursor value."
	default:
		e = httpapi.Classify(err)
	}
	if pe, ok := errors.AsType[*publicError](err); ok && e.Status < 500 {
		e.Message = pe.msg
	}
	return e
}
