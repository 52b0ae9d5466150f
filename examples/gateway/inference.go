package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/examples/gateway/internal/simmodel"
	"github.com/keyledger/keyledger/httpapi"
)

const (
	chatEndpoint = "/inference/v1/chat/completions"
	// upstreamDefaultMaxTokens is the completion limit the gateway sets on
	// a proxied request that sets none, so that the credit hold covers the
	// whole answer.
	upstreamDefaultMaxTokens = 1024
	// maxUpstreamBody bounds a non-streaming upstream response.
	maxUpstreamBody = 16 << 20
)

// chatCall carries a chat completion request from the body reader through
// the middleware's RequestFunc to the handler, so the body is parsed once.
type chatCall struct {
	raw []byte
	req openai.ChatCompletionRequest
	// completionLimit is the completion tokens of one choice: what an
	// upstream is given as its limit.
	completionLimit int64
	// choices is n (1 when unset); the reservation is choices ×
	// completionLimit.
	choices int64
	// promptTokens is the prompt estimate reserved.
	promptTokens int64
}

type chatCallKey struct{}

// readInferenceBody reads the body (413 over 1 MiB) before the middleware
// runs and hands it on in the context.
func (s *server) readInferenceBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := readBody(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), chatCallKey{}, &chatCall{raw: b})))
	})
}

// inferenceRequest is the middleware's RequestFunc: it parses the chat
// completion request and describes it to Authorize (model, scope, token
// reservations).
func (s *server) inferenceRequest(r *http.Request) (keyledger.Request, error) {
	call, _ := r.Context().Value(chatCallKey{}).(*chatCall)
	if call == nil {
		return keyledger.Request{}, errors.New("no request body")
	}
	req, err := openai.ParseChatCompletionRequest(call.raw)
	if err != nil {
		var re *openai.RequestError
		if errors.As(err, &re) {
			return keyledger.Request{}, &httpapi.RequestError{Message: re.Message}
		}
		return keyledger.Request{}, &httpapi.RequestError{Message: "Invalid request body."}
	}
	call.req = req
	if err := simmodel.Estimable(req); err != nil {
		return keyledger.Request{}, &httpapi.RequestError{Message: "The prompt cannot be metered: " + strings.TrimPrefix(err.Error(), simmodel.ErrUnsupported.Error()+": ") + "."}
	}
	call.choices = 1
	if req.N != nil {
		call.choices = *req.N
	}
	if s.up != nil {
		if call.choices > maxChoices {
			return keyledger.Request{}, &httpapi.RequestError{Message: fmt.Sprintf("n must be at most %d: the gateway's maximum choices per request (each choice is reserved in full).", maxChoices)}
		}
		call.completionLimit = upstreamDefaultMaxTokens
		if n, ok := req.OutputLimit(); ok {
			call.completionLimit = n
		}
	} else {
		if call.choices != 1 {
			return keyledger.Request{}, &httpapi.RequestError{Message: "n must be 1: the simulated model answers one choice."}
		}
		call.completionLimit = simmodel.CompletionTokens(req)
		if call.completionLimit > simmodel.DefaultTokenLimit {
			return keyledger.Request{}, &httpapi.RequestError{Message: fmt.Sprintf("max_tokens must be at most %d.", simmodel.DefaultTokenLimit)}
		}
	}
	call.promptTokens = simmodel.EstimatePromptTokens(req)
	kr := keyledger.Request{
		Model: req.Model, Scope: "inference", Endpoint: chatEndpoint, Method: http.MethodPost,
		// n ≤ maxChoices and the limit ≤ openai.MaxTokenLimit: no overflow.
		PromptTokens: call.promptTokens, MaxCompletionTokens: call.choices * call.completionLimit,
	}
	if req.Stream && s.limits.streamHoldTokens > 0 {
		// A stream reports its progress: its hold starts at an estimate
		// and grows as it delivers (the rate limits still reserve the
		// whole limit).
		kr.HoldCompletionTokens = min(s.limits.streamHoldTokens, kr.MaxCompletionTokens)
	}
	return kr, nil
}

