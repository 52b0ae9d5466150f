package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/internal/netguard"
	"github.com/keyledger/keyledger/internal/outbox"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

func setup(t *testing.T, h http.Handler) (*memstore.Store, string, *fakeclock.Clock, netguard.Guard) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	st := memstore.New()
	clk := fakeclock.New(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
	accts, err := account.NewService(store.Driver(st), nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := accts.Create(context.Background(), account.CreateParams{Name: "O", Email: "o@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	g := netguard.Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	if err := store.Driver(st).CreateWebhookEndpoint(context.Background(), events.Endpoint{ID: "we_1", AccountID: a.ID, URL: srv.URL + "/hook", Secret: "whsec_x", CreatedAt: clk.Now()}, 10); err != nil {
		t.Fatal(err)
	}
	ev := events.Event{ID: "evt_1", Type: events.KeyCreated, AccountID: a.ID, Time: clk.Now(), Data: json.RawMessage(`{}`)}
	if err := store.Driver(st).AppendEvents(context.Background(), []events.Event{ev}); err != nil {
		t.Fatal(err)
	}
	return st, a.ID, clk, g
}

// A redirect is not followed (a receiver cannot bounce the request to an
// internal address), a huge response body is not read past a bound, and
// the failure is retried with exponential backoff: due at 5 s, then 10 s.
func TestDeliveryRedirectBackoff(t *testing.T) {
	var followed, hits atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/hook", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, "/internal", http.StatusFound)
		_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
	})
	mux.HandleFunc("/internal", func(http.ResponseWriter, *http.Request) { followed.Add(1) })
	st, acct, clk, g := setup(t, mux)
	d := outbox.New(store.Driver(st).(outbox.Store), outbox.Options{Now: clk.Now, Guard: g, Jitter: func() float64 { return 0.999999 }})
	ctx := context.Background()
	if n, err := d.RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	if followed.Load() != 0 {
		t.Fatal("the redirect was followed")
	}
	log, _ := store.Driver(st).WebhookDeliveries(ctx, acct, 10)
	if len(log) != 1 || log[0].StatusCode != http.StatusFound || log[0].Error == "" {
		t.Fatalf("log %+v", log)
	}
	// Not due before 5 s (jitter ≈ 1 keeps the whole wait).
	clk.Advance(4 * time.Second)
	if n, _ := d.RunOnce(ctx); n != 0 {
		t.Fatal("retried before its backoff")
	}
	clk.Advance(time.Second)
	if n, _ := d.RunOnce(ctx); n != 1 {
		t.Fatal("not retried at 5 s")
	}
	clk.Advance(9 * time.Second)
	if n, _ := d.RunOnce(ctx); n != 0 {
		t.Fatal("second retry before 10 s")
	}
	clk.Advance(time.Second)
	if n, _ := d.RunOnce(ctx); n != 1 || hits.Load() != 3 {
		t.Fatalf("third attempt: claimed %d, hits %d", n, hits.Load())
	}
}

