package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	crand "crypto/rand"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/e2e"
	"github.com/keyledger/keyledger/internal/faultproxy"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/store/pgstore"
)

// The fault harness. Several gateway instances — subprocesses of this test
// binary, each a real `gateway -postgres … -redis …` — share one
// PostgreSQL schema and one Redis, each through its own TCP fault proxies
// (internal/faultproxy). Client workers send metered chat completions,
// streaming and not, each with its own request id (Idempotency-Key), and
// retry a failed attempt on another instance with the same id. Meanwhile a
// seeded schedule injects faults one after another: Redis down (refusing)
// or stalled (black-holed), PostgreSQL black-holed, slow or reset for one
// instance, an instance
// killed with SIGKILL and restarted, the LISTEN connections killed with
// pg_terminate_backend, and a key revoked mid-run.
//
// Afterwards, against the database directly:
//
//   - Σ usage record costs = Σ debit entries, per account, and every
//     account's balance is the sum of its entries;
//   - every acknowledged request (a 200 whose body was read to its end) is
//     recorded exactly once under its request id — lost must be 0 — and
//     every request id has at most one record;
//   - past every hold's deadline no account holds anything;
//   - no attempt with the revoked key started later than the revocation
//     bound after the revocation was served;
//   - the free-plan account was admitted within the stated over-admission
//     bound of its 60 requests per minute.
//
// The short form (about a minute) runs in `go test ./...` whenever
// KEYLEDGER_TEST_POSTGRES and KEYLEDGER_TEST_REDIS are set;
// KEYLEDGER_FAULTS_FULL=1 runs the long form (at least 200 faults).
// KEYLEDGER_FAULTS_SEED reproduces a run's schedule and workload choices
// (the seed is logged; timing still varies); KEYLEDGER_FAULTS_REPORT names
// the file the Markdown report is written to.

const (
	faultsChildEnv  = "KEYLEDGER_FAULTS_CHILD"
	faultsFullEnv   = "KEYLEDGER_FAULTS_FULL"
	faultsSeedEnv   = "KEYLEDGER_FAULTS_SEED"
	faultsReportEnv = "KEYLEDGER_FAULTS_REPORT"

	faultInstances   = 3
	faultHoldTTL     = 4 * time.Second
	faultStoreTO     = time.Second
	revocationBound  = 5 * time.Second // apikey RefreshInterval: the bound without the listener
	revocationMargin = 3 * time.Second // the store timeout and scheduling, generously
)

// TestFaultsChild is a gateway instance of TestFaults: the test binary
// re-run with faultsChildEnv holding its command line as JSON.
func TestFaultsChild(t *testing.T) {
	spec := os.Getenv(faultsChildEnv)
	if spec == "" {
		t.Skip("the gateway subprocess of TestFaults")
	}
	var args []string
	if err := json.Unmarshal([]byte(spec), &args); err != nil {
		fmt.Fprintln(os.Stderr, "faults child:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := run(ctx, args, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "faults child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// instance is one gateway subprocess and its proxies.
type instance struct {
	n      int
	pg, rd *faultproxy.Proxy
	args   []string
	logDir string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	base   string        // "" while down
	starts int
}

func (in *instance) url() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.base
}

// start runs the instance and waits until it listens.
func (in *instance) start() error {
	spec, _ := json.Marshal(in.args)
	in.mu.Lock()
	in.starts++
	n := in.starts
	in.mu.Unlock()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFaultsChild$")
	cmd.Env = append(os.Environ(), faultsChildEnv+"="+string(spec))
	dieWithParent(cmd)
	stderr, err := os.Create(filepath.Join(in.logDir, fmt.Sprintf("gw%d-%d.stderr", in.n, n)))
	if err != nil {
		return err
	}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); stderr.Close(); close(exited) }()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	base := ""
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			base = s
			break
		}
	}
	if base == "" {
		_ = cmd.Process.Kill()
		return fmt.Errorf("gateway %d did not start (see %s)", in.n, stderr.Name())
	}
	go func() { _, _ = io.Copy(io.Discard, out) }() // its logs, drained so it never blocks
	in.mu.Lock()
	in.cmd, in.exited, in.base = cmd, exited, base
	in.mu.Unlock()
	return nil
}

