package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// readBody reads a request body of at most maxBodyBytes (the root handler
// installs the limit); a larger one is errTooLarge.
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, errTooLarge
	case err != nil:
		return nil, badRequest("The request body could not be read.")
	case len(b) > maxBodyBytes:
		return nil, errTooLarge
	}
	return b, nil
}

// decodeJSON reads the body into v strictly: it must be one JSON value of
// v's shape with no unknown fields and nothing after it. An empty body is
// allowed when optional is true (v keeps its zero value).
func decodeJSON(r *http.Request, v any, optional bool) error {
	b, err := readBody(r)
	if err != nil {
		return err
	}
	return unmarshalStrict(b, v, optional)
}

// unmarshalStrict is decodeJSON on bytes; its errors are *requestError with
// a public message.
func unmarshalStrict(b []byte, v any, optional bool) error {
	if len(bytes.TrimSpace(b)) == 0 {
		if optional {
			return nil
		}
		return badRequest("A JSON request body is required.")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF):
			return badRequest("Malformed JSON in the request body.")
		case errors.As(err, &te):
			if te.Field != "" {
				return badRequest(fmt.Sprintf("Field %q must be of JSON type %s.", te.Field, jsonType(te.Type.Kind().String())))
			}
			return badRequest("The request body has the wrong JSON type.")
		default:
			// Unknown fields and other decoder errors: the message names
			// the field and nothing internal.
			return badRequest("Invalid request body: " + err.Error())
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("Unexpected data after the JSON value.")
	}
	return nil
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	case "struct", "map":
		return "object"
	}
	return "number"
}

// rfc3339 formats a time as the seeds do ("2025-01-15T10:30:00Z").
func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// optTime is a nullable RFC 3339 time.
func optTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := rfc3339(t)
	return &s
}
