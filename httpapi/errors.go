package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
	"github.com/keyledger/keyledger/usage"
)

// Error is an error as the client sees it: a status, a machine-readable
// type and code, and a public message. Internal details never reach it.
type Error struct {
	Status  int
	Type    string // OpenAI-style class: invalid_request_error, rate_limit_error, …
	Code    string // stable machine code: invalid_api_key, insufficient_quota, …
	Message string
	// RetryAfter is set on 429s and on 503s that say when to come back.
	RetryAfter time.Duration
	// KeyBudgetReset is set on a 402 key_budget_exceeded: when the key's
	// spend-limit period starts over (zero for a lifetime limit). Writers
	// send it as Retry-After (an HTTP date) and X-Key-Budget-Reset
	// (RFC 3339), and in the body.
	KeyBudgetReset time.Time
	// Err is the error classified (for logging; never shown).
	Err error
}

// Error codes of the classification table.
const (
	CodeInvalidAPIKey     = "invalid_api_key"
	CodeModelNotAllowed   = "model_not_allowed"
	CodePermissionDenied  = "permission_denied"
	CodeModelNotFound     = "model_not_found"
	CodeInsufficientQuota = "insufficient_quota"
	CodeMonthlyLimit      = "monthly_limit_exceeded"
	CodeKeyBudget         = "key_budget_exceeded"
	CodeKeyLimit          = "key_limit_exceeded"
	CodeRateLimited       = "rate_limit_exceeded"
	CodeRequestTooLarge   = "request_too_large"
	CodeInvalidRequest    = "invalid_request"
	CodeInternal          = "internal_error"
	CodeBusy              = "server_busy"
	CodeUnavailable       = "service_unavailable"
	CodeDuplicateRequest  = "duplicate_request"
	CodeNotFound          = "not_found"
	CodeConflict          = "conflict"
)

// UnavailableRetryAfter is the Retry-After of a 503: how long a client
// should wait before retrying a request that met an unavailable store or
// rate limiter (the stores' own bounds are about this long).
const UnavailableRetryAfter = time.Second