// kill ends the instance with SIGKILL: requests in flight never complete.
func (in *instance) kill() {
	in.mu.Lock()
	cmd := in.cmd
	in.cmd, in.base = nil, ""
	in.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
	}
}

// stop ends the instance with SIGTERM (graceful shutdown) and waits.
func (in *instance) stop() {
	in.mu.Lock()
	cmd, exited := in.cmd, in.exited
	in.cmd, in.base = nil, ""
	in.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
	}
}

// faultUser is an account the workers use.
type faultUser struct {
	name          string
	id, key, kid  string
	free, revokee bool
}

// attempt is one HTTP attempt of a request.
type attempt struct {
	start  time.Time
	status int // 0: a transport error or a body cut short
}

// request is what a client saw of one request id.
type request struct {
	id       string
	user     *faultUser
	attempts []attempt
	acked    bool // a 200 read to its end
	dup      bool // a 409: an earlier attempt completed
}

// faultStats counts the run.
type faultStats struct {
	faults    map[string]int
	nFaults   int
	requests  int
	acked     int
	refused   int // 503 answers
	limited   int // 429 answers
	dups      int // 409 answers: completed by an attempt whose answer was lost
	netErrs   int // attempts ended by the transport
	other     map[int]int
	gaveUp    int // requests never answered definitely
	restarts  int
	lost      int
	revokedAt time.Time

	freeAdmitted, freeBound, limiters int
	revokedServed                     int // attempts with the revoked key served after the revocation, within the bound
}

