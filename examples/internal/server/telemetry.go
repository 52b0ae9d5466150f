package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/store"
)

// TelemetryFlags are the observability flags every example server takes.
type TelemetryFlags struct {
	// MetricsAddr, if set, serves /metrics on its own listener instead of
	// the server's (e.g. an address only the scraper reaches).
	MetricsAddr string
	// OTLP is an OTLP/HTTP endpoint URL that receives the server's traces
	// ("http://127.0.0.1:4318"; /v1/traces is added to a URL without a
	// path). Empty: no traces.
	OTLP string
}

// Register adds -metrics-addr and -otlp to fs.
func (f *TelemetryFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.MetricsAddr, "metrics-addr", "", "serve Prometheus /metrics on this address instead of the main listener")
	fs.StringVar(&f.OTLP, "otlp", "", "OTLP/HTTP endpoint that receives traces, e.g. http://127.0.0.1:4318 (default: no traces)")
}

// Telemetry is a server's observability: Prometheus metrics (keyledger's
// keyledger_* series, the HTTP server's http_server_* series, and the Go
// runtime and process collectors) on /metrics, traces over OTLP/HTTP when
// configured, and the /healthz and /readyz probes of orchestrators. Each
// Telemetry has its own registry: nothing is global.
type Telemetry struct {
	// MeterProvider feeds the Prometheus registry.
	MeterProvider *sdkmetric.MeterProvider
	// TracerProvider exports spans over OTLP; nil without an endpoint.
	TracerProvider *sdktrace.TracerProvider

	registry    *prometheus.Registry
	metrics     *http.Server // the -metrics-addr listener, if any
	metricsAddr string

	mu     sync.Mutex
	checks []readyCheck
}

type readyCheck struct {
	name string
	fn   func(context.Context) error
}

// NewTelemetry builds the providers of service (its name in traces) and,
// with f.MetricsAddr, starts the separate metrics listener.
func NewTelemetry(ctx context.Context, service string, f TelemetryFlags, log *slog.Logger) (_ *Telemetry, err error) {
	t := &Telemetry{registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.Shutdown(ctx))
		}
	}()
	if err := t.registry.Register(collectors.NewGoCollector()); err != nil {
		return nil, err
	}
	if err := t.registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, err
	}
	exp, err := otelprom.New(otelprom.WithRegisterer(t.registry), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", service))
	t.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))
	if f.OTLP != "" {
		u, err := url.Parse(f.OTLP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("-otlp must be an http(s) URL, got %q", f.OTLP)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/traces"
		}
		te, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u.String()))
		if err != nil {
			return nil, fmt.Errorf("-otlp: %w", err)
		}
		t.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithBatcher(te), sdktrace.WithResource(res))
	}
	if f.MetricsAddr != "" {
		ln, err := net.Listen("tcp", f.MetricsAddr)
		if err != nil {
			return nil, fmt.Errorf("-metrics-addr: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", t.MetricsHandler())
		t.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		t.metricsAddr = ln.Addr().String()
		log.Info("metrics listening", "addr", ln.Addr().String())
		go func() { _ = t.metrics.Serve(ln) }()
	}
	return t, nil
}

// MetricsAddr is the address of the separate metrics listener ("" when
// /metrics is served by Handler).
func (t *Telemetry) MetricsAddr() string { return t.metricsAddr }

// Wire makes o report to the Telemetry's providers.
func (t *Telemetry) Wire(o *keyledger.Options) {
	o.MeterProvider = t.MeterProvider
	if t.TracerProvider != nil {
		o.TracerProvider = t.TracerProvider
	}
}

// Tracing is the TracerProvider to give keyledger.Options: nil (no
// tracing) without an OTLP endpoint.
func (t *Telemetry) Tracing() trace.TracerProvider {
	if t.TracerProvider == nil {
		return nil
	}
	return t.TracerProvider
}

// tracerProvider is the provider for instrumentation that needs one.
func (t *Telemetry) tracerProvider() trace.TracerProvider {
	if t.TracerProvider == nil {
		return noop.NewTracerProvider()
	}
	return t.TracerProvider
}

// AddReadiness adds a check /readyz runs: the server is ready when every
// check returns nil within two seconds.
func (t *Telemetry) AddReadiness(name string, fn func(context.Context) error) {
	t.mu.Lock()
	t.checks = append(t.checks, readyCheck{name, fn})
	t.mu.Unlock()
}

// StoreReady checks that the backend b answers: reading an account that
// does not exist must report account.ErrNotFound.
func StoreReady(b store.Backend) func(context.Context) error {
	st := store.Driver(b) // a read that no domain rule covers
	return func(ctx context.Context) error {
		_, err := st.Account(ctx, "acct_readyz_probe")
		if err == nil || errors.Is(err, account.ErrNotFound) {
			return nil
		}
		return err
	}
}

// RedisReady checks that the Redis server answers a PING.
func RedisReady(rdb *redis.Client) func(context.Context) error {
	return func(ctx context.Context) error { return rdb.Ping(ctx).Err() }
}

// MetricsHandler serves the registry in the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{Registry: t.registry})
}

// Handler serves /healthz (the process is up), /readyz (every readiness
// check passes; 503 naming the failures otherwise) and, unless it has its
// own listener, /metrics; everything else goes to app, measured and traced
// as HTTP server requests.
func (t *Telemetry) Handler(app http.Handler) http.Handler {
	inner := otelhttp.NewHandler(app, "http.server",
		otelhttp.WithMeterProvider(t.MeterProvider),
		otelhttp.WithTracerProvider(t.tracerProvider()),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "HTTP " + r.Method }))
	metrics := t.MetricsHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			switch r.URL.Path {
			case "/healthz":
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				_, _ = w.Write([]byte("ok\n"))
				return
			case "/readyz":
				t.ready(w, r)
				return
			case "/metrics":
				if t.metrics == nil {
					metrics.ServeHTTP(w, r)
					return
				}
			}
		}
		inner.ServeHTTP(w, r)
	})
}

func (t *Telemetry) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	t.mu.Lock()
	checks := append([]readyCheck(nil), t.checks...)
	t.mu.Unlock()
	var failed []string
	for _, c := range checks {
		if err := c.fn(ctx); err != nil {
			failed = append(failed, c.name)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if len(failed) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready: %s\n", strings.Join(failed, ", "))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// Transport instruments an HTTP client's transport (nil:
// http.DefaultTransport), so that upstream calls appear in traces and in
// the http_client_* metrics.
func (t *Telemetry) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return otelhttp.NewTransport(base, otelhttp.WithMeterProvider(t.MeterProvider),
		otelhttp.WithTracerProvider(t.tracerProvider()), otelhttp.WithPropagators(propagation.TraceContext{}))
}

// Shutdown stops the metrics listener and flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	if t.metrics != nil {
		errs = append(errs, t.metrics.Shutdown(ctx))
	}
	if t.TracerProvider != nil {
		errs = append(errs, t.TracerProvider.Shutdown(ctx))
	}
	if t.MeterProvider != nil {
		errs = append(errs, t.MeterProvider.Shutdown(ctx))
	}
	return errors.Join(errs...)
}