// Classify maps an error of the hot path to what the client is told. It is
// the one table from keyledger's errors to HTTP; ErrorWriters render its
// result in their API's envelope. Errors are classified by their kind
// (errkind.Of, see kindErrors); the rows here are only the errors whose
// response says more than their kind's (a typed error's details, a code or
// message of their own). Errors without a kind are 499s when they are a
// cancellation, else 500s with a generic message.
func Classify(err error) Error {
	e := Error{Err: err}
	var (
		le   *keyledger.LimitError
		big  *keyledger.TooLargeError
		debt *credits.DebtError
		te   *keyledger.ThrottleError
		kb   *credits.KeyBudgetError
	)
	switch {
	case errors.As(err, &kb) && kb.Whole:
		e.Status, e.Type, e.Code = http.StatusBadRequest, "invalid_request_error", CodeKeyLimit
		e.Message = "This request reserves more than this API key's " + string(kb.Period) + " spend limit of " +
			kb.Limit.String() + " " + kb.Unit + ": lower max_tokens (or the input), or raise the key's limit."
	case errors.As(err, &kb):
		// Never a 429: only the period's end or a higher limit helps.
		e.Status, e.Type, e.Code = http.StatusPaymentRequired, "insufficient_quota", CodeKeyBudget
		e.Message = "This API key's " + string(kb.Period) + " spend limit of " + kb.Limit.String() + " " + kb.Unit +
			" is reached (" + kb.Remaining.String() + " left)"
		if kb.ResetAt.IsZero() {
			e.Message += "; the limit is for the key's lifetime: raise it to continue."
		} else {
			e.Message += "; it resets at " + kb.ResetAt.UTC().Format(time.RFC3339) + "."
			e.KeyBudgetReset = kb.ResetAt
		}
	case errors.As(err, &te):
		e.Status, e.Type, e.Code = http.StatusTooManyRequests, "rate_limit_error", CodeRateLimited
		e.Message = "Too many attempts: at most " + te.Limit + ". Retry later."
		e.RetryAfter = te.RetryAfter
	case errors.Is(err, account.ErrBusy):
		e.Status, e.Type, e.Code = http.StatusServiceUnavailable, "server_error", CodeBusy
		e.Message = "Too many password checks in progress; retry shortly."
		e.RetryAfter = account.BusyRetryAfter
	case errors.As(err, &big):
		// Never a 429: no wait makes it fit, and clients retry 429s.
		e.Status, e.Type, e.Code = http.StatusBadRequest, "invalid_request_error", CodeRequestTooLarge
		e.Message = "This request reserves " + group(big.Requested) + " " + big.Budget + ", more than the plan's " +
			group(big.Limit) + " " + big.Budget + " per minute: lower max_tokens (or the input) below the limit."
	case errors.As(err, &debt):
		e.Status, e.Type, e.Code = 402, "insufficient_quota", CodeInsufficientQuota
		e.Message = "Insufficient credits: this account owes " + debt.Debt.String() + " " + debt.Unit +
			" for usage beyond its balance; add credits to pay it and continue."
	case errors.As(err, &le):
		e = kindError(err, errkind.RateLimited)
		e.RetryAfter = le.RetryAfter()
		if le.Decision.RetryAfter() == 0 {
			e.Message = "Request is larger than the plan's per-minute token limit."
		}
	case errors.Is(err, errMissingKey):
		e.Status, e.Type, e.Code, e.Message = 401, "invalid_request_error", CodeInvalidAPIKey, "Missing API key: send it as 'Authorization: Bearer <key>'."
	case errors.Is(err, apikey.ErrRevoked):
		e.Status, e.Type, e.Code, e.Message = 401, "invalid_request_error", CodeInvalidAPIKey, "This API key has been revoked."
	case errors.Is(err, apikey.ErrExpired):
		e.Status, e.Type, e.Code, e.Message = 401, "invalid_request_error", CodeInvalidAPIKey, "This API key has expired."
	case errors.Is(err, apikey.ErrDisabled):
		e.Status, e.Type, e.Code, e.Message = 401, "invalid_request_error", CodeInvalidAPIKey, "This API key has been disabled."
	case errors.Is(err, apikey.ErrAccountInactive):
		e.Status, e.Type, e.Code, e.Message = 401, "invalid_request_error", CodeInvalidAPIKey, "The account of this API key is not active."
	case errors.Is(err, apikey.ErrModelNotAllowed):
		e.Status, e.Type, e.Code, e.Message = 403, "permission_error", CodeModelNotAllowed, "This API key may not use this model."
	case errors.Is(err, apikey.ErrScopeNotAllowed):
		e.Status, e.Type, e.Code, e.Message = 403, "permission_error", CodePermissionDenied,
			"This API key lacks the permission for this request (managing keys needs the manage scope; a new key gets at most its creator's scopes and models)."
	case errors.Is(err, apikey.ErrEnvironmentNotAllowed):
		e.Status, e.Type, e.Code, e.Message = 403, "permission_error", CodePermissionDenied, "A test key cannot create, list or revoke live keys."
	case errors.Is(err, usage.ErrUnknownModel):
		e.Status, e.Type, e.Code, e.Message = 404, "invalid_request_error", CodeModelNotFound, "The model does not exist."
	case errors.Is(err, credits.ErrMonthlyLimit):
		e.Status, e.Type, e.Code, e.Message = 402, "insufficient_quota", CodeMonthlyLimit, "The monthly spend limit of this account is reached."
	case errors.Is(err, credits.ErrIdempotencyConflict):
		e.Status, e.Type, e.Code = http.StatusConflict, "invalid_request_error", CodeDuplicateRequest
		e.Message = "This request id was already used for a different request."
	case errors.Is(err, keyledger.ErrDuplicateRequest):
		e.Status, e.Type, e.Code = http.StatusConflict, "invalid_request_error", CodeDuplicateRequest
		e.Message = "A request with this request id was already completed; send a new id for a new request."
	default:
		// By kind. Checked before cancellation: a store timeout wrapped in
		// keyledger.ErrUnavailable is a DeadlineExceeded too, but the
		// client is still there and may retry.
		if k := errkind.Of(err); k != errkind.Unknown {
			e = kindError(err, k)
		} else if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			e.Status, e.Type, e.Code, e.Message = 499, "invalid_request_error", "request_cancelled", "The request was cancelled."
		} else {
			e = kindError(err, errkind.Unknown)
		}
	}
	var re *RequestError
	if errors.As(err, &re) {
		e.Message = re.Message
	}
	return e
}

