// Command gateway is a Forii-compatible LLM gateway built on keyledger: an
// OpenAI-compatible inference API (a built-in simulated model, or a proxy to
// any OpenAI-compatible upstream) behind Forii's account, API key, balance,
// usage and billing API, on one SQLite file or (-postgres) one PostgreSQL
// database shared by several instances.
//
//	go run ./examples/gateway
//
// starts it on 127.0.0.1:8080 with keyledger.db in the working directory and
// logs a curl quickstart. See the README for the routes and flags; the
// OpenAPI 3.1 document is served at /openapi.json.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
	"github.com/keyledger/keyledger/examples/gateway/internal/simmodel"
	procsrv "github.com/keyledger/keyledger/examples/internal/server"
	"github.com/keyledger/keyledger/ratelimit"
	"github.com/keyledger/keyledger/ratelimit/redislimit"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// Documented test credentials of the simulated Razorpay checkout. They sign
// the checkout and webhook signatures exactly as Razorpay does, so a client
// of the demo computes the same signatures with them.
const (
	defaultRazorpayKeyID         = "rzp_test_keyledgerdemo"
	defaultRazorpaySecret        = "keyledger_demo_key_secret"
	defaultRazorpayWebhookSecret = "keyledger_demo_webhook_secret"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

// config is the parsed command line.
type config struct {
	telemetry procsrv.TelemetryFlags // -metrics-addr, -otlp (telemetry.go)

	addr, db, postgres, redis string
	sharedDB, pgStoredHolds   bool
	// memoryLedger keeps the KeyLedger's store in memory (the billing
	// tables stay in db): only the load benchmark sets it, to measure the
	// gateway with no durable write at all.
	memoryLedger                    bool
	upstream, upstreamKey           string
	modelsFile                      string
	rzpKeyID, rzpSecret, rzpWebhook string
	rzpAPI                          string
	dashSecret                      string
	logLevel                        slog.Level
	// Failure handling (README "Failure modes"); -hold-ttl is in limits.
	storeTimeout time.Duration
	redisPolicy  redislimit.Policy
	redisPrefix  string

	webhookAllow []netip.Prefix // -webhook-allow: test receivers on private addresses (webhooks.go)

	limits requestLimits // -hold-ttl, -max-request-duration (limits.go)
	abuse  abuseConfig   // lifecycle.go
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.telemetry.Register(fs)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "listen address (host:port; port 0 picks a free one)")
	fs.StringVar(&c.db, "db", "keyledger.db", "SQLite database file")
	fs.BoolVar(&c.sharedDB, "shared-db", false, "let other processes spend from -db too: keep every hold in the database (two writes per request) instead of in this process (one); keyctl needs no such flag to read, credit or adjust")
	fs.BoolVar(&c.pgStoredHolds, "pg-stored-holds", false, "with -postgres, write every hold to the database (two transactions per request) instead of drawing holds from a lease per account and key (one; see pgstore.Options.LeasedHolds)")
	fs.StringVar(&c.postgres, "postgres", "", "PostgreSQL DSN instead of SQLite, e.g. postgres://user@host/db; keyledger's tables and the gateway's gw_* tables live there, shared by every gateway instance on it")
	fs.StringVar(&c.redis, "redis", "", "Redis address (host:port) for rate limits shared by many gateway instances")
	fs.StringVar(&c.upstream, "upstream", "", "base URL of an OpenAI-compatible server to proxy to, e.g. http://127.0.0.1:11434/v1 (default: the built-in simulated model)")
	fs.StringVar(&c.upstreamKey, "upstream-key", "", "API key for the upstream (default $UPSTREAM_API_KEY)")
	fs.StringVar(&c.modelsFile, "models", "", "JSON model catalog with INR prices per 1M tokens (default: a built-in catalog)")
	fs.StringVar(&c.rzpKeyID, "razorpay-key-id", defaultRazorpayKeyID, "Razorpay key id (default: the documented test key of the simulated checkout)")
	fs.StringVar(&c.rzpSecret, "razorpay-secret", defaultRazorpaySecret, "Razorpay key secret: signs checkout payments")
	fs.StringVar(&c.rzpWebhook, "razorpay-webhook-secret", defaultRazorpayWebhookSecret, "Razorpay webhook secret: signs webhook bodies")
	fs.StringVar(&c.rzpAPI, "razorpay-api", razorpay.DefaultBaseURL, "Razorpay API base URL used with a real -razorpay-key-id (tests and staging point it at a fake)")
	fs.StringVar(&c.dashSecret, "dashboard-csrf-secret", "", "secret (at least 32 bytes) keying the dashboard's CSRF tokens; set the same one on every instance behind one load balancer (default: random per process)")
	fs.DurationVar(&c.storeTimeout, "store-timeout", 2*time.Second, "bound on each database or Redis call of a request's admission; past it the request is refused with 503")
	fs.StringVar(&c.redisPrefix, "redis-prefix", "kl:rl:", "prefix of the gateway's Redis keys (several deployments on one Redis need different ones)")
	redisPolicy := fs.String("redis-unavailable", "fail-closed", "while Redis is unreachable: fail-closed (503) or fallback-memory (per-instance limits: up to N instances × the limit)")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	allow := fs.String("webhook-allow", "", "TESTS ONLY: comma-separated IPs or CIDR prefixes webhooks may reach although private or loopback, over http too (default: none; endpoints must be public https)")
	c.limits.register(fs)
	addAbuseFlags(fs, &c.abuse)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if err := c.limits.validate(); err != nil {
		return c, err
	}
	if err := c.abuse.check(); err != nil {
		return c, err
	}
	if err := c.abuse.checkDemo(c.addr, c.rzpKeyID, c.rzpSecret, c.rzpWebhook); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	wa, err := parseAllow(*allow)
	if err != nil {
		return c, err
	}
	c.webhookAllow = wa
	if err := c.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return c, fmt.Errorf("-log-level: %w", err)
	}
	switch *redisPolicy {
	case "fail-closed":
		c.redisPolicy = redislimit.FailClosed
	case "fallback-memory":
		c.redisPolicy = redislimit.FallbackMemory
	default:
		return c, fmt.Errorf("-redis-unavailable must be fail-closed or fallback-memory, got %q", *redisPolicy)
	}
	if c.storeTimeout <= 0 {
		return c, errors.New("-store-timeout must be positive")
	}
	if c.postgres == "" && (c.db == "" || c.db == ":memory:" || strings.Contains(c.db, "?")) {
		return c, errors.New("-db must name a database file")
	}
	if c.upstream != "" {
		u, err := url.Parse(c.upstream)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("-upstream must be an http(s) URL, got %q", c.upstream)
		}
		c.upstream = strings.TrimRight(c.upstream, "/")
	}
	if c.dashSecret != "" && len(c.dashSecret) < 32 {
		return c, errors.New("-dashboard-csrf-secret must be at least 32 bytes")
	}
	if c.rzpSecret == "" || c.rzpWebhook == "" {
		return c, errors.New("-razorpay-secret and -razorpay-webhook-secret must not be empty")
	}
	if err := checkLiveFlags(c.rzpKeyID, c.rzpSecret, c.rzpWebhook); err != nil {
		return c, err
	}
	return c, nil
}

