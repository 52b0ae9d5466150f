package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/examples/internal/e2e"
)

// gw is a gateway started by run() on a random port with a temp SQLite file.
type gw struct {
	t    *testing.T
	base string
	db   string
	c    *http.Client
	// logs holds the gateway's log lines and the secrets the test handled;
	// at cleanup the test fails if a secret was logged.
	logs *e2e.Logs
	// stop shuts the gateway down gracefully and checks run's error; it
	// also runs at the end of the test.
	stop func()
}

// startGateway runs the real program and returns once it listens. The
// gateway shuts down (and run's error is checked) when the test ends.
func startGateway(t *testing.T, extra ...string) *gw {
	t.Helper()
	return startGatewayOn(t, filepath.Join(t.TempDir(), "gw.db"), extra...)
}

// startGatewayOn runs the gateway on an existing (or new) database file.
func startGatewayOn(t *testing.T, db string, extra ...string) *gw {
	t.Helper()
	return startGatewayAt(t, time.Now, db, extra...)
}

// startGatewayAt runs the gateway on a clock. It logs at debug level; the
// log lines are kept and, when the test ends, searched for every secret
// the test handled (keys, session tokens, passwords, Razorpay secrets and
// signatures, the upstream key).
func startGatewayAt(t *testing.T, now func() time.Time, db string, extra ...string) *gw {
	t.Helper()
	logs := e2e.NewLogs(t) // checked after stop (registered later, so run earlier)
	logs.Secret("Razorpay key secret", defaultRazorpaySecret)
	logs.Secret("Razorpay webhook secret", defaultRazorpayWebhookSecret)
	for i := 0; i+1 < len(extra); i++ {
		switch extra[i] {
		case "-upstream-key", "-razorpay-secret", "-razorpay-webhook-secret":
			logs.Secret(extra[i], extra[i+1])
		}
	}
	args := append([]string{"-addr", "127.0.0.1:0", "-db", db, "-log-level", "debug"}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := runWithClock(ctx, args, pw, now)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	// stdout carries the slog text lines ("time=…") among other output (the
	// quickstart shows a sample password); only the log lines are kept.
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	keep := func() {
		if line := sc.Bytes(); bytes.HasPrefix(line, []byte("time=")) {
			_, _ = logs.Write(append(line, '\n'))
		}
	}
	base := ""
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			base = s
			break
		}
		keep()
	}
	if base == "" {
		cancel()
		t.Fatalf("gateway did not start: %v", <-done)
	}
	copied := make(chan struct{})
	go func() { // keep logs flowing
		defer close(copied)
		for sc.Scan() {
			keep()
		}
		if err := sc.Err(); err != nil {
			t.Errorf("reading the gateway's output: %v", err)
			_, _ = io.Copy(io.Discard, pr)
		}
	}()
	client := &http.Client{Timeout: 30 * time.Second}
	stop := sync.OnceFunc(func() {
		// Connections the client dialed but never used would hold up
		// Shutdown for 5 seconds (net/http treats them as active).
		client.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		<-copied
	})
	t.Cleanup(stop)
	return &gw{t: t, base: base, db: db, c: client, logs: logs, stop: stop}
}

// do sends a request with an optional bearer token and JSON body (a string
// is sent as is) and returns the status, headers and body.
func (g *gw) do(method, path, token string, body any) (int, http.Header, []byte) {
	g.t.Helper()
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
			g.t.Fatal(err)
		}
		raw = j
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, g.base+path, rd)
	if err != nil {
		g.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	g.logs.HarvestRequest(req, raw)
	resp, err := g.c.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	g.logs.Harvest(method+" "+path+" response", b)
	return resp.StatusCode, resp.Header, b
}

// must sends a request, checks the status and decodes the JSON answer.
func (g *gw) must(want int, method, path, token string, body any) map[string]any {
	g.t.Helper()
	st, _, b := g.do(method, path, token, body)
	if st != want {
		g.t.Fatalf("%s %s: status %d, want %d: %s", method, path, st, want, b)
	}
	var m map[string]any
	if len(b) > 0 && b[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			g.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return m
}

// user is a signed-up account with a session and an SDK key.
type user struct {
	id, token, key, keyID string
}

var userSeq struct {
	sync.Mutex
	n int
}

func (g *gw) signup(name string) user {
	g.t.Helper()
	userSeq.Lock()
	userSeq.n++
	email := fmt.Sprintf("%s%d@example.com", strings.ToLower(name), userSeq.n)
	userSeq.Unlock()
	acct := g.must(201, "POST", "/v1/accounts", "", map[string]string{"name": name, "email": email, "password": "correct horse battery"})
	sess := g.must(201, "POST", "/v1/sessions", "", map[string]string{"email": email, "password": "correct horse battery"})
	u := user{id: acct["id"].(string), token: sess["token"].(string)}
	k := g.must(201, "POST", "/v1/accounts/"+u.id+"/apiKeys", u.token, map[string]string{"name": "prod-api"})
	u.key, u.keyID = k["key"].(string), k["id"].(string)
	return u
}

func chatBody(model string, maxTokens int, stream bool) map[string]any {
	b := map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": "Hello, Forii!"}}}
	if maxTokens > 0 {
		b["max_tokens"] = maxTokens
	}
	if stream {
		b["stream"] = true
	}
	return b
}