func TestFaults(t *testing.T) {
	if os.Getenv(faultsChildEnv) != "" {
		t.Skip("in a child")
	}
	redisAddr := os.Getenv("KEYLEDGER_TEST_REDIS")
	dsn := pgtest.DSN(t) // skips without KEYLEDGER_TEST_POSTGRES
	if redisAddr == "" {
		t.Skip("KEYLEDGER_TEST_REDIS is not set; the fault harness needs PostgreSQL and Redis")
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := redis.NewClient(&redis.Options{Addr: redisAddr}).Ping(rctx).Err(); err != nil {
		rcancel()
		t.Fatalf("KEYLEDGER_TEST_REDIS=%s is set but Redis does not answer: %v", redisAddr, err)
	}
	rcancel()

	full := os.Getenv(faultsFullEnv) == "1"
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(faultsSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s: %v", faultsSeedEnv, err)
		}
	}
	t.Logf("seed %d (%s=%d reproduces the schedule)", seed, faultsSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 0x6661756c7473))
	policy := "fallback-memory"
	if rng.IntN(2) == 0 {
		policy = "fail-closed"
	}
	minFaults, loadFor := 20, 35*time.Second
	if full {
		minFaults, loadFor = 220, 0
	}

	// The instances' connections carry an application_name of this run,
	// so that the listener kill touches no other test's connections.
	var tag [6]byte
	_, _ = crand.Read(tag[:])
	app := "klfaults_" + hex.EncodeToString(tag[:])
	u, _ := url.Parse(dsn)
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	appDSN := u.String()
	// Rate limits and throttles (sign-ups per address included) in Redis
	// keys of this run only, deleted afterwards: other tests share Redis.
	redisPrefix := app + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
		defer rdb.Close()
		iter := rdb.Scan(ctx, 0, redisPrefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})

	dir := t.TempDir()
	insts := make([]*instance, faultInstances)
	for i := range insts {
		pg, err := faultproxy.Start(pgtest.Target(t, dsn))
		if err != nil {
			t.Fatal(err)
		}
		rd, err := faultproxy.Start(redisAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pg.Close(); rd.Close() })
		via, _ := pgtest.Via(t, appDSN, pg.Addr())
		insts[i] = &instance{n: i, pg: pg, rd: rd, logDir: dir, args: []string{
			"-addr", "127.0.0.1:0", "-db", filepath.Join(dir, "unused.db"), "-postgres", via, "-redis", rd.Addr(), "-redis-prefix", redisPrefix,
			"-hold-ttl", faultHoldTTL.String(), "-max-request-duration", (faultHoldTTL / 2).String(), "-store-timeout", faultStoreTO.String(),
			"-redis-unavailable", policy, "-log-level", "error",
		}}
	}
	// The first instance migrates the schema; the others start on it.
	for _, in := range insts {
		if err := in.start(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, in := range insts {
			in.kill()
		}
	})

	// Accounts, through the gateway's own API (its key format), then set up
	// through a direct KeyLedger: plans and credits.
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	st, err := pgstore.Open(ctx, dsn, &pgstore.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	admin, err := keyledger.New(st, &keyledger.Options{Logger: quiet, Credits: &credits.Options{Unit: credits.INR()}})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	gw0 := &gw{t: t, base: insts[0].url(), c: &http.Client{Timeout: 30 * time.Second}, logs: e2e.NewLogs(t)}
	var users []*faultUser
	for i := range 5 {
		fu := &faultUser{name: fmt.Sprintf("Fault%d", i), free: i == 3, revokee: i == 4}
		us := gw0.signup(fu.name)
		fu.id, fu.key, fu.kid = us.id, us.key, us.keyID
		if !fu.free {
			ent := "enterprise"
			if _, err := admin.UpdateAccount(ctx, fu.id, account.UpdateParams{Plan: &ent}); err != nil {
				t.Fatal(err)
			}
			if _, err := admin.Credits.Grant(ctx, credits.CreditParams{AccountID: fu.id, Amount: credits.AmountFromInt(100_000),
				IdempotencyKey: "faults-grant"}); err != nil {
				t.Fatal(err)
			}
		}
		users = append(users, fu)
	}
	cat, err := loadCatalog("")
	if err != nil {
		t.Fatal(err)
	}
	model := cat.models[0].ID

	// Load.
	stats := faultStats{faults: map[string]int{}, other: map[int]int{}}
	var (
		mu       sync.Mutex
		reqs     []*request
		revoked  atomic.Bool
		stopLoad = make(chan struct{})
		wg       sync.WaitGroup
	)
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}
	defer client.CloseIdleConnections()
	const workers = 8
	loadStart := time.Now() // the rate-limit bound is over the whole window of load
	for w := range workers {
		wrng := rand.New(rand.NewPCG(seed, uint64(w)+1))
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				fu := users[[]int{0, 0, 1, 1, 2, 2, 3, 4}[wrng.IntN(8)]]
				if fu.revokee && revoked.Load() && wrng.IntN(4) != 0 {
					fu = users[0]
				}
				r := &request{id: fmt.Sprintf("fx-%d-%d-%d", seed%100000, w, n), user: fu}
				body, _ := json.Marshal(chatBody(model, 8+wrng.IntN(57), wrng.IntN(2) == 0))
				sendWithRetries(client, insts, wrng, r, body)
				mu.Lock()
				reqs = append(reqs, r)
				mu.Unlock()
			}
		})
	}

	// The fault schedule, one fault after another.
	listenerKills := 0
	start := time.Now()
	revokeAt := 0.4
	for step := 0; ; step++ {
		el := time.Since(start)
		if stats.nFaults >= minFaults && (loadFor == 0 || el >= loadFor) {
			break
		}
		if !revoked.Load() && (float64(stats.nFaults) >= revokeAt*float64(minFaults)) {
			rv := users[4]
			stats.revokedAt = time.Now()
			if _, err := admin.Keys.Revoke(ctx, rv.id, rv.kid); err != nil {
				t.Fatalf("revoke: %v", err)
			}
			revoked.Store(true)
		}
		in := insts[rng.IntN(len(insts))]
		hold := time.Duration(300+rng.IntN(1200)) * time.Millisecond
		gap := time.Duration(100+rng.IntN(400)) * time.Millisecond
		kinds := []string{"redis-down", "redis-stall", "pg-blackhole", "pg-slow", "pg-reset", "instance-kill", "listener-kill"}
		kind := kinds[rng.IntN(len(kinds))]
		switch kind {
		case "redis-stall": // a partition: connections accepted, nothing answered
			for _, x := range insts {
				x.rd.Set(faultproxy.Blackhole, 0)
			}
			time.Sleep(hold)
			for _, x := range insts {
				x.rd.Set(faultproxy.Pass, 0)
				x.rd.Reset() // the calls given up on left their connections mid-reply
			}
		case "redis-down":
			for _, x := range insts {
				x.rd.Set(faultproxy.Refuse, 0)
				x.rd.Reset()
			}
			time.Sleep(hold)
			for _, x := range insts {
				x.rd.Set(faultproxy.Pass, 0)
			}
		case "pg-blackhole":
			in.pg.Set(faultproxy.Blackhole, 0)
			time.Sleep(hold)
			in.pg.Set(faultproxy.Pass, 0)
		case "pg-slow":
			in.pg.Set(faultproxy.Delay, time.Duration(20+rng.IntN(180))*time.Millisecond)
			time.Sleep(hold)
			in.pg.Set(faultproxy.Pass, 0)
		case "pg-reset":
			in.pg.Reset()
		case "instance-kill":
			in.kill()
			time.Sleep(hold / 2)
			if err := in.start(); err != nil {
				t.Fatalf("restart: %v", err)
			}
			stats.restarts++
		case "listener-kill":
			listenerKills += terminateListeners(t, dsn, app)
		}
		stats.faults[kind]++
		stats.nFaults++
		time.Sleep(gap)
	}
	close(stopLoad)
	wg.Wait()
	loadTime := time.Since(loadStart)
	for _, in := range insts {
		in.stop()
	}

	// Past every hold's deadline.
	time.Sleep(faultHoldTTL + time.Second)
	verifyFaults(t, dsn, admin, users, reqs, &stats, policy, loadTime)
	stats.requests = len(reqs)
	report := faultReport(seed, full, policy, loadTime, listenerKills, &stats)
	path := os.Getenv(faultsReportEnv)
	if path == "" {
		path = filepath.Join(t.TempDir(), "faults.md")
	}
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %s\n%s", path, report)
}

