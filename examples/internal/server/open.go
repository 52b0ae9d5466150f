package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/examples/internal/profiles"
)

// Config names what a server opens: its profile, its store (-db or
// -postgres), its rate limiter (-redis), its log level and clock.
type Config struct {
	Profile  string
	DB       string
	Postgres string
	Redis    string
	LogLevel string
	Now      func() time.Time // nil: time.Now
	Stderr   io.Writer        // where logs go
	// Telemetry moves /metrics to another listener and exports traces.
	Telemetry TelemetryFlags
}

// Env is an opened server environment; Close releases it in reverse order.
type Env struct {
	KL      *keyledger.KeyLedger
	Log     *slog.Logger
	Profile profiles.Profile
	// Tel serves the server's metrics and probes: mount Tel.Handler.
	Tel     *Telemetry
	closers []func(context.Context) error
}

// Open builds the logger, opens the store and the rate limiter, and wires a
// KeyLedger with the profile's options. On error everything opened so far
// is closed again.
func Open(ctx context.Context, c Config) (_ *Env, err error) {
	e := &Env{}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.Close(ctx))
		}
	}()
	if e.Log, err = NewLogger(c.Stderr, c.LogLevel); err != nil {
		return nil, err
	}
	if e.Profile, err = profiles.Get(c.Profile); err != nil {
		return nil, err
	}
	if e.Tel, err = NewTelemetry(ctx, c.Profile, c.Telemetry, e.Log); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.Tel.Shutdown) // closed last: the KeyLedger reports until it closes
	st, err := OpenStore(ctx, c.DB, c.Postgres, false, e.Log)
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func(context.Context) error { return st.Close() })
	e.Tel.AddReadiness("store", StoreReady(st))
	if c.Redis != "" {
		rdb := redis.NewClient(&redis.Options{Addr: c.Redis}) // the probe's own connection
		e.closers = append(e.closers, func(context.Context) error { return rdb.Close() })
		e.Tel.AddReadiness("redis", RedisReady(rdb))
	}
	lim, closeLim, err := Limiter(ctx, c.Redis)
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func(context.Context) error { return closeLim() })
	opts := e.Profile.Options(c.Now, e.Log)
	opts.Limiter = lim
	e.Tel.Wire(opts)
	if e.KL, err = keyledger.New(st, opts); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return e.KL.Close(cctx) // flushes pending usage
	})
	return e, nil
}

// Close closes the KeyLedger (flushing usage), the limiter and the store.
func (e *Env) Close(ctx context.Context) error {
	var errs []error
	for i := len(e.closers) - 1; i >= 0; i-- {
		errs = append(errs, e.closers[i](ctx))
	}
	e.closers = nil
	return errors.Join(errs...)
}
