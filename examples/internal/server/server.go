// Package server is the process plumbing the example programs share: open
// the store named by -db or -postgres, build the rate limiter named by
// -redis, and serve HTTP until the context ends, then shut down gracefully.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyledger/keyledger/ratelimit"
	"github.com/keyledger/keyledger/ratelimit/redislimit"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/pgstore"
	"github.com/keyledger/keyledger/store/sqlitestore"
)

// OpenStore opens the PostgreSQL database of postgresDSN when it is set
// (many instances on one database), else the SQLite file path. ownHolds
// keeps the holds of requests out of the database where it can: on SQLite
// as process holds (sqlitestore.Options.ProcessHolds: this process is then
// the only one that spends from the file), on PostgreSQL drawn from leases
// (pgstore.Options.LeasedHolds: every instance may still spend).
func OpenStore(ctx context.Context, path, postgresDSN string, ownHolds bool, log *slog.Logger) (store.Backend, error) {
	if postgresDSN != "" {
		st, err := pgstore.Open(ctx, postgresDSN, &pgstore.Options{Logger: log, LeasedHolds: ownHolds})
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL: %w", err)
		}
		return st, nil
	}
	if path == "" {
		return nil, errors.New("-db: a SQLite file name is required")
	}
	st, err := sqlitestore.Open(ctx, path, &sqlitestore.Options{Logger: log, ProcessHolds: ownHolds})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return st, nil
}

// Limiter returns a Redis limiter for addr (checked with a PING), or nil
// (keyledger's in-memory default) when addr is empty. close releases the
// client.
func Limiter(ctx context.Context, addr string) (l ratelimit.Limiter, close func() error, err error) {
	if addr == "" {
		return nil, func() error { return nil }, nil
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, nil, fmt.Errorf("redis %s: %w", addr, err)
	}
	return redislimit.New(rdb, nil), rdb.Close, nil
}

// NewLogger returns a JSON slog logger on w at the named level (debug, info,
// warn, error).
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("-log-level %q: %w", level, err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// Serve listens on addr, writes "listening on http://HOST:PORT" to stdout
// (so that tests on port 0 learn the address), and serves h until ctx ends.
// Then it stops accepting connections and waits up to 10 seconds for
// running requests before returning.
func Serve(ctx context.Context, addr string, h http.Handler, stdout io.Writer, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	fmt.Fprintf(stdout, "listening on http://%s\n", ln.Addr())
	log.Info("listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	log.Info("shutting down")
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
