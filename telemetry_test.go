package keyledger_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/apikey"
)

// telemetryEnv is an env whose KeyLedger reports to an in-memory metric
// reader and span recorder.
type telemetryEnv struct {
	*env
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
}

func newTelemetryEnv(t *testing.T, b backend) *telemetryEnv {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() {
		_ = mp.Shutdown(context.Background())
		_ = tp.Shutdown(context.Background())
	})
	e := newEnvWith(t, b, func(o *keyledger.Options) { o.MeterProvider, o.TracerProvider = mp, tp })
	return &telemetryEnv{env: e, reader: reader, spans: sr}
}

// collect returns the metrics by name.
func (e *telemetryEnv) collect(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := e.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	ms := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			ms[m.Name] = m
		}
	}
	return ms
}

// point is one data point's attributes and value (a sum's value, a
// gauge's value or a histogram's count).
type point struct {
	attrs attribute.Set
	value float64
	sum   float64 // histograms: the sum of the recorded values
}

func points(m metricdata.Metrics) []point {
	var ps []point
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			ps = append(ps, point{p.Attributes, float64(p.Value), 0})
		}
	case metricdata.Sum[float64]:
		for _, p := range d.DataPoints {
			ps = append(ps, point{p.Attributes, p.Value, 0})
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			ps = append(ps, point{p.Attributes, float64(p.Value), 0})
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			ps = append(ps, point{p.Attributes, float64(p.Count), p.Sum})
		}
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			ps = append(ps, point{p.Attributes, float64(p.Count), float64(p.Sum)})
		}
	}
	return ps
}

// value is the value of m's data point with exactly attrs (key=value
// pairs), and whether there is one.
func value(m metricdata.Metrics, attrs ...string) (point, bool) {
	want := map[string]string{}
	for i := 0; i+1 < len(attrs); i += 2 {
		want[attrs[i]] = attrs[i+1]
	}
	for _, p := range points(m) {
		if p.attrs.Len() != len(want) {
			continue
		}
		ok := true
		for k, v := range want {
			if got, has := p.attrs.Value(attribute.Key(k)); !has || got.String() != v {
				ok = false
			}
		}
		if ok {
			return p, true
		}
	}
	return point{}, false
}

