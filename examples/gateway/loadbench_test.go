package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/usage"
)

// TestLoadBench is the gateway's load benchmark (scripts/loadtest.sh): in
// one process, a stub OpenAI upstream, a bare httputil.ReverseProxy to it,
// and the gateway in front of it (API key, limits, hold, durable metering),
// each on a real TCP listener. For each target it runs a closed loop
// (LOADBENCH_CLIENTS clients as fast as they can) and an open loop
// (LOADBENCH_RATE requests a second on a fixed schedule, latency measured
// from each request's scheduled send time, so a stall is not hidden by the
// sender waiting), prints req/s and p50/p99/max with the gateway's ratios
// to the bare proxy, and reconciles the gateway's ledger exactly.
//
// It runs only with KEYLEDGER_LOADBENCH=1 (it is a measurement, not a
// test); LOADBENCH_DURATION (default 5s) is each phase's length,
// LOADBENCH_STORE=sqlite,sqlite-shared,postgres,postgres-stored,memory the stores to run
// the gateway on (sqlite keeps holds in the process, sqlite-shared runs -shared-db;
// postgres draws holds from leases, postgres-stored runs -pg-stored-holds, both need
// KEYLEDGER_TEST_POSTGRES; memory keeps the ledger in memstore, with no
// durable write, to show what the store costs) and LOADBENCH_OUT a file for the Markdown
// table. LOADBENCH_SLOW=1 prints, for each target, how the open loop's
// slowest 1% fall into 100 ms windows: spread out is noise, bunched is a
// stall (a GC cycle, a checkpoint) worth finding.
func TestLoadBench(t *testing.T) {
	if os.Getenv("KEYLEDGER_LOADBENCH") != "1" {
		t.Skip("KEYLEDGER_LOADBENCH is not 1: the load benchmark runs from scripts/loadtest.sh")
	}
	cfg := loadBenchConfig{
		duration: envDuration(t, "LOADBENCH_DURATION", 5*time.Second),
		clients:  envInt(t, "LOADBENCH_CLIENTS", 64),
		rate:     envInt(t, "LOADBENCH_RATE", 1000),
	}
	stores := strings.Split(envString("LOADBENCH_STORE", "sqlite"), ",")

	stub := httptest.NewServer(stubUpstream())
	defer stub.Close()
	target, _ := url.Parse(stub.URL)
	bare := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
	defer bare.Close()

	var report strings.Builder
	fmt.Fprintf(&report, "Load benchmark, %s per phase, %d closed-loop clients, open loop at %d req/s (GOMAXPROCS %s).\n\n",
		cfg.duration, cfg.clients, cfg.rate, envString("GOMAXPROCS", "default"))
	report.WriteString("| target | closed loop req/s | ratio to bare proxy | open loop p50 | p99 | max | p99 added over bare proxy | errors |\n|---|---|---|---|---|---|---|---|\n")
	direct := runTarget(t, cfg, "stub upstream, direct", stub.URL+"/v1/chat/completions", nil)
	proxy := runTarget(t, cfg, "httputil.ReverseProxy", bare.URL+"/v1/chat/completions", nil)
	for _, r := range []targetResult{direct, proxy} {
		r.row(&report, proxy)
	}
	for _, st := range stores {
		runtime.GC() // each gateway starts from a collected heap, the earlier ones closed
		gw := newLoadGateway(t, st, stub.URL+"/v1")
		r := runTarget(t, cfg, "examples/gateway on "+st, gw.url+"/inference/v1/chat/completions", gw.keys)
		r.row(&report, proxy)
		gw.reconcile(t)
		gw.close()
	}
	fmt.Println(report.String())
	if out := os.Getenv("LOADBENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(report.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type loadBenchConfig struct {
	duration      time.Duration
	clients, rate int
}

// stubChat is the stub upstream's answer: a chat completion with usage.
var stubChat = []byte(`{"id":"chatcmpl-stub","object":"chat.completion","created":1,"model":"stub",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the stub."},"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}`)

// stubUpstream answers every POST like an OpenAI server would, at once.
func stubUpstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(stubChat)))
		_, _ = w.Write(stubChat)
	})
}

