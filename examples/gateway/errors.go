package main

import (
	"encoding/json"
	"errors"
	"github.com/keyledger/keyledger/auditlog"
	"net/http"
	"strings"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
	"github.com/keyledger/keyledger/httpapi"
	"github.com/keyledger/keyledger/usage"
)

// Errors of the gateway's own handlers.
var (
	errTooLarge     = errkind.New(errkind.TooLarge, "gateway: request body too large")
	errNotFound     = errkind.New(errkind.NotFound, "gateway: not found")
	errNoSession    = errkind.New(errkind.Unauthenticated, "gateway: missing session token")
	errOrderNotPaid = errkind.New(errkind.Conflict, "gateway: order is not paid")
	errBadAPIKey    = errkind.New(errkind.Unauthenticated, "gateway: invalid API key on the management API")
	errSDKKey       = errkind.New(errkind.Forbidden, "gateway: SDK key on the management API")

	errBadGitHubSignature = errkind.New(errkind.Unauthenticated, "gateway: leaked-key report without a valid GitHub signature")
)

// requestError is a 400 with a message safe to show.
type requestError struct{ msg string }

func (e *requestError) Error() string { return e.msg }

func badRequest(msg string) error { return &requestError{msg: msg} }

// apiErr is one row of the error table: what a client is told.
type apiErr struct {
	err     error
	status  int
	code    string
	message string
}

