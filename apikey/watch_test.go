package apikey_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// notifyingStore is a memstore that is an apikey.ChangeNotifier: the test
// announces changes by hand, as a shared database would.
type notifyingStore struct {
	store.Store
	mu   sync.Mutex
	subs map[int]func(apikey.Change)
	next int
}

func (n *notifyingStore) WatchKeyChanges(fn func(apikey.Change)) func() {
	n.mu.Lock()
	defer n.mu.Unlock()
	id := n.next
	n.next++
	n.subs[id] = fn
	return func() {
		n.mu.Lock()
		delete(n.subs, id)
		n.mu.Unlock()
	}
}

func (n *notifyingStore) announce(c apikey.Change) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, fn := range n.subs {
		fn(c)
	}
}

func (n *notifyingStore) subscribers() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.subs)
}

// watchEnv is one store and two Services on a fake clock: "here" caches
// for an hour, "there" stands in for another process.
type watchEnv struct {
	st          *notifyingStore
	clk         *fakeclock.Clock
	here, there *apikey.Service
	acct        account.Account
}

func newWatchEnv(t *testing.T) *watchEnv {
	t.Helper()
	ctx := context.Background()
	e := &watchEnv{st: &notifyingStore{Store: store.Driver(memstore.New()), subs: make(map[int]func(apikey.Change))},
		clk: fakeclock.New(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))}
	acc, err := account.NewService(e.st, &account.Options{Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if e.acct, err = acc.Create(ctx, account.CreateParams{Name: "W", Email: "w@example.com"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []**apikey.Service{&e.here, &e.there} {
		if *s, err = apikey.NewService(e.st, &apikey.Options{Now: e.clk.Now, RefreshInterval: time.Hour, LastUsedInterval: -1}); err != nil {
			t.Fatal(err)
		}
		svc := *s
		t.Cleanup(func() { svc.Close(ctx) })
	}
	return e
}

// bind verifies raw in "here" and binds a context to it.
func (e *watchEnv) bind(t *testing.T, raw apikey.RawKey) context.Context {
	t.Helper()
	v, err := e.here.Verify(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	ctx, release := e.here.Bind(context.Background(), v)
	t.Cleanup(release)
	return ctx
}

func cause(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	default:
		return nil
	}
}

func TestInvalidateKeyDropsCacheAndCancelsBound(t *testing.T) {
	ctx := context.Background()
	e := newWatchEnv(t)
	raw, k, err := e.there.Create(ctx, apikey.CreateParams{AccountID: e.acct.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	bound := e.bind(t, raw)
	if _, err := e.there.Revoke(ctx, e.acct.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.here.Verify(ctx, raw); err != nil {
		t.Fatalf("cached for an hour, before any notification: %v", err)
	}
	if err := e.here.InvalidateKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.here.Verify(ctx, raw); err != apikey.ErrRevoked {
		t.Fatalf("after InvalidateKey: %v", err)
	}
	if c := cause(bound); !errors.Is(c, apikey.ErrRevoked) {
		t.Fatalf("bound context: %v, want ErrRevoked", c)
	}
}

func TestInvalidateKeyShortensAndEndsRotatedSecrets(t *testing.T) {
	ctx := context.Background()
	e := newWatchEnv(t)
	raw, k, err := e.there.Create(ctx, apikey.CreateParams{AccountID: e.acct.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	bound := e.bind(t, raw)
	newRaw, _, err := e.there.Rotate(ctx, e.acct.ID, k.ID, 0) // the old secret ends at once
	if err != nil {
		t.Fatal(err)
	}
	other := e.bind(t, newRaw)
	if err := e.here.InvalidateKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if c := cause(bound); !errors.Is(c, apikey.ErrExpired) {
		t.Fatalf("context bound with the rotated-away secret: %v, want ErrExpired", c)
	}
	if c := cause(other); c != nil {
		t.Fatalf("context bound with the new secret ended: %v", c)
	}
}

func TestInvalidateAll(t *testing.T) {
	ctx := context.Background()
	e := newWatchEnv(t)
	raw, k, err := e.there.Create(ctx, apikey.CreateParams{AccountID: e.acct.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	bound := e.bind(t, raw)
	if _, err := e.there.Revoke(ctx, e.acct.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.here.InvalidateAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.here.Verify(ctx, raw); err != apikey.ErrRevoked {
		t.Fatalf("after InvalidateAll: %v", err)
	}
	if c := cause(bound); !errors.Is(c, apikey.ErrRevoked) {
		t.Fatalf("bound context: %v, want ErrRevoked", c)
	}
	if st := e.here.Stats(); st.CachedUnknown != 0 || st.BoundContexts != 0 {
		t.Fatalf("stats after InvalidateAll: %+v", st)
	}
}

// waitCause fails the test if ctx does not end; the watcher applies changes
// on its own goroutine.
func waitCause(t *testing.T, ctx context.Context) error {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-timer.C:
		t.Fatal("bound context not cancelled after the change was announced")
		return nil
	}
}

func TestServiceAppliesAnnouncedChanges(t *testing.T) {
	ctx := context.Background()
	e := newWatchEnv(t)
	if n := e.st.subscribers(); n != 2 {
		t.Fatalf("%d subscribers, want one per Service", n)
	}
	raw1, k1, _ := e.there.Create(ctx, apikey.CreateParams{AccountID: e.acct.ID, Name: "one"})
	raw2, k2, _ := e.there.Create(ctx, apikey.CreateParams{AccountID: e.acct.ID, Name: "two"})
	b1, b2 := e.bind(t, raw1), e.bind(t, raw2)

	e.there.Revoke(ctx, e.acct.ID, k1.ID)
	e.st.announce(apikey.Change{KeyID: k1.ID})
	if c := waitCause(t, b1); !errors.Is(c, apikey.ErrRevoked) {
		t.Fatalf("key change: cause %v", c)
	}
	// A lost notification is made up for by Change.All.
	st := apikey.StatusDisabled
	if _, err := e.st.UpdateAPIKey(ctx, e.acct.ID, k2.ID, apikey.Update{Status: &st}, e.clk.Now()); err != nil {
		t.Fatal(err)
	}
	e.st.announce(apikey.Change{All: true})
	if c := waitCause(t, b2); !errors.Is(c, apikey.ErrDisabled) {
		t.Fatalf("refresh: cause %v", c)
	}
	if _, err := e.here.Verify(ctx, raw2); err != apikey.ErrDisabled {
		t.Fatalf("after refresh: %v", err)
	}

	e.here.Close(ctx)
	e.there.Close(ctx)
	if n := e.st.subscribers(); n != 0 {
		t.Fatalf("%d subscribers after Close", n)
	}
}

// A Service without caches still subscribes: its bound contexts end when a
// change is announced.
func TestUncachedServiceCancelsBoundOnChange(t *testing.T) {
	ctx := context.Background()
	e := newWatchEnv(t)
	uncached, err := apikey.NewService(e.st, &apikey.Options{Now: e.clk.Now, RefreshInterval: -1, LastUsedInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer uncached.Close(ctx)
	raw, k, _ := e.there.Create(ctx, apikey.CreateParams{AccountID: e.acct.ID, Name: "k"})
	v, err := uncached.Verify(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	bound, release := uncached.Bind(ctx, v)
	defer release()
	e.there.Revoke(ctx, e.acct.ID, k.ID)
	e.st.announce(apikey.Change{KeyID: k.ID})
	if c := waitCause(t, bound); !errors.Is(c, apikey.ErrRevoked) {
		t.Fatalf("cause %v, want ErrRevoked", c)
	}
}
