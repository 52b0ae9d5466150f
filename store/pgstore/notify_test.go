package pgstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/pgstore"
)

// notifyBound is the documented bound for a change to reach another
// process's caches.
const notifyBound = time.Second

// eventually polls cond until it holds or within has passed.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// twoProcesses is two Stores (two pools, two listeners) on one schema, with
// an apikey Service on each, standing in for two instances.
type twoProcesses struct {
	dsn          string
	a, b         *pgstore.Store
	keysA, keysB *apikey.Service
	accounts     *account.Service
	acct         account.Account
	raw          apikey.RawKey
	key          apikey.APIKey
}

func newTwoProcesses(t *testing.T, bOpts *pgstore.Options) *twoProcesses {
	t.Helper()
	ctx := context.Background()
	p := &twoProcesses{dsn: pgtest.DSN(t)}
	p.a, p.b = open(t, p.dsn, nil), open(t, p.dsn, bOpts)
	// Caches that would serve a stale key for an hour without the
	// notifications.
	kopts := &apikey.Options{RefreshInterval: time.Hour, LastUsedInterval: -1}
	var err error
	if p.keysA, err = apikey.NewService(store.Driver(p.a), kopts); err != nil {
		t.Fatal(err)
	}
	if p.keysB, err = apikey.NewService(store.Driver(p.b), kopts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.keysA.Close(ctx); p.keysB.Close(ctx) })
	if p.accounts, err = account.NewService(store.Driver(p.a), nil); err != nil {
		t.Fatal(err)
	}
	if p.acct, err = p.accounts.Create(ctx, account.CreateParams{Name: "Two", Email: "two@example.com"}); err != nil {
		t.Fatal(err)
	}
	if p.raw, p.key, err = p.keysA.Create(ctx, apikey.CreateParams{AccountID: p.acct.ID, Name: "shared"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "B's listener connects", func() bool {
		ok, _, _ := pgstore.ListenerState(p.b)
		return ok
	})
	return p
}

// bindB verifies the key in B (caching it there) and binds a context to it.
func (p *twoProcesses) bindB(t *testing.T) context.Context {
	t.Helper()
	v, err := p.keysB.Verify(context.Background(), p.raw)
	if err != nil {
		t.Fatal(err)
	}
	ctx, release := p.keysB.Bind(context.Background(), v)
	t.Cleanup(release)
	return ctx
}

// waitCancelled waits up to within for ctx to end and checks its cause.
func waitCancelled(t *testing.T, ctx context.Context, within time.Duration, cause error) time.Duration {
	t.Helper()
	start := time.Now()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
		t.Fatalf("bound context still alive after %v", within)
	}
	if got := context.Cause(ctx); !errors.Is(got, cause) {
		t.Fatalf("bound context cause %v, want %v", got, cause)
	}
	return time.Since(start)
}

// A revocation committed by process A fails Verify in process B, which had
// the key cached for an hour, within the bound, and cancels the contexts B
// bound to the key.
func TestRevocationReachesOtherProcess(t *testing.T) {
	p := newTwoProcesses(t, nil)
	bound := p.bindB(t)
	if _, err := p.keysA.Revoke(context.Background(), p.acct.ID, p.key.ID); err != nil {
		t.Fatal(err)
	}
	took := waitCancelled(t, bound, notifyBound, apikey.ErrRevoked)
	if _, err := p.keysB.Verify(context.Background(), p.raw); err != apikey.ErrRevoked {
		t.Fatalf("B verifies a key revoked in A: %v", err)
	}
	t.Logf("revocation reached the other process in %v", took)
}

// Rotation and updates travel the same way: B stops accepting the old
// secret (no grace period) and sees the new model list.
func TestRotateAndUpdateReachOtherProcess(t *testing.T) {
	ctx := context.Background()
	p := newTwoProcesses(t, nil)
	bound := p.bindB(t)
	newRaw, _, err := p.keysA.Rotate(ctx, p.acct.ID, p.key.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitCancelled(t, bound, notifyBound, apikey.ErrExpired)
	if _, err := p.keysB.Verify(ctx, p.raw); err != apikey.ErrUnknown {
		t.Fatalf("old secret in B after rotation: %v", err)
	}
	v, err := p.keysB.Verify(ctx, newRaw)
	if err != nil || len(v.Models) != 0 {
		t.Fatalf("new secret in B: %+v %v", v, err)
	}
	models := []string{"forii/deepseek-v3"}
	if _, err := p.keysA.Update(ctx, p.acct.ID, p.key.ID, apikey.UpdateParams{Models: &models}); err != nil {
		t.Fatal(err)
	}
	eventually(t, notifyBound, "B sees the new model list", func() bool {
		v, err := p.keysB.Verify(ctx, newRaw)
		return err == nil && len(v.Models) == 1
	})
}

// Suspending an account in A makes its keys fail in B.
func TestAccountChangeReachesOtherProcess(t *testing.T) {
	ctx := context.Background()
	p := newTwoProcesses(t, nil)
	p.bindB(t)
	suspended := account.StatusSuspended
	if _, err := p.accounts.Update(ctx, p.acct.ID, account.UpdateParams{Status: &suspended}); err != nil {
		t.Fatal(err)
	}
	eventually(t, notifyBound, "B refuses the suspended account's key", func() bool {
		_, err := p.keysB.Verify(ctx, p.raw)
		return err == apikey.ErrAccountInactive
	})
}

// When B's listener connection is killed, a revocation committed while it
// is down is never delivered; the listener reconnects and has B read
// everything again, so the key fails there all the same.
func TestListenerReconnectRefreshes(t *testing.T) {
	p := newTwoProcesses(t, &pgstore.Options{ReconnectMin: 300 * time.Millisecond})
	bound := p.bindB(t)
	_, connects, pid := pgstore.ListenerState(p.b)
	pgtest.Exec(t, p.dsn, `SELECT pg_terminate_backend($1)`, int32(pid))
	eventually(t, 10*time.Second, "B's listener notices", func() bool {
		ok, _, _ := pgstore.ListenerState(p.b)
		return !ok
	})
	// B is not listening now: this notification is lost.
	if _, err := p.keysA.Revoke(context.Background(), p.acct.ID, p.key.ID); err != nil {
		t.Fatal(err)
	}
	waitCancelled(t, bound, 10*time.Second, apikey.ErrRevoked)
	if _, err := p.keysB.Verify(context.Background(), p.raw); err != apikey.ErrRevoked {
		t.Fatalf("B verifies a key revoked while its listener was down: %v", err)
	}
	if _, n, _ := pgstore.ListenerState(p.b); n <= connects {
		t.Fatalf("listener connected %d times, want more than %d", n, connects)
	}
}