// run is the whole program: it serves until ctx ends, then shuts down
// gracefully, flushing usage. It prints "listening on http://ADDR" to stdout
// once the listener is bound.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	return runWithClock(ctx, args, stdout, nil)
}

// runWithClock is run on a given clock (tests use a fake one for the rate
// limits; the HTTP server's own timeouts stay on the real clock). nil is
// the real clock, and then Redis rate limits use the Redis server's clock.
func runWithClock(ctx context.Context, args []string, stdout io.Writer, now func() time.Time) error {
	var redisNow func() time.Time
	if now == nil {
		now = time.Now
	} else {
		redisNow = now
	}
	c, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	if c.upstream != "" && c.upstreamKey == "" {
		c.upstreamKey = os.Getenv("UPSTREAM_API_KEY")
	}
	c.abuse.smtpPassword, c.abuse.adminToken = os.Getenv("SMTP_PASSWORD"), os.Getenv("GATEWAY_ADMIN_TOKEN")
	if err := c.abuse.check(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: c.logLevel}))

	srv, closeAll, err := newServer(ctx, c, log, now, redisNow)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return errors.Join(err, closeAll(context.Background()))
	}
	hs := &http.Server{
		Handler:           srv.tel.Handler(srv.handler()),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second, // the whole request body; responses (streams) are not bound by it
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "dashboard: %s%s/\n", base, dashboardPath)
	fmt.Fprintf(stdout, "listening on %s\n", base)
	if c.upstream == "" {
		fmt.Fprintln(stdout, "model: simulated model (set -upstream URL to proxy a real OpenAI-compatible server)")
	} else {
		fmt.Fprintf(stdout, "model: proxying %s\n", c.upstream)
	}
	if srv.live == nil {
		fmt.Fprintln(stdout, "payments: simulated Razorpay checkout, demo mode (set -razorpay-key-id, -razorpay-secret and -razorpay-webhook-secret for real payments)")
	} else {
		fmt.Fprintf(stdout, "payments: Razorpay API %s, key %s\n", c.rzpAPI, c.rzpKeyID)
		if c.abuse.publicURL == "" {
			fmt.Fprintln(stdout, "payments: the dashboard sells no credits until -public-url names this gateway (Razorpay Checkout returns to it); the API's checkout works")
		}
	}
	dbName := c.db
	if c.postgres != "" {
		dbName = "postgres"
	}
	log.Info("gateway started", "addr", base, "dashboard", base+dashboardPath+"/", "db", dbName, "upstream", c.upstream, "models", len(srv.cat.models))
	fmt.Fprint(stdout, quickstart(base, srv.cat.models[0].ID))

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		err = hs.Shutdown(sctx)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	cctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if cerr := closeAll(cctx); cerr != nil { // flushes usage, last-used times and ledger work
		err = errors.Join(err, cerr)
	}
	log.Info("stopped")
	return err
}

