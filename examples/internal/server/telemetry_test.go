package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/examples/internal/e2e"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	return w.Code, w.Body.String()
}

// The probes answer for the process and its store, /metrics has the
// runtime's series and the HTTP server's, and everything else reaches the
// application.
func TestTelemetryHandler(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	tel, err := NewTelemetry(ctx, "test", TelemetryFlags{}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)
	st, err := OpenStore(ctx, filepath.Join(t.TempDir(), "k.db"), "", false, log)
	if err != nil {
		t.Fatal(err)
	}
	tel.AddReadiness("store", StoreReady(st))
	h := tel.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))

	if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, h, "/readyz"); code != 200 {
		t.Errorf("/readyz with the store open: %d %q", code, body)
	}
	if code, _ := get(t, h, "/v1/anything"); code != http.StatusTeapot {
		t.Errorf("application route: %d", code)
	}
	code, body := get(t, h, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	if _, ok := e2e.Metric([]byte(body), "go_goroutines"); !ok {
		t.Error("/metrics has no Go runtime series")
	}
	if n, _ := e2e.Metric([]byte(body), "http_server_request_duration_seconds_count", `http_response_status_code="418"`); n != 1 {
		t.Errorf("/metrics counts %v application requests, want 1 (probes and scrapes are not counted)", n)
	}

	// A closed store is not ready; the process still is.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "store") {
		t.Errorf("/readyz with the store closed: %d %q", code, body)
	}
	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Errorf("/healthz with the store closed: %d", code)
	}
}

// -metrics-addr moves /metrics to its own listener.
func TestTelemetryMetricsAddr(t *testing.T) {
	ctx := context.Background()
	tel, err := NewTelemetry(ctx, "test", TelemetryFlags{MetricsAddr: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)
	h := tel.Handler(http.NotFoundHandler())
	if code, _ := get(t, h, "/metrics"); code != 404 {
		t.Errorf("/metrics on the main listener: %d, want 404", code)
	}
	resp, err := http.Get("http://" + tel.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, ok := e2e.Metric(body, "go_goroutines"); resp.StatusCode != 200 || !ok {
		t.Errorf("/metrics on -metrics-addr: %d", resp.StatusCode)
	}
}

func TestTelemetryFlags(t *testing.T) {
	if _, err := NewTelemetry(context.Background(), "test", TelemetryFlags{OTLP: "localhost:4318"}, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("an -otlp value without a scheme was accepted")
	}
	tel, err := NewTelemetry(context.Background(), "test", TelemetryFlags{OTLP: "http://127.0.0.1:4318"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if tel.TracerProvider == nil {
		t.Error("-otlp set no TracerProvider")
	}
	_ = tel.Shutdown(context.Background())
}
