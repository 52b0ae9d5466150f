// Package usage meters what each API call used and cost: usage records with
// every field the seed systems show their customers, a PriceBook that
// prices tokens and operations exactly, and queries over daily rollups.
package usage

import (
	"encoding/json"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
)

// Errors returned by Service and Store implementations. Match them with
// errors.Is. Meter also passes on the credits sentinels of the charge it
// applies (credits.ErrInsufficientFunds, credits.ErrMonthlyLimit,
// credits.ErrUnknownAccount, credits.ErrHoldNotFound, …) unchanged.
var (
	ErrInvalidPrice          = errkind.New(errkind.Invalid, "usage: invalid price")
	ErrUnknownModel          = errkind.New(errkind.NotFound, "usage: model has no price")
	ErrUnknownOperation      = errkind.New(errkind.NotFound, "usage: operation has no price")
	ErrInvalidRecord         = errkind.New(errkind.Invalid, "usage: invalid usage record")
	ErrInvalidIdempotencyKey = errkind.New(errkind.Invalid, "usage: idempotency key must be 1-255 bytes of UTF-8")
	ErrIdempotencyConflict   = errkind.New(errkind.Conflict, "usage: idempotency key reused with a different request")
	ErrInvalidTimeZone       = errkind.New(errkind.Invalid, "usage: invalid time zone")
	ErrInvalidQuery          = errkind.New(errkind.Invalid, "usage: invalid query")
	ErrInvalidCursor         = errkind.New(errkind.Invalid, "usage: invalid cursor")
	ErrInvalidOptions        = errkind.New(errkind.Invalid, "usage: invalid options")
	ErrNoLedger              = errkind.New(errkind.Internal, "usage: charging needs Options.Credits")
	ErrDuplicateRecord       = errkind.New(errkind.Conflict, "usage: the account already has a record with this ID")
	ErrClosed                = errkind.New(errkind.Internal, "usage: service closed")
)

// Record is one metered request. Field names follow the seeds: OpenRush's
// request log (credential_id, auth_source, endpoint, bytes, response time,
// upstream cost, credits charged, error type/message), Forii's and FPT's
// tokens per model, email-verify's units and cache hits.
type Record struct {
	ID         string `json:"id"`
	AccountID  string `json:"account_id"`
	KeyID      string `json:"credential_id"`
	AuthSource string `json:"auth_source"` // "api_key", "session", …
	Endpoint   string `json:"endpoint"`
	Method     string `json:"method"`
	Model      string `json:"model,omitempty"`
	StatusCode int    `json:"status_code"`
	// ResponseTime is the request's latency; JSON carries it as
	// response_time_ms (whole milliseconds), as OpenRush shows it.
	ResponseTime     time.Duration `json:"-"`
	RequestBytes     int64         `json:"request_bytes"`
	ResponseBytes    int64         `json:"response_bytes"`
	PromptTokens     int64         `json:"prompt_tokens"`
	CompletionTokens int64         `json:"completion_tokens"`
	// CachedPromptTokens (cache reads) and CacheWriteTokens are parts of
	// PromptTokens, ReasoningTokens a part of CompletionTokens: OpenAI's
	// prompt_tokens already include cached_tokens; from Anthropic's usage,
	// PromptTokens is input_tokens + cache_creation_input_tokens +
	// cache_read_input_tokens. A part larger than its whole is
	// ErrInvalidRecord.
	CachedPromptTokens int64 `json:"cached_prompt_tokens"`
	CacheWriteTokens   int64 `json:"cache_write_tokens"`
	ReasoningTokens    int64 `json:"reasoning_tokens"`
	// Units counts generic work (verifications, tool calls); CachedUnits of
	// them were served from a cache.
	Units       int64 `json:"units"`
	CachedUnits int64 `json:"cached_units"`
	// UpstreamCost is what the host paid its provider (OpenRush
	// dataforseo_cost_usd), kept for margins; it is not charged.
	UpstreamCost credits.Amount `json:"upstream_cost"`
	// Cost is what the account was charged, in the ledger's unit: exact,
	// marshalled as a JSON number literal (3, 0.0000125).
	Cost credits.Amount `json:"credits_charged"`
	// PriceFrom is the EffectiveFrom of the model price version that set
	// Cost (see PriceBook.Rate): with Model it names the price applied, so a
	// later price change never re-prices the record. Zero for the undated
	// version, operations and unpriced records.
	PriceFrom    time.Time         `json:"price_effective_from,omitzero"`
	ErrorType    string            `json:"error_type,omitempty"`
	ErrorMessage string            `json:"error_message,omitempty"`
	CreatedAt    time.Time         `json:"created_at"`
	Metadata     map[string]string `json:"metadata,omitempty"`
}

// TotalTokens is prompt plus completion tokens.
func (r Record) TotalTokens() int64 { return r.PromptTokens + r.CompletionTokens }

// Billable reports whether the request is charged: it succeeded (a status
// below 400, or none given) and reported no error. Failed requests, 429s and
// refusals are recorded with zero cost.
func (r Record) Billable() bool {
	return r.StatusCode < 400 && r.ErrorType == ""
}

// Clone returns a copy of r that shares no memory with it.
func (r Record) Clone() Record {
	if r.Metadata != nil {
		m := make(map[string]string, len(r.Metadata))
		for k, v := range r.Metadata {
			m[k] = v
		}
		r.Metadata = m
	}
	return r
}

// recordJSON adds the derived fields to Record's JSON form.
type recordJSON struct {
	recordAlias
	ResponseTimeMS int64 `json:"response_time_ms"`
	TotalTokens    int64 `json:"total_tokens"`
}

type recordAlias Record

// MarshalJSON writes the record with response_time_ms and total_tokens.
func (r Record) MarshalJSON() ([]byte, error) {
	return json.Marshal(recordJSON{recordAlias: recordAlias(r), ResponseTimeMS: r.ResponseTime.Milliseconds(), TotalTokens: r.TotalTokens()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Record) UnmarshalJSON(b []byte) error {
	var j recordJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Record(j.recordAlias)
	r.ResponseTime = time.Duration(j.ResponseTimeMS) * time.Millisecond
	return nil
}