// sendWithRetries sends r until it gets a definite answer, retrying on
// another instance with the same request id.
func sendWithRetries(client *http.Client, insts []*instance, rng *rand.Rand, r *request, body []byte) {
	n := rng.IntN(len(insts))
	for a := 0; a < 12; a++ {
		n = (n + 1 + rng.IntN(len(insts)-1)) % len(insts)
		base := insts[n].url()
		at := attempt{start: time.Now()}
		if base == "" { // down: a refused connection
			r.attempts = append(r.attempts, at)
			time.Sleep(20 * time.Millisecond)
			continue
		}
		req, _ := http.NewRequest("POST", base+"/inference/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+r.user.key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", r.id)
		resp, err := client.Do(req)
		if err != nil {
			r.attempts = append(r.attempts, at)
			time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
			continue
		}
		_, rerr := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if rerr != nil {
			r.attempts = append(r.attempts, at) // cut short: not acknowledged
			continue
		}
		at.status = resp.StatusCode
		r.attempts = append(r.attempts, at)
		switch resp.StatusCode {
		case 200:
			r.acked = true
			return
		case 409:
			r.dup = true
			return
		case 503, 500, 502, 504:
			time.Sleep(time.Duration(50+rng.IntN(150)) * time.Millisecond)
			continue
		default: // 429, 401, 402, 400: a definite refusal
			return
		}
	}
}

