// Command emailverify is an email-verification API on keyledger: every
// response in a {success, data} envelope, live and test keys (kw_live_,
// kw_test_), half-credit pricing (1 credit a verification, 0.5 for a
// result cached within 24 hours, 1 per email in a batch; the cache is
// shared by every instance on the database), plan credits granted each
// month and expiring at its end, monthly limits per plan, and MX lookups
// bounded to 2 seconds.
//
//	go run ./examples/emailverify
//	go run ./examples/keyctl -db emailverify.db -profile emailverify account create -name Ada -email ada@example.com -plan professional
//	go run ./examples/keyctl -db emailverify.db -profile emailverify key create -account usr_… -name Production
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/examples/internal/server"
	"github.com/keyledger/keyledger/examples/internal/subscription"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "emailverify:", err)
		os.Exit(1)
	}
}

// config is what the flags set.
type config struct {
	addr, db, postgres, redis, logLevel string
	dnsTimeout                          time.Duration
	// now and resolver replace the clock and DNS in tests.
	now      func() time.Time
	resolver Resolver
	// logs is where the server logs; nil is os.Stderr (tests capture it).
	logs      io.Writer
	telemetry server.TelemetryFlags
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("emailverify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringVar(&c.db, "db", "emailverify.db", "SQLite database file")
	fs.StringVar(&c.postgres, "postgres", "", "PostgreSQL DSN instead of -db (several instances on one database)")
	fs.StringVar(&c.redis, "redis", "", "Redis address for rate limits shared by many instances")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	c.telemetry.Register(fs)
	fs.DurationVar(&c.dnsTimeout, "dns-timeout", 2*time.Second, "bound of one MX lookup")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.dnsTimeout <= 0 || c.dnsTimeout > 30*time.Second {
		return c, errors.New("-dns-timeout must be in (0, 30s]")
	}
	return c, nil
}

// run starts the server and blocks until ctx ends (SIGINT/SIGTERM in main),
// then shuts down gracefully: running batch jobs save their progress and
// give up their lease (the next instance resumes them), and pending usage
// is flushed.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	c, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	return runConfig(ctx, c, stdout)
}

func runConfig(ctx context.Context, c config, stdout io.Writer) (err error) {
	env, err := server.Open(ctx, server.Config{Profile: profiles.EmailVerify, DB: c.db, Postgres: c.postgres,
		Redis: c.redis, LogLevel: c.logLevel, Now: c.now, Stderr: c.logWriter(), Telemetry: c.telemetry})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, env.Close(ctx)) }()
	kl, log := env.KL, env.Log
	now := c.now
	if now == nil {
		now = time.Now
	}
	res := c.resolver
	if res == nil {
		res = net.DefaultResolver
	}
	prof, err := profiles.Get(profiles.EmailVerify)
	if err != nil {
		return err
	}
	subs, err := subscription.New(kl, prof.MonthlyGrants, now)
	if err != nil {
		return err
	}
	chk := newChecker(res, now)
	chk.timeout = c.dnsTimeout
	var store *jobStore
	if c.postgres != "" {
		store, err = openJobStorePG(ctx, c.postgres)
	} else {
		store, err = openJobStore(ctx, c.db)
	}
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	jobCtx, stopJobs := context.WithCancel(context.WithoutCancel(ctx))
	s := &api{kl: kl, log: log, now: now, check: chk, jobs: newJobs(jobCtx, now, store), subs: subs}
	var sweeping sync.WaitGroup
	// resumes the jobs a stopped instance left, and grants the month's
	// credits to accounts not used since the month began
	sweeping.Go(func() { s.sweeper(jobCtx) })
	defer func() {
		stopJobs()
		sweeping.Wait()
		s.jobs.Wait() // before kl.Close and store.Close: jobs meter and save
	}()
	return server.Serve(ctx, c.addr, env.Tel.Handler(s.routes()), stdout, log)
}

// logWriter is where the server logs: c.logs, or os.Stderr.
func (c config) logWriter() io.Writer {
	if c.logs == nil {
		return os.Stderr
	}
	return c.logs
}
