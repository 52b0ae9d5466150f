package keyledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/webhook"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/storefault"
)

// receiver is a webhook endpoint that fails its first failN requests,
// verifies every signature, and de-duplicates by event ID as the docs tell
// receivers to.
type receiver struct {
	mu      sync.Mutex
	secret  string
	failN   int
	calls   int
	badSigs int
	dups    int
	seen    map[string]bool
	got     []events.Event
	now     func() time.Time
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if err := webhook.Verify(r.secret, req.Header.Get(webhook.Header), body, r.now(), time.Minute); err != nil {
		r.badSigs++
		http.Error(w, "bad signature", http.StatusBadRequest)
		return
	}
	if r.calls <= r.failN {
		http.Error(w, "down", http.StatusInternalServerError)
		return
	}
	var e events.Event
	if err := json.Unmarshal(body, &e); err != nil || e.ID != req.Header.Get("Keyledger-Event-Id") {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	if r.seen[e.ID] {
		r.dups++ // delivered again: at least once; the ID makes it harmless
	} else {
		r.seen[e.ID] = true
		r.got = append(r.got, e)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) types() []events.Type {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []events.Type
	for _, e := range r.got {
		out = append(out, e.Type)
	}
	return out
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

// TestWebhooksAtLeastOnceInOrder: a receiver that fails three times and a
// store whose first FinishEvent fails (the delivery is not recorded, so the
// event is sent again after its lease) still sees every event exactly once
// after de-duplicating by ID, in the order of the account's changes, with
// valid signatures; the host hook sees them too.
func TestWebhooksAtLeastOnceInOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		var fs *storefault.Store
		rcv := &receiver{failN: 3, seen: map[string]bool{}}
		var hookMu sync.Mutex
		var hooked []events.Type
		e := newEnvWith(t, backend{b.name, func(t testing.TB) store.Store {
			fs = storefault.New(b.open(t), nil)
			return fs
		}}, func(o *keyledger.Options) {
			o.Events = &keyledger.EventOptions{Allow: loopback, BackoffBase: time.Second, BackoffMax: time.Minute,
				Hook: func(_ context.Context, ev events.Event) error {
					hookMu.Lock()
					defer hookMu.Unlock()
					hooked = append(hooked, ev.Type)
					return nil
				}}
		})
		rcv.now = e.clk.Now
		srv := httptest.NewServer(rcv)
		defer srv.Close()
		ctx := context.Background()
		a, err := e.kl.Signup(ctx, account.CreateParams{Name: "W", Email: "w@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		ep, err := e.kl.Webhooks().CreateEndpoint(ctx, a.ID, srv.URL+"/hooks", "test")
		if err != nil {
			t.Fatal(err)
		}
		rcv.mu.Lock()
		rcv.secret = ep.Secret
		rcv.mu.Unlock()
		if _, err := e.kl.Webhooks().SetAlertThresholds(ctx, a.ID, []decimal.Decimal{d("40")}); err != nil {
			t.Fatal(err)
		}
		raw, _, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "prod"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.kl.Credits.Debit(ctx, credits.DebitParams{AccountID: a.ID, Amount: credits.NewAmount(d("15")), IdempotencyKey: "d1"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.kl.Keys.DisableLeaked(ctx, raw); err != nil {
			t.Fatal(err)
		}
		fs.SetRules(storefault.Rule{Methods: []string{"FinishEvent"}, Skip: 3, Count: 1}) // the first success is not recorded
		want := []events.Type{events.KeyCreated, events.BalanceLow, events.KeyLeaked}
		for i := 0; i < 60 && len(rcv.types()) < len(want); i++ {
			_, _ = e.kl.Dispatcher().RunOnce(ctx)
			e.clk.Advance(6 * time.Minute) // past any backoff and the lease
		}
		if got := rcv.types(); !slices.Equal(got, want) {
			t.Fatalf("receiver saw %v, want %v", got, want)
		}
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		if rcv.badSigs != 0 {
			t.Fatalf("%d deliveries had a bad signature", rcv.badSigs)
		}
		if rcv.dups == 0 {
			t.Fatalf("the failed FinishEvent did not cause a redelivery (injected %d)", fs.Injected())
		}
		hookMu.Lock()
		defer hookMu.Unlock()
		if len(hooked) < len(want) || !slices.Equal(slices.Compact(slices.Clone(hooked)), want) {
			t.Fatalf("hook saw %v", hooked)
		}
		log, err := e.kl.Webhooks().Deliveries(ctx, a.ID, 100)
		if err != nil {
			t.Fatal(err)
		}
		var fails int
		for _, l := range log {
			if l.StatusCode == http.StatusInternalServerError && l.Error != "" {
				fails++
			}
		}
		if fails != 3 {
			t.Fatalf("delivery log has %d failed attempts, want 3: %+v", fails, log)
		}
	})
}

// TestWebhookSSRF: private, loopback, link-local, CGNAT and metadata
// addresses are refused at create time (literal or via DNS), and at
// delivery time after resolution (DNS rebinding: a name that resolved to a
// public address at create time and to loopback at delivery).
func TestWebhookSSRF(t *testing.T) {
	resolve := map[string][]netip.Addr{
		"public.example":  {netip.MustParseAddr("93.184.216.34")},
		"private.example": {netip.MustParseAddr("10.0.0.7")},
		"mixed.example":   {netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("169.254.169.254")},
		"meta6.example":   {netip.MustParseAddr("fd00:ec2::254")},
	}
	e := newEnvWith(t, backends[0], func(o *keyledger.Options) {
		o.Events = &keyledger.EventOptions{LookupIP: func(_ context.Context, h string) ([]netip.Addr, error) {
			if a, ok := resolve[h]; ok {
				return a, nil
			}
			return nil, errors.New("no such host")
		}}
	})
	ctx := context.Background()
	a, err := e.kl.Signup(ctx, account.CreateParams{Name: "S", Email: "s@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		url  string
		want error
	}{
		{"https://public.example/hook", nil},
		{"http://public.example/hook", events.ErrInvalidURL},
		{"https://127.0.0.1/hook", events.ErrBlockedAddress},
		{"https://[::1]/hook", events.ErrBlockedAddress},
		{"https://10.1.2.3/hook", events.ErrBlockedAddress},
		{"https://192.168.0.1/hook", events.ErrBlockedAddress},
		{"https://172.20.0.1/hook", events.ErrBlockedAddress},
		{"https://169.254.169.254/latest/meta-data", events.ErrBlockedAddress},
		{"https://[fd00:ec2::254]/", events.ErrBlockedAddress},
		{"https://100.64.1.1/hook", events.ErrBlockedAddress},
		{"https://[::ffff:127.0.0.1]/hook", events.ErrBlockedAddress},
		{"https://0.0.0.0/hook", events.ErrBlockedAddress},
		{"https://localhost/hook", events.ErrBlockedAddress},
		{"https://private.example/hook", events.ErrBlockedAddress},
		{"https://mixed.example/hook", events.ErrBlockedAddress},
		{"https://meta6.example/hook", events.ErrBlockedAddress},
		{"https://nxdomain.example/hook", events.ErrInvalidURL},
		{"https://user:pw@public.example/hook", events.ErrInvalidURL},
		{"ftp://public.example/hook", events.ErrInvalidURL},
		{"not a url", events.ErrInvalidURL},
	} {
		_, err := e.kl.Webhooks().CreateEndpoint(ctx, a.ID, c.url, "")
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("CreateEndpoint(%s) = %v, want %v", c.url, err, c.want)
		}
	}
	// Delivery-time check: the dispatcher dials through the guard, so a
	// receiver on loopback is refused even though the endpoint exists
	// (created while "public.example" resolved to a public address).
	var hits int
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits++ }))
	defer srv.Close()
	resolve["rebind.example"] = []netip.Addr{netip.MustParseAddr("93.184.216.34")}
	port := netip.MustParseAddrPort(srv.Listener.Addr().String()).Port()
	ep, err := e.kl.Webhooks().CreateEndpoint(ctx, a.ID, "https://rebind.example/hook", "")
	if err != nil {
		t.Fatal(err)
	}
	// Point the stored endpoint at the loopback receiver as DNS would.
	if err := e.st.DeleteWebhookEndpoint(ctx, a.ID, ep.ID); err != nil {
		t.Fatal(err)
	}
	ep.URL = "http://127.0.0.1:" + itoa(int(port)) + "/hook"
	if err := e.st.CreateWebhookEndpoint(ctx, ep, 10); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kl.Dispatcher().RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if hits != 0 {
		t.Fatalf("the dispatcher reached a loopback receiver %d times", hits)
	}
	log, _ := e.kl.Webhooks().Deliveries(ctx, a.ID, 10)
	if len(log) == 0 || log[0].Error != "address not allowed" {
		t.Fatalf("delivery log %+v, want an 'address not allowed' attempt", log)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// An auto-recharge writes recharge.succeeded in the purchase's transaction;
// one whose payment fails writes recharge.failed (no transaction of its
// own to join: appended after the failure), and the host's own
// OnRechargeError still runs.
func TestRechargeEvents(t *testing.T) {
	var fail atomic.Bool
	hostErr := make(chan error, 4)
	done := make(chan struct{}, 4)
	e := newEnvWith(t, backends[0], func(o *keyledger.Options) {
		o.Credits = &credits.Options{
			Recharger: func(context.Context, credits.RechargeRequest) (credits.RechargeResult, error) {
				defer func() { done <- struct{}{} }()
				if fail.Load() {
					return credits.RechargeResult{}, errors.New("card declined")
				}
				return credits.RechargeResult{Reference: "pay_auto_1"}, nil
			},
			OnRechargeError: func(_ credits.RechargeRequest, err error) { hostErr <- err },
		}
	})
	ctx := context.Background()
	a, err := e.kl.Signup(ctx, account.CreateParams{Name: "R", Email: "r@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	p := credits.Policy{AutoRecharge: credits.AutoRecharge{Enabled: true, Threshold: credits.NewAmount(d("20")), Amount: credits.NewAmount(d("100"))}}
	if _, err := e.kl.Credits.SetPolicy(ctx, a.ID, p); err != nil {
		t.Fatal(err)
	}
	debit := func(key, amount string) {
		t.Helper()
		if _, err := e.kl.Credits.Debit(ctx, credits.DebitParams{AccountID: a.ID, Amount: credits.NewAmount(d(amount)), IdempotencyKey: key}); err != nil {
			t.Fatal(err)
		}
	}
	debit("d1", "40") // 50 → 10: below 20, a recharge that succeeds
	<-done
	fail.Store(true)
	debit("d2", "100") // 110 → 10: below again, a recharge that fails
	<-done
	if err := <-hostErr; err == nil {
		t.Fatal("host OnRechargeError got no error")
	}
	var got []events.Type
	_ = e.kl.Close(ctx) // waits for the recharge goroutines
	hookStore := e.st
	ob := collectAll(t, hookStore)
	for _, ev := range ob {
		if ev.AccountID == a.ID {
			got = append(got, ev.Type)
		}
	}
	want := []events.Type{events.RechargeSucceeded, events.RechargeFailed}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// collectAll drains st's outbox with a dispatcher of its own.
func collectAll(t *testing.T, st store.Store) []events.Event {
	t.Helper()
	var got []events.Event
	kl, err := keyledger.New(store.Wrap(st), &keyledger.Options{Accounts: &account.Options{Argon2: fastArgon},
		Events: &keyledger.EventOptions{Hook: func(_ context.Context, e events.Event) error {
			got = append(got, e)
			return nil
		}}})
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close(context.Background())
	for range 100 {
		n, err := kl.Dispatcher().RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	return got
}
