// Package simmodel is the gateway's built-in simulated chat model: it
// answers any OpenAI chat completion request at once with deterministic
// text, so that the gateway runs, meters and bills on a fresh machine
// without a GPU or an upstream server.
//
// Token counts are a documented contract, because tests and demos charge by
// them:
//
//   - completion_tokens = max_completion_tokens, else max_tokens, else
//     DefaultMaxTokens (16); the answer is exactly that many words.
//   - prompt_tokens = 2 + Σ over messages of (4 + ⌈b/4⌉ + parts + calls),
//     where b is the number of UTF-8 bytes of the message's text (string
//     content, or its text parts concatenated); parts is, for each
//     non-text content part, ImageTokens for an image_url part
//     (LowImageTokens with detail "low"), ⌈b/4⌉ of a refusal part's text,
//     and ⌈b/4⌉ of the part's JSON bytes for any other part (an inline
//     audio or file payload: its size bounds what it can say); calls is
//     ⌈b/4⌉ of the JSON bytes of the message's tool_calls and of its
//     function_call. Plus ⌈b/4⌉ of the JSON bytes of each of the request's
//     tools, functions, tool_choice and response_format: the model reads
//     them as prompt. Roles and names count only through the 4 tokens of
//     per-message overhead.
//
// Estimable refuses what the rule cannot size: a file part given only by
// file_id (the file is elsewhere) and content part types it does not know.
//
// The text is a function of the model name and the messages only: the same
// conversation always gets the same words, and a larger max_tokens extends
// the answer without changing its beginning. EstimatePromptTokens (used to
// reserve rate-limit budget before the call) equals the exact count.
package simmodel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
)

// Errors returned by Model. Match them with errors.Is.
var (
	ErrTooManyTokens  = errors.New("simmodel: requested completion tokens exceed the model's limit")
	ErrUnsupported    = errors.New("simmodel: unsupported request")
	ErrInvalidOptions = errors.New("simmodel: invalid options")
	ErrInvalidRequest = errors.New("simmodel: invalid request")
)

// Defaults.
const (
	// DefaultMaxTokens is the completion length when a request sets neither
	// max_tokens nor max_completion_tokens.
	DefaultMaxTokens = 16
	// DefaultTokenLimit is the default Options.MaxCompletionTokens.
	DefaultTokenLimit = 16384
	// perMessageTokens and primingTokens are the fixed parts of the prompt
	// token rule.
	perMessageTokens = 4
	primingTokens    = 2
	// ImageTokens is the prompt estimate of one image_url part: the most a
	// high-detail image costs under gpt-4o's rule (85 + 170 per 512-pixel
	// tile, at most 8 tiles once scaled to 768×2048).
	ImageTokens = 1445
	// LowImageTokens is the estimate of an image_url part with detail
	// "low" (OpenAI's fixed cost).
	LowImageTokens = 85
)

// vocabulary is the word list the answers are drawn from, one word a token.
const vocabulary = "the model answers every prompt with simulated words so that metering " +
	"billing and rate limits can be tested end to end without any real inference " +
	"keyledger counts tokens exactly charges prepaid credits in rupees and keeps " +
	"a ledger of each request for its account key and model today"

// Options configures a Model. The zero value (or nil) gives the defaults.
type Options struct {
	// Now is the clock for the "created" field; default time.Now.
	Now func() time.Time
	// NewID returns response ids; default "chatcmpl-" and 24 random hex
	// digits from crypto/rand.
	NewID func() string
	// MaxCompletionTokens is the largest completion a request may ask for;
	// larger requests fail with ErrTooManyTokens. Default DefaultTokenLimit.
	MaxCompletionTokens int64
}

// Model is the simulated model. It is stateless and safe for concurrent use.
type Model struct {
	now   func() time.Time
	newID func() string
	limit int64
	words []string
}

// New returns a Model configured by opts (nil means defaults).
func New(opts *Options) (*Model, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxCompletionTokens < 0 || o.MaxCompletionTokens > openai.MaxTokenLimit {
		return nil, fmt.Errorf("%w: MaxCompletionTokens %d", ErrInvalidOptions, o.MaxCompletionTokens)
	}
	m := &Model{now: o.Now, newID: o.NewID, limit: o.MaxCompletionTokens, words: strings.Fields(vocabulary)}
	if m.now == nil {
		m.now = time.Now
	}
	if m.newID == nil {
		m.newID = randomID
	}
	if m.limit == 0 {
		m.limit = DefaultTokenLimit
	}
	return m, nil
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "chatcmpl-" + hex.EncodeToString(b[:])
}

// PromptTokens returns the prompt token count of req by the package rule.
func PromptTokens(req openai.ChatCompletionRequest) int64 {
	n := int64(primingTokens)
	for _, m := range req.Messages {
		n += perMessageTokens + quarter(len(m.Content.Text())) + quarter(len(m.ToolCalls)) + quarter(len(m.FunctionCall))
		for _, p := range m.Content.Parts() {
			switch p.Type {
			case "text":
			case "image_url":
				if p.Detail == "low" {
					n += LowImageTokens
				} else {
					n += ImageTokens
				}
			case "refusal":
				n += quarter(len(p.Refusal))
			default:
				n += quarter(p.Bytes)
			}
		}
	}
	for _, x := range req.PromptExtras() {
		n += quarter(len(x))
	}
	return n
}

// quarter is ⌈b/4⌉: the rule's four bytes a token.
func quarter(b int) int64 { return (int64(b) + 3) / 4 }

