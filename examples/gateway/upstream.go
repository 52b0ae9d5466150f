package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/examples/gateway/internal/simmodel"
	"github.com/keyledger/keyledger/httpapi"
)

// upstream is an OpenAI-compatible server the gateway proxies to.
type upstream struct {
	base   string // e.g. http://127.0.0.1:11434/v1
	key    string
	client *http.Client
}

// upstreamBody rewrites the client's body for the upstream: the upstream's
// model name, include_usage on streams, and max_tokens when the client set
// no limit (so the hold covers the answer).
func (s *server) upstreamBody(call *chatCall) ([]byte, error) {
	m := s.cat.byID[call.req.Model]
	b, err := openai.PrepareUpstreamBody(call.raw, m.UpstreamModel)
	if err != nil {
		return nil, err
	}
	if _, ok := call.req.OutputLimit(); ok {
		return b, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, err
	}
	obj["max_tokens"] = json.RawMessage(strconv.FormatInt(call.completionLimit, 10))
	return json.Marshal(obj)
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
		if ctx.Err() != nil {
			failInflight(w, r, info, err)
			return
		}
		s.upstreamFailed(w, r, info, err)
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
		if ctx.Err() != nil {
			failInflight(w, r, info, err)
			return
		}
		s.upstreamFailed(w, r, info, err)
		return
	}
	cc, err := openai.ParseChatCompletion(raw)
	if err != nil {
		s.upstreamFailed(w, r, info, err)
		return
	}
	var u openai.Usage
	if cc.Usage != nil {
		u = *cc.Usage
	} else { // no usage reported: the prompt estimate and ~4 bytes a token
		var n int64
		for _, c := range cc.Choices {
			n += int64(len(c.Message.Content))
		}
		u = openai.NewUsage(simmodel.EstimatePromptTokens(call.req), (n+3)/4)
	}
	info.Report(keyledger.Outcome{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, Metadata: map[string]string{"upstream_id": cc.ID}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(raw)
}

// proxyStream relays the upstream's SSE events as they come and meters the
// usage of its final chunk (include_usage is forced on).
func (s *server) proxyStream(w http.ResponseWriter, r *http.Request, call *chatCall, info *httpapi.Info, resp *http.Response) {
	sr := openai.NewStreamReader(resp.Body, 0)
	sse := openai.NewSSEWriter(w)
	var streamErr error
	for {
		ev, err := sr.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				streamErr = err
			}
			break
		}
		if ev.Done {
			streamErr = sse.WriteDone()
			continue
		}
		if err := sse.WriteData(ev.Data); err != nil {
			streamErr = err
			break
		}
	}
	u, ok := sr.Usage()
	if !ok {
		u = openai.NewUsage(simmodel.EstimatePromptTokens(call.req), (sr.ContentBytes()+3)/4)
	}
	out := keyledger.Outcome{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}
	if streamErr != nil && r.Context().Err() == nil {
		// The upstream broke off: what was delivered is still charged, and
		// the record says why the stream ended early.
		out.Metadata = map[string]string{"stream_error": streamErr.Error()}
		s.log.WarnContext(r.Context(), "upstream stream ended early", "error", streamErr)
	}
	info.Report(out)
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
