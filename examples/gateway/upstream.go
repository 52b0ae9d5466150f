package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/httpapi"
)

// upstream is an OpenAI-compatible server the gateway proxies to.
type upstream struct {
	base   string // e.g. http://127.0.0.1:11434/v1
	key    string
	client *http.Client
}

// upstreamBody rewrites the client's body for the upstream from what was
// reserved: the upstream's model name, the reserved completion limit (per
// choice) in the one field the model's upstream reads — the other field is
// removed — and include_usage on streams. n is forwarded as the client
// sent it; it was reserved in full.
func (s *server) upstreamBody(call *chatCall) ([]byte, error) {
	m := s.cat.byID[call.req.Model]
	return openai.RewriteUpstreamBody(call.raw, openai.UpstreamOptions{
		Model: m.UpstreamModel, Limit: call.completionLimit, LimitField: m.UpstreamLimitField,
	})
}

// proxy forwards a chat completion to the upstream under the request's
// context (cancelled when the key is revoked) and meters the usage the
// upstream reports, streaming included.
func (s *server) proxy(w http.ResponseWriter, r *http.Request, call *chatCall, info *httpapi.Info) {
	ctx := r.Context()
	body, err := s.upstreamBody(call)
	if err != nil {
		info.Report(keyledger.Outcome{ErrorType: "invalid_request", ErrorMessage: "body not forwardable"})
		openai.WriteError(w, http.StatusBadRequest, openai.TypeInvalidRequest, "invalid_request", "The request body must be a JSON object.")
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.up.base+"/chat/completions", bytes.NewReader(body))
	if err != nil {
		s.upstreamFailed(w, r, info, err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if call.req.Stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	if s.up.key != "" {
		req.Header.Set("Authorization", "Bearer "+s.up.key)
	}
	resp, err := s.up.client.Do(req)
	if err != nil {
		s.upstreamCallFailed(w, r, info, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.relayUpstreamError(w, r, info, resp)
		return
	}
	if call.req.Stream {
		s.proxyStream(w, r, call, info, resp)
		return
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody))
	if err != nil {
		s.upstreamCallFailed(w, r, info, err)
		return
	}
	cc, err := openai.ParseChatCompletion(raw)
	if err != nil {
		s.upstreamFailed(w, r, info, err)
		return
	}
	meta := map[string]string{"upstream_id": cc.ID}
	var u openai.Usage
	if cc.Usage != nil {
		u = *cc.Usage
	} else { // no usage reported: the prompt estimate and the delivered text at bytesPerToken
		var n int64
		for _, c := range cc.Choices {
			n += c.Message.OutputBytes()
		}
		u = openai.NewUsage(call.promptTokens, tokensOf(n))
		meta["usage"] = "estimated"
	}
	out := outcomeOf(u)
	out.Metadata = meta
	info.Report(out)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(raw)
}

// outcomeOf is the outcome of an upstream's usage: the totals and their
// cached and reasoning parts (keyledger prices each part at its own price
// and clamps a part above its total).
func outcomeOf(u openai.Usage) keyledger.Outcome {
	return keyledger.Outcome{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens,
		CachedPromptTokens: u.CachedTokens(), ReasoningTokens: u.ReasoningTokens()}
}

// proxyStream relays the upstream's SSE events as they come and meters the
// usage of its final chunk (include_usage is forced on; the usage chunk
// reaches the client only if it asked for it). An upstream that reports no
// usage is charged for the text delivered, at bytesPerToken. A stream the
// gateway cuts (the request deadline) ends cleanly; one the client leaves
// is charged for what it was sent.
func (s *server) proxyStream(w http.ResponseWriter, r *http.Request, call *chatCall, info *httpapi.Info, resp *http.Response) {
	ctx := r.Context()
	sr := openai.NewStreamReader(resp.Body, 0)
	st := newStreamState(openai.NewSSEWriter(w), call.req.IncludeUsage())
	usage := func() (openai.Usage, bool) {
		if u, ok := sr.Usage(); ok {
			return u, false
		}
		return openai.NewUsage(call.promptTokens, tokensOf(st.bytes)), true
	}
	var streamErr error
	writeFailed, budgetCut := false, false
	for {
		ev, err := sr.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				streamErr = err
			}
			break
		}
		if ev.Done {
			if _, ok := sr.Usage(); !ok && st.withUsage {
				// The client asked for usage and the upstream sent none:
				// it gets what it is charged, the estimate.
				u, _ := usage()
				if streamErr = st.sse.WriteChunk(openai.ChatCompletionChunk{ID: st.id, Object: openai.ObjectChatCompletionChunk,
					Created: st.created, Model: st.model, Choices: []openai.ChunkChoice{}, Usage: &u}); streamErr != nil {
					writeFailed = true
					break
				}
			}
			if streamErr = st.sse.WriteDone(); streamErr != nil {
				writeFailed = true
			}
			continue
		}
		if ev.Chunk.Usage != nil && len(ev.Chunk.Choices) == 0 && !st.withUsage {
			continue // the usage chunk the gateway asked for, not the client
		}
		if err := st.sse.WriteData(ev.Data); err != nil {
			streamErr, writeFailed = err, true
			break
		}
		st.wrote(ev.Chunk)
		st.bytes = sr.ContentBytes()
		if u, _ := usage(); progress(ctx, info, u.PromptTokens, u.CompletionTokens, call.choices*call.completionLimit) != nil {
			budgetCut = true // the balance is spent: stop reading the upstream
			break
		}
	}
	u, estimated := usage()
	switch {
	case budgetCut:
		s.endStream(r, info, st, u, estimated)
		return
	case streamErr == nil:
	case ctx.Err() != nil || writeFailed:
		// Cut by the gateway, left by the client or stopped by the key.
		s.endStream(r, info, st, u, estimated)
		return
	case !st.started:
		// The upstream failed before anything was sent: a 502, not charged.
		s.upstreamFailed(w, r, info, streamErr)
		return
	}
	out := outcomeOf(u)
	if estimated {
		out.Metadata = map[string]string{"usage": "estimated"}
	}
	if streamErr != nil {
		// The upstream broke off: what was delivered is still charged, and
		// the record says why the stream ended early.
		if out.Metadata == nil {
			out.Metadata = map[string]string{}
		}
		out.Metadata["stream_error"] = streamErr.Error()
		s.log.WarnContext(ctx, "upstream stream ended early", "error", streamErr)
	}
	info.Report(out)
}