// newServer opens what the gateway serves from — the model catalog, the
// store, the billing tables, the rate limiter (Redis on redisNow, nil for
// the Redis server's clock) and the KeyLedger on now — and returns the
// server with closeAll, which flushes usage and releases everything in
// reverse order. On error everything opened so far is released. Tests build
// the handler in-process with it.
func newServer(ctx context.Context, c config, log *slog.Logger, now, redisNow func() time.Time) (_ *server, closeAll func(context.Context) error, err error) {
	var closers []func(context.Context) error
	release := func(ctx context.Context) error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i](ctx))
		}
		closers = nil
		return errors.Join(errs...)
	}
	closeAll = release
	defer func() {
		if err != nil { // closeAll is nil here: "return nil, nil, err" cleared it
			err = errors.Join(err, release(ctx))
		}
	}()
	cat, err := loadCatalog(c.modelsFile)
	if err != nil {
		return nil, nil, err
	}
	tel, err := procsrv.NewTelemetry(ctx, "gateway", c.telemetry, log)
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, tel.Shutdown) // closed last: the KeyLedger reports until it closes
	var st store.Backend
	if c.memoryLedger {
		st = memstore.New()
	} else if st, err = procsrv.OpenStore(ctx, c.db, c.postgres, !c.sharedDB && !c.pgStoredHolds, log); err != nil {
		return nil, nil, err
	}
	closers = append(closers, func(context.Context) error { return st.Close() })
	tel.AddReadiness("store", procsrv.StoreReady(st))
	var bill *billing
	if c.postgres != "" {
		bill, err = openBillingPG(ctx, c.postgres)
	} else {
		bill, err = openBilling(ctx, c.db)
	}
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, func(context.Context) error { return bill.Close() })

	srv := &server{
		log: log, cat: cat, bill: bill, rzpKeyID: c.rzpKeyID, rzpSecret: c.rzpSecret,
		rzpWebhookSecret: c.rzpWebhook, publicURL: strings.TrimRight(c.abuse.publicURL, "/"), now: now, supplier: demoSupplier(),
		limits: c.limits.orDefaults(),
	}
	if c.rzpKeyID == defaultRazorpayKeyID || c.rzpKeyID == "" {
		if srv.rzpSim, err = razorpay.NewSimulator(c.rzpSecret, &razorpay.SimulatorOptions{Now: now}); err != nil {
			return nil, nil, err
		}
	} else {
		api := c.rzpAPI
		if api == "" {
			api = razorpay.DefaultBaseURL
		}
		if srv.live, err = razorpay.NewClient(c.rzpKeyID, c.rzpSecret, &razorpay.ClientOptions{BaseURL: api}); err != nil {
			return nil, nil, fmt.Errorf("-razorpay-api: %w", err)
		}
		srv.rzpCheckout = strings.TrimRight(api, "/") + razorpay.HostedCheckoutPath
	}
	if srv.sim, err = simmodel.New(&simmodel.Options{Now: now}); err != nil {
		return nil, nil, err
	}
	if c.upstream != "" {
		srv.up = &upstream{base: c.upstream, key: c.upstreamKey, client: newUpstreamClient(srv.limits.maxRequestDuration)}
		// Its keep-alive connections (up to 100, each with two goroutines
		// and buffers) would outlive the server otherwise. The base
		// transport's: the telemetry wrapper installed below does not pass
		// CloseIdleConnections on.
		base := srv.up.client.Transport.(*http.Transport)
		closers = append(closers, func(context.Context) error { base.CloseIdleConnections(); return nil })
	}

	srv.tel = tel
	if srv.up != nil { // upstream calls show in traces and in the http_client_* metrics
		srv.up.client.Transport = tel.Transport(srv.up.client.Transport)
	}

	var limiter ratelimit.Limiter
	if c.redis != "" {
		rdb := redis.NewClient(&redis.Options{Addr: c.redis, ContextTimeoutEnabled: true})
		closers = append(closers, func(context.Context) error { return rdb.Close() })
		if err := rdb.Ping(ctx).Err(); err != nil {
			// Not fatal: the limiter follows -redis-unavailable until Redis
			// answers, and recovers by itself when it does.
			log.Warn("Redis does not answer at start", "redis", c.redis, "policy", c.redisPolicy.String(), "error", err)
		}
		tel.AddReadiness("redis", procsrv.RedisReady(rdb))
		limiter = redislimit.New(rdb, &redislimit.Options{Prefix: c.redisPrefix, Now: redisNow, OnUnavailable: c.redisPolicy, Logger: log})
	}
	format, err := apikey.NewFormat(apikey.FormatConfig{Types: []apikey.KeyType{
		{Name: "sdk", Prefix: "forii_sk_"},
		{Name: "api", Prefix: "forii_"},
	}})
	if err != nil {
		return nil, nil, err
	}
	mailer, verify := c.abuse.newMailer(c.addr, c.db, now)
	srv.verify = verify
	kl, err := keyledger.New(st, &keyledger.Options{
		Now: now, Logger: log, Prices: cat.prices, Limiter: limiter, HoldTTL: srv.limits.holdTTL, StoreTimeout: c.storeTimeout,
		Accounts: &account.Options{Mailer: mailer},
		Keys:     &apikey.Options{Format: format},
		Credits:  &credits.Options{Unit: credits.INR(), Recharger: srv.recharge},
		Events:   &keyledger.EventOptions{Allow: c.webhookAllow, Poll: webhookPoll},

		MeterProvider: tel.MeterProvider, TracerProvider: tel.Tracing(),
	})
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, kl.Close)
	srv.kl = kl
	closers = append(closers, srv.startDispatcher(ctx)) // stopped before kl closes
	pctx, stopPrune := context.WithCancel(context.WithoutCancel(ctx))
	pruned := make(chan struct{})
	go func() { defer close(pruned); srv.pruneAuditLoop(pctx, auditPruneInterval) }()
	closers = append(closers, func(context.Context) error { stopPrune(); <-pruned; return nil })
	if err := srv.setupAbuse(c.abuse); err != nil {
		return nil, nil, err
	}
	if srv.dash, err = srv.newDashboard([]byte(c.dashSecret), c.abuse.secure(c.addr)); err != nil {
		return nil, nil, err
	}
	return srv, closeAll, nil
}

// quickstart is the five-step curl walk-through logged at start.
func quickstart(base, model string) string {
	return `Quickstart (needs curl and jq):
  1. signup:  curl -s ` + base + `/v1/accounts -d '{"name":"Asha","email":"asha@example.com","password":"correct horse battery"}'
  2. login:   S=$(curl -s ` + base + `/v1/sessions -d '{"email":"asha@example.com","password":"correct horse battery"}'); TOKEN=$(echo "$S" | jq -r .token); ACCT=$(echo "$S" | jq -r .account_id)
  3. key:     KEY=$(curl -s ` + base + `/v1/accounts/$ACCT/apiKeys -H "Authorization: Bearer $TOKEN" -d '{"name":"prod-api"}' | jq -r .key)
  4. chat:    curl -s ` + base + `/inference/v1/chat/completions -H "Authorization: Bearer $KEY" -d '{"model":"` + model + `","messages":[{"role":"user","content":"Hello"}]}'
  5. balance: curl -s ` + base + `/v1/accounts/$ACCT/balance -H "Authorization: Bearer $TOKEN"
`
}