// errorTable holds the errors whose response is their own: a code or
// message their kind's row in kindTable does not give. Rows are matched in
// order with errors.Is; an error without a row is answered by its kind
// (errkind.Of), and one without a kind is a logged 500 with a generic
// message.
var errorTable = []apiErr{
	{errTooLarge, 413, "request_too_large", "The request body is larger than 1 MiB."},
	{errNoSession, 401, "invalid_session", "Missing session token: send it as 'Authorization: Bearer <token>'."},
	{account.ErrSessionInvalid, 401, "invalid_session", "Invalid session token."},
	{account.ErrSessionExpired, 401, "invalid_session", "The session has expired; log in again."},
	{account.ErrSessionRevoked, 401, "invalid_session", "The session was logged out; log in again."},
	{errBadGitHubSignature, 401, "invalid_signature", "The report must be signed by GitHub (Github-Public-Key-Identifier and Github-Public-Key-Signature)."},
	{errBadAPIKey, 401, "invalid_api_key", "Invalid, revoked, disabled or expired API key."},
	{errSDKKey, 403, "permission_denied", "SDK keys (forii_sk_…) are for inference only: manage the account with a session or an API key (forii_…)."},
	{apikey.ErrScopeNotAllowed, 403, "permission_denied", "This API key lacks the manage scope, or asks for more than it has: a new key gets at most its creator's models."},
	{apikey.ErrEnvironmentNotAllowed, 403, "permission_denied", "A test key cannot manage live keys."},
	{apikey.ErrModelNotAllowed, 403, "permission_denied", "A new key may only use models its creator may use."},
	{account.ErrInvalidCredentials, 401, "invalid_credentials", "Invalid email or password."},
	{account.ErrBusy, 503, "server_busy", "Too many password checks in progress; retry in a second."},
	{account.ErrSuspended, 403, "account_suspended", "The account is suspended."},
	{account.ErrClosed, 403, "account_closed", "The account is closed."},
	{account.ErrEmailTaken, 409, "email_taken", "An account with this email already exists."},
	{account.ErrTokenInvalid, 400, "invalid_token", "The token is invalid, used or expired."},
	{account.ErrNoMailer, 503, "mail_unavailable", "Mail is not configured on this server."},
	{account.ErrUnknownPlan, 400, "invalid_request", "Unknown plan: use free, starter, pro or enterprise."},
	{account.ErrInvalidEmail, 400, "invalid_request", "Invalid email address."},
	{account.ErrInvalidName, 400, "invalid_request", "The name must be 1-120 characters."},
	{account.ErrInvalidPassword, 400, "invalid_request", "The password must be at least 8 characters."},
	{apikey.ErrInvalidName, 400, "invalid_request", "The key name must be 1-120 characters."},
	{apikey.ErrInvalidType, 400, "invalid_request", `The key type must be "sdk" or "api".`},
	{apikey.ErrInvalidModels, 400, "invalid_request", "Invalid model list."},
	{apikey.ErrInvalidExpiry, 400, "invalid_request", "The expiry must be in the future and before 2200."},
	{apikey.ErrInvalidGrace, 400, "invalid_request", "grace_seconds must not be negative."},
	{apikey.ErrInvalidCursor, 400, "invalid_request", "Invalid cursor."},
	{apikey.ErrRevoked, 409, "key_not_active", "The key is revoked."},
	{apikey.ErrDisabled, 409, "key_not_active", "The key is disabled."},
	{apikey.ErrExpired, 409, "key_not_active", "The key has expired."},
	{credits.ErrInvalidCursor, 400, "invalid_request", "Invalid cursor."},
	{credits.ErrInvalidAmount, 400, "invalid_request", "Invalid amount."},
	{credits.ErrAmountPrecision, 400, "invalid_request", "Amounts in INR have at most 2 decimals."},
	{credits.ErrInvalidPolicy, 400, "invalid_request", "Invalid auto-recharge settings."},
	{razorpay.ErrInvalidSignature, 400, "invalid_signature", "The payment signature does not match."},
	{razorpay.ErrMalformedWebhook, 400, "invalid_request", "Malformed webhook payload."},
	{razorpay.ErrOrderMismatch, 400, "invalid_request", "The payment does not match the order."},
	{razorpay.ErrInvalidAmount, 400, "invalid_request", "amount_inr must be a positive amount with at most 2 decimals."},
	{razorpay.ErrAmountTooSmall, 400, "invalid_request", "amount_inr must be at least 1.00."},
	{razorpay.ErrAmountTooLarge, 400, "invalid_request", "amount_inr must be at most 500000.00."},
	{errOrderNotPaid, 409, "order_not_paid", "The order is not paid."},
	{errPaymentPending, 409, "payment_pending", "Razorpay has not captured the payment yet; the credits arrive when it does (webhook), or verify again."},
	{errNoPaymentMethod, 409, "no_payment_method", "No saved payment method: buy credits once with Razorpay Checkout."},
	{razorpay.ErrUnavailable, 503, "payment_provider_unavailable", "Razorpay is unavailable; retry in a minute."},
	{razorpay.ErrRejected, 502, "payment_provider_error", "Razorpay refused the request."},
	{razorpay.ErrMalformedResponse, 502, "payment_provider_error", "Razorpay answered with an unexpected response."},
	{usage.ErrInvalidQuery, 400, "invalid_request", "Invalid usage query."},
	{events.ErrInvalidURL, 400, "invalid_webhook_url", "The webhook url must be an https:// URL (at most 2048 bytes, no user:password) whose host resolves."},
	{events.ErrBlockedAddress, 400, "webhook_address_not_allowed", "The webhook host is or resolves to a loopback, private, link-local, CGNAT or metadata address."},
	{events.ErrTooManyEndpoints, 400, "too_many_webhooks", "An account has at most 10 webhook endpoints: delete one first."},
	{events.ErrInvalidThreshold, 400, "invalid_request", "low_balance_inr takes at most 5 distinct positive amounts."},
	{credits.ErrTooManyKeyLimits, 400, "too_many_key_limits", "An account has at most 100 keys with a spend_limit: remove the limit of another key first."},
	{events.ErrNotFound, 404, "not_found", "No such webhook endpoint."},
	{auditlog.ErrInvalidCursor, 400, "invalid_request", "Invalid cursor."},
	{auditlog.ErrInvalidQuery, 400, "invalid_request", "Invalid audit query: since must not be after until."},
}

