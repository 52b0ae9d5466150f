package keyledger_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/usage"
)

// The crash test: a child process meters under load into SQLite — the
// facade's Authorize → Complete (hold, then settle in the usage record's
// transaction), Cancel, abandoned holds, plain Meter calls through the
// Recorder's group commit, and the expiry sweep — and prints every
// acknowledged call. The parent
// kills it with SIGKILL at a random point, reopens the database (SQLite
// recovers its WAL) and checks that every acknowledged call is there
// exactly once, nothing is half-written (auditAccount: a record without its
// debit or the reverse, rollups that disagree with the records, a balance
// that disagrees with its entries), no hold outlives its deadline, and a
// replay of acknowledged calls charges nothing. Then it starts the next
// child on the same file.
//
// The child is this test binary itself, re-run with -test.run=TestCrashChild
// and the environment variable crashChildEnv naming the database.
// KEYLEDGER_CRASH_SEED reproduces a run's choices (kill points and
// workload); the seed is logged.

const (
	crashChildEnv = "KEYLEDGER_CRASH_CHILD"
	crashSeedEnv  = "KEYLEDGER_CRASH_SEED"
	crashRunEnv   = "KEYLEDGER_CRASH_RUN"
	crashHoldTTL  = time.Second
	crashMeterFee = "0.25"
)

// crashSetup is what the parent prepares and the children read.
type crashSetup struct {
	Accounts []string `json:"accounts"`
	Keys     []string `json:"keys"` // raw API keys, one per account
}

