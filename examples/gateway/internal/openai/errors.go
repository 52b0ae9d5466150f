package openai

import (
	"encoding/json"
	"net/http"
)

// Error types used in the envelope's "type" field. OpenAI clients switch on
// the HTTP status; the type and code refine it.
const (
	TypeInvalidRequest    = "invalid_request_error"
	TypeAuthentication    = "authentication_error"
	TypePermission        = "permission_error"
	TypeNotFound          = "not_found_error"
	TypeInsufficientQuota = "insufficient_quota"
	TypeRateLimit         = "rate_limit_error"
	TypeServer            = "server_error"
	TypeUpstream          = "upstream_error"
)

// Error is the body of the error envelope {"error": {...}}. Code and Param
// encode as null when empty, as OpenAI does.
type Error struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code"`
	Param   string `json:"param"`
}

// MarshalJSON writes empty Code and Param as null.
func (e Error) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    *string `json:"code"`
		Param   *string `json:"param"`
	}{e.Message, e.Type, nullable(e.Code), nullable(e.Param)})
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// ErrorResponse is the error envelope.
type ErrorResponse struct {
	Error Error `json:"error"`
}

// WriteError writes the error envelope with the given status. Headers set
// on w before the call (rate-limit headers, Retry-After) are kept.
func WriteError(w http.ResponseWriter, status int, typ, code, message string) {
	WriteErrorResponse(w, status, Error{Message: message, Type: typ, Code: code})
}

// WriteErrorResponse writes e in the envelope with the given status.
func WriteErrorResponse(w http.ResponseWriter, status int, e Error) {
	body, err := json.Marshal(ErrorResponse{Error: e})
	if err != nil { // unreachable: Error holds only strings
		body = []byte(`{"error":{"message":"internal error","type":"server_error","code":null,"param":null}}`)
		status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// WriteRequestError writes a *RequestError as a 400 invalid_request_error
// with its param.
func WriteRequestError(w http.ResponseWriter, e *RequestError) {
	code := "invalid_request"
	if e.Kind == ErrMalformedJSON {
		code = "invalid_json"
	}
	WriteErrorResponse(w, http.StatusBadRequest, Error{Message: e.Message, Type: TypeInvalidRequest, Code: code, Param: e.Param})
}