var loadBody = []byte(`{"model":"forii/llama-3.1-8b","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}`)

type targetResult struct {
	name           string
	closedRPS      float64
	p50, p99, pmax time.Duration
	errors, served int64
	openServed     int64
	openScheduled  int64
}

func (r targetResult) row(w io.Writer, proxy targetResult) {
	ratio := "—"
	added := "—"
	if proxy.closedRPS > 0 && r.name != proxy.name && !strings.HasPrefix(r.name, "stub") {
		ratio = fmt.Sprintf("%.2f×", r.closedRPS/proxy.closedRPS)
		added = fmt.Sprintf("%+.2f ms", float64(r.p99-proxy.p99)/1e6)
	}
	fmt.Fprintf(w, "| %s | %.0f | %s | %s | %s | %s | %s | %d |\n", r.name, r.closedRPS, ratio, ms(r.p50), ms(r.p99), ms(r.pmax), added, r.errors)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

// runTarget runs the closed and the open loop against url. keys, if set,
// are the API keys to spread the requests over.
func runTarget(t *testing.T, cfg loadBenchConfig, name, url string, keys []string) targetResult {
	t.Helper()
	tr := &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var errs atomic.Int64
	send := func(i int) bool {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(loadBody))
		req.Header.Set("Content-Type", "application/json")
		if len(keys) > 0 {
			req.Header.Set("Authorization", "Bearer "+keys[i%len(keys)])
		}
		resp, err := client.Do(req)
		if err != nil {
			errs.Add(1)
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			errs.Add(1)
			return false
		}
		return true
	}
	// Warm up connections and caches.
	for i := range cfg.clients {
		send(i)
	}
	res := targetResult{name: name}
	// Closed loop.
	var served atomic.Int64
	deadline := time.Now().Add(cfg.duration)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range cfg.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; time.Now().Before(deadline); i += cfg.clients {
				if send(i) {
					served.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	res.served = served.Load()
	res.closedRPS = float64(res.served) / time.Since(start).Seconds()
	// Open loop: request i is due at start + i/rate; its latency counts
	// from then, whenever the sender got to it.
	n := int(cfg.duration.Seconds() * float64(cfg.rate))
	lat := make([]time.Duration, n)
	interval := time.Second / time.Duration(cfg.rate)
	start = time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if send(i) {
				lat[i] = time.Since(due)
			} else {
				lat[i] = -1
			}
		}()
	}
	wg.Wait()
	if os.Getenv("LOADBENCH_SLOW") != "" { // where the slowest 1% fall in time
		srt := slices.Clone(lat)
		slices.Sort(srt)
		thr := srt[len(srt)*99/100]
		buckets := map[int]int{}
		for i, l := range lat {
			if l >= thr {
				buckets[i*10/cfg.rate]++
			}
		}
		keys := []int{}
		for k := range buckets {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var sb strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&sb, " %d:%d", k, buckets[k])
		}
		fmt.Fprintf(os.Stderr, "SLOW %s thr=%v per-100ms:%s\n", name, thr, sb.String())
	}
	ok := lat[:0]
	for _, l := range lat {
		if l >= 0 {
			ok = append(ok, l)
		}
	}
	slices.Sort(ok)
	res.openScheduled, res.openServed = int64(n), int64(len(ok))
	if len(ok) > 0 {
		res.p50, res.p99, res.pmax = ok[len(ok)/2], ok[int(math.Ceil(float64(len(ok))*0.99))-1], ok[len(ok)-1]
	}
	res.errors = errs.Load()
	return res
}

// loadGateway is a gateway on a real listener with accounts and keys.
type loadGateway struct {
	s        *server
	hs       *httptest.Server
	url      string
	keys     []string
	accounts []string
	granted  credits.Amount
	// close stops the gateway and releases its store: each target is
	// measured with no earlier gateway (its heap, its goroutines, its
	// connections) alive.
	close func()
}