// Estimable reports whether PromptTokens can size req's prompt: an error
// wrapping ErrUnsupported names the first content part it cannot (a file
// given only by file_id, or a part type the rule does not know).
func Estimable(req openai.ChatCompletionRequest) error {
	for i, m := range req.Messages {
		for j, p := range m.Content.Parts() {
			switch {
			case p.Type == "file" && p.FileID != "":
				return fmt.Errorf("%w: messages[%d].content[%d] is a file given by file_id, whose size cannot be estimated; send it inline as file_data", ErrUnsupported, i, j)
			case p.Type != "text" && p.Type != "image_url" && p.Type != "refusal" && p.Type != "input_audio" && p.Type != "file":
				typ := p.Type
				if len(typ) > 32 {
					typ = typ[:32]
				}
				return fmt.Errorf("%w: messages[%d].content[%d] has type %q, whose size cannot be estimated", ErrUnsupported, i, j, typ)
			}
		}
	}
	return nil
}

// EstimatePromptTokens is the prompt estimate to reserve before the call;
// for the simulated model it is exact.
func EstimatePromptTokens(req openai.ChatCompletionRequest) int64 { return PromptTokens(req) }

// CompletionTokens returns the completion length of req: its output limit,
// or DefaultMaxTokens.
func CompletionTokens(req openai.ChatCompletionRequest) int64 {
	if n, ok := req.OutputLimit(); ok {
		return n
	}
	return DefaultMaxTokens
}

// Usage returns the usage Complete and Stream report for req.
func Usage(req openai.ChatCompletionRequest) openai.Usage {
	return openai.NewUsage(PromptTokens(req), CompletionTokens(req))
}

// check validates req for this model and returns its completion length.
func (m *Model) check(ctx context.Context, req *openai.ChatCompletionRequest) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if req.Model == "" || len(req.Messages) == 0 {
		return 0, fmt.Errorf("%w: model and messages are required", ErrInvalidRequest)
	}
	if req.N != nil && *req.N != 1 {
		return 0, fmt.Errorf("%w: n must be 1", ErrUnsupported)
	}
	n := CompletionTokens(*req)
	if n < 1 {
		return 0, fmt.Errorf("%w: completion tokens must be positive", ErrInvalidRequest)
	}
	if n > m.limit {
		return 0, fmt.Errorf("%w: %d > %d", ErrTooManyTokens, n, m.limit)
	}
	return n, nil
}

// Complete answers req with a non-streaming response.
func (m *Model) Complete(ctx context.Context, req openai.ChatCompletionRequest) (openai.ChatCompletion, error) {
	n, err := m.check(ctx, &req)
	if err != nil {
		return openai.ChatCompletion{}, err
	}
	u := openai.NewUsage(PromptTokens(req), n)
	return openai.ChatCompletion{
		ID:      m.newID(),
		Object:  openai.ObjectChatCompletion,
		Created: m.now().Unix(),
		Model:   req.Model,
		Choices: []openai.Choice{{
			Message:      openai.ResponseMessage{Role: openai.RoleAssistant, Content: strings.Join(m.pieces(req, n), "")},
			FinishReason: openai.FinishStop,
		}},
		Usage: &u,
	}, nil
}

// Stream answers req as the chunks of a streaming response, in order: a
// first chunk with the assistant role and empty content, one chunk per
// token whose contents concatenate to Complete's text, a chunk with
// finish_reason "stop", and a final usage chunk with no choices. The caller
// writes each with openai.SSEWriter and ends with WriteDone.
func (m *Model) Stream(ctx context.Context, req openai.ChatCompletionRequest) ([]openai.ChatCompletionChunk, error) {
	n, err := m.check(ctx, &req)
	if err != nil {
		return nil, err
	}
	id, created := m.newID(), m.now().Unix()
	chunk := func(choices []openai.ChunkChoice, u *openai.Usage) openai.ChatCompletionChunk {
		return openai.ChatCompletionChunk{ID: id, Object: openai.ObjectChatCompletionChunk, Created: created, Model: req.Model, Choices: choices, Usage: u}
	}
	pieces := m.pieces(req, n)
	out := make([]openai.ChatCompletionChunk, 0, len(pieces)+3)
	out = append(out, chunk([]openai.ChunkChoice{{Delta: openai.Delta{Role: openai.RoleAssistant}}}, nil))
	for _, p := range pieces {
		out = append(out, chunk([]openai.ChunkChoice{{Delta: openai.Delta{Content: p}}}, nil))
	}
	stop := openai.FinishStop
	out = append(out, chunk([]openai.ChunkChoice{{FinishReason: &stop}}, nil))
	u := openai.NewUsage(PromptTokens(req), n)
	out = append(out, chunk([]openai.ChunkChoice{}, &u))
	return out, nil
}

// Text returns the answer of n tokens to req.
func (m *Model) Text(req openai.ChatCompletionRequest, n int64) string {
	if n < 1 || n > m.limit {
		return ""
	}
	return strings.Join(m.pieces(req, n), "")
}

// pieces returns the n tokens of the answer: words separated by single
// spaces (carried at the start of every piece but the first), the first
// word capitalised and the last followed by a full stop.
func (m *Model) pieces(req openai.ChatCompletionRequest, n int64) []string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(req.Model))
	for _, msg := range req.Messages {
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(msg.Role))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(msg.Content.Text()))
	}
	state := h.Sum64()
	out := make([]string, n)
	for i := range out {
		w := m.words[splitmix64(&state)%uint64(len(m.words))]
		switch {
		case i == 0:
			r, size := utf8.DecodeRuneInString(w)
			w = string(unicode.ToUpper(r)) + w[size:]
		default:
			w = " " + w
		}
		if i == len(out)-1 {
			w += "."
		}
		out[i] = w
	}
	return out
}

// splitmix64 advances state and returns the next value of the SplitMix64
// generator: tiny, fast and fully determined by the seed.
func splitmix64(state *uint64) uint64 {
	*state += 0x9e3779b97f4a7c15
	z := *state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