// kindErrors is the table from kinds to responses: what an error without a
// row of its own in Classify is told. A new sentinel made with errkind.New
// is classified here without an edit to this package.
var kindErrors = [...]Error{
	errkind.Unknown:         {Status: 500, Type: "server_error", Code: CodeInternal, Message: "Internal error."},
	errkind.Invalid:         {Status: 400, Type: "invalid_request_error", Code: CodeInvalidRequest, Message: "The request is invalid."},
	errkind.NotFound:        {Status: 404, Type: "invalid_request_error", Code: CodeNotFound, Message: "Not found."},
	errkind.Conflict:        {Status: 409, Type: "invalid_request_error", Code: CodeConflict, Message: "The request conflicts with the current state."},
	errkind.Unauthenticated: {Status: 401, Type: "invalid_request_error", Code: CodeInvalidAPIKey, Message: "Incorrect API key provided."},
	errkind.Forbidden:       {Status: 403, Type: "permission_error", Code: CodePermissionDenied, Message: "This request is not permitted."},
	errkind.PaymentRequired: {Status: 402, Type: "insufficient_quota", Code: CodeInsufficientQuota, Message: "Insufficient credits: add credits to continue."},
	errkind.RateLimited: {Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: CodeRateLimited,
		Message: "Rate limit reached: too many requests or tokens per minute for this plan."},
	errkind.TooLarge: {Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: CodeRequestTooLarge, Message: "The request is too large."},
	errkind.Unavailable: {Status: http.StatusServiceUnavailable, Type: "server_error", Code: CodeUnavailable,
		Message: "The service is temporarily unavailable: retry the request (with the same request id) shortly.", RetryAfter: UnavailableRetryAfter},
	errkind.Internal: {Status: 500, Type: "server_error", Code: CodeInternal, Message: "Internal error."},
}

// kindError is the response of kind k to err (a 500 for a kind this
// version does not know).
func kindError(err error, k errkind.Kind) Error {
	e := kindErrors[errkind.Unknown]
	if int(k) < len(kindErrors) && kindErrors[k].Status != 0 {
		e = kindErrors[k]
	}
	e.Err = err
	return e
}

// group formats n with thousands separators (12,000).
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3+1)
	if neg {
		out = append(out, '-')
	}
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

var (
	// ErrInvalidTrustedProxies reports a -trusted-proxies list that is not
	// comma-separated CIDR prefixes or addresses.
	ErrInvalidTrustedProxies = errkind.New(errkind.Invalid, "httpapi: invalid trusted proxy list")

	errMissingKey = errors.New("httpapi: no API key in the request")
	errBadRequest = errkind.New(errkind.Invalid, "httpapi: bad request")
)

// RequestError is what a RequestFunc returns to refuse a request with a 400
// and a public message.
type RequestError struct{ Message string }

func (e *RequestError) Error() string { return "httpapi: " + e.Message }

// Is makes errors.Is(err, errBadRequest) classify it as a 400.
func (e *RequestError) Is(target error) bool { return target == errBadRequest }

// Kind is errkind.Invalid.
func (e *RequestError) Kind() errkind.Kind { return errkind.Invalid }

// ErrorWriter renders a classified error in an API's envelope.
type ErrorWriter interface {
	WriteError(w http.ResponseWriter, r *http.Request, e Error)
}

// ErrorWriterFunc adapts a function to ErrorWriter.
type ErrorWriterFunc func(w http.ResponseWriter, r *http.Request, e Error)

// WriteError implements ErrorWriter.
func (f ErrorWriterFunc) WriteError(w http.ResponseWriter, r *http.Request, e Error) { f(w, r, e) }

// OpenAIErrors writes {"error":{"message","type","code","param"}} with the
// status of the classification and Retry-After on 429s.
var OpenAIErrors ErrorWriter = ErrorWriterFunc(writeOpenAIError)

func writeOpenAIError(w http.ResponseWriter, _ *http.Request, e Error) {
	type body struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    string  `json:"code"`
		Param   *string `json:"param"`
		// ResetsAt: key_budget_exceeded only.
		ResetsAt string `json:"resets_at,omitempty"`
	}
	b := body{Message: e.Message, Type: e.Type, Code: e.Code}
	if !e.KeyBudgetReset.IsZero() {
		b.ResetsAt = e.KeyBudgetReset.UTC().Format(time.RFC3339)
	}
	WriteJSON(w, e, struct {
		Error body `json:"error"`
	}{b})
}

// WriteJSON writes v as the JSON body of a response with e's status, and
// Retry-After (whole seconds, at least 1) on a 429, and on any other status
// when e.RetryAfter is set. Error writers of other envelopes use it.
func WriteJSON(w http.ResponseWriter, e Error, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	if e.Status == http.StatusTooManyRequests || e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(retrySeconds(e.RetryAfter), 10))
	} else if !e.KeyBudgetReset.IsZero() {
		h.Set("Retry-After", e.KeyBudgetReset.UTC().Format(http.TimeFormat))
	}
	if !e.KeyBudgetReset.IsZero() {
		h.Set("X-Key-Budget-Reset", e.KeyBudgetReset.UTC().Format(time.RFC3339))
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(v)
}

func retrySeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
