package openai

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// maxUsageTokens bounds each usage count accepted from an upstream, so sums
// and prices computed from them cannot overflow.
const maxUsageTokens = 1 << 40

// ChatCompletion is the non-streaming response of /v1/chat/completions.
type ChatCompletion struct {
	ID                string   `json:"id"`
	Object            string   `json:"object"` // ObjectChatCompletion
	Created           int64    `json:"created"`
	Model             string   `json:"model"`
	Choices           []Choice `json:"choices"`
	Usage             *Usage   `json:"usage,omitempty"`
	SystemFingerprint string   `json:"system_fingerprint,omitempty"`
}

// Choice is one completion of a ChatCompletion.
type Choice struct {
	Index        int             `json:"index"`
	Message      ResponseMessage `json:"message"`
	FinishReason string          `json:"finish_reason"`
}

// ResponseMessage is the assistant message of a Choice.
type ResponseMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// Refusal, ReasoningContent and ToolCalls are read from upstream
	// answers so that OutputBytes can measure them; the simulated model
	// never sets them.
	Refusal          string     `json:"refusal,omitempty"`
	ReasoningContent string     `json:"reasoning_content,omitempty"`
	ToolCalls        []ToolCall `json:"tool_calls,omitempty"`
}

// ToolCall is one tool call of a message, or one increment of it in a
// streamed delta (where Index says which call it extends).
type ToolCall struct {
	Index    int          `json:"index"`
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function FunctionCall `json:"function"`
}

// FunctionCall is a tool call's function name and JSON arguments.
type FunctionCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
}

// OutputBytes is the bytes of generated text in a message: content,
// refusal, reasoning and tool call names and arguments. It is the measure
// of an answer whose usage an upstream did not report.
func (m ResponseMessage) OutputBytes() int64 {
	return outputBytes(m.Content, m.Refusal, m.ReasoningContent, m.ToolCalls)
}

func outputBytes(content, refusal, reasoning string, calls []ToolCall) int64 {
	n := int64(len(content) + len(refusal) + len(reasoning))
	for _, c := range calls {
		n += int64(len(c.Function.Name) + len(c.Function.Arguments))
	}
	return n
}

// Usage counts the tokens of one request. The details say which of them
// were served from the provider's prompt cache and which were reasoning:
// parts of PromptTokens and CompletionTokens, priced differently.
type Usage struct {
	PromptTokens            int64                    `json:"prompt_tokens"`
	CompletionTokens        int64                    `json:"completion_tokens"`
	TotalTokens             int64                    `json:"total_tokens"`
	PromptTokensDetails     *PromptTokensDetails     `json:"prompt_tokens_details,omitempty"`
	CompletionTokensDetails *CompletionTokensDetails `json:"completion_tokens_details,omitempty"`
}

// PromptTokensDetails is OpenAI's usage.prompt_tokens_details (its other
// fields, such as audio_tokens, are ignored).
type PromptTokensDetails struct {
	CachedTokens PartCount `json:"cached_tokens"`
}

// CompletionTokensDetails is OpenAI's usage.completion_tokens_details (its
// other fields are ignored).
type CompletionTokensDetails struct {
	ReasoningTokens PartCount `json:"reasoning_tokens"`
}

// PartCount is a token count that is part of a total. It only selects a
// price, so an upstream's bad value must not fail the response the
// upstream already delivered: a negative, fractional, huge (beyond 2^40)
// or non-numeric value decodes as 0 (the tokens are billed at the plain
// price). A value above its total is left for keyledger, which clamps it.
type PartCount int64

// UnmarshalJSON reads a count, leniently (see PartCount).
func (p *PartCount) UnmarshalJSON(b []byte) error {
	*p = 0
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err == nil && n >= 0 && n <= maxUsageTokens {
		*p = PartCount(n)
	}
	return nil
}

// CachedTokens is prompt_tokens_details.cached_tokens (0 if absent).
func (u *Usage) CachedTokens() int64 {
	if u.PromptTokensDetails == nil {
		return 0
	}
	return int64(u.PromptTokensDetails.CachedTokens)
}

// ReasoningTokens is completion_tokens_details.reasoning_tokens (0 if
// absent).
func (u *Usage) ReasoningTokens() int64 {
	if u.CompletionTokensDetails == nil {
		return 0
	}
	return int64(u.CompletionTokensDetails.ReasoningTokens)
}

// NewUsage returns a Usage with TotalTokens = prompt + completion.
func NewUsage(prompt, completion int64) Usage {
	return Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
}