func TestCrash(t *testing.T) {
	kills := 24
	if testing.Short() {
		kills = 3
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(crashSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s: %v", crashSeedEnv, err)
		}
	}
	t.Logf("seed %d (rerun with %s=%d)", seed, crashSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	db := filepath.Join(dir, "crash.db")
	setup := crashPrepare(t, db)
	b, _ := json.Marshal(setup)
	if err := os.WriteFile(filepath.Join(dir, "setup.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}

	acked := map[string]crashAck{} // by idempotency key, over all runs
	for run := 1; run <= kills; run++ {
		// Kill right after the start on some runs (during open and
		// recovery), after a random number of acknowledgements otherwise.
		after := 1 + rng.IntN(150)
		if run%7 == 3 {
			after = 0
		}
		acks, stderr := crashRunChild(t, db, seed, run, after)
		for _, a := range acks {
			if prev, dup := acked[a.key]; dup {
				t.Fatalf("run %d: %s acknowledged twice (%s, %s)", run, a.key, prev.record, a.record)
			}
			acked[a.key] = a
		}
		crashVerify(t, db, setup, acked, rng, run, len(acks), stderr)
	}
	t.Logf("%d kills, %d acknowledged calls", kills, len(acked))
}

// crashPrepare creates the accounts and keys the children use.
func crashPrepare(t *testing.T, db string) crashSetup {
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, db, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kl, err := keyledger.New(st, &keyledger.Options{Prices: prices(t), Catalog: bigCatalog(t), Accounts: &account.Options{Argon2: fastArgon}})
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close(ctx)
	var s crashSetup
	for i := range 3 {
		a, err := kl.Signup(ctx, account.CreateParams{Name: "Crash", Email: fmt.Sprintf("crash%d@example.com", i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kl.Credits.Purchase(ctx, credits.CreditParams{AccountID: a.ID, Amount: amt("999950"), IdempotencyKey: "topup"}); err != nil {
			t.Fatal(err)
		}
		raw, _, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "crash"})
		if err != nil {
			t.Fatal(err)
		}
		s.Accounts = append(s.Accounts, a.ID)
		s.Keys = append(s.Keys, raw.Reveal())
	}
	return s
}

// crashAck is one acknowledged call: a Meter ("M") or a Complete ("C").
type crashAck struct {
	kind, key, account, record string
	charged                    credits.Amount
}

// crashRunChild starts a child, kills it once it has acknowledged after
// calls, and returns every acknowledgement it printed before it died.
func crashRunChild(t *testing.T, db string, seed uint64, run, after int) ([]crashAck, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+db, crashSeedEnv+"="+strconv.FormatUint(seed, 10), crashRunEnv+"="+strconv.Itoa(run))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(lockedBuffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			_ = cmd.Process.Kill() // SIGKILL on Unix
		}
	}
	if after == 0 {
		kill()
	}
	// A watchdog, not a timing assertion: a child that stops acknowledging
	// for this long is stuck, and the test should say so, not hang.
	watchdog := time.AfterFunc(time.Minute, kill)
	defer watchdog.Stop()
	var acks []crashAck
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 6 || f[0] != "ACK" {
			fmt.Fprintln(stderr, sc.Text()) // the child's test output
			continue
		}
		c, err := credits.ParseAmount(f[5])
		if err != nil {
			t.Fatalf("ack %q: %v", sc.Text(), err)
		}
		acks = append(acks, crashAck{kind: f[1], key: f[2], account: f[3], record: f[4], charged: c})
		watchdog.Reset(time.Minute)
		if len(acks) >= after {
			kill()
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("run %d: the child exited by itself (%v) after %d acknowledgements:\n%s", run, err, len(acks), stderr)
	}
	return acks, stderr
}

// crashVerify reopens the database after a kill and checks it.
func crashVerify(t *testing.T, db string, setup crashSetup, acked map[string]crashAck, rng *rand.Rand, run, nacks int, stderr *lockedBuffer) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, db, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("run %d: reopen after kill: %v\nchild stderr:\n%s", run, err, stderr)
	}
	defer st.Close()
	// Past every hold's deadline: the children run on the real clock.
	later := time.Now().Add(time.Hour)
	records := map[string]string{} // record ID → account
	for _, id := range setup.Accounts {
		au := auditAccount(t, store.Driver(st), id, "log_", later)
		if !au.state.Held.IsZero() {
			t.Fatalf("run %d: account %s holds %s past every deadline", run, id, au.state.Held)
		}
		if want := amt("1000000").Sub(au.charged); !au.state.Balance.Equal(want) || !au.other.IsZero() {
			t.Fatalf("run %d: account %s balance %s, want 1000000 − %s charged = %s (other debits %s)",
				run, id, au.state.Balance, au.charged, want, au.other)
		}
		for _, r := range au.records {
			records[r.ID] = id
		}
	}
	for _, a := range acked {
		if records[a.record] != a.account {
			t.Fatalf("run %d: acknowledged %s %s (record %s) is missing", run, a.kind, a.key, a.record)
		}
	}

	// Replays after the restart charge nothing: some acknowledged Meter
	// calls again with their keys, and some completed request IDs again
	// through Authorize.
	kl, err := keyledger.New(st, &keyledger.Options{Prices: prices(t), Catalog: bigCatalog(t), HoldTTL: crashHoldTTL,
		Logger: slog.New(slog.DiscardHandler), Accounts: &account.Options{Argon2: fastArgon}})
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close(ctx)
	before := crashBalances(t, kl, setup)
	replayed := 0
	for _, a := range acked {
		if replayed >= 10 || rng.IntN(4) != 0 {
			continue
		}
		replayed++
		switch a.kind {
		case "M":
			res, err := kl.Usage.Meter(ctx, crashMeterParams(a.account, a.key))
			if err != nil || !res.Replayed || res.Record.ID != a.record || !res.Charged.Equal(a.charged) {
				t.Fatalf("run %d: replaying Meter %s: %+v %v, want record %s charged %s", run, a.key, res, err, a.record, a.charged)
			}
		case "C":
			i := slices.Index(setup.Accounts, a.account)
			_, err := kl.Authorize(ctx, apikey.RawKey(setup.Keys[i]), crashRequest(a.key))
			if !errors.Is(err, keyledger.ErrDuplicateRequest) {
				t.Fatalf("run %d: re-authorizing completed request %s: %v", run, a.key, err)
			}
		}
	}
	if after := crashBalances(t, kl, setup); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("run %d: replays changed balances %v → %v", run, before, after)
	}
	t.Logf("run %d: %d acknowledged, %d records in all, %d replayed", run, nacks, len(records), replayed)
}

func crashBalances(t *testing.T, kl *keyledger.KeyLedger, setup crashSetup) []string {
	var out []string
	for _, id := range setup.Accounts {
		a, err := kl.Credits.Account(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a.Balance.String()) // Held falls as abandoned holds expire
	}
	return out
}