// upstreamCallFailed answers a failed upstream call (before any of the
// answer reached the client): 504 at the request deadline, the in-flight
// failure when the client left or the key stopped, else 502. None is
// charged.
func (s *server) upstreamCallFailed(w http.ResponseWriter, r *http.Request, info *httpapi.Info, err error) {
	var ne net.Error
	switch {
	case errors.Is(context.Cause(r.Context()), errRequestDeadline) || (r.Context().Err() == nil && errors.As(err, &ne) && ne.Timeout()):
		info.Report(keyledger.Outcome{ErrorType: "upstream_timeout", ErrorMessage: "request deadline"})
		openai.WriteError(w, http.StatusGatewayTimeout, openai.TypeUpstream, "upstream_timeout",
			fmt.Sprintf("The upstream model server did not answer within the gateway's request limit of %s (-max-request-duration).", s.limits.maxRequestDuration))
	case r.Context().Err() != nil:
		failInflight(w, r, info, err)
	default:
		s.upstreamFailed(w, r, info, err)
	}
}

// upstreamFailed answers 502 for an unreachable or misbehaving upstream;
// the request is not charged.
func (s *server) upstreamFailed(w http.ResponseWriter, r *http.Request, info *httpapi.Info, err error) {
	s.log.WarnContext(r.Context(), "upstream failed", "error", err)
	info.Report(keyledger.Outcome{ErrorType: "upstream_error", ErrorMessage: "upstream unavailable"})
	openai.WriteError(w, http.StatusBadGateway, openai.TypeUpstream, "upstream_error", "The upstream model server failed to answer.")
}

// relayUpstreamError passes an upstream's client error on (4xx other than
// auth problems, which are the gateway's) and turns the rest into 502; the
// request is not charged.
func (s *server) relayUpstreamError(w http.ResponseWriter, r *http.Request, info *httpapi.Info, resp *http.Response) {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e, ok := openai.ParseErrorResponse(b)
	status := resp.StatusCode
	if status < 400 || status >= 500 || status == 401 || status == 403 || status == 429 {
		status = http.StatusBadGateway
	}
	info.Report(keyledger.Outcome{ErrorType: "upstream_error", ErrorMessage: "upstream status " + strconv.Itoa(resp.StatusCode)})
	if !ok || status == http.StatusBadGateway {
		s.log.WarnContext(r.Context(), "upstream error", "status", resp.StatusCode)
		openai.WriteError(w, http.StatusBadGateway, openai.TypeUpstream, "upstream_error", "The upstream model server returned an error.")
		return
	}
	openai.WriteErrorResponse(w, status, e)
}