// inferenceAuth checks the API key of a free inference route (the models
// list) without metering it, and answers with the key's X-Ratelimit-*
// headers.
func (s *server) inferenceAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := httpapi.Credential(r)
		if !ok {
			httpapi.OpenAIErrors.WriteError(w, r, httpapi.Error{Status: 401, Type: "invalid_request_error",
				Code: httpapi.CodeInvalidAPIKey, Message: "Missing API key: send it as 'Authorization: Bearer <key>'."})
			return
		}
		v, err := s.kl.Keys.Verify(r.Context(), apikey.RawKey(raw))
		if err != nil {
			httpapi.OpenAIErrors.WriteError(w, r, httpapi.Classify(err))
			return
		}
		// Every response of the inference API to an identified key carries
		// its rate-limit state, as the metered routes' do (Forii's
		// X-Ratelimit-* headers). Reading the budget spends nothing.
		if b, err := s.kl.Budget(r.Context(), v); err == nil {
			httpapi.SetRateLimitHeaders(w.Header(), b)
		}
		next.ServeHTTP(w, r)
	})
}

// GET /inference/v1/models
func (s *server) listModels(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.cat.list)
}

// POST /inference/v1/chat/completions (behind httpapi.Middleware)
func (s *server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	call, _ := r.Context().Value(chatCallKey{}).(*chatCall)
	info := httpapi.FromContext(r.Context())
	ctx, cancel := s.withDeadline(w, r)
	defer cancel()
	r = r.WithContext(ctx)
	if s.up != nil {
		s.proxy(w, r, call, info)
		return
	}
	s.simulate(w, r, call, info)
}

// failInflight answers a request whose work stopped: the key was revoked
// (or disabled, or expired) while it ran, or the client left.
func failInflight(w http.ResponseWriter, r *http.Request, info *httpapi.Info, err error) {
	cause := context.Cause(r.Context())
	if cause == nil {
		cause = err
	}
	e := httpapi.Classify(cause)
	info.Report(keyledger.Outcome{ErrorType: "request_failed", ErrorMessage: e.Message})
	httpapi.OpenAIErrors.WriteError(w, r, e)
}

// simulate answers from the built-in model.
func (s *server) simulate(w http.ResponseWriter, r *http.Request, call *chatCall, info *httpapi.Info) {
	ctx := r.Context()
	if !call.req.Stream {
		resp, err := s.sim.Complete(ctx, call.req)
		if err != nil {
			s.simError(w, r, info, err)
			return
		}
		info.Report(keyledger.Outcome{PromptTokens: resp.Usage.PromptTokens, CompletionTokens: resp.Usage.CompletionTokens})
		writeJSON(w, http.StatusOK, resp)
		return
	}
	chunks, err := s.sim.Stream(ctx, call.req)
	if err != nil {
		s.simError(w, r, info, err)
		return
	}
	// The model knows its tokens exactly: one a content chunk. What is
	// reported is what was written — a client that goes away mid-stream
	// pays for the chunks it was sent, not for the whole answer and not
	// nothing.
	prompt := chunks[len(chunks)-1].Usage.PromptTokens
	st := newStreamState(openai.NewSSEWriter(w), true)
	st.id, st.model, st.created = chunks[0].ID, chunks[0].Model, chunks[0].Created
	for _, c := range chunks {
		if ctx.Err() != nil {
			s.endStream(r, info, st, openai.NewUsage(prompt, st.tokens), false)
			return
		}
		if err := st.sse.WriteChunk(c); err != nil {
			s.endStream(r, info, st, openai.NewUsage(prompt, st.tokens), false)
			return
		}
		st.wrote(c)
		if len(c.Choices) == 1 && c.Choices[0].Delta.Content != "" {
			st.tokens++
			// Once the whole answer is written there is nothing more to
			// fund: the last token is not cut.
			if st.tokens < call.completionLimit && progress(ctx, info, prompt, st.tokens, call.completionLimit) != nil {
				s.endStream(r, info, st, openai.NewUsage(prompt, st.tokens), false)
				return
			}
		}
	}
	_ = st.sse.WriteDone()
	u := chunks[len(chunks)-1].Usage
	info.Report(keyledger.Outcome{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens})
}

func (s *server) simError(w http.ResponseWriter, r *http.Request, info *httpapi.Info, err error) {
	if r.Context().Err() != nil {
		failInflight(w, r, info, err)
		return
	}
	info.Report(keyledger.Outcome{ErrorType: "invalid_request", ErrorMessage: err.Error()})
	openai.WriteError(w, http.StatusBadRequest, openai.TypeInvalidRequest, "invalid_request", "The model cannot answer this request: "+err.Error())
}
