package keyledger_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/store/sqlitestore"
)

// The events crash test (issue 21): a child process creates API keys (each
// key.created event commits with its key, the transactional outbox) and
// runs the dispatcher, whose host hook appends each event it receives to a
// file and syncs it — the receiver, which outlives the child. The parent
// kills the child with SIGKILL after a random number of acknowledged
// creates, several times on one database; then it restarts the dispatcher
// (on a clock past the dead children's leases) and drains the outbox.
// Every acknowledged key's event must be at the receiver, once after
// de-duplicating by event ID, and each account's events in creation order.

const crashEventsEnv = "KEYLEDGER_CRASH_EVENTS_CHILD"

func TestCrashEvents(t *testing.T) {
	kills := 6
	if testing.Short() {
		kills = 2
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	db := filepath.Join(dir, "events.db")
	recv := filepath.Join(dir, "received.txt")
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, db, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	kl, err := keyledger.New(st, &keyledger.Options{Catalog: bigCatalog(t), Accounts: &account.Options{Argon2: fastArgon}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var accts []string
	for i := range 2 {
		a, err := kl.Signup(ctx, account.CreateParams{Name: "E", Email: fmt.Sprintf("ev%d@example.com", i)})
		if err != nil {
			t.Fatal(err)
		}
		accts = append(accts, a.ID)
	}
	_ = kl.Close(ctx)
	_ = st.Close()

	var acked []string // key IDs, in acknowledgement order
	for run := 1; run <= kills; run++ {
		after := 1 + rng.IntN(40)
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashEventsChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEventsEnv+"="+db, "KEYLEDGER_CRASH_EVENTS_RECV="+recv,
			"KEYLEDGER_CRASH_EVENTS_ACCTS="+strings.Join(accts, ","), "KEYLEDGER_CRASH_EVENTS_RUN="+strconv.Itoa(run))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stderr := new(lockedBuffer)
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killed := false
		watchdog := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() }) // a stuck child, not a timing assertion
		n := 0
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 2 || f[0] != "ACK" {
				continue
			}
			acked = append(acked, f[1])
			if n++; n >= after && !killed {
				killed = true
				_ = cmd.Process.Kill()
			}
		}
		_ = cmd.Wait()
		watchdog.Stop()
		if !killed {
			t.Fatalf("run %d: the child ended by itself after %d acks:\n%s", run, n, stderr)
		}
	}

	// Restart: one dispatcher, on a clock past every lease the dead
	// children held, drains the outbox into the same receiver.
	st, err = sqlitestore.Open(ctx, db, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f, err := os.OpenFile(recv, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	later := func() time.Time { return time.Now().Add(time.Hour) }
	kl, err = keyledger.New(st, &keyledger.Options{Now: later, Catalog: bigCatalog(t), Logger: slog.New(slog.DiscardHandler),
		Accounts: &account.Options{Argon2: fastArgon}, Events: &keyledger.EventOptions{Hook: fileHook(f)}})
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close(ctx)
	for range 1000 {
		n, err := kl.Dispatcher().RunOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}

	// The receiver's view, de-duplicated by event ID.
	b, err := os.ReadFile(recv)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	got := map[string]int{}        // key ID → times delivered (after de-dup: 1)
	order := map[string][]string{} // account → key IDs in delivery order
	lines, dups := 0, 0
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 || f[0] != "EVT" {
			continue // a line the kill cut short
		}
		lines++
		if seen[f[1]] {
			dups++
			continue
		}
		seen[f[1]] = true
		got[f[3]]++
		order[f[2]] = append(order[f[2]], f[3])
	}
	for _, k := range acked {
		if got[k] != 1 {
			t.Fatalf("acknowledged key %s: its key.created reached the receiver %d times after de-duplication", k, got[k])
		}
	}
	// Key IDs are UUIDv7-based: creation order is ID order (children run
	// one after another on the same clock).
	for a, ks := range order {
		for i := 1; i < len(ks); i++ {
			if ks[i] <= ks[i-1] {
				t.Fatalf("account %s: key %s delivered after %s", a, ks[i], ks[i-1])
			}
		}
	}
	t.Logf("%d kills, %d acknowledged keys, %d deliveries (%d duplicates)", kills, len(acked), lines, dups)
}

// fileHook appends each event to f and syncs before acknowledging it.
func fileHook(f *os.File) events.Hook {
	var mu sync.Mutex
	return func(_ context.Context, e events.Event) error {
		var d struct {
			KeyID string `json:"key_id"`
		}
		_ = json.Unmarshal(e.Data, &d)
		mu.Lock()
		defer mu.Unlock()
		if _, err := fmt.Fprintf(f, "EVT %s %s %s\n", e.ID, e.AccountID, d.KeyID); err != nil {
			return err
		}
		return f.Sync()
	}
}

func TestCrashEventsChild(t *testing.T) {
	db := os.Getenv(crashEventsEnv)
	if db == "" {
		t.Skip("the child process of TestCrashEvents")
	}
	ctx := context.Background()
	f, err := os.OpenFile(os.Getenv("KEYLEDGER_CRASH_EVENTS_RECV"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlitestore.Open(ctx, db, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	kl, err := keyledger.New(st, &keyledger.Options{Catalog: bigCatalog(t), Logger: slog.New(slog.DiscardHandler),
		Accounts: &account.Options{Argon2: fastArgon}, Events: &keyledger.EventOptions{Hook: fileHook(f), Poll: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = kl.Dispatcher().Run(ctx) }()
	accts := strings.Split(os.Getenv("KEYLEDGER_CRASH_EVENTS_ACCTS"), ",")
	run := os.Getenv("KEYLEDGER_CRASH_EVENTS_RUN")
	for i := 0; ; i++ {
		_, k, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: accts[i%len(accts)], Name: "crash " + run + " " + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprintf(os.Stdout, "ACK %s\n", k.ID); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			time.Sleep(time.Millisecond) // let the dispatcher interleave
		}
	}
}
