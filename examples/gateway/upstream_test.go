package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fakeUpstream is an OpenAI-compatible server that reports its own token
// counts (7 prompt, 3 completion), different from the simulated model's,
// so that metering them proves the gateway meters the upstream. A request
// whose first message is "hang" streams one chunk and then waits until the
// gateway cancels it.
func fakeUpstream(t *testing.T) (*httptest.Server, <-chan struct{}) {
	cancelled := make(chan struct{}, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer up-secret" {
			w.WriteHeader(401)
			_, _ = io.WriteString(w, `{"error":{"message":"bad upstream key","type":"invalid_request_error","code":"invalid_api_key"}}`)
			return
		}
		var req struct {
			Model         string `json:"model"`
			MaxTokens     int64  `json:"max_completion_tokens"`
			Stream        bool   `json:"stream"`
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
			Extra string `json:"x_vendor_field"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			w.WriteHeader(400)
			return
		}
		// The catalog maps test/pricy to upstream-model; a request without a
		// limit gets the gateway's default; unknown fields pass through.
		if req.Model != "upstream-model" || req.MaxTokens == 0 || req.Extra != "kept" {
			w.WriteHeader(422)
			_, _ = fmt.Fprintf(w, `{"error":{"message":"unexpected request %+v","type":"invalid_request_error"}}`, req)
			return
		}
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"id":"up-1","object":"chat.completion","created":1,"model":"upstream-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`)
			return
		}
		if !req.StreamOptions.IncludeUsage {
			w.WriteHeader(422)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		send := func(s string) { _, _ = io.WriteString(w, "data: "+s+"\n\n"); fl.Flush() }
		send(`{"id":"up-2","object":"chat.completion.chunk","created":1,"model":"upstream-model","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}`)
		if len(req.Messages) > 0 && req.Messages[0].Content == "hang" {
			<-r.Context().Done()
			cancelled <- struct{}{}
			return
		}
		send(`{"id":"up-2","object":"chat.completion.chunk","created":1,"model":"upstream-model","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":"stop"}]}`)
		send(`{"id":"up-2","object":"chat.completion.chunk","created":1,"model":"upstream-model","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`)
		send(`[DONE]`)
	}))
	t.Cleanup(srv.Close)
	return srv, cancelled
}

func TestUpstreamProxyMetering(t *testing.T) {
	up, cancelled := fakeUpstream(t)
	g := startGateway(t, "-upstream", up.URL+"/v1", "-upstream-key", "up-secret",
		"-models", pricyCatalog(t, "10000", `,"upstream_model":"upstream-model"`))
	u := g.signup("Proxy")
	body := `{"model":"test/pricy","messages":[{"role":"user","content":"Hello"}],"x_vendor_field":"kept"}`

	m := g.must(200, "POST", "/inference/v1/chat/completions", u.key, body)
	if m["id"] != "up-1" {
		t.Fatalf("proxied: %v", m)
	}
	// ₹0.01 a completion token: 3 upstream completion tokens cost ₹0.03
	// (the hold was for the default 1024).
	entries := g.ledger(u)
	if num(t, entries[0]["amount_inr"]).String() != "-0.03" {
		t.Fatalf("non-streaming charge: %v", entries[0])
	}

	st, _, b := g.do("POST", "/inference/v1/chat/completions", u.key, strings.Replace(body, `"x_vendor`, `"stream":true,"stream_options":{"include_usage":true},"x_vendor`, 1))
	chunks, done := sseEvents(t, b)
	if st != 200 || !done || len(chunks) != 3 || chunks[2].Usage == nil || chunks[2].Usage.CompletionTokens != 3 {
		t.Fatalf("stream: %d %s", st, b)
	}
	entries = g.ledger(u)
	if len(entries) != 3 || num(t, entries[0]["amount_inr"]).String() != "-0.03" || num(t, entries[0]["balance_inr"]).String() != "49.94" {
		t.Fatalf("streaming charge: %v", entries)
	}

	// Revoking the key fails the request in flight: the upstream call is
	// cancelled, the client's stream ends without [DONE], nothing is charged.
	req, _ := http.NewRequest("POST", g.base+"/inference/v1/chat/completions",
		strings.NewReader(`{"model":"test/pricy","stream":true,"messages":[{"role":"user","content":"hang"}],"x_vendor_field":"kept"}`))
	req.Header.Set("Authorization", "Bearer "+u.key)
	resp, err := g.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	first, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "data: ") {
		t.Fatalf("first event: %q %v", first, err)
	}
	g.must(200, "DELETE", "/v1/accounts/"+u.id+"/apiKeys/"+u.keyID, u.token, nil)
	rest, _ := io.ReadAll(rd)
	if strings.Contains(string(rest), "[DONE]") {
		t.Fatalf("stream finished after revocation: %s", rest)
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("upstream request not cancelled")
	}
	if entries := g.ledger(u); len(entries) != 3 {
		t.Fatalf("the revoked request was charged: %v", entries[0])
	}
	st, _, b = g.do("POST", "/inference/v1/chat/completions", u.key, body)
	if st != 401 {
		t.Fatalf("after revoke: %d %s", st, b)
	}
}

func TestUpstreamErrorsAreNotCharged(t *testing.T) {
	up, _ := fakeUpstream(t)
	g := startGateway(t, "-upstream", up.URL+"/v1", "-upstream-key", "wrong",
		"-models", pricyCatalog(t, "10000", `,"upstream_model":"upstream-model"`))
	u := g.signup("Broken")
	st, _, b := g.do("POST", "/inference/v1/chat/completions", u.key, `{"model":"test/pricy","messages":[{"role":"user","content":"Hi"}],"x_vendor_field":"kept"}`)
	if st != 502 || !strings.Contains(string(b), "upstream_error") {
		t.Fatalf("bad upstream key: %d %s", st, b)
	}
	if entries := g.ledger(u); len(entries) != 1 {
		t.Fatalf("charged: %v", entries)
	}
}