// crashMeterParams is the Meter call of a key: the same for the child and
// for the parent's replay.
func crashMeterParams(accountID, key string) usage.MeterParams {
	return usage.MeterParams{
		Record:         usage.Record{AccountID: accountID, Endpoint: "/v1/op", Method: "POST", Units: 1, StatusCode: 200, Cost: amt(crashMeterFee)},
		IdempotencyKey: key,
	}
}

func crashRequest(id string) keyledger.Request {
	return keyledger.Request{Model: "test-model", Endpoint: "/v1/chat/completions", PromptTokens: 10, MaxCompletionTokens: 10, ID: id}
}

// TestCrashChild is the child of TestCrash; it does nothing in a normal
// run. It meters until it is killed.
func TestCrashChild(t *testing.T) {
	db := os.Getenv(crashChildEnv)
	if db == "" {
		t.Skip("the child process of TestCrash")
	}
	seed, _ := strconv.ParseUint(os.Getenv(crashSeedEnv), 10, 64)
	run, _ := strconv.Atoi(os.Getenv(crashRunEnv))
	b, err := os.ReadFile(filepath.Join(filepath.Dir(db), "setup.json"))
	if err != nil {
		t.Fatal(err)
	}
	var setup crashSetup
	if err := json.Unmarshal(b, &setup); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Every other child keeps its holds in the process: killed, they
	// vanish with its requests, and the kernel drops its spend lock (the
	// parent's replays below spend on the file).
	st, err := sqlitestore.Open(ctx, db, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler), ProcessHolds: run%2 == 1})
	if err != nil {
		t.Fatal(err)
	}
	kl, err := keyledger.New(st, &keyledger.Options{Prices: prices(t), Catalog: bigCatalog(t), HoldTTL: crashHoldTTL,
		Logger: slog.New(slog.DiscardHandler), Accounts: &account.Options{Argon2: fastArgon}})
	if err != nil {
		t.Fatal(err)
	}
	// One write per acknowledgement, straight to the pipe: once Write
	// returns the line survives the process.
	var mu sync.Mutex
	ack := func(kind, key, acct, record string, charged credits.Amount) {
		line := fmt.Sprintf("ACK %s %s %s %s %s\n", kind, key, acct, record, charged)
		mu.Lock()
		defer mu.Unlock()
		if _, err := io.WriteString(os.Stdout, line); err != nil {
			panic(err) // the parent is gone
		}
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(run)<<8|uint64(w)))
			for i := 0; ; i++ {
				a := rng.IntN(len(setup.Accounts))
				acct, raw := setup.Accounts[a], apikey.RawKey(setup.Keys[a])
				key := fmt.Sprintf("r%d-w%d-%d", run, w, i)
				if w == 0 && i%25 == 24 { // the sweeper writes expiries too
					if _, err := kl.Credits.ExpireDue(ctx); err != nil {
						t.Errorf("expire: %v", err)
						return
					}
				}
				switch op := rng.IntN(10); {
				case op < 5: // Recorder: plain Meter calls, group-committed
					res, err := kl.Usage.Meter(ctx, crashMeterParams(acct, "m-"+key))
					if err != nil {
						t.Errorf("meter: %v", err)
						return
					}
					ack("M", "m-"+key, acct, res.Record.ID, res.Charged)
				default: // the facade
					g, err := kl.Authorize(ctx, raw, crashRequest("c-"+key))
					if err != nil {
						t.Errorf("authorize: %v", err)
						return
					}
					switch op {
					case 5: // abandoned: the hold must expire by itself
					case 6:
						if err := g.Cancel(ctx); err != nil {
							t.Errorf("cancel: %v", err)
							return
						}
					default:
						res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 10, CompletionTokens: rng.Int64N(16)})
						if err != nil {
							t.Errorf("complete: %v", err)
							return
						}
						ack("C", "c-"+key, acct, res.Record.ID, res.Charged)
					}
				}
			}
		})
	}
	wg.Wait() // only on failure: the parent kills a healthy child
}

// lockedBuffer collects a child's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 64<<10 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
