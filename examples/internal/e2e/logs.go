package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
)

// minSecretLen is the shortest value Logs treats as a secret: shorter
// strings ("x", "test") would match log text by accident.
const minSecretLen = 8

// secretFields are the JSON field names whose string values are secrets
// wherever they appear in a request or response body: raw API keys, session
// tokens, passwords and Razorpay signatures and secrets.
var secretFields = map[string]bool{
	"key": true, "token": true, "password": true, "secret": true,
	"razorpay_signature": true, "signature": true, "key_secret": true, "webhook_secret": true,
}

// Logs is a server's log sink in a test that also collects every secret the
// test handled — API keys, session tokens, passwords, Razorpay signatures
// and secrets — and at cleanup fails the test if any of them appears in
// what the server logged. Server.Do feeds it the secrets of each request and
// response; tests add others with Secret. It is safe for concurrent use.
type Logs struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	secrets map[string]string // value → what it is
}

// NewLogs returns an empty sink whose check runs when t's cleanups run
// (after the server, started later, has stopped and flushed its logs).
func NewLogs(t testing.TB) *Logs {
	l := &Logs{secrets: map[string]string{}}
	t.Cleanup(func() { l.Check(t) })
	return l
}

// Write appends log output.
func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything logged so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Secret records value (described by what) as a secret that must never be
// logged. Values shorter than 8 bytes are ignored.
func (l *Logs) Secret(what, value string) {
	if len(value) < minSecretLen {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.secrets[value]; !ok {
		l.secrets[value] = what
	}
}

// Harvest records the secrets of a JSON body: the string values of fields
// named key, token, password, secret or *signature, at any depth. A body
// that is not JSON is ignored.
func (l *Logs) Harvest(what string, body []byte) {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return
	}
	l.walk(what, v)
}

func (l *Logs) walk(what string, v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (secretFields[k] || strings.HasSuffix(k, "_signature")) {
				l.Secret(what+" "+k, s)
				continue
			}
			l.walk(what, x)
		}
	case []any:
		for _, x := range v {
			l.walk(what, x)
		}
	}
}

// HarvestRequest records the secrets of a request: its bearer credential,
// its X-Razorpay-Signature header and its JSON body.
func (l *Logs) HarvestRequest(req *http.Request, body []byte) {
	what := req.Method + " " + req.URL.Path
	if tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
		l.Secret(what+" bearer credential", strings.TrimSpace(tok))
	}
	l.Secret(what+" webhook signature", req.Header.Get("X-Razorpay-Signature"))
	l.Harvest(what+" request", body)
}

// Secrets returns how many distinct secrets were recorded.
func (l *Logs) Secrets() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.secrets)
}

// Check fails t for every recorded secret that appears in the logs.
func (l *Logs) Check(t testing.TB) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	logs := l.buf.String()
	var leaked []string
	for v, what := range l.secrets {
		if strings.Contains(logs, v) {
			leaked = append(leaked, what)
		}
	}
	sort.Strings(leaked)
	for _, what := range leaked {
		t.Errorf("a secret (%s) appears in the server's logs", what)
	}
}
