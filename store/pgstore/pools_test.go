package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/usage"
)

// Processes are stood in for by Stores: each has its own pool, and its own
// credits and usage Services, whose group commits run concurrently against
// one schema.
type pools struct {
	led [2]*credits.Service
	use [2]*usage.Service
}

func newPools(t *testing.T) *pools {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	quiet := slog.New(slog.DiscardHandler)
	var p pools
	for i := range 2 {
		st := open(t, dsn, nil)
		led, err := credits.NewService(store.Driver(st), &credits.Options{Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		use, err := usage.NewService(store.Driver(st), &usage.Options{Credits: led, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { use.Close(ctx); led.Close(ctx) })
		p.led[i], p.use[i] = led, use
	}
	return &p
}

// Debits of one account from two pools at once never overspend: exactly
// the funded number succeed, and the ledger sums to the balance.
func TestTwoPoolsNeverOverspend(t *testing.T) {
	ctx := context.Background()
	p := newPools(t)
	const acct = "acct_shared"
	if _, err := p.led[0].Open(ctx, acct, credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.led[1].Purchase(ctx, credits.CreditParams{AccountID: acct, Amount: credits.AmountFromInt(30), IdempotencyKey: "funds"}); err != nil {
		t.Fatal(err)
	}
	var ok, short atomic.Int64
	var wg sync.WaitGroup
	for i := range 80 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if i%3 == 0 { // some through usage: record + debit in one transaction
				_, err = p.use[i%2].Meter(ctx, usage.MeterParams{Record: usage.Record{AccountID: acct, Endpoint: "/v1/op",
					StatusCode: 200, Cost: credits.AmountFromInt(1)}, IdempotencyKey: fmt.Sprint("req-", i)})
			} else {
				_, err = p.led[i%2].Debit(ctx, credits.DebitParams{AccountID: acct, Amount: credits.AmountFromInt(1),
					IdempotencyKey: fmt.Sprint("debit-", i)})
			}
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, credits.ErrInsufficientFunds):
				short.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 30 || short.Load() != 50 {
		t.Fatalf("%d debits succeeded and %d were short on a balance of 30; want 30 and 50", ok.Load(), short.Load())
	}
	for _, led := range p.led {
		a, err := led.Account(ctx, acct)
		if err != nil || !a.Balance.IsZero() {
			t.Fatalf("balance %s, %v; want 0", a.Balance, err)
		}
	}
	page, err := p.led[0].Entries(ctx, acct, credits.EntryFilter{}, "", 500)
	if err != nil {
		t.Fatal(err)
	}
	sum := credits.Amount{}
	for i, e := range page.Entries {
		sum = sum.Add(e.Amount)
		if want := int64(len(page.Entries) - i); e.Seq != want {
			t.Fatalf("entry %d has seq %d, want %d: sequence has a gap or a duplicate", i, e.Seq, want)
		}
	}
	if !sum.IsZero() || len(page.Entries) != 31 {
		t.Fatalf("%d entries summing to %s; want 31 summing to 0", len(page.Entries), sum)
	}
}

// The same meter request sent to both pools at once — a client retrying
// against another instance — is recorded and charged once; both callers
// get the first result.
func TestTwoPoolsReplayChargesOnce(t *testing.T) {
	ctx := context.Background()
	p := newPools(t)
	const acct = "acct_replay"
	if _, err := p.led[0].Open(ctx, acct, credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.led[0].Purchase(ctx, credits.CreditParams{AccountID: acct, Amount: credits.AmountFromInt(100), IdempotencyKey: "funds"}); err != nil {
		t.Fatal(err)
	}
	const rounds = 20
	var replays atomic.Int64
	for r := range rounds {
		rec := usage.Record{AccountID: acct, ID: fmt.Sprint("log_", r), Endpoint: "/v1/op", StatusCode: 200,
			Cost: credits.AmountFromMinor(125, 2)}
		var got [2]usage.MeterResult
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := p.use[i].Meter(ctx, usage.MeterParams{Record: rec, IdempotencyKey: fmt.Sprint("req-", r)})
				if err != nil {
					t.Error(err)
				}
				got[i] = res
				if res.Replayed {
					replays.Add(1)
				}
			}()
		}
		wg.Wait()
		if got[0].Record.ID != got[1].Record.ID || !got[0].Charged.Equal(got[1].Charged) {
			t.Fatalf("round %d: the two callers got different results: %+v / %+v", r, got[0], got[1])
		}
	}
	if replays.Load() != rounds {
		t.Fatalf("%d replays in %d rounds of two identical requests, want one per round", replays.Load(), rounds)
	}
	a, err := p.led[1].Account(ctx, acct)
	if want := credits.AmountFromInt(100).Sub(credits.AmountFromMinor(125*rounds, 2)); err != nil || !a.Balance.Equal(want) {
		t.Fatalf("balance %s (%v), want %s: a replay was charged", a.Balance, err, want)
	}
}