// check validates counts from an upstream and fills a missing total.
func (u *Usage) check() error {
	for _, n := range []int64{u.PromptTokens, u.CompletionTokens, u.TotalTokens} {
		if n < 0 || n > maxUsageTokens {
			return fmt.Errorf("%w: token count %d out of range", ErrInvalidUsage, n)
		}
	}
	if u.TotalTokens == 0 {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return nil
}

// ChatCompletionChunk is one event of a streaming response. The final usage
// chunk has an empty (not null) Choices and a non-nil Usage.
type ChatCompletionChunk struct {
	ID                string        `json:"id"`
	Object            string        `json:"object"` // ObjectChatCompletionChunk
	Created           int64         `json:"created"`
	Model             string        `json:"model"`
	Choices           []ChunkChoice `json:"choices"`
	Usage             *Usage        `json:"usage,omitempty"`
	SystemFingerprint string        `json:"system_fingerprint,omitempty"`
}

// MarshalJSON writes Choices as [] when it is nil, as OpenAI does for the
// usage chunk.
func (c ChatCompletionChunk) MarshalJSON() ([]byte, error) {
	type plain ChatCompletionChunk
	if c.Choices == nil {
		c.Choices = []ChunkChoice{}
	}
	return json.Marshal(plain(c))
}

// ChunkChoice is one choice's increment in a chunk. FinishReason is null
// until the choice's last chunk.
type ChunkChoice struct {
	Index        int     `json:"index"`
	Delta        Delta   `json:"delta"`
	FinishReason *string `json:"finish_reason"`
}

// Delta is the increment of a streamed message.
type Delta struct {
	Role             string     `json:"role,omitempty"`
	Content          string     `json:"content,omitempty"`
	Refusal          string     `json:"refusal,omitempty"`
	ReasoningContent string     `json:"reasoning_content,omitempty"`
	ToolCalls        []ToolCall `json:"tool_calls,omitempty"`
}

// OutputBytes is the bytes of generated text in a delta (see
// ResponseMessage.OutputBytes).
func (d Delta) OutputBytes() int64 {
	return outputBytes(d.Content, d.Refusal, d.ReasoningContent, d.ToolCalls)
}

// ParseChatCompletion decodes a non-streaming response body from an
// upstream. Errors wrap ErrMalformedResponse, or ErrInvalidUsage for token
// counts out of range; a missing total_tokens is filled in.
func ParseChatCompletion(body []byte) (ChatCompletion, error) {
	var c ChatCompletion
	if err := json.Unmarshal(body, &c); err != nil {
		return ChatCompletion{}, fmt.Errorf("%w: %v", ErrMalformedResponse, err)
	}
	if c.Object != ObjectChatCompletion {
		return ChatCompletion{}, fmt.Errorf("%w: object is %q", ErrMalformedResponse, truncate(c.Object, 64))
	}
	if c.Usage != nil {
		if err := c.Usage.check(); err != nil {
			return ChatCompletion{}, err
		}
	}
	return c, nil
}

// ModelList is the body of GET /v1/models.
type ModelList struct {
	Object string  `json:"object"` // ObjectList
	Data   []Model `json:"data"`
}

// NewModelList returns a list of the given models, with Object fields set.
func NewModelList(models ...Model) ModelList {
	l := ModelList{Object: ObjectList, Data: make([]Model, len(models))}
	for i, m := range models {
		m.Object = ObjectModel
		l.Data[i] = m
	}
	return l
}

// Model is one entry of a ModelList, with its INR prices.
type Model struct {
	ID      string  `json:"id"`
	Object  string  `json:"object"` // ObjectModel
	Created int64   `json:"created,omitempty"`
	OwnedBy string  `json:"owned_by"`
	Pricing Pricing `json:"pricing"`
}

// Pricing is a model's price in INR per million tokens, as exact JSON
// numbers.
type Pricing struct {
	PromptINRPer1M     Decimal `json:"prompt_inr_per_1m"`
	CompletionINRPer1M Decimal `json:"completion_inr_per_1m"`
	// The optional prices of the model's undated version (see the
	// gateway's -models file); absent ones bill at the plain prices.
	CachedPromptINRPer1M *Decimal `json:"cached_prompt_inr_per_1m,omitempty"`
	CacheWriteINRPer1M   *Decimal `json:"cache_write_inr_per_1m,omitempty"`
	ReasoningINRPer1M    *Decimal `json:"reasoning_inr_per_1m,omitempty"`
	RequestFeeINR        *Decimal `json:"request_fee_inr,omitempty"`
}
