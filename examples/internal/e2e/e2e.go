// Package e2e starts an example server's run function in a test and talks
// to it over real HTTP: the shared harness of the examples' end-to-end
// tests.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// RunFunc is an example's run(ctx, args, stdout).
type RunFunc func(ctx context.Context, args []string, stdout io.Writer) error

// Server is a running example server.
type Server struct {
	// URL is "http://127.0.0.1:PORT".
	URL string
	// Lines are the stdout lines printed before the listening line.
	Lines  []string
	Client *http.Client
	// Logs, when set (StartLogged), receives the server's logs and the
	// secrets of every request and response of Do.
	Logs *Logs

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// LoggedRunFunc is an example's run with its log output redirected to logs.
type LoggedRunFunc func(ctx context.Context, args []string, stdout, logs io.Writer) error

// StartLogged is Start with the server's logs, at debug level, captured in
// s.Logs: at cleanup, after the server stopped, the test fails if any
// secret the test sent or received through Do (or added with
// s.Logs.Secret) appears in them.
func StartLogged(t testing.TB, fn LoggedRunFunc, args ...string) *Server {
	t.Helper()
	logs := NewLogs(t) // its check runs after Start's cleanup stops the server
	s := Start(t, func(ctx context.Context, args []string, stdout io.Writer) error {
		return fn(ctx, args, stdout, logs)
	}, append(args, "-log-level", "debug")...)
	s.Logs = logs
	return s
}

// Start runs fn with args plus -addr 127.0.0.1:0 and waits for its
// "listening on" line. The server stops (and the test fails if run returned
// an error) at cleanup.
func Start(t testing.TB, fn RunFunc, args ...string) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &Server{cancel: cancel, done: make(chan error, 1), Client: &http.Client{Timeout: 30 * time.Second}}
	go func() {
		err := fn(ctx, append([]string{"-addr", "127.0.0.1:0", "-log-level", "error"}, args...), pw)
		pw.CloseWithError(io.EOF)
		s.done <- err
	}()
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "listening on "); ok {
			s.URL = u
			break
		}
		s.Lines = append(s.Lines, line)
	}
	if s.URL == "" {
		cancel()
		t.Fatalf("server did not start: %v (output %q)", <-s.done, s.Lines)
	}
	go io.Copy(io.Discard, pr)
	t.Cleanup(func() { s.Stop(t) })
	return s
}

// Stop shuts the server down and checks that run returned nil. It is safe
// to call more than once.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.once.Do(func() {
		s.cancel()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("run returned %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("server did not shut down")
		}
	})
}

// Response is a decoded response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a generic value.
func (r Response) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("status %d body %q: %v", r.Status, r.Body, err)
	}
	return m
}

// Decode decodes the body into v.
func (r Response) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("status %d body %q: %v", r.Status, r.Body, err)
	}
}

// Do sends a request with an optional Bearer key and body (a string or
// []byte is sent as is, anything else as JSON) and extra headers as
// name, value pairs.
func (s *Server) Do(t testing.TB, method, path, key string, body any, headers ...string) Response {
	t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		raw = j
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if s.Logs != nil {
		s.Logs.HarvestRequest(req, raw)
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if s.Logs != nil {
		s.Logs.Harvest(method+" "+path+" response", b)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}
