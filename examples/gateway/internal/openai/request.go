package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Request limits. The HTTP layer bounds the body size (1 MiB in the
// gateway); these bound what a valid body may say.
const (
	maxModelLen    = 256
	maxStopEntries = 4
	// MaxTokenLimit is the largest accepted max_tokens or
	// max_completion_tokens; larger values are rejected as invalid so that
	// token arithmetic can never overflow.
	MaxTokenLimit = 1 << 30
)

// ChatCompletionRequest is the body of POST /v1/chat/completions. Fields a
// gateway does not need are not declared and are ignored on decoding; the
// declared ones must have the right JSON types. To forward a request to an
// upstream server unchanged, keep the raw body and use PrepareUpstreamBody.
type ChatCompletionRequest struct {
	Model               string         `json:"model"`
	Messages            []Message      `json:"messages"`
	MaxTokens           *int64         `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int64         `json:"max_completion_tokens,omitempty"`
	Stream              bool           `json:"stream,omitempty"`
	StreamOptions       *StreamOptions `json:"stream_options,omitempty"`
	Temperature         *float64       `json:"temperature,omitempty"`
	TopP                *float64       `json:"top_p,omitempty"`
	N                   *int64         `json:"n,omitempty"`
	Stop                Stop           `json:"stop,omitempty"`
	Seed                *int64         `json:"seed,omitempty"`
	PresencePenalty     *float64       `json:"presence_penalty,omitempty"`
	FrequencyPenalty    *float64       `json:"frequency_penalty,omitempty"`
	User                string         `json:"user,omitempty"`
	// Tools, Functions (the legacy form), ToolChoice and ResponseFormat are
	// kept as received: the model reads them as part of its prompt, so a
	// gateway counts their bytes in the prompt estimate. Validate checks
	// their JSON shape only.
	Tools          json.RawMessage `json:"tools,omitempty"`
	Functions      json.RawMessage `json:"functions,omitempty"`
	ToolChoice     json.RawMessage `json:"tool_choice,omitempty"`
	ResponseFormat json.RawMessage `json:"response_format,omitempty"`
}

// PromptExtras returns the request fields other than messages that the
// model reads as prompt (tools, functions, tool_choice, response_format),
// each as received; absent and null fields are left out.
func (r *ChatCompletionRequest) PromptExtras() []json.RawMessage {
	var out []json.RawMessage
	for _, f := range []json.RawMessage{r.Tools, r.Functions, r.ToolChoice, r.ResponseFormat} {
		if !isNull(f) {
			out = append(out, f)
		}
	}
	return out
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// StreamOptions is the stream_options object of a streaming request.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// Message is one entry of a request's messages.
type Message struct {
	Role    string  `json:"role"`
	Content Content `json:"content"`
	Name    string  `json:"name,omitempty"`
	// ToolCalls and FunctionCall are an assistant message's calls, kept as
	// received (their arguments are prompt text on the next turn);
	// ToolCallID links a tool message to its call.
	ToolCalls    json.RawMessage `json:"tool_calls,omitempty"`
	FunctionCall json.RawMessage `json:"function_call,omitempty"`
	ToolCallID   string          `json:"tool_call_id,omitempty"`
}

// ParseChatCompletionRequest decodes and validates a request body. Unknown
// fields are ignored (OpenAI clients send many); a wrong JSON type for a
// declared field, trailing data or invalid JSON is a *RequestError wrapping
// ErrMalformedJSON; a value out of range is a *RequestError wrapping
// ErrInvalidRequest.
func ParseChatCompletionRequest(body []byte) (ChatCompletionRequest, error) {
	var r ChatCompletionRequest
	if err := json.Unmarshal(body, &r); err != nil {
		return ChatCompletionRequest{}, jsonError(err)
	}
	if err := checkKeyCase(body); err != nil {
		return ChatCompletionRequest{}, err
	}
	if err := r.Validate(); err != nil {
		return ChatCompletionRequest{}, err
	}
	return r, nil
}

// checkKeyCase rejects a top-level key that differs only in case from a
// declared field ("Model", "STREAM"). encoding/json matches names without
// regard to case but OpenAI-compatible servers do not, so without this check
// the gateway and its upstream could read different values for the fields
// that decide billing (model, stream, max_tokens).
func checkKeyCase(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil // already validated by Unmarshal
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		key, _ := tok.(string)
		if canon := declaredField(key); canon != "" && canon != key {
			return invalid(truncate(key, 64), "unrecognized request argument %q (did you mean %q?)", truncate(key, 64), canon)
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

// declaredField returns the JSON name of the declared request field that key
// matches without regard to case, or "".
func declaredField(key string) string {
	if len(key) > len("max_completion_tokens") {
		return ""
	}
	switch k := strings.ToLower(key); k {
	case "model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options",
		"temperature", "top_p", "n", "stop", "seed", "presence_penalty", "frequency_penalty", "user",
		"tools", "functions", "tool_choice", "response_format":
		return k
	}
	return ""
}

// jsonError turns an encoding/json error into a *RequestError with a message
// safe for clients.
func jsonError(err error) *RequestError {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var fe *fieldError
	switch {
	case errors.As(err, &fe):
		return &RequestError{Kind: ErrMalformedJSON, Param: fe.param, Message: fe.msg}
	case errors.As(err, &te):
		param := te.Field
		if param == "" {
			return &RequestError{Kind: ErrMalformedJSON, Message: "the request body must be a JSON object"}
		}
		return &RequestError{Kind: ErrMalformedJSON, Param: param, Message: fmt.Sprintf("invalid type for %s: got %s", param, te.Value)}
	case errors.As(err, &se):
		return &RequestError{Kind: ErrMalformedJSON, Message: fmt.Sprintf("invalid JSON at byte %d", se.Offset)}
	default:
		return &RequestError{Kind: ErrMalformedJSON, Message: "invalid JSON body"}
	}
}

// Validate checks the values of a decoded request.
func (r *ChatCompletionRequest) Validate() error {
	if r.Model == "" {
		return invalid("model", "model is required")
	}
	if len(r.Model) > maxModelLen || !utf8.ValidString(r.Model) {
		return invalid("model", "model must be at most %d bytes of UTF-8", maxModelLen)
	}
	if len(r.Messages) == 0 {
		return invalid("messages", "messages must contain at least one message")
	}
	for i, m := range r.Messages {
		switch m.Role {
		case RoleSystem, RoleDeveloper, RoleUser, RoleAssistant, RoleTool, RoleFunction:
		case "":
			return invalid(fmt.Sprintf("messages[%d].role", i), "role is required")
		default:
			return invalid(fmt.Sprintf("messages[%d].role", i), "unknown role %q", truncate(m.Role, 32))
		}
		if m.Content.kind == contentAbsent && m.Role != RoleAssistant {
			return invalid(fmt.Sprintf("messages[%d].content", i), "content is required for role %q", m.Role)
		}
		if err := checkShape(fmt.Sprintf("messages[%d].tool_calls", i), m.ToolCalls, '['); err != nil {
			return err
		}
		if err := checkShape(fmt.Sprintf("messages[%d].function_call", i), m.FunctionCall, '{'); err != nil {
			return err
		}
	}
	if err := checkShape("tools", r.Tools, '['); err != nil {
		return err
	}
	if err := checkShape("functions", r.Functions, '['); err != nil {
		return err
	}
	if err := checkShape("tool_choice", r.ToolChoice, '{', '"'); err != nil {
		return err
	}
	if err := checkShape("response_format", r.ResponseFormat, '{'); err != nil {
		return err
	}
	if err := checkTokens("max_tokens", r.MaxTokens); err != nil {
		return err
	}
	if err := checkTokens("max_completion_tokens", r.MaxCompletionTokens); err != nil {
		return err
	}
	if err := checkRange("temperature", r.Temperature, 0, 2); err != nil {
		return err
	}
	if err := checkRange("top_p", r.TopP, 0, 1); err != nil {
		return err
	}
	if err := checkRange("presence_penalty", r.PresencePenalty, -2, 2); err != nil {
		return err
	}
	if err := checkRange("frequency_penalty", r.FrequencyPenalty, -2, 2); err != nil {
		return err
	}
	if r.N != nil && (*r.N < 1 || *r.N > 128) {
		return invalid("n", "n must be between 1 and 128")
	}
	if len(r.Stop) > maxStopEntries {
		return invalid("stop", "at most %d stop sequences are allowed", maxStopEntries)
	}
	return nil
}

// checkShape accepts a raw field that is absent, null, or whose JSON value
// starts with one of the given bytes ('[' an array, '{' an object, '"' a
// string).
func checkShape(param string, raw json.RawMessage, starts ...byte) error {
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		return nil
	}
	for _, c := range starts {
		if raw[0] == c {
			return nil
		}
	}
	kinds := map[byte]string{'[': "an array", '{': "an object", '"': "a string"}
	want := kinds[starts[0]]
	for _, c := range starts[1:] {
		want += " or " + kinds[c]
	}
	return invalid(param, "%s must be %s", param, want)
}

func checkTokens(param string, v *int64) error {
	if v != nil && (*v < 1 || *v > MaxTokenLimit) {
		return invalid(param, "%s must be between 1 and %d", param, MaxTokenLimit)
	}
	return nil
}

func checkRange(param string, v *float64, lo, hi float64) error {
	if v != nil && (math.IsNaN(*v) || *v < lo || *v > hi) {
		return invalid(param, "%s must be between %g and %g", param, lo, hi)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// OutputLimit returns the requested completion token limit:
// max_completion_tokens if set, else max_tokens; ok is false when neither is.
func (r *ChatCompletionRequest) OutputLimit() (n int64, ok bool) {
	switch {
	case r.MaxCompletionTokens != nil:
		return *r.MaxCompletionTokens, true
	case r.MaxTokens != nil:
		return *r.MaxTokens, true
	}
	return 0, false
}

// IncludeUsage reports whether a streaming request asked for the final
// usage chunk.
func (r *ChatCompletionRequest) IncludeUsage() bool {
	return r.StreamOptions != nil && r.StreamOptions.IncludeUsage
}

// contentKind records which JSON form a Content had.
type contentKind uint8

const (
	contentAbsent contentKind = iota // missing or null
	contentString
	contentParts
)

// Content is a message's content: OpenAI accepts either a string or an array
// of content parts. Text returns the text either way.
type Content struct {
	kind  contentKind
	text  string
	parts []ContentPart
}

// ContentPart is one element of an array content. Only text parts carry
// text; other types (image_url, input_audio, file, refusal, …) are accepted
// and keep their type and what a prompt estimate needs, but their payload is
// not retained.
type ContentPart struct {
	Type string `json:"type"`
	Text string `json:"text,omitempty"`
	// Refusal is a refusal part's text (an assistant message's earlier
	// refusal).
	Refusal string `json:"-"`
	// Detail is an image_url part's image_url.detail ("low", "high",
	// "auto" or "").
	Detail string `json:"-"`
	// FileID is a file part's file.file_id: a reference to an uploaded
	// file, whose size the request does not show.
	FileID string `json:"-"`
	// Bytes is the size of the part's JSON as received (0 for a part built
	// in code): for inline payloads (base64 audio, file data) it bounds
	// what the payload can say.
	Bytes int `json:"-"`
}

// MarshalJSON writes {"type","text"} for a text part (even with empty
// text) and {"type"} for others.
func (p ContentPart) MarshalJSON() ([]byte, error) {
	if p.Type == "text" {
		return json.Marshal(struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}{p.Type, p.Text})
	}
	return json.Marshal(struct {
		Type string `json:"type"`
	}{p.Type})
}

// TextContent returns string content.
func TextContent(s string) Content { return Content{kind: contentString, text: s} }

// PartsContent returns array content.
func PartsContent(parts ...ContentPart) Content {
	return Content{kind: contentParts, parts: append([]ContentPart(nil), parts...)}
}

// Text returns the string content, or the text parts of array content
// concatenated in order with no separator.
func (c Content) Text() string {
	if c.kind != contentParts {
		return c.text
	}
	var b bytes.Buffer
	for _, p := range c.parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

// Parts returns a copy of the parts of array content, nil otherwise.
func (c Content) Parts() []ContentPart {
	if c.kind != contentParts {
		return nil
	}
	return append([]ContentPart{}, c.parts...)
}

// IsNull reports whether the content was absent or JSON null.
func (c Content) IsNull() bool { return c.kind == contentAbsent }

// MarshalJSON writes null, a string or an array, as the content was given.
func (c Content) MarshalJSON() ([]byte, error) {
	switch c.kind {
	case contentString:
		return json.Marshal(c.text)
	case contentParts:
		if c.parts == nil {
			return []byte("[]"), nil
		}
		return json.Marshal(c.parts)
	}
	return []byte("null"), nil
}

// fieldError reports a field whose custom decoder rejected its JSON shape.
type fieldError struct{ param, msg string }

func (e *fieldError) Error() string { return "openai: " + e.param + ": " + e.msg }

func contentError(msg string) *fieldError { return &fieldError{"messages.content", msg} }

// UnmarshalJSON accepts null, a string, or an array of objects each with a
// string "type" (and a string "text" for type "text").
func (c *Content) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	switch {
	case len(data) == 0:
		return contentError("content must be a string or an array of content parts")
	case string(data) == "null":
		*c = Content{}
		return nil
	case data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return contentError("content must be a string or an array of content parts")
		}
		*c = Content{kind: contentString, text: s}
		return nil
	case data[0] == '[':
		var raws []json.RawMessage
		if err := json.Unmarshal(data, &raws); err != nil {
			return contentError("each content part must be an object with a string type")
		}
		parts := make([]ContentPart, 0, len(raws))
		for _, rp := range raws {
			var p struct {
				Type     *string         `json:"type"`
				Text     *string         `json:"text"`
				Refusal  json.RawMessage `json:"refusal"`
				ImageURL json.RawMessage `json:"image_url"`
				File     json.RawMessage `json:"file"`
			}
			if err := json.Unmarshal(rp, &p); err != nil {
				return contentError("each content part must be an object with a string type")
			}
			if p.Type == nil || *p.Type == "" {
				return contentError("each content part needs a type")
			}
			part := ContentPart{Type: *p.Type, Bytes: len(rp)}
			switch part.Type {
			case "text":
				if p.Text == nil {
					return contentError("a text content part needs a text field")
				}
				part.Text = *p.Text
			case "refusal":
				_ = json.Unmarshal(p.Refusal, &part.Refusal) // a non-string refusal counts by Bytes
			case "image_url":
				var img struct {
					Detail string `json:"detail"`
				}
				if json.Unmarshal(p.ImageURL, &img) == nil {
					part.Detail = truncate(img.Detail, 16)
				}
			case "file":
				var f struct {
					FileID string `json:"file_id"`
				}
				if json.Unmarshal(p.File, &f) == nil {
					part.FileID = truncate(f.FileID, 256)
				}
			}
			parts = append(parts, part)
		}
		*c = Content{kind: contentParts, parts: parts}
		return nil
	}
	return contentError("content must be a string or an array of content parts")
}

// Stop is the stop field: a string or an array of strings on the wire.
type Stop []string

// UnmarshalJSON accepts null, a string or an array of strings.
func (s *Stop) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if string(data) == "null" {
		*s = nil
		return nil
	}
	if len(data) > 0 && data[0] == '"' {
		var one string
		if err := json.Unmarshal(data, &one); err != nil {
			return &fieldError{"stop", "stop must be a string or an array of strings"}
		}
		*s = Stop{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(data, &many); err != nil {
		return &fieldError{"stop", "stop must be a string or an array of strings"}
	}
	*s = many
	return nil
}

// Fields an upstream may read the completion limit from.
const (
	LimitMaxCompletionTokens = "max_completion_tokens"
	LimitMaxTokens           = "max_tokens"
)

// UpstreamOptions say how RewriteUpstreamBody rewrites a body.
type UpstreamOptions struct {
	// Model replaces model when not empty.
	Model string
	// Limit, when positive, is the completion limit (per choice) the
	// upstream is given, in LimitField; the other limit field is removed,
	// so the upstream sees exactly one (OpenAI rejects a request carrying
	// both). Zero leaves both fields as the client sent them.
	Limit int64
	// LimitField is LimitMaxCompletionTokens ("" means it) or
	// LimitMaxTokens, for servers that read only max_tokens.
	LimitField string
}

// PrepareUpstreamBody is RewriteUpstreamBody with only the model replaced.
func PrepareUpstreamBody(raw []byte, upstreamModel string) ([]byte, error) {
	return RewriteUpstreamBody(raw, UpstreamOptions{Model: upstreamModel})
}

// RewriteUpstreamBody rewrites a client's raw request body for an upstream
// server, keeping every field it does not touch: model is replaced when
// o.Model is not empty, the completion limit is set as o says, and a
// streaming request gets stream_options.include_usage = true so the
// upstream's final chunk carries the usage to meter. The body must be a
// JSON object (else a *RequestError wrapping ErrMalformedJSON); callers
// normally parse it with ParseChatCompletionRequest first.
func RewriteUpstreamBody(raw []byte, o UpstreamOptions) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, &RequestError{Kind: ErrMalformedJSON, Message: "the request body must be a JSON object"}
	}
	if o.Model != "" {
		m, err := json.Marshal(o.Model)
		if err != nil {
			return nil, fmt.Errorf("openai: encode model: %w", err)
		}
		obj["model"] = m
	}
	if o.Limit > 0 {
		field, other := LimitMaxCompletionTokens, LimitMaxTokens
		switch o.LimitField {
		case "", LimitMaxCompletionTokens:
		case LimitMaxTokens:
			field, other = other, field
		default:
			return nil, fmt.Errorf("openai: unknown limit field %q", truncate(o.LimitField, 64))
		}
		delete(obj, other)
		obj[field] = json.RawMessage(strconv.FormatInt(o.Limit, 10))
	}
	var stream bool
	if s, ok := obj["stream"]; ok {
		if err := json.Unmarshal(s, &stream); err != nil {
			return nil, &RequestError{Kind: ErrMalformedJSON, Param: "stream", Message: "stream must be a boolean"}
		}
	}
	if stream {
		opts := map[string]json.RawMessage{}
		if so, ok := obj["stream_options"]; ok && string(bytes.TrimSpace(so)) != "null" {
			if err := json.Unmarshal(so, &opts); err != nil {
				return nil, &RequestError{Kind: ErrMalformedJSON, Param: "stream_options", Message: "stream_options must be an object"}
			}
			if opts == nil {
				opts = map[string]json.RawMessage{}
			}
		}
		opts["include_usage"] = json.RawMessage("true")
		b, err := json.Marshal(opts)
		if err != nil {
			return nil, fmt.Errorf("openai: encode stream_options: %w", err)
		}
		obj["stream_options"] = b
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("openai: encode upstream body: %w", err)
	}
	return out, nil
}