// terminateListeners kills the LISTEN connections of this run's instances.
func terminateListeners(t *testing.T, dsn, app string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("listener kill: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND (query ILIKE 'LISTEN%' OR query = '-- ping')`, app).Scan(&n)
	if err != nil {
		t.Fatalf("listener kill: %v", err)
	}
	return n
}

// verifyFaults checks the books and the bounds after a run.
func verifyFaults(t *testing.T, dsn string, admin *keyledger.KeyLedger, users []*faultUser, reqs []*request, s *faultStats, policy string, loadTime time.Duration) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	dec := func(sql string, args ...any) decimal.Decimal {
		var txt string
		if err := conn.QueryRow(ctx, sql, args...).Scan(&txt); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return decimal.RequireFromString(txt)
	}
	for _, fu := range users {
		costs := dec(`SELECT coalesce(sum(cost), 0)::text FROM usage_records WHERE account_id = $1`, fu.id)
		debits := dec(`SELECT coalesce(-sum(amount), 0)::text FROM credit_entries WHERE account_id = $1 AND type = 'debit'`, fu.id)
		if !costs.Equal(debits) {
			t.Errorf("%s: Σ usage costs %s ≠ Σ debits %s", fu.name, costs, debits)
		}
		entries := dec(`SELECT coalesce(sum(amount), 0)::text FROM credit_entries WHERE account_id = $1`, fu.id)
		balance := dec(`SELECT balance::text FROM credit_accounts WHERE account_id = $1`, fu.id)
		if !entries.Equal(balance) {
			t.Errorf("%s: balance %s ≠ Σ entries %s", fu.name, balance, entries)
		}
		a, err := admin.Credits.Account(ctx, fu.id)
		if err != nil {
			t.Fatal(err)
		}
		if !a.Held.IsZero() {
			t.Errorf("%s: %s still held past every hold's deadline", fu.name, a.Held)
		}
	}
	// Every request id: its records.
	rows, err := conn.Query(ctx, `SELECT o.key, o.account_id, count(r.id) FROM usage_ops o
		LEFT JOIN usage_records r ON r.account_id = o.account_id AND r.id = o.record_id GROUP BY o.key, o.account_id`)
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]int64{}
	for rows.Next() {
		var key, acct string
		var n int64
		if err := rows.Scan(&key, &acct, &n); err != nil {
			t.Fatal(err)
		}
		recorded[acct+"/"+key] += n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var nRecords int64
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM usage_records`).Scan(&nRecords); err != nil {
		t.Fatal(err)
	}
	var opsRecords int64
	for _, n := range recorded {
		opsRecords += n
	}
	if nRecords != opsRecords {
		t.Errorf("%d usage records, %d reached from their request ids: a record without its request id", nRecords, opsRecords)
	}
	freeAdmitted := 0
	for _, r := range reqs {
		n := recorded[r.user.id+"/"+r.id]
		switch {
		case n > 1:
			t.Errorf("request %s recorded %d times", r.id, n)
		case r.acked && n != 1:
			s.lost++
			t.Errorf("request %s was acknowledged but is not recorded", r.id)
		case r.dup && n != 1:
			t.Errorf("request %s answered 409 (completed earlier) but has no record", r.id)
		}
		if r.acked {
			s.acked++
		}
		if r.dup {
			s.dups++
		}
		if !r.acked && !r.dup {
			last := 0
			if len(r.attempts) > 0 {
				last = r.attempts[len(r.attempts)-1].status
			}
			if last == 0 || last >= 500 {
				s.gaveUp++
			}
		}
		for _, at := range r.attempts {
			switch at.status {
			case 0:
				s.netErrs++
			case 200, 409:
			case 503:
				s.refused++
			case 429:
				s.limited++
			default:
				s.other[at.status]++
			}
			if r.user.revokee && at.status == 200 && !s.revokedAt.IsZero() && at.start.After(s.revokedAt) {
				s.revokedServed++
			}
			if r.user.revokee && at.status == 200 && !s.revokedAt.IsZero() && at.start.After(s.revokedAt.Add(revocationBound+revocationMargin)) {
				t.Errorf("request %s with the revoked key served, started %v after the revocation (bound %v)",
					r.id, at.start.Sub(s.revokedAt).Round(time.Millisecond), revocationBound)
			}
			if r.user.free && (at.status == 200 || at.status == 409) {
				freeAdmitted++
			}
		}
	}
	// Over-admission: GCRA at 60 per minute with a burst of 60 admits at
	// most 60 + 1 per second of the window. Redis is one such limiter;
	// under fallback-memory every instance (every start of one) is another.
	limiters := 1
	if policy == "fallback-memory" {
		limiters += faultInstances + s.restarts
	}
	bound := limiters * (60 + int(loadTime.Seconds()) + 1)
	if freeAdmitted > bound {
		t.Errorf("free account admitted %d times in %v, over the bound %d (%d limiters × (60 + 1/s))", freeAdmitted, loadTime, bound, limiters)
	}
	s.freeAdmitted, s.freeBound, s.limiters = freeAdmitted, bound, limiters
	t.Logf("free account: %d admitted in %v, bound %d", freeAdmitted, loadTime.Round(time.Second), bound)
}

// faultReport is the Markdown report of a run.
func faultReport(seed uint64, full bool, policy string, loadTime time.Duration, listenerKills int, s *faultStats) string {
	var b strings.Builder
	form := "short"
	if full {
		form = "long (" + faultsFullEnv + "=1)"
	}
	fmt.Fprintf(&b, "# Fault harness run\n\n")
	fmt.Fprintf(&b, "`go test -run '^TestFaults$' ./examples/gateway` — %s form, seed %d (`%s=%d` reproduces the schedule), "+
		"%d gateway instances on one PostgreSQL schema and one Redis, each through its own fault proxies; Redis policy `%s`; "+
		"hold TTL %v, store timeout %v; %v of load from 8 client workers (the faults end as it ends).\n\n",
		form, seed, faultsSeedEnv, seed, faultInstances, policy, faultHoldTTL, faultStoreTO, loadTime.Round(time.Second))
	fmt.Fprintf(&b, "## Faults injected: %d\n\n| fault | count |\n|---|---:|\n", s.nFaults)
	kinds := make([]string, 0, len(s.faults))
	for k := range s.faults {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(&b, "| %s | %d |\n", k, s.faults[k])
	}
	fmt.Fprintf(&b, "\nInstance restarts: %d. LISTEN connections terminated: %d. One key revoked mid-run.\n\n", s.restarts, listenerKills)
	fmt.Fprintf(&b, "## Requests\n\n| | count |\n|---|---:|\n")
	fmt.Fprintf(&b, "| requests (distinct request ids) | %d |\n", s.requests)
	fmt.Fprintf(&b, "| served and acknowledged (200, body read to its end) | %d |\n", s.acked)
	fmt.Fprintf(&b, "| completed by an attempt whose answer was lost (409 on retry, charged once) | %d |\n", s.dups)
	fmt.Fprintf(&b, "| attempts refused with 503 (store or Redis unavailable) | %d |\n", s.refused)
	fmt.Fprintf(&b, "| attempts refused with 429 | %d |\n", s.limited)
	fmt.Fprintf(&b, "| attempts ended by the transport (killed instance, reset) | %d |\n", s.netErrs)
	codes := make([]int, 0, len(s.other))
	for c := range s.other {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	for _, c := range codes {
		fmt.Fprintf(&b, "| attempts answered %d | %d |\n", c, s.other[c])
	}
	fmt.Fprintf(&b, "| requests given up after 12 attempts | %d |\n", s.gaveUp)
	fmt.Fprintf(&b, "| **lost** (acknowledged, not recorded) | **%d** |\n\n", s.lost)
	fmt.Fprintf(&b, "Rate limit: the free account (60 requests a minute, burst 60) was admitted %d times; the stated bound for this "+
		"window is %d (%d limiter(s) × (60 + 1 per second)).\n\n", s.freeAdmitted, s.freeBound, s.limiters)
	fmt.Fprintf(&b, "Revocation: attempts with the revoked key that started after the revocation and were served: %d, all within "+
		"the bound.\n\n", s.revokedServed)
	fmt.Fprintf(&b, "Checked after the run: Σ usage costs = Σ debits and balance = Σ entries for every account; every acknowledged "+
		"request recorded exactly once and no request id recorded twice; nothing held past the hold deadline; no attempt with the "+
		"revoked key served later than %v after the revocation; the free account (60 RPM) within its over-admission bound.\n",
		revocationBound+revocationMargin)
	return b.String()
}