func newLoadGateway(t *testing.T, store, upstream string) *loadGateway {
	t.Helper()
	c := config{db: filepath.Join(t.TempDir(), "gw.db"), upstream: upstream,
		rzpKeyID: defaultRazorpayKeyID, rzpSecret: defaultRazorpaySecret, rzpWebhook: defaultRazorpayWebhookSecret}
	switch store {
	case "sqlite": // holds in this process (the gateway's default)
	case "sqlite-shared": // -shared-db: every hold written to the file
		c.sharedDB = true
	case "postgres": // holds drawn from leases (the gateway's default)
		c.postgres = pgtest.DSN(t)
	case "postgres-stored": // -pg-stored-holds: every hold written
		c.postgres, c.pgStoredHolds = pgtest.DSN(t), true
	case "memory": // no durable write: the ledger in memstore (the floor of the store's cost)
		c.memoryLedger = true
	default:
		t.Fatalf("LOADBENCH_STORE: unknown store %q", store)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, closeAll, err := newServer(context.Background(), c, log, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.handler())
	var once sync.Once
	shut := func() {
		once.Do(func() {
			hs.Close()
			if err := closeAll(context.Background()); err != nil {
				t.Errorf("close: %v", err)
			}
			// t.Cleanup keeps this closure until the test ends: let go of
			// the server, so its store's data is not in the next target's
			// heap (a memstore ledger's records were 35 MiB of it).
			hs, closeAll, s = nil, nil, nil
		})
	}
	t.Cleanup(shut)
	g := &loadGateway{s: s, hs: hs, url: hs.URL, granted: credits.AmountFromInt(1_000_000), close: shut}
	ctx := context.Background()
	for i := range 16 {
		a, err := s.kl.Signup(ctx, account.CreateParams{Name: "Load", Email: fmt.Sprintf("load%d@example.com", i), Plan: "enterprise", TimeZone: accountTimeZone})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.kl.Credits.Grant(ctx, credits.CreditParams{AccountID: a.ID, Amount: g.granted, IdempotencyKey: "load"}); err != nil {
			t.Fatal(err)
		}
		g.accounts = append(g.accounts, a.ID)
		for range 4 {
			raw, _, err := s.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "load", Type: "sdk"})
			if err != nil {
				t.Fatal(err)
			}
			g.keys = append(g.keys, raw.Reveal())
		}
	}
	return g
}

// reconcile checks every account: what its usage records cost is exactly
// what its balance lost beyond the grants, and nothing is still held.
func (g *loadGateway) reconcile(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	g.hs.Close() // waits for every handler, so every request has completed
	for _, id := range g.accounts {
		var cost credits.Amount
		n := 0
		cursor := ""
		for {
			pg, err := g.s.kl.Usage.List(ctx, usage.ListQuery{AccountID: id, Limit: 500, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range pg.Records {
				cost = cost.Add(r.Cost)
				n++
			}
			if pg.NextCursor == "" {
				break
			}
			cursor = pg.NextCursor
		}
		a, err := g.s.kl.Credits.Account(ctx, id)
		// With leased holds (PostgreSQL) an idle lease is released within
		// a few seconds of the last request.
		for deadline := time.Now().Add(10 * time.Second); err == nil && !a.Held.IsZero() && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			a, err = g.s.kl.Credits.Account(ctx, id)
		}
		if err != nil {
			t.Fatal(err)
		}
		// The signup grant (enterprise: none) plus the load grant.
		granted := g.granted.Add(signupGrant(t, g.s, id))
		if !granted.Sub(cost).Equal(a.Balance) || !a.Held.IsZero() {
			t.Errorf("account %s: granted %s − %d records costing %s ≠ balance %s (held %s)", id, granted, n, cost, a.Balance, a.Held)
		}
	}
}

// signupGrant is what the account's plan granted at signup.
func signupGrant(t *testing.T, s *server, accountID string) credits.Amount {
	t.Helper()
	a, err := s.kl.Accounts.Get(context.Background(), accountID)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := s.kl.Catalog.Plan(a.Plan)
	return credits.NewAmount(p.SignupGrant)
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration", name, v)
	}
	return d
}
