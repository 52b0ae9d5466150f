package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

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
	// completionLimit is the completion tokens reserved (and, for an
	// upstream, the max_tokens it is given).
	completionLimit int64
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
	if s.up != nil {
		call.completionLimit = upstreamDefaultMaxTokens
		if n, ok := req.OutputLimit(); ok {
			call.completionLimit = n
		}
	} else {
		call.completionLimit = simmodel.CompletionTokens(req)
		if call.completionLimit > simmodel.DefaultTokenLimit {
			return keyledger.Request{}, &httpapi.RequestError{Message: fmt.Sprintf("max_tokens must be at most %d.", simmodel.DefaultTokenLimit)}
		}
	}
	return keyledger.Request{
		Model: req.Model, Scope: "inference", Endpoint: chatEndpoint, Method: http.MethodPost,
		PromptTokens: simmodel.EstimatePromptTokens(req), MaxCompletionTokens: call.completionLimit,
	}, nil
}

// inferenceAuth checks the API key of a free inference route (the models
// list) without metering it.
func (s *server) inferenceAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := httpapi.Credential(r)
		if !ok {
			httpapi.OpenAIErrors.WriteError(w, r, httpapi.Error{Status: 401, Type: "invalid_request_error",
				Code: httpapi.CodeInvalidAPIKey, Message: "Missing API key: send it as 'Authorization: Bearer <key>'."})
			return
		}
		if _, err := s.kl.Keys.Verify(r.Context(), apikey.RawKey(raw)); err != nil {
			httpapi.OpenAIErrors.WriteError(w, r, httpapi.Classify(err))
			return
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
	u := chunks[len(chunks)-1].Usage
	sse := openai.NewSSEWriter(w)
	for _, c := range chunks {
		if ctx.Err() != nil {
			return // the middleware records the failure; the stream ends without [DONE]
		}
		if err := sse.WriteChunk(c); err != nil {
			return
		}
	}
	_ = sse.WriteDone()
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
