package main

import (
	"testing"

	"github.com/keyledger/keyledger/examples/internal/e2e"
)

// TestMetricsAndProbes: keyledger's series on /metrics move with a paid
// verification, and the orchestrator probes answer.
func TestMetricsAndProbes(t *testing.T) {
	e := start(t)
	_, key := e.user(t, "metrics@example.com", "professional", "100")
	scrape := func() []byte {
		t.Helper()
		r := e.srv.Do(t, "GET", "/metrics", "", nil)
		if r.Status != 200 {
			t.Fatalf("/metrics: %d", r.Status)
		}
		return r.Body
	}
	before := scrape()
	data(t, e.srv.Do(t, "POST", "/v1/verify", key, map[string]string{"email": "someone@example.com"}), 200)
	after := scrape()
	for _, m := range [][]string{
		{"keyledger_apikey_verifications_total", `result="ok"`},
		{"keyledger_authorize_duration_seconds_count", `result="ok"`},
		{"keyledger_store_operation_duration_seconds_count", `operation="MeterUsage"`},
		{"http_server_request_duration_seconds_count", `http_response_status_code="200"`},
	} {
		b, _ := e2e.Metric(before, m[0], m[1:]...)
		a, _ := e2e.Metric(after, m[0], m[1:]...)
		if a <= b {
			t.Errorf("%v did not move: %v before, %v after", m, b, a)
		}
	}
	if _, ok := e2e.Metric(after, "go_goroutines"); !ok {
		t.Error("/metrics lacks the Go runtime series")
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := e.srv.Do(t, "GET", p, "", nil); r.Status != 200 {
			t.Errorf("%s: %d %s", p, r.Status, r.Body)
		}
	}
}
