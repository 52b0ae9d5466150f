package apikey_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// countingStore counts the apikey.Store calls that reach the backend and can
// fail TouchAPIKeys or report it on a channel.
type countingStore struct {
	store.Store
	calls     atomic.Int64
	failTouch atomic.Bool
	touched   chan []apikey.Use
}

func (c *countingStore) CreateAPIKey(ctx context.Context, k apikey.APIKey, h [32]byte) error {
	c.calls.Add(1)
	return c.Store.CreateAPIKey(ctx, k, h)
}

func (c *countingStore) APIKey(ctx context.Context, accountID, keyID string) (apikey.APIKey, error) {
	c.calls.Add(1)
	return c.Store.APIKey(ctx, accountID, keyID)
}

func (c *countingStore) ListAPIKeys(ctx context.Context, accountID, afterID string, limit int) ([]apikey.APIKey, error) {
	c.calls.Add(1)
	return c.Store.ListAPIKeys(ctx, accountID, afterID, limit)
}

func (c *countingStore) APIKeyByHash(ctx context.Context, h [32]byte) (apikey.Match, error) {
	c.calls.Add(1)
	return c.Store.APIKeyByHash(ctx, h)
}

func (c *countingStore) UpdateAPIKey(ctx context.Context, accountID, keyID string, u apikey.Update, now time.Time) (apikey.APIKey, error) {
	c.calls.Add(1)
	return c.Store.UpdateAPIKey(ctx, accountID, keyID, u, now)
}

func (c *countingStore) RotateAPIKey(ctx context.Context, accountID, keyID string, r apikey.Rotation, now time.Time) (apikey.APIKey, error) {
	c.calls.Add(1)
	return c.Store.RotateAPIKey(ctx, accountID, keyID, r, now)
}

var errTouch = errors.New("touch failed")

func (c *countingStore) TouchAPIKeys(ctx context.Context, uses []apikey.Use) error {
	c.calls.Add(1)
	if c.failTouch.Load() {
		return errTouch
	}
	err := c.Store.TouchAPIKeys(ctx, uses)
	if c.touched != nil {
		c.touched <- uses
	}
	return err
}

func corrupt(raw apikey.RawKey) apikey.RawKey {
	b := []byte(raw.Reveal())
	if b[len(b)-1] == '0' {
		b[len(b)-1] = '1'
	} else {
		b[len(b)-1] = '0'
	}
	return apikey.RawKey(b)
}

var epoch = time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)

type env struct {
	st   *countingStore
	clk  *fakeclock.Clock
	acct account.Account
	keys *apikey.Service
}