// Without the allowlist, the guarded client refuses the loopback receiver
// at connect time, and after MaxAttempts the event is given up so the
// account's later events are not blocked for ever.
func TestDeliveryBlockedThenDead(t *testing.T) {
	var hits atomic.Int32
	st, acct, clk, _ := setup(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	ctx := context.Background()
	later := events.Event{ID: "evt_2", Type: events.KeyRevoked, AccountID: acct, Time: clk.Now(), Data: json.RawMessage(`{}`)}
	if err := store.Driver(st).AppendEvents(ctx, []events.Event{later}); err != nil {
		t.Fatal(err)
	}
	var got []string
	d := outbox.New(store.Driver(st).(outbox.Store), outbox.Options{Now: clk.Now, MaxAttempts: 3, Hook: func(_ context.Context, e events.Event) error {
		got = append(got, e.ID)
		return nil
	}})
	for range 10 {
		_, _ = d.RunOnce(ctx)
		clk.Advance(time.Hour)
	}
	if hits.Load() != 0 {
		t.Fatalf("the loopback receiver was reached %d times", hits.Load())
	}
	log, _ := store.Driver(st).WebhookDeliveries(ctx, acct, 50)
	blocked := 0
	for _, l := range log {
		if l.Error == "address not allowed" {
			blocked++
		}
	}
	if blocked != 6 { // 3 attempts of each event
		t.Fatalf("%d blocked attempts, want 6: %+v", blocked, log)
	}
	// The hook got each event once (its target is done after the first
	// success; only the webhook was retried).
	if strings.Join(got, ",") != "evt_1,evt_2" {
		t.Fatalf("hook saw %v", got)
	}
}

// Delivered events and their delivery log are kept for Retention, then
// pruned by the dispatcher's housekeeping; a pending event is never pruned.
func TestRetention(t *testing.T) {
	st, acct, clk, g := setup(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	ctx := context.Background()
	d := outbox.New(store.Driver(st).(outbox.Store), outbox.Options{Now: clk.Now, Guard: g, Retention: 24 * time.Hour})
	if n, err := d.RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	if log, _ := store.Driver(st).WebhookDeliveries(ctx, acct, 10); len(log) != 1 {
		t.Fatalf("log %+v", log)
	}
	clk.Advance(23 * time.Hour)
	_, _ = d.RunOnce(ctx)
	if log, _ := store.Driver(st).WebhookDeliveries(ctx, acct, 10); len(log) != 1 {
		t.Fatal("pruned before the retention period")
	}
	clk.Advance(2 * time.Hour)
	if _, err := d.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if log, _ := store.Driver(st).WebhookDeliveries(ctx, acct, 10); len(log) != 0 {
		t.Fatalf("delivery log kept past retention: %+v", log)
	}
	if n, _ := store.Driver(st).(outbox.Store).PruneEvents(ctx, clk.Now(), 100); n != 0 {
		t.Fatalf("%d rows were left for a second prune", n)
	}
	// A pending event is never pruned, however old.
	old := events.Event{ID: "evt_old", Type: events.KeyCreated, AccountID: "acct_other", Time: clk.Now(), Data: json.RawMessage(`{}`)}
	if err := store.Driver(st).AppendEvents(ctx, []events.Event{old}); err != nil {
		t.Fatal(err)
	}
	if n, _ := store.Driver(st).(outbox.Store).PruneEvents(ctx, clk.Now().Add(1000*time.Hour), 100); n != 0 {
		t.Fatalf("pruned %d pending rows", n)
	}
	if p, _ := store.Driver(st).(outbox.Store).ClaimEvents(ctx, clk.Now(), clk.Now().Add(time.Minute), "c", 10); len(p) != 1 || p[0].ID != "evt_old" {
		t.Fatalf("pending event after prune: %+v", p)
	}
}

// A receiver that never answers costs one Timeout per attempt, recorded as
// "timeout"; the dispatcher does not wait for it.
func TestDeliveryTimeout(t *testing.T) {
	release := make(chan struct{})
	st, acct, clk, g := setup(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer close(release)
	d := outbox.New(store.Driver(st).(outbox.Store), outbox.Options{Now: clk.Now, Guard: g, Timeout: 50 * time.Millisecond})
	if n, err := d.RunOnce(context.Background()); err != nil || n != 1 {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	log, _ := store.Driver(st).WebhookDeliveries(context.Background(), acct, 10)
	if len(log) != 1 || log[0].Error != "timeout" || log[0].StatusCode != 0 {
		t.Fatalf("log %+v", log)
	}
}

// A host hook's error is recorded as storable text: cut at a rune
// boundary, valid UTF-8, no NUL. (PostgreSQL refuses anything else with an
// error, which failed FinishEvent on every attempt: the event was never
// finished and the account's later events waited for ever.)
func TestHookErrorIsStorableText(t *testing.T) {
	st, acct, clk, g := setup(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	ctx := context.Background()
	d := outbox.New(store.Driver(st).(outbox.Store), outbox.Options{Now: clk.Now, Guard: g, Hook: func(context.Context, events.Event) error {
		return errors.New(strings.Repeat("x", 299) + "€ and a NUL \x00 and \xff")
	}})
	if n, err := d.RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	log, _ := store.Driver(st).WebhookDeliveries(ctx, acct, 10)
	var hook *events.Delivery
	for i := range log {
		if log[i].EndpointID == events.HookTarget {
			hook = &log[i]
		}
	}
	if hook == nil || hook.Error == "" {
		t.Fatalf("no hook failure in %+v", log)
	}
	if e := hook.Error; len(e) > 300 || !utf8.ValidString(e) || strings.IndexByte(e, 0) >= 0 {
		t.Errorf("hook error kept as %q (%d bytes)", e, len(e))
	}
	d = outbox.New(store.Driver(st).(outbox.Store), outbox.Options{Now: clk.Now, Guard: g, Hook: func(context.Context, events.Event) error {
		return errors.New("nul \x00 \xff")
	}})
	clk.Advance(time.Hour)
	if n, err := d.RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	log, _ = store.Driver(st).WebhookDeliveries(ctx, acct, 1)
	if e := log[0].Error; !utf8.ValidString(e) || strings.IndexByte(e, 0) >= 0 {
		t.Errorf("hook error kept as %q", e)
	}
}
