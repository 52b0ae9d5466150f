package main

import (
	"testing"

	"github.com/keyledger/keyledger/examples/internal/e2e"
)

// TestMetricsAndProbes is the "curl /metrics" check of a running gateway:
// keyledger's series move with a paid request, the HTTP server's and the Go
// runtime's are there, and the orchestrator probes answer.
func TestMetricsAndProbes(t *testing.T) {
	g := startGateway(t)
	scrape := func() []byte {
		t.Helper()
		code, h, body := g.do("GET", "/metrics", "", nil)
		if code != 200 || h.Get("Content-Type") == "" {
			t.Fatalf("/metrics: %d %s", code, body)
		}
		return body
	}
	metric := func(body []byte, name string, labels ...string) float64 {
		v, _ := e2e.Metric(body, name, labels...)
		return v
	}
	before := scrape()
	u := g.signup("Metrics")
	g.must(200, "POST", "/inference/v1/chat/completions", u.key, chatBody("forii/deepseek-v3", 8, false))
	after := scrape()

	for _, m := range []struct {
		name   string
		labels []string
	}{
		{"keyledger_apikey_verifications_total", []string{`result="ok"`}},
		{"keyledger_authorize_duration_seconds_count", []string{`result="ok"`}},
		{"keyledger_complete_duration_seconds_count", []string{`result="charged"`}},
		{"keyledger_ratelimit_decisions_total", []string{`result="allowed"`}},
		{"keyledger_credits_entries_total", []string{`type="debit"`, `backend="sqlite"`}},
		{"keyledger_credits_entry_amount_total", []string{`type="debit"`, `unit="INR"`}},
		{"keyledger_usage_meter_duration_seconds_count", nil},
		{"keyledger_store_operation_duration_seconds_count", []string{`operation="MeterUsage"`, `backend="sqlite"`}},
		{"http_server_request_duration_seconds_count", []string{`http_response_status_code="200"`}},
	} {
		if b, a := metric(before, m.name, m.labels...), metric(after, m.name, m.labels...); a <= b {
			t.Errorf("%s%v did not move: %v before, %v after", m.name, m.labels, b, a)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "keyledger_credits_holds_open", "keyledger_apikey_cache_lookups_total"} {
		if _, ok := e2e.Metric(after, name); !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if code, _, body := g.do("GET", "/healthz", "", nil); code != 200 {
		t.Errorf("/healthz: %d %s", code, body)
	}
	if code, _, body := g.do("GET", "/readyz", "", nil); code != 200 || string(body) != "ok\n" {
		t.Errorf("/readyz: %d %s", code, body)
	}
}
