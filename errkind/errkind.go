// Package errkind gives keyledger's errors a kind: what sort of answer an
// error is (not found, invalid, a conflict, payment required, …), so that
// code above the domains — HTTP envelopes, the facade's retry and
// unavailability rules — decides by kind instead of listing sentinels one
// by one. A new sentinel declared with New needs no edit outside its
// package to be classified.
//
// It imports only the standard library, so every package of the module
// may import it.
package errkind

import (
	"errors"
	"strconv"
)

// Kind is the sort of an error. The zero Kind, Unknown, is the kind of an
// error that carries none: a failure of a system below the domains (a
// driver error, a timeout), never a domain's answer.
type Kind uint8

// Kinds. The HTTP status in each comment is the usual mapping; envelopes
// keep their own table.
const (
	// Unknown: the error carries no kind (500, or a retry below the
	// facade: the operation may or may not have happened).
	Unknown Kind = iota
	// Invalid: the input is wrong; retrying it unchanged cannot succeed (400).
	Invalid
	// NotFound: the thing named does not exist (404).
	NotFound
	// Conflict: the request contradicts the current state (a reused
	// idempotency key, an email taken, a hold already settled) (409).
	Conflict
	// Unauthenticated: the credential is missing, malformed, unknown,
	// revoked or expired (401).
	Unauthenticated
	// Forbidden: the caller is known but may not do this (403).
	Forbidden
	// PaymentRequired: the balance, a debt or a spend cap refuses (402).
	PaymentRequired
	// RateLimited: a rate limit refuses; waiting helps (429).
	RateLimited
	// TooLarge: the request is larger than allowed (413).
	TooLarge
	// Unavailable: a system the request needs is not answering now;
	// the same request may succeed later (503).
	Unavailable
	// Internal: a failure of the program or its setup that no retry of
	// the request fixes (a closed service, a schema newer than the code,
	// a missing configuration) (500).
	Internal

	numKinds // keep last
)

var names = [numKinds]string{
	Unknown: "unknown", Invalid: "invalid", NotFound: "not_found", Conflict: "conflict",
	Unauthenticated: "unauthenticated", Forbidden: "forbidden", PaymentRequired: "payment_required",
	RateLimited: "rate_limited", TooLarge: "too_large", Unavailable: "unavailable", Internal: "internal",
}

// String returns the kind's name in snake case ("not_found").
func (k Kind) String() string {
	if k < numKinds {
		return names[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Kinds returns every defined kind but Unknown, in order (for tests and
// tables that must cover them all).
func Kinds() []Kind {
	ks := make([]Kind, 0, numKinds-1)
	for k := Unknown + 1; k < numKinds; k++ {
		ks = append(ks, k)
	}
	return ks
}

// Kinded is implemented by errors that carry a kind: the sentinels made by
// New, and typed errors such as *credits.DebtError.
type Kinded interface {
	error
	Kind() Kind
}

// sentinel is an error made by New: compared by identity, like an
// errors.New sentinel, with the same message.
type sentinel struct {
	msg  string
	kind Kind
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Kind() Kind    { return e.kind }

// New returns a sentinel error of kind k with the message msg. Like
// errors.New, each call returns a distinct error: errors.Is matches the
// value itself (and errors wrapping it), never another sentinel with the
// same text.
func New(k Kind, msg string) error { return &sentinel{msg: msg, kind: k} }

// Of returns the kind of err: that of the first error in its tree (the
// order of errors.As: depth first, each error before what it wraps) that
// implements Kinded, or Unknown if none does, or if err is nil.
func Of(err error) Kind {
	if err == nil {
		return Unknown
	}
	if k, ok := errors.AsType[Kinded](err); ok {
		return k.Kind()
	}
	return Unknown
}

// Is reports whether err is of kind k (Of(err) == k).
func Is(err error, k Kind) bool { return Of(err) == k }
