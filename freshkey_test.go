package keyledger_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/internal/storewrap"
	"github.com/keyledger/keyledger/store"
)

// reserveKeyCounter counts the store lookups of reserve idempotency keys
// (process holds only).
type reserveKeyCounter struct {
	storewrap.Base
	n atomic.Int64
}

func (r *reserveKeyCounter) LedgerReserveKey(ctx context.Context, accountID, key string) ([32]byte, string, bool, error) {
	r.n.Add(1)
	return r.Base.LedgerReserveKey(ctx, accountID, key)
}

// With process holds, a request without a client ID reserves under an ID
// the facade minted, which cannot be a replay: Authorize reads nothing from
// the store for it. A client's request ID is still looked up, so that a
// retry meets the reserve it repeats.
func TestAuthorizeWithMintedIDReadsNoReserveKey(t *testing.T) {
	var rk *reserveKeyCounter
	b := backend{"sqlite-process-holds-counted", func(t testing.TB) store.Store {
		rk = &reserveKeyCounter{Base: storewrap.Base{Store: backends[2].open(t)}}
		return rk
	}}
	if backends[2].name != "sqlite-process-holds" {
		t.Fatalf("backends[2] is %s", backends[2].name)
	}
	e := newEnv(t, b, nil)
	ctx := context.Background()
	_, raw, _ := e.signup(t, "fresh@example.com", "free")
	for range 3 {
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op"})
		if err != nil {
			t.Fatal(err)
		}
		if g.Hold.ID == "" {
			t.Fatal("no hold: the test does not reach the reserve")
		}
		if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200}); err != nil {
			t.Fatal(err)
		}
	}
	if n := rk.n.Load(); n != 0 {
		t.Fatalf("%d reserve-key lookups for requests with minted IDs, want 0", n)
	}
	g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Endpoint: "/v1/op", ID: "req_client_7"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200}); err != nil {
		t.Fatal(err)
	}
	if n := rk.n.Load(); n != 1 {
		t.Fatalf("%d reserve-key lookups for a client's request ID, want 1", n)
	}
}