// classify finds the table row of err.
func classify(err error) apiErr {
	var re *requestError
	if errors.As(err, &re) {
		return apiErr{err: err, status: 400, code: "invalid_request", message: re.msg}
	}
	var pf *paymentFailedError
	if errors.As(err, &pf) {
		return apiErr{err: err, status: 402, code: "payment_failed", message: "The payment failed: " + pf.description}
	}
	var te *keyledger.ThrottleError
	if errors.As(err, &te) {
		return apiErr{err: err, status: 429, code: "rate_limit_exceeded",
			message: "Too many attempts: at most " + te.Limit + ". Retry later."}
	}
	var kb *credits.KeyBudgetError
	if errors.As(err, &kb) { // the OpenAI table's wording: one message for both envelopes
		he := httpapi.Classify(err)
		return apiErr{err: err, status: he.Status, code: he.Code, message: he.Message}
	}
	for _, row := range errorTable {
		if errors.Is(err, row.err) {
			return row
		}
	}
	row := kindTable[errkind.Unknown]
	if k := errkind.Of(err); int(k) < len(kindTable) && kindTable[k].status != 0 {
		row = kindTable[k]
	}
	row.err = err
	return row
}

// kindTable answers the errors without a row in errorTable, by kind: a new
// sentinel of the library is classified here without an edit.
var kindTable = [...]apiErr{
	errkind.Unknown:         {status: 500, code: "internal_error", message: "Internal error."},
	errkind.Invalid:         {status: 400, code: "invalid_request", message: "The request is invalid."},
	errkind.NotFound:        {status: 404, code: "not_found", message: "Not found."},
	errkind.Conflict:        {status: 409, code: "conflict", message: "The request conflicts with the current state."},
	errkind.Unauthenticated: {status: 401, code: "invalid_credentials", message: "Invalid or missing credentials."},
	errkind.Forbidden:       {status: 403, code: "permission_denied", message: "This request is not permitted."},
	errkind.PaymentRequired: {status: 402, code: "insufficient_quota", message: "Insufficient credits: add credits to continue."},
	errkind.RateLimited:     {status: 429, code: "rate_limit_exceeded", message: "Too many requests. Retry later."},
	errkind.TooLarge:        {status: 413, code: "request_too_large", message: "The request is too large."},
	errkind.Unavailable:     {status: 503, code: "service_unavailable", message: "The service is temporarily unavailable; retry shortly."},
	errkind.Internal:        {status: 500, code: "internal_error", message: "Internal error."},
}

// errorBody is the management API's error shape.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		// ResetsAt: key_budget_exceeded only.
		ResetsAt string `json:"resets_at,omitempty"`
	} `json:"error"`
}

// writeError answers err: in the OpenAI envelope on /inference/ routes,
// else in the management API's shape. Only unexpected errors are logged.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := classify(err)
	if e.status >= 500 {
		s.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	if strings.HasPrefix(r.URL.Path, "/inference/") {
		typ := openai.TypeInvalidRequest
		if e.status >= 500 {
			typ = openai.TypeServer
		}
		openai.WriteError(w, e.status, typ, e.code, e.message)
		return
	}
	var b errorBody
	b.Error.Code, b.Error.Message = e.code, e.message
	var reset time.Time
	if kb := (*credits.KeyBudgetError)(nil); errors.As(err, &kb) && !kb.Whole {
		reset = kb.ResetAt
	}
	if !reset.IsZero() {
		b.Error.ResetsAt = reset.UTC().Format(time.RFC3339)
	}
	httpapi.WriteJSON(w, httpapi.Error{Status: e.status, RetryAfter: retryAfter(err), KeyBudgetReset: reset}, b)
}

// retryAfter is the wait a throttled (429) or busy (503) answer asks for.
func retryAfter(err error) time.Duration {
	var te *keyledger.ThrottleError
	switch {
	case errors.As(err, &te):
		return te.RetryAfter
	case errors.Is(err, account.ErrBusy):
		return account.BusyRetryAfter
	}
	return 0
}

// writeJSON answers v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}
