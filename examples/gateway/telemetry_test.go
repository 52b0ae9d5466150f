package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

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

// collector is a fake OTLP/HTTP trace receiver.
type collector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(b, &req) != nil {
		w.WriteHeader(400)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

// TestTraceOfARequest: with -otlp, one proxied request is one trace: the
// HTTP server span, under it Authorize (with its store reads), the upstream
// call and Complete, named by request, account and key.
func TestTraceOfARequest(t *testing.T) {
	col := &collector{}
	otlp := httptest.NewServer(col)
	defer otlp.Close()
	up, _ := fakeUpstream(t)
	g := startGateway(t, "-upstream", up.URL+"/v1", "-upstream-key", "up-secret", "-otlp", otlp.URL,
		"-models", pricyCatalog(t, "10000", `,"upstream_model":"upstream-model"`))
	u := g.signup("Traced")
	g.must(200, "POST", "/inference/v1/chat/completions", u.key, `{"model":"test/pricy","messages":[{"role":"user","content":"Hello"}],"x_vendor_field":"kept"}`)
	g.stop() // flushes the batched spans

	col.mu.Lock()
	defer col.mu.Unlock()
	var complete *tracepb.Span
	for _, s := range col.spans {
		if s.Name == "keyledger.Complete" {
			complete = s
		}
	}
	if complete == nil {
		t.Fatalf("no keyledger.Complete span among %d", len(col.spans))
	}
	byID := map[string]*tracepb.Span{}
	var trace []*tracepb.Span
	for _, s := range col.spans {
		if bytes.Equal(s.TraceId, complete.TraceId) {
			trace = append(trace, s)
			byID[string(s.SpanId)] = s
		}
	}
	root := byID[string(complete.ParentSpanId)]
	if root == nil || root.Kind != tracepb.Span_SPAN_KIND_SERVER || len(root.ParentSpanId) != 0 {
		t.Fatalf("Complete's parent is not the request's server span: %v", root)
	}
	children := map[string][]*tracepb.Span{}
	for _, s := range trace {
		if p := byID[string(s.ParentSpanId)]; p != nil {
			children[p.Name] = append(children[p.Name], s)
		}
	}
	names := func(ss []*tracepb.Span) (n []string) {
		for _, s := range ss {
			n = append(n, s.Name)
		}
		return n
	}
	t.Logf("trace of the request: %v", names(trace))
	under := names(children[root.Name])
	var upstream bool
	for _, s := range children[root.Name] {
		upstream = upstream || s.Kind == tracepb.Span_SPAN_KIND_CLIENT
	}
	if !slices.Contains(under, "keyledger.Authorize") || !slices.Contains(under, "keyledger.Complete") || !upstream {
		t.Errorf("the request's span has %v under it, want Authorize, the upstream call and Complete", under)
	}
	if store := names(children["keyledger.Authorize"]); !slices.Contains(store, "store.APIKeyByHash") {
		t.Errorf("Authorize's children %v, want its store reads", store)
	}
	attrs := map[string]string{}
	for _, kv := range complete.Attributes {
		attrs[kv.Key] = kv.Value.GetStringValue()
	}
	if attrs["keyledger.key.id"] != u.keyID || !strings.HasPrefix(attrs["keyledger.account.id"], "acct_") || attrs["keyledger.charged"] != "0.03" {
		t.Errorf("Complete's attributes %v", attrs)
	}
	for _, s := range trace {
		for _, kv := range s.Attributes {
			if strings.Contains(kv.Value.GetStringValue(), u.key) || strings.Contains(kv.Value.GetStringValue(), "up-secret") {
				t.Errorf("span %s attribute %s holds a secret", s.Name, kv.Key)
			}
		}
	}
}
