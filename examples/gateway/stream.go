package main

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/httpapi"
)

// bytesPerToken is the documented rate at which delivered text is charged
// when an upstream reports no usage: ⌈bytes / 4⌉ completion tokens, the
// bytes being those of the generated text actually sent to the client
// (content, refusal, reasoning, tool call names and arguments). The record
// is marked Metadata["usage"] = "estimated".
const bytesPerToken = 4

// tokensOf is ⌈b / bytesPerToken⌉.
func tokensOf(b int64) int64 { return (b + bytesPerToken - 1) / bytesPerToken }

// streamState is what a stream has delivered to the client so far.
type streamState struct {
	sse *openai.SSEWriter
	// withUsage: the client gets a usage chunk (it asked for one, or the
	// simulated model, which always sends it).
	withUsage bool
	started   bool // an event was written
	// id, model and created are copied from the last chunk written, for
	// the chunks the gateway adds when it ends a stream.
	id, model string
	created   int64
	// open lists the choices that have started and not finished, done
	// those that finished; a stream cut short finishes the open ones.
	open, done []int
	tokens     int64 // completion tokens delivered (the simulated model counts exactly)
	bytes      int64 // generated-text bytes delivered (proxied streams)
}

func newStreamState(sse *openai.SSEWriter, withUsage bool) *streamState {
	return &streamState{sse: sse, withUsage: withUsage}
}

// wrote records a chunk that was written to the client.
func (st *streamState) wrote(c openai.ChatCompletionChunk) {
	st.started = true
	if c.ID != "" {
		st.id, st.model, st.created = c.ID, c.Model, c.Created
	}
	for _, ch := range c.Choices {
		if slices.Contains(st.done, ch.Index) {
			continue
		}
		if ch.FinishReason != nil {
			st.open = slices.DeleteFunc(st.open, func(i int) bool { return i == ch.Index })
			st.done = append(st.done, ch.Index)
			continue
		}
		if !slices.Contains(st.open, ch.Index) && len(st.open) < maxChoices {
			st.open = append(st.open, ch.Index)
		}
	}
}

// progress tells the grant what a stream has delivered so far (cumulative
// prompt and completion tokens), so that it extends the hold as the cost
// nears it. It returns keyledger.ErrBudgetExhausted when the balance
// cannot fund more: the grant's context is then cancelled with that cause
// and the stream must end (endStream ends it cleanly). It is cheap until
// the delivered cost nears the hold.
//
// A hold that already pays for the whole reservation (limit, the most the
// answer may be) is not extended ahead of need: Progress extends a quarter
// step early, which would take from the balance, for a moment, funds the
// request cannot use and other requests at the balance edge could. Past
// the limit (an upstream that ignores it) every chunk is reported again.
// The request deadline is below the hold TTL, so no hold needs renewing.
func progress(ctx context.Context, info *httpapi.Info, prompt, completion, limit int64) error {
	if info == nil || info.Grant == nil {
		return nil
	}
	if completion < limit && info.Grant.Reserved().CompletionTokens >= limit {
		return nil
	}
	return info.Grant.Progress(ctx, keyledger.Delivered{PromptTokens: prompt, CompletionTokens: completion})
}

// cutCause names why the gateway ends a stream early and cleanly —
// "deadline" (-max-request-duration) or "budget" (the balance cannot fund
// more) — or returns "" when it cannot end it cleanly: the client went
// away, the key was invalidated, or a write failed.
func cutCause(ctx context.Context) string {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errRequestDeadline):
		return "deadline"
	case errors.Is(cause, keyledger.ErrBudgetExhausted):
		return "budget"
	}
	return ""
}

// endStream ends a stream that stopped before its natural end and reports
// what it delivered, u (estimated: counted from delivered bytes). Cut by
// the gateway (the request deadline, or the balance running out), the
// stream ends as OpenAI ends a truncated answer: a chunk with
// finish_reason "length" for every open choice, the usage chunk when the
// client gets one, and [DONE]. Otherwise (the client left, the key was
// revoked, a write failed) nothing more is written. Either way the
// delivered usage is reported; the middleware decides whether it is
// charged (a revoked key's request is not).
func (s *server) endStream(r *http.Request, info *httpapi.Info, st *streamState, u openai.Usage, estimated bool) {
	meta := map[string]string{}
	if estimated {
		meta["usage"] = "estimated"
	}
	if cause := cutCause(r.Context()); cause != "" {
		meta["stream_end"] = cause
		if err := st.finish(u); err != nil {
			s.log.DebugContext(r.Context(), "ending a cut stream failed", "error", err)
		}
	}
	// Even with nothing written the prompt was read (the model or the
	// upstream had started answering): it is charged, never the whole
	// reservation.
	out := outcomeOf(u)
	out.Metadata = meta
	info.Report(out)
}

// finish writes the end of a stream cut short: finish_reason "length" for
// the open choices (choice 0 when none had started), the usage chunk when
// the client gets one, and [DONE].
func (st *streamState) finish(u openai.Usage) error {
	open := st.open
	if len(open) == 0 && len(st.done) == 0 {
		open = []int{0}
	}
	chunk := func(choices []openai.ChunkChoice, u *openai.Usage) openai.ChatCompletionChunk {
		return openai.ChatCompletionChunk{ID: st.id, Object: openai.ObjectChatCompletionChunk, Created: st.created, Model: st.model, Choices: choices, Usage: u}
	}
	if len(open) > 0 {
		length := openai.FinishLength
		choices := make([]openai.ChunkChoice, len(open))
		for i, idx := range open {
			choices[i] = openai.ChunkChoice{Index: idx, FinishReason: &length}
		}
		if err := st.sse.WriteChunk(chunk(choices, nil)); err != nil {
			return err
		}
		st.open = nil
	}
	if st.withUsage {
		if err := st.sse.WriteChunk(chunk([]openai.ChunkChoice{}, &u)); err != nil {
			return err
		}
	}
	return st.sse.WriteDone()
}
