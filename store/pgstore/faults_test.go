package pgstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/faultproxy"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/pgstore"
)

// A Store whose connections go through a fault proxy: the pool and the
// listener recover by themselves from a reset (a database restart, a
// killed backend) and from a black hole (a partition), without a restart
// of the process.

func proxied(t *testing.T, opts *pgstore.Options) (*faultproxy.Proxy, *pgstore.Store, string) {
	t.Helper()
	dsn := pgtest.DSN(t)
	px, err := faultproxy.Start(pgtest.Target(t, dsn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	via, _ := pgtest.Via(t, dsn, px.Addr())
	return px, open(t, via, opts), dsn
}

// Every pooled connection reset at once: the calls that were using them
// fail, and the pool then serves new connections; nothing stays stuck.
func TestPoolRecoversAfterReset(t *testing.T) {
	ctx := context.Background()
	px, st, _ := proxied(t, &pgstore.Options{MaxConns: 4})
	led, err := credits.NewService(store.Driver(st), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close(ctx)
	if _, err := led.Open(ctx, "acct_pool", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		if n := px.Reset(); n == 0 {
			t.Fatalf("round %d: no connection to reset", round)
		}
		failures := 0
		eventually(t, 10*time.Second, "the pool serves again after a reset", func() bool {
			_, err := led.Account(ctx, "acct_pool")
			if err != nil {
				failures++
			}
			return err == nil
		})
		// A dead connection fails at most the calls that held one.
		if failures > 4 {
			t.Fatalf("round %d: %d failed calls after one reset of a 4-connection pool", round, failures)
		}
	}
}

// While the database is black-holed every call fails within TxTimeout
// instead of hanging, and once the partition heals the same Store works.
func TestStalledDatabaseFailsWithinTxTimeout(t *testing.T) {
	ctx := context.Background()
	px, st, _ := proxied(t, &pgstore.Options{TxTimeout: 300 * time.Millisecond, MaxConns: 2})
	led, err := credits.NewService(store.Driver(st), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close(ctx)
	if _, err := led.Open(ctx, "acct_stall", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	px.Set(faultproxy.Blackhole, 0)
	// A group-committed write runs on no caller deadline: only TxTimeout
	// can end it. (The bound checked is generous; without TxTimeout the
	// call never returns.)
	done := make(chan error, 1)
	go func() {
		_, err := led.Grant(ctx, credits.CreditParams{AccountID: "acct_stall", Amount: credits.AmountFromInt(5), IdempotencyKey: "g1"})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a grant succeeded through a black hole")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a write still waits on a black-holed database after 30 s (TxTimeout 300 ms)")
	}
	px.Set(faultproxy.Pass, 0)
	eventually(t, 10*time.Second, "writes work after the partition heals", func() bool {
		_, err := led.Grant(ctx, credits.CreditParams{AccountID: "acct_stall", Amount: credits.AmountFromInt(5), IdempotencyKey: "g1"})
		return err == nil
	})
	a, err := led.Account(ctx, "acct_stall")
	if err != nil || !a.Balance.Equal(credits.AmountFromInt(5)) {
		t.Fatalf("balance %s (%v), want 5: the grant is applied once", a.Balance, err)
	}
}

// A listener whose connection is black-holed notices by its ping,
// reconnects when the partition heals and has every cache read again, so
// a revocation sent while it was cut off still takes effect.
func TestListenerSurvivesBlackhole(t *testing.T) {
	ctx := context.Background()
	px, b, dsn := proxied(t, &pgstore.Options{ListenerPing: 200 * time.Millisecond, TxTimeout: 300 * time.Millisecond,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	a := open(t, dsn, nil)
	kopts := &apikey.Options{RefreshInterval: time.Hour, LastUsedInterval: -1}
	keysA, err := apikey.NewService(store.Driver(a), kopts)
	if err != nil {
		t.Fatal(err)
	}
	keysB, err := apikey.NewService(store.Driver(b), kopts)
	if err != nil {
		t.Fatal(err)
	}
	defer keysA.Close(ctx)
	defer keysB.Close(ctx)
	accts, err := account.NewService(store.Driver(a), nil)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := accts.Create(ctx, account.CreateParams{Name: "L", Email: "l@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	raw, key, err := keysA.Create(ctx, apikey.CreateParams{AccountID: acct.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "B's listener connects", func() bool { ok, _, _ := pgstore.ListenerState(b); return ok })
	if _, err := keysB.Verify(ctx, raw); err != nil { // cached in B for an hour
		t.Fatal(err)
	}
	_, connects, _ := pgstore.ListenerState(b)
	px.Set(faultproxy.Blackhole, 0)
	eventually(t, 10*time.Second, "B's listener notices the black hole", func() bool { ok, _, _ := pgstore.ListenerState(b); return !ok })
	if _, err := keysA.Revoke(ctx, acct.ID, key.ID); err != nil { // lost for B
		t.Fatal(err)
	}
	px.Set(faultproxy.Pass, 0)
	eventually(t, 10*time.Second, "B reconnects and drops the revoked key", func() bool {
		_, err := keysB.Verify(ctx, raw)
		return errors.Is(err, apikey.ErrRevoked)
	})
	eventually(t, 10*time.Second, "B's listener is connected again", func() bool {
		ok, n, _ := pgstore.ListenerState(b)
		return ok && n > connects
	})
}
