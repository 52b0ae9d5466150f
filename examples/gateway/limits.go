package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
)

// Defaults of the request-limit flags.
const (
	defaultHoldTTL            = 5 * time.Minute
	defaultMaxRequestDuration = 4 * time.Minute
	defaultStreamHoldTokens   = 1024
	// maxChoices is the largest n the gateway forwards: each choice is
	// reserved in full (n × the completion limit), and a larger n would
	// let one request take many times a plan's completion budget.
	maxChoices = 16
	// maxStreamEndGrace bounds how long after a stream's deadline the
	// gateway may still write its final events (the cut-off chunk, the
	// usage, [DONE]): 5 s, or a quarter of -max-request-duration if less.
	maxStreamEndGrace = 5 * time.Second
	// Upstream connection timeouts. The response-header timeout is the
	// request deadline: a non-streaming upstream answers only once it has
	// generated the whole completion.
	upstreamDialTimeout = 10 * time.Second
	upstreamTLSTimeout  = 10 * time.Second
)

// requestLimits are the flags that bound one request's life and its
// hold: -hold-ttl, -max-request-duration, -stream-hold-tokens.
type requestLimits struct {
	holdTTL            time.Duration
	maxRequestDuration time.Duration
	// streamHoldTokens is the completion tokens a stream's initial hold
	// pays for (0: its whole limit); the hold grows as tokens are
	// delivered (keyledger Grant.Progress).
	streamHoldTokens int64
}

// register adds the request-limit flags to fs.
func (l *requestLimits) register(fs *flag.FlagSet) {
	fs.DurationVar(&l.holdTTL, "hold-ttl", defaultHoldTTL, "how long a request's credit hold lives if the request never completes (keyledger Options.HoldTTL)")
	fs.DurationVar(&l.maxRequestDuration, "max-request-duration", defaultMaxRequestDuration, "the longest a chat completion may run, streams included; must be below -hold-ttl, so no request outlives its hold")
	fs.Int64Var(&l.streamHoldTokens, "stream-hold-tokens", defaultStreamHoldTokens, "completion tokens a stream's initial credit hold pays for (at most its limit; 0 holds the whole limit); the hold grows from the balance as tokens are delivered, and the stream ends with finish_reason length when the balance runs out")
}

// validate checks the parsed request-limit flags.
func (l *requestLimits) validate() error {
	if l.holdTTL <= 0 {
		return fmt.Errorf("-hold-ttl must be positive, got %s", l.holdTTL)
	}
	if l.maxRequestDuration <= 0 || l.maxRequestDuration >= l.holdTTL {
		return fmt.Errorf("-max-request-duration must be positive and below -hold-ttl (%s), got %s", l.holdTTL, l.maxRequestDuration)
	}
	if l.streamHoldTokens < 0 || l.streamHoldTokens > openai.MaxTokenLimit {
		return fmt.Errorf("-stream-hold-tokens must be between 0 and %d, got %d", openai.MaxTokenLimit, l.streamHoldTokens)
	}
	return nil
}

// orDefaults fills unset limits (a config built in code, as tests do).
func (l requestLimits) orDefaults() requestLimits {
	if l.holdTTL == 0 {
		l.holdTTL = defaultHoldTTL
	}
	if l.maxRequestDuration == 0 {
		l.maxRequestDuration = min(defaultMaxRequestDuration, l.holdTTL/2)
	}
	return l
}

// newUpstreamClient is the client of the upstream: bounded dial, TLS
// handshake and response-header waits. It has no overall timeout: each
// request runs under its deadline (-max-request-duration), streams
// included.
func newUpstreamClient(responseHeaderTimeout time.Duration) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: upstreamDialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   upstreamTLSTimeout,
		ResponseHeaderTimeout: responseHeaderTimeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   100,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}}
}

// errRequestDeadline is the cause of a chat completion's context when it
// ran for -max-request-duration.
var errRequestDeadline = errors.New("gateway: the request reached -max-request-duration")

// withDeadline bounds a chat completion: its context ends at the deadline
// (cause errRequestDeadline), and writes to the client must finish within
// a short grace after it, so a stream cut at the deadline can still end
// cleanly but a client that stops reading cannot hold the handler.
// (net/http clears the write deadline when the handler returns, before
// the connection serves its next request.)
func (s *server) withDeadline(w http.ResponseWriter, r *http.Request) (context.Context, context.CancelFunc) {
	d := s.limits.maxRequestDuration
	deadline := time.Now().Add(d)
	// A writer without deadlines (a test recorder) is bounded by the
	// context alone.
	_ = http.NewResponseController(w).SetWriteDeadline(deadline.Add(min(maxStreamEndGrace, d/4)))
	return context.WithDeadlineCause(r.Context(), deadline, errRequestDeadline)
}
