// Command toolapi is an OpenRush-style tool API on keyledger: whole credits
// (500 for a new account), "or_" API keys managed under /v1/me, an
// activity log of every tool call, simulated paid tools and simulated
// credit purchases in $10 steps.
//
//	go run ./examples/toolapi -bootstrap-email you@example.com
//
// prints the first API key once; further accounts and keys come from
// keyctl -profile toolapi.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/examples/internal/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "toolapi:", err)
		os.Exit(1)
	}
}

// config is what the flags set.
type config struct {
	addr, db, postgres, redis, logLevel string
	bootstrapEmail                      string
	creditsPerUSD                       int64
	// now and upstream replace the clock and the simulated upstream in tests.
	now      func() time.Time
	upstream Upstream
	// logs is where the server logs; nil is os.Stderr (tests capture it).
	logs      io.Writer
	telemetry server.TelemetryFlags
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("toolapi", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringVar(&c.db, "db", "toolapi.db", "SQLite database file")
	fs.StringVar(&c.postgres, "postgres", "", "PostgreSQL DSN instead of -db (several instances on one database)")
	fs.StringVar(&c.redis, "redis", "", "Redis address for rate limits shared by many instances")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	c.telemetry.Register(fs)
	fs.StringVar(&c.bootstrapEmail, "bootstrap-email", "", "create this account and an API key on first start, and print the key once")
	fs.Int64Var(&c.creditsPerUSD, "credits-per-usd", 100, "credits granted per purchased US dollar")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.creditsPerUSD < 1 || c.creditsPerUSD > 1_000_000 {
		return c, errors.New("-credits-per-usd must be 1..1000000")
	}
	return c, nil
}

// run starts the server and blocks until ctx ends (SIGINT/SIGTERM in main),
// then shuts down gracefully and flushes pending usage.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	c, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	return runConfig(ctx, c, stdout)
}

func runConfig(ctx context.Context, c config, stdout io.Writer) (err error) {
	env, err := server.Open(ctx, server.Config{Profile: profiles.ToolAPI, DB: c.db, Postgres: c.postgres,
		Redis: c.redis, LogLevel: c.logLevel, Now: c.now, Stderr: c.logWriter(), Telemetry: c.telemetry})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, env.Close(ctx)) }()
	kl, log := env.KL, env.Log
	if c.bootstrapEmail != "" {
		if err := bootstrap(ctx, kl, c.bootstrapEmail, stdout, log); err != nil {
			return err
		}
	}
	up := c.upstream
	if up == nil {
		up = simulated{}
	}
	now := c.now
	if now == nil {
		now = time.Now
	}
	s := &api{kl: kl, log: log, upstream: up, creditsPerUSD: c.creditsPerUSD, now: now}
	if s.dash, err = s.newDashboard(); err != nil {
		return err
	}
	return server.Serve(ctx, c.addr, env.Tel.Handler(s.routes()), stdout, log)
}

// bootstrap creates the account of email and one API key unless the
// account exists, and prints the key: the only time it is shown.
func bootstrap(ctx context.Context, kl *keyledger.KeyLedger, email string, stdout io.Writer, log *slog.Logger) error {
	if _, err := kl.Accounts.GetByEmail(ctx, email); err == nil {
		log.Info("bootstrap account exists; no key printed", "email", email)
		return nil
	} else if !errors.Is(err, account.ErrNotFound) {
		return fmt.Errorf("bootstrap: %w", err)
	}
	a, err := kl.Signup(ctx, account.CreateParams{Name: "Owner", Email: email})
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	raw, k, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "bootstrap"})
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	fmt.Fprintf(stdout, "bootstrap account %s credential %s key %s\n", a.ID, k.ID, raw.Reveal())
	return nil
}

// logWriter is where the server logs: c.logs, or os.Stderr.
func (c config) logWriter() io.Writer {
	if c.logs == nil {
		return os.Stderr
	}
	return c.logs
}