func newEnv(t *testing.T, opts *apikey.Options) *env {
	t.Helper()
	e := &env{st: &countingStore{Store: store.Driver(memstore.New())}, clk: fakeclock.New(epoch)}
	acc, err := account.NewService(e.st, &account.Options{Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if e.acct, err = acc.Create(context.Background(), account.CreateParams{Name: "T", Email: "t@example.com"}); err != nil {
		t.Fatal(err)
	}
	var o apikey.Options
	if opts != nil {
		o = *opts
	}
	o.Now = e.clk.Now
	if e.keys, err = apikey.NewService(e.st, &o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.keys.Close(context.Background()) })
	return e
}

func (e *env) create(t *testing.T, p apikey.CreateParams) (apikey.RawKey, apikey.APIKey) {
	t.Helper()
	p.AccountID = e.acct.ID
	if p.Name == "" {
		p.Name = "test key"
	}
	raw, k, err := e.keys.Create(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return raw, k
}

func (e *env) verify(t *testing.T, raw apikey.RawKey) apikey.Verified {
	t.Helper()
	v, err := e.keys.Verify(context.Background(), raw)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return v
}

func TestBadChecksumMakesNoStoreCalls(t *testing.T) {
	e := newEnv(t, nil)
	raw, _ := e.create(t, apikey.CreateParams{})
	before := e.st.calls.Load()
	for range 1000 {
		if _, err := e.keys.Verify(context.Background(), corrupt(raw)); err != apikey.ErrMalformed {
			t.Fatalf("Verify: %v, want ErrMalformed (unwrapped)", err)
		}
	}
	if n := e.st.calls.Load() - before; n != 0 {
		t.Fatalf("%d store calls for keys with a bad checksum", n)
	}
}

func TestVerifyCachedAllocatesNothing(t *testing.T) {
	e := newEnv(t, &apikey.Options{Now: time.Now})
	raw, _ := e.create(t, apikey.CreateParams{})
	e.verify(t, raw)
	bad := corrupt(raw)
	unknown, _ := e.keys.Format().Generate("")
	_, _ = e.keys.Verify(context.Background(), unknown) // now in the negative cache
	for name, k := range map[string]apikey.RawKey{"cached": raw, "bad checksum": bad, "unknown": unknown} {
		if n := testing.AllocsPerRun(1000, func() { _, _ = e.keys.Verify(context.Background(), k) }); n != 0 {
			t.Errorf("%s: %v allocs per Verify, want 0", name, n)
		}
	}
}

func TestUncachedVerifyReadsStoreEachTime(t *testing.T) {
	e := newEnv(t, &apikey.Options{RefreshInterval: -1})
	raw, k := e.create(t, apikey.CreateParams{})
	before := e.st.calls.Load()
	for range 3 {
		e.verify(t, raw)
	}
	if n := e.st.calls.Load() - before; n != 3 {
		t.Fatalf("%d store calls for 3 uncached verifies", n)
	}
	if st := e.keys.Stats(); st.CachedKeys != 0 || st.CachedUnknown != 0 {
		t.Fatalf("disabled cache holds entries: %+v", st)
	}
	if _, err := e.keys.Revoke(context.Background(), e.acct.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.keys.Verify(context.Background(), raw); err != apikey.ErrRevoked {
		t.Fatalf("after revoke: %v", err)
	}
}

func TestPermit(t *testing.T) {
	v := apikey.Verified{Models: []string{"a", "b"}, Scopes: []string{"read"}}
	for _, c := range []struct {
		model, scope string
		want         error
	}{
		{"a", "read", nil},
		{"b", "", nil},
		{"", "", nil},
		{"c", "read", apikey.ErrModelNotAllowed},
		{"a", "manage", apikey.ErrScopeNotAllowed},
	} {
		if err := v.Permit(c.model, c.scope); err != c.want {
			t.Errorf("Permit(%q, %q) = %v, want %v", c.model, c.scope, err, c.want)
		}
	}
	all := apikey.Verified{}
	if err := all.Permit("anything", "manage"); err != nil {
		t.Fatalf("unrestricted key: %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	st := memstore.New()
	for _, o := range []*apikey.Options{
		{Scopes: []string{"Bad Scope"}},
		{Scopes: []string{""}},
		{CacheSize: -1},
		{NegativeCacheSize: -1},
	} {
		if _, err := apikey.NewService(store.Driver(st), o); !errors.Is(err, apikey.ErrInvalidOptions) {
			t.Errorf("%+v: %v, want ErrInvalidOptions", o, err)
		}
	}
	svc, err := apikey.NewService(store.Driver(st), &apikey.Options{Scopes: []string{"emails:verify"}, LastUsedInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// --- Bind ---

func bound(t *testing.T, e *env, raw apikey.RawKey) (context.Context, context.CancelFunc) {
	t.Helper()
	return e.keys.Bind(context.Background(), e.verify(t, raw))
}

func wantCause(t *testing.T, ctx context.Context, want error) {
	t.Helper()
	select {
	case <-ctx.Done():
	default:
		t.Fatal("bound context is still live")
	}
	if got := context.Cause(ctx); got != want {
		t.Fatalf("cause %v, want %v", got, want)
	}
}

// waitDone waits for a context that ends on a real-time timer. The bound is
// only there so that a bug fails the test instead of hanging it.
func waitDone(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("bound context did not end")
	}
}

func wantLive(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := ctx.Err(); err != nil {
		t.Fatalf("bound context ended: %v (%v)", err, context.Cause(ctx))
	}
}

func TestBindCancelsOnRevokeDisableExpire(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		end   func(raw apikey.RawKey, k apikey.APIKey) error
		cause error
	}{
		{"revoke", func(_ apikey.RawKey, k apikey.APIKey) error {
			_, err := e.keys.Revoke(ctx, e.acct.ID, k.ID)
			return err
		}, apikey.ErrRevoked},
		{"disable", func(raw apikey.RawKey, _ apikey.APIKey) error {
			_, _, err := e.keys.DisableLeaked(ctx, raw)
			return err
		}, apikey.ErrDisabled},
		{"expire", func(_ apikey.RawKey, k apikey.APIKey) error {
			_, err := e.keys.Expire(ctx, e.acct.ID, k.ID)
			return err
		}, apikey.ErrExpired},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw, k := e.create(t, apikey.CreateParams{})
			otherRaw, _ := e.create(t, apikey.CreateParams{})
			b1, release1 := bound(t, e, raw)
			b2, release2 := bound(t, e, raw)
			other, releaseOther := bound(t, e, otherRaw)
			defer releaseOther()
			if err := c.end(raw, k); err != nil {
				t.Fatal(err)
			}
			wantCause(t, b1, c.cause)
			wantCause(t, b2, c.cause)
			wantLive(t, other) // other keys' requests go on
			release1()
			release2()
			if n := e.keys.Stats().BoundContexts; n != 1 {
				t.Fatalf("%d bound contexts, want only the other key's", n)
			}
		})
	}
}

func TestBindReleaseUnregisters(t *testing.T) {
	e := newEnv(t, nil)
	raw, _ := e.create(t, apikey.CreateParams{})
	var releases []context.CancelFunc
	for range 100 {
		bctx, release := bound(t, e, raw)
		wantLive(t, bctx)
		releases = append(releases, release)
	}
	if n := e.keys.Stats().BoundContexts; n != 100 {
		t.Fatalf("%d bound, want 100", n)
	}
	for i, r := range releases {
		r()
		if i%2 == 0 {
			r() // twice is harmless
		}
	}
	if n := e.keys.Stats().BoundContexts; n != 0 {
		t.Fatalf("%d bound contexts left after release", n)
	}
	bctx, release := bound(t, e, raw)
	release()
	if context.Cause(bctx) != context.Canceled {
		t.Fatalf("released context cause %v", context.Cause(bctx))
	}
	// A parent's cancellation reaches the bound context and release still
	// unregisters it.
	parent, cancel := context.WithCancel(context.Background())
	bctx, release = e.keys.Bind(parent, e.verify(t, raw))
	cancel()
	<-bctx.Done()
	release()
	if n := e.keys.Stats().BoundContexts; n != 0 {
		t.Fatalf("%d bound contexts left", n)
	}
}

// TestBindAfterRevoke is the race Bind closes: Verify succeeds, Revoke
// completes, then Bind runs with the stale Verified.
func TestBindAfterRevoke(t *testing.T) {
	for _, opts := range []*apikey.Options{nil, {RefreshInterval: -1}} {
		e := newEnv(t, opts)
		raw, k := e.create(t, apikey.CreateParams{})
		v := e.verify(t, raw)
		if _, err := e.keys.Revoke(context.Background(), e.acct.ID, k.ID); err != nil {
			t.Fatal(err)
		}
		bctx, release := e.keys.Bind(context.Background(), v)
		wantCause(t, bctx, apikey.ErrRevoked)
		release()
		if n := e.keys.Stats().BoundContexts; n != 0 {
			t.Fatalf("%d bound contexts left", n)
		}
	}
	e := newEnv(t, nil)
	bctx, release := e.keys.Bind(context.Background(), apikey.Verified{KeyID: "key_forged"})
	defer release()
	wantCause(t, bctx, apikey.ErrUnknown)
}

// TestConcurrentBindDuringRevoke: requests verify and bind while the key is
// revoked; once Revoke has returned, every context bound with that key is
// cancelled, whenever it was bound, and no binding is left registered.
func TestConcurrentBindDuringRevoke(t *testing.T) {
	e := newEnv(t, nil)
	for round := range 20 {
		raw, k := e.create(t, apikey.CreateParams{})
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			ctxs     []context.Context
			releases []context.CancelFunc
			started  = make(chan struct{}, 4)
			stop     atomic.Bool
		)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				signalled := false
				for !stop.Load() {
					v, err := e.keys.Verify(context.Background(), raw)
					if err != nil {
						continue
					}
					bctx, release := e.keys.Bind(context.Background(), v)
					mu.Lock()
					ctxs, releases = append(ctxs, bctx), append(releases, release)
					mu.Unlock()
					if !signalled {
						started <- struct{}{}
						signalled = true
					}
				}
			}()
		}
		for range 4 {
			<-started
		}
		if _, err := e.keys.Revoke(context.Background(), e.acct.ID, k.ID); err != nil {
			t.Fatal(err)
		}
		stop.Store(true)
		wg.Wait()
		for i, c := range ctxs {
			if c.Err() == nil || context.Cause(c) != apikey.ErrRevoked {
				t.Fatalf("round %d: bound context %d of %d survived Revoke (cause %v)", round, i, len(ctxs), context.Cause(c))
			}
		}
		for _, r := range releases {
			r()
		}
		if n := e.keys.Stats().BoundContexts; n != 0 {
			t.Fatalf("round %d: %d bound contexts left", round, n)
		}
	}
}

func TestBindRotation(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	old, k := e.create(t, apikey.CreateParams{})
	oldBound, release := bound(t, e, old)
	defer release()
	// Without grace, requests of the old secret end at once.
	nw, _, err := e.keys.Rotate(ctx, e.acct.ID, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantCause(t, oldBound, apikey.ErrExpired)
	newBound, releaseNew := bound(t, e, nw)
	defer releaseNew()
	// With grace, they end when the grace period does; the new secret's
	// requests are untouched. (The grace is real time here: bound contexts
	// end on a timer.)
	_, _, err = e.keys.Rotate(ctx, e.acct.ID, k.ID, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, newBound)
	if context.Cause(newBound) != apikey.ErrExpired {
		t.Fatalf("cause %v", context.Cause(newBound))
	}
	// A leaked previous secret ends only its own requests.
	cur, k2 := e.create(t, apikey.CreateParams{})
	prevBound, releasePrev := bound(t, e, cur)
	defer releasePrev()
	next, _, err := e.keys.Rotate(ctx, e.acct.ID, k2.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nextBound, releaseNext := bound(t, e, next)
	defer releaseNext()
	if _, known, err := e.keys.DisableLeaked(ctx, cur); err != nil || !known {
		t.Fatal(known, err)
	}
	wantCause(t, prevBound, apikey.ErrDisabled)
	wantLive(t, nextBound)
}

func TestBindSeesRevocationFromOtherProcess(t *testing.T) {
	e := newEnv(t, nil)
	raw, k := e.create(t, apikey.CreateParams{})
	bctx, release := bound(t, e, raw)
	defer release()
	other, err := apikey.NewService(e.st, &apikey.Options{Now: e.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	if _, err := other.Revoke(context.Background(), e.acct.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	wantLive(t, bctx) // this process has not looked yet
	e.clk.Advance(5 * time.Second)
	if _, err := e.keys.Verify(context.Background(), raw); err != apikey.ErrRevoked {
		t.Fatalf("Verify: %v", err)
	}
	wantCause(t, bctx, apikey.ErrRevoked)
}

// --- last_used_at ---

func TestBackgroundFlush(t *testing.T) {
	e := newEnv(t, &apikey.Options{LastUsedInterval: time.Millisecond})
	e.st.touched = make(chan []apikey.Use, 16)
	raw, k := e.create(t, apikey.CreateParams{})
	e.verify(t, raw)
	var uses []apikey.Use
	select {
	case uses = <-e.st.touched: // written by the flusher, not by Verify
	case <-time.After(10 * time.Second):
		t.Fatal("background flusher did not write")
	}
	if len(uses) != 1 || uses[0].KeyID != k.ID || !uses[0].At.Equal(epoch) {
		t.Fatalf("flushed %+v", uses)
	}
}

func TestFlushFailureKeepsUses(t *testing.T) {
	e := newEnv(t, nil)
	raw, k := e.create(t, apikey.CreateParams{})
	e.verify(t, raw)
	e.st.failTouch.Store(true)
	if err := e.keys.FlushLastUsed(context.Background()); !errors.Is(err, errTouch) {
		t.Fatalf("flush: %v", err)
	}
	if n := e.keys.Stats().PendingLastUsed; n != 1 {
		t.Fatalf("%d pending after a failed flush, want 1", n)
	}
	e.st.failTouch.Store(false)
	if err := e.keys.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := e.keys.Get(context.Background(), e.acct.ID, k.ID)
	if err != nil || !got.LastUsedAt.Equal(epoch) {
		t.Fatalf("last used %v, %v", got.LastUsedAt, err)
	}
	if err := e.keys.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestBindAfterRotate: Verify with a secret, Rotate, then Bind with the
// stale Verified: the bound context must end with the grace period, not
// live on to the key's expiry.
func TestBindAfterRotate(t *testing.T) {
	e := newEnv(t, nil)
	old, k := e.create(t, apikey.CreateParams{})
	v := e.verify(t, old)
	if _, _, err := e.keys.Rotate(context.Background(), e.acct.ID, k.ID, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	bctx, release := e.keys.Bind(context.Background(), v)
	defer release()
	waitDone(t, bctx) // ends with the 1 ms grace (real time: bound contexts end on timers)
	if context.Cause(bctx) != apikey.ErrExpired {
		t.Fatalf("cause %v", context.Cause(bctx))
	}
}
