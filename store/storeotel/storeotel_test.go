package storeotel_test

import (
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/store/storefault"
	"github.com/keyledger/keyledger/store/storeotel"
	"github.com/keyledger/keyledger/store/storetest"
)

// wrap instruments st with real SDK providers, tracing every call.
func wrap(t testing.TB, st store.Store) store.Store {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder()))
	s, err := storeotel.New(st, &storeotel.Options{MeterProvider: mp, TracerProvider: tp, RootSpans: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The wrapper is transparent: the conformance suite passes through it.
// (The facade's TestTelemetry runs it over SQLite's group commits.)
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t testing.TB) store.Store { return wrap(t, store.Driver(memstore.New())) })
}

func TestBackendName(t *testing.T) {
	mem := memstore.New()
	for _, c := range []struct {
		st   store.Store
		want string
	}{
		{store.Driver(mem), "memory"},
		{storefault.New(store.Driver(mem), nil), "memory"},
		{wrap(t, store.Driver(mem)), "memory"},
	} {
		if got := storeotel.BackendName(c.st); got != c.want {
			t.Errorf("BackendName(%T) = %q, want %q", c.st, got, c.want)
		}
	}
}