// TestTelemetry drives requests of every kind through an instrumented
// KeyLedger and checks the names, units and attributes of its metrics and
// spans: renaming one is a conscious change of this test (and of
// DESIGN.md's table, and of the dashboards built on them).
func TestTelemetry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newTelemetryEnv(t, b)
		ctx := context.Background()
		a, raw, k := e.signup(t, "otel@example.com", "")
		revokedRaw, revoked, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "old"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.kl.Keys.Revoke(ctx, a.ID, revoked.ID); err != nil {
			t.Fatal(err)
		}

		// 1: admitted and charged 10×0.1 + 5×0.2 = 2.
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 10, ID: "req_otel1"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 10, CompletionTokens: 5}); err != nil {
			t.Fatal(err)
		}
		// 2: more completion tokens than the Free plan's 10K a minute.
		if _, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", MaxCompletionTokens: 20_000}); !errors.Is(err, keyledger.ErrRequestTooLarge) {
			t.Fatalf("too large: %v", err)
		}
		// 3, 4: a malformed and a revoked key.
		if _, err := e.kl.Authorize(ctx, "nope", keyledger.Request{}); !errors.Is(err, apikey.ErrMalformed) {
			t.Fatalf("malformed: %v", err)
		}
		if _, err := e.kl.Authorize(ctx, revokedRaw, keyledger.Request{Model: "test-model"}); !errors.Is(err, apikey.ErrRevoked) {
			t.Fatalf("revoked: %v", err)
		}
		// 5: admitted, then cancelled.
		g, err = e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 1, MaxCompletionTokens: 1})
		if err != nil {
			t.Fatal(err)
		}
		ms := e.collect(t)
		if p, ok := value(ms["keyledger.credits.holds.open"]); !ok || p.value != 1 {
			t.Errorf("holds open during a request: %+v", p)
		}
		if err := g.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		ms = e.collect(t)

		units := map[string]string{
			"keyledger.authorize.duration":       "s",
			"keyledger.complete.duration":        "s",
			"keyledger.usage.meter.duration":     "s",
			"keyledger.apikey.verifications":     "{verification}",
			"keyledger.apikey.cache.lookups":     "{lookup}",
			"keyledger.apikey.cache.entries":     "{entry}",
			"keyledger.ratelimit.decisions":      "{decision}",
			"keyledger.grants.active":            "{request}",
			"keyledger.credits.holds.open":       "{hold}",
			"keyledger.credits.entries":          "{entry}",
			"keyledger.credits.entry.amount":     "{credit}",
			"keyledger.groupcommit.batches":      "{batch}",
			"keyledger.groupcommit.requests":     "{request}",
			"keyledger.usage.meter.queue":        "{request}",
			"keyledger.credits.recharges":        "{recharge}",
			"keyledger.store.operation.duration": "s",
		}
		for name, unit := range units {
			m, ok := ms[name]
			if !ok {
				t.Errorf("no metric %s", name)
				continue
			}
			if m.Unit != unit {
				t.Errorf("%s unit %q, want %q", name, m.Unit, unit)
			}
		}
		// Bounded cardinality: no metric carries an ID.
		allowed := []string{"result", "budget", "scope", "kind", "component", "operation", "backend", "type", "unit"}
		for name, m := range ms {
			if !strings.HasPrefix(name, "keyledger.") {
				t.Errorf("metric %s outside the keyledger namespace", name)
			}
			for _, p := range points(m) {
				for _, kv := range p.attrs.ToSlice() {
					if !slices.Contains(allowed, string(kv.Key)) {
						t.Errorf("%s has attribute %s", name, kv.Key)
					}
				}
			}
		}

		expect := func(name string, want float64, attrs ...string) {
			t.Helper()
			p, ok := value(ms[name], attrs...)
			if !ok || p.value != want {
				t.Errorf("%s%v = %v (found %v), want %v; points %v", name, attrs, p.value, ok, want, points(ms[name]))
			}
		}
		expect("keyledger.authorize.duration", 2, "result", "ok")
		expect("keyledger.authorize.duration", 1, "result", "too_large")
		expect("keyledger.authorize.duration", 1, "result", "malformed_key")
		expect("keyledger.authorize.duration", 1, "result", "revoked")
		expect("keyledger.apikey.verifications", 3, "result", "ok")
		expect("keyledger.apikey.verifications", 1, "result", "malformed")
		expect("keyledger.apikey.verifications", 1, "result", "revoked")
		expect("keyledger.ratelimit.decisions", 2, "result", "allowed")
		expect("keyledger.ratelimit.decisions", 1, "result", "too_large", "budget", "completion_tokens", "scope", "key")
		expect("keyledger.complete.duration", 1, "result", "charged")
		expect("keyledger.grants.active", 0)
		expect("keyledger.credits.holds.open", 0)
		expect("keyledger.credits.entries", 1, "type", "debit", "backend", b.label())
		expect("keyledger.credits.entries", 1, "type", "grant", "backend", b.label())
		if p, _ := value(ms["keyledger.credits.entry.amount"], "type", "debit", "unit", "INR", "backend", b.label()); p.value != 2 {
			t.Errorf("debited amount %v, want 2", p.value)
		}
		// Verifications that reached the cache: 3 ok + 1 revoked; the
		// revoked key and the first use of the live key were store reads.
		hit, _ := value(ms["keyledger.apikey.cache.lookups"], "result", "hit")
		miss, _ := value(ms["keyledger.apikey.cache.lookups"], "result", "miss")
		if hit.value+miss.value != 4 || miss.value < 1 || hit.value < 2 {
			t.Errorf("cache lookups: %v hits, %v misses, want 4 in all, at least 2 hits", hit.value, miss.value)
		}
		if p, _ := value(ms["keyledger.usage.meter.duration"], "result", "ok"); p.value < 1 || p.sum <= 0 {
			t.Errorf("meter duration %+v", p)
		}
		if p, ok := value(ms["keyledger.store.operation.duration"], "operation", "MeterUsage", "backend", b.label(), "result", "ok"); !ok || p.value < 1 {
			t.Errorf("store MeterUsage duration %+v %v", p, ok)
		}
		if _, ok := value(ms["keyledger.store.operation.duration"], "operation", "APIKeyByHash", "backend", b.label(), "result", "ok"); !ok {
			t.Errorf("no store APIKeyByHash duration: %v", points(ms["keyledger.store.operation.duration"]))
		}
		if b.name != "memory" {
			// Group-commit batches, by the store's count and the services'.
			if p, ok := value(ms["keyledger.store.batch.size"], "operation", "MeterUsage", "backend", b.label()); !ok || p.value < 1 {
				t.Errorf("batch sizes %v", points(ms["keyledger.store.batch.size"]))
			}
			if p, _ := value(ms["keyledger.groupcommit.batches"], "component", "usage"); p.value < 1 {
				t.Errorf("usage group commits %v", points(ms["keyledger.groupcommit.batches"]))
			}
		}

		// Spans: Authorize and Complete name the request, account and key;
		// store operations are children; no secret appears anywhere.
		spans := e.spans.Ended()
		byName := map[string][]sdktrace.ReadOnlySpan{}
		for _, s := range spans {
			byName[s.Name()] = append(byName[s.Name()], s)
			for _, kv := range s.Attributes() {
				if v := kv.Value.String(); strings.Contains(v, raw.Reveal()) || strings.Contains(v, revokedRaw.Reveal()) {
					t.Errorf("span %s attribute %s holds a raw key", s.Name(), kv.Key)
				}
			}
		}
		auth := byName["keyledger.Authorize"]
		if len(auth) != 5 {
			t.Fatalf("%d Authorize spans, want 5", len(auth))
		}
		attrs := attrMap(auth[0].Attributes())
		if attrs["keyledger.account.id"] != a.ID || attrs["keyledger.key.id"] != k.ID || attrs["keyledger.request.id"] != "req_otel1" || attrs["keyledger.result"] != "ok" {
			t.Errorf("Authorize span attributes %v", attrs)
		}
		comp := byName["keyledger.Complete"]
		if len(comp) != 1 {
			t.Fatalf("%d Complete spans, want 1", len(comp))
		}
		if attrs := attrMap(comp[0].Attributes()); attrs["keyledger.request.id"] != "req_otel1" || attrs["keyledger.charged"] != "2" || attrs["keyledger.result"] != "charged" {
			t.Errorf("Complete span attributes %v", attrs)
		}
		children := map[string]bool{}
		for _, s := range spans {
			if s.Parent().SpanID() == auth[0].SpanContext().SpanID() {
				children[s.Name()] = true
			}
		}
		if !children["store.APIKeyByHash"] {
			t.Errorf("Authorize's store spans: %v", children)
		}
		for _, s := range byName["store.APIKeyByHash"] {
			if attrMap(s.Attributes())["keyledger.store.backend"] != b.label() {
				t.Errorf("store span attributes %v", s.Attributes())
			}
		}
	})
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

// label is the backend attribute storeotel reports for b.
func (b backend) label() string {
	if b.name == "sqlite-process-holds" {
		return "sqlite"
	}
	return b.name
}
