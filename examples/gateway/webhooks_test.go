package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/webhook"
	"github.com/keyledger/keyledger/internal/pgtest"
)

// hookReceiver is a customer's webhook endpoint: it verifies each request's
// signature with the secret shown at creation and keeps the events, once
// per event ID.
type hookReceiver struct {
	mu      sync.Mutex
	secret  string
	bad     int
	seen    map[string]bool
	events  []events.Event
	headers []http.Header
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := webhook.Verify(h.secret, r.Header.Get(webhook.Header), body, time.Now(), 0); err != nil {
		h.bad++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var e events.Event
	if err := json.Unmarshal(body, &e); err != nil {
		h.bad++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if !h.seen[e.ID] {
		h.seen[e.ID] = true
		h.events = append(h.events, e)
		h.headers = append(h.headers, r.Header.Clone())
	}
	w.WriteHeader(http.StatusOK)
}

func (h *hookReceiver) find(typ events.Type) (events.Event, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.events {
		if e.Type == typ {
			return e, true
		}
	}
	return events.Event{}, false
}

// TestWebhooksEndToEnd: a customer adds a webhook (allowlisted receiver on
// 127.0.0.1) and a low-balance threshold over the API; a chat completion
// takes the balance below it and a leaked-key report disables the key; the
// receiver gets balance.low and key.leaked with valid signatures.
func TestWebhooksEndToEnd(t *testing.T) {
	webhooksEndToEnd(t, startGateway(t, "-webhook-allow", "127.0.0.1"))
}

// TestWebhooksEndToEndPostgres is the same on two gateway instances sharing
// PostgreSQL: both run a dispatcher on the one outbox, and the receiver
// still gets each event with a valid signature (once after de-duplication).
func TestWebhooksEndToEndPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	unused := filepath.Join(t.TempDir(), "unused.db")
	g := startGatewayAt(t, time.Now, unused, "-postgres", dsn, "-webhook-allow", "127.0.0.1")
	startGatewayAt(t, time.Now, unused, "-postgres", dsn, "-webhook-allow", "127.0.0.1") // a second dispatcher
	webhooksEndToEnd(t, g)
}

func webhooksEndToEnd(t *testing.T, g *gw) {
	rcv := &hookReceiver{seen: map[string]bool{}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	u := g.signup("Hooked")

	// Refusals name the limit, and store nothing.
	for _, c := range []struct {
		url, code string
	}{
		{"http://example.com/hook", "invalid_webhook_url"},
		{"https://169.254.169.254/latest", "webhook_address_not_allowed"},
		{"https://10.0.0.1/hook", "webhook_address_not_allowed"},
	} {
		st, _, b := g.do("POST", "/v1/accounts/"+u.id+"/webhooks", u.token, map[string]string{"url": c.url})
		if st != 400 || !strings.Contains(string(b), c.code) {
			t.Fatalf("POST webhook %s: %d %s, want 400 %s", c.url, st, b, c.code)
		}
	}
	if st, _, b := g.do("PUT", "/v1/accounts/"+u.id+"/alert_thresholds", u.token, map[string]any{"low_balance_inr": []string{"-5"}}); st != 400 || !strings.Contains(string(b), "low_balance_inr") {
		t.Fatalf("negative threshold: %d %s", st, b)
	}
	other := g.signup("Other")
	if st, _, _ := g.do("GET", "/v1/accounts/"+other.id+"/webhooks", u.token, nil); st != 404 {
		t.Fatalf("another account's webhooks: %d, want 404", st)
	}

	created := g.must(201, "POST", "/v1/accounts/"+u.id+"/webhooks", u.token, map[string]string{"url": srv.URL + "/keyledger", "description": "alerts"})
	secret, _ := created["secret"].(string)
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("create response %v: want the secret once", created)
	}
	g.logs.Secret("webhook secret", secret)
	rcv.mu.Lock()
	rcv.secret = secret
	rcv.mu.Unlock()
	list := g.must(200, "GET", "/v1/accounts/"+u.id+"/webhooks", u.token, nil)
	if b, _ := json.Marshal(list); strings.Contains(string(b), secret) || len(list["data"].([]any)) != 1 {
		t.Fatalf("list %s: want one endpoint, without its secret", b)
	}
	th := g.must(200, "PUT", "/v1/accounts/"+u.id+"/alert_thresholds", u.token, map[string]any{"low_balance_inr": []string{"10", "50"}})
	if b, _ := json.Marshal(th); string(b) != `{"low_balance_inr":["50.00","10.00"]}` {
		t.Fatalf("thresholds %s", b)
	}

	// The signup grant is ₹50: any charge crosses the ₹50 threshold.
	if st, _, b := g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("forii/deepseek-v3", 16, false)); st != 200 {
		t.Fatalf("chat: %d %s", st, b)
	}
	report, _ := json.Marshal([]map[string]string{{"token": u.key, "type": "forii_api_key", "url": "https://github.com/x/y"}})
	if st, _, b := g.do("POST", "/v1/leaked-keys", "", report); st != 200 {
		t.Fatalf("leaked-key report: %d %s", st, b)
	}

	// The dispatcher polls twice a second; wait for both events (a bound
	// against a hang, not a timing assertion).
	deadline := time.Now().Add(30 * time.Second)
	var low, leaked events.Event
	for {
		var ok1, ok2 bool
		low, ok1 = rcv.find(events.BalanceLow)
		leaked, ok2 = rcv.find(events.KeyLeaked)
		if ok1 && ok2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver has %d events (%d bad signatures); want balance.low and key.leaked", len(rcv.events), rcv.bad)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var ld struct {
		Threshold string `json:"threshold"`
		Unit      string `json:"unit"`
	}
	if err := json.Unmarshal(low.Data, &ld); err != nil || ld.Threshold != "50" || low.AccountID != u.id {
		t.Fatalf("balance.low %+v (%s)", low, low.Data)
	}
	var kd struct {
		KeyID string `json:"key_id"`
	}
	if err := json.Unmarshal(leaked.Data, &kd); err != nil || kd.KeyID != u.keyID || leaked.AccountID != u.id {
		t.Fatalf("key.leaked %+v (%s)", leaked, leaked.Data)
	}
	if strings.Contains(string(leaked.Data), u.key) {
		t.Fatal("the leaked key's secret is in the event")
	}
	rcv.mu.Lock()
	bad := rcv.bad
	rcv.mu.Unlock()
	if bad != 0 {
		t.Fatalf("%d requests failed signature verification", bad)
	}
	// The delivery log shows the successful attempts.
	dl := g.must(200, "GET", "/v1/accounts/"+u.id+"/webhooks/deliveries", u.token, nil)
	if len(dl["data"].([]any)) == 0 {
		t.Fatalf("delivery log %v", dl)
	}
	id := created["id"].(string)
	g.must(200, "DELETE", "/v1/accounts/"+u.id+"/webhooks/"+id, u.token, nil)
	if st, _, _ := g.do("DELETE", "/v1/accounts/"+u.id+"/webhooks/"+id, u.token, nil); st != 404 {
		t.Fatalf("second delete: %d, want 404", st)
	}
}
