// Package openai holds the OpenAI-compatible wire format the gateway speaks:
// the chat completion request (decoded strictly on types, leniently on
// unknown fields, as OpenAI clients send many), the response and streaming
// chunk shapes, the models list with exact INR prices, the error envelope,
// a Server-Sent Events writer, and a reader that parses an upstream SSE
// stream into chunks while capturing the final usage for metering.
//
// The package does no I/O of its own beyond the writer and reader it is
// given; it has no globals and no dependency on the keyledger library.
package openai

import (
	"errors"
	"fmt"
)

// Errors returned by the parsers. Match them with errors.Is; a
// *RequestError carries the offending parameter for the error envelope.
var (
	ErrMalformedJSON     = errors.New("openai: malformed JSON")
	ErrInvalidRequest    = errors.New("openai: invalid request")
	ErrMalformedChunk    = errors.New("openai: malformed stream event")
	ErrMalformedResponse = errors.New("openai: malformed response")
	ErrEventTooLarge     = errors.New("openai: stream event too large")
	ErrInvalidUsage      = errors.New("openai: invalid usage")
	ErrInvalidDecimal    = errors.New("openai: invalid decimal number")
	ErrUpstream          = errors.New("openai: upstream reported an error")
)

// Object names used in the "object" field.
const (
	ObjectChatCompletion      = "chat.completion"
	ObjectChatCompletionChunk = "chat.completion.chunk"
	ObjectList                = "list"
	ObjectModel               = "model"
)

// Message roles accepted in a request.
const (
	RoleSystem    = "system"
	RoleDeveloper = "developer"
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool"
	RoleFunction  = "function"
)

// Finish reasons.
const (
	FinishStop   = "stop"
	FinishLength = "length"
)

// RequestError is a client error in a request body: ErrMalformedJSON for
// bytes that are not the expected JSON (including wrong types), or
// ErrInvalidRequest for well-formed JSON with invalid values. Param names the
// offending field ("messages[0].content") when known; Message is safe to show
// to the client.
type RequestError struct {
	Kind    error // ErrMalformedJSON or ErrInvalidRequest
	Param   string
	Message string
}

func (e *RequestError) Error() string {
	if e.Param != "" {
		return fmt.Sprintf("%v: %s: %s", e.Kind, e.Param, e.Message)
	}
	return fmt.Sprintf("%v: %s", e.Kind, e.Message)
}

// Unwrap returns Kind, so errors.Is(err, ErrInvalidRequest) works.
func (e *RequestError) Unwrap() error { return e.Kind }

func invalid(param, format string, args ...any) *RequestError {
	return &RequestError{Kind: ErrInvalidRequest, Param: param, Message: fmt.Sprintf(format, args...)}
}
