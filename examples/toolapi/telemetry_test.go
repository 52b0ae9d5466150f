package main

import (
	"testing"

	"github.com/keyledger/keyledger/examples/internal/e2e"
)

// TestMetricsAndProbes: keyledger's series on /metrics move with a paid
// tool call, and the orchestrator probes answer.
func TestMetricsAndProbes(t *testing.T) {
	srv, _, key := start(t)
	scrape := func() []byte {
		t.Helper()
		r := srv.Do(t, "GET", "/metrics", "", nil)
		if r.Status != 200 {
			t.Fatalf("/metrics: %d", r.Status)
		}
		return r.Body
	}
	before := scrape()
	if r := srv.Do(t, "POST", "/v1/tools/keyword_volume", key, map[string]string{"keyword": "running shoes"}); r.Status != 200 {
		t.Fatalf("tool call: %d %s", r.Status, r.Body)
	}
	after := scrape()
	for _, m := range [][]string{
		{"keyledger_apikey_verifications_total", `result="ok"`},
		{"keyledger_credits_entries_total", `type="debit"`},
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
		if r := srv.Do(t, "GET", p, "", nil); r.Status != 200 {
			t.Errorf("%s: %d %s", p, r.Status, r.Body)
		}
	}
}
