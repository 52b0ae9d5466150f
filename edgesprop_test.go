package keyledger_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/credits"
)

// The money property: random request shapes against the facade, several
// requests in flight at once on one account at the balance edge, and after
// every run
//
//   - Σ usage cost = what the balance lost (every charge has its record and
//     every record its charge: charged = used, nothing written off under
//     the default policy);
//   - the balance is at least −Σ overshoot, where a request's overshoot is
//     what it was charged beyond its hold at completion (an upstream that
//     ignored the limit, the last chunk at a cut-off, a hold that expired);
//     under OverrunWriteOff it is never below zero;
//   - no record of delivered tokens has zero cost;
//   - every hold is settled, released or expired: nothing stays held.
//
// A shape is: max tokens, an initial hold estimate or none, n choices,
// streaming (Progress per chunk) or not, an upstream that honours the
// limit or delivers up to three times it, a client that disconnects after
// k chunks, a failure status, and clock steps that outlive the hold TTL.

type shape struct {
	maxTokens, holdTokens, n int64
	stream, ignoresLimit     bool
	answer                   int64 // completion tokens the upstream would produce
	cutAfter                 int   // chunks before the client disconnects (0: never)
	chunk                    int64
	status                   int
	slow                     time.Duration // clock step per chunk
}

func randomShape(r *rand.Rand) shape {
	s := shape{
		maxTokens: 1 + r.Int64N(400), n: 1 + r.Int64N(3), stream: r.IntN(3) > 0, ignoresLimit: r.IntN(4) == 0,
		chunk: 1 + r.Int64N(20), status: 200,
	}
	if r.IntN(2) == 0 {
		s.holdTokens = 1 + r.Int64N(s.maxTokens)
	}
	limit := s.maxTokens * s.n
	s.answer = r.Int64N(limit + 1)
	if s.ignoresLimit {
		s.answer = limit + r.Int64N(2*limit+1)
	}
	if r.IntN(4) == 0 {
		s.cutAfter = 1 + r.IntN(10)
	}
	if r.IntN(8) == 0 {
		s.status = 502
	}
	if r.IntN(5) == 0 {
		s.slow = time.Duration(r.IntN(90)) * time.Second
	}
	return s
}

// flight is one request in progress.
type flight struct {
	s         shape
	g         *keyledger.Grant
	delivered int64
	chunks    int
	done      bool
}

// runMoneyProgram plays rounds of concurrent requests on one account and
// checks the property.
func runMoneyProgram(t *testing.T, e *env, seed uint64, rounds int, writeOff bool) {
	t.Helper()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, seed*7+1))
	a, raw, _ := e.signup(t, fmt.Sprintf("prop%d@example.com", seed), "")
	granted := credits.NewAmount(d("50"))
	var overshoot credits.Amount
	for round := range rounds {
		var fl []*flight
		for range 1 + r.IntN(4) {
			s := randomShape(r)
			req := keyledger.Request{Model: "test-model", PromptTokens: 1 + r.Int64N(50), MaxCompletionTokens: s.maxTokens * s.n}
			if s.holdTokens > 0 {
				req.HoldCompletionTokens = s.holdTokens * s.n
			}
			g, err := e.kl.Authorize(ctx, raw, req)
			if err != nil {
				if !errors.Is(err, credits.ErrInsufficientFunds) {
					t.Fatalf("round %d: Authorize: %v", round, err)
				}
				continue
			}
			fl = append(fl, &flight{s: s, g: g})
		}
		for live := len(fl); live > 0; {
			for _, f := range fl {
				if f.done {
					continue
				}
				e.clk.Advance(f.s.slow)
				step(t, f)
				if f.done {
					live--
					over := complete(t, e, f, writeOff)
					overshoot = overshoot.Add(over)
				}
			}
		}
		acc, err := e.kl.Credits.Account(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		floor := overshoot.Neg()
		if writeOff {
			floor = credits.Amount{}
		}
		if acc.Balance.Cmp(floor) < 0 || !acc.Held.IsZero() {
			t.Fatalf("seed %d round %d: balance %s (floor %s), held %s", seed, round, acc.Balance, floor, acc.Held)
		}
		if acc.Balance.IsNegative() || acc.Available.Cmp(credits.NewAmount(d("5"))) < 0 {
			// Pay any debt and top up, so the next round is at the edge again.
			top := credits.NewAmount(d("20")).Sub(acc.Balance)
			if _, err := e.kl.Credits.Purchase(ctx, credits.CreditParams{AccountID: a.ID, Amount: top, IdempotencyKey: fmt.Sprint("top-", round)}); err != nil {
				t.Fatal(err)
			}
			granted = granted.Add(top)
			overshoot = credits.Amount{}
		}
	}
	reconcile(t, e, a.ID, granted)
}

// step advances a request by one chunk (or answers it whole).
func step(t *testing.T, f *flight) {
	t.Helper()
	s := &f.s
	if !s.stream {
		f.delivered, f.done = s.answer, true
		return
	}
	if f.delivered >= s.answer || f.g.Context().Err() != nil {
		f.done = true
		return
	}
	f.delivered = min(f.delivered+s.chunk, s.answer)
	f.chunks++
	err := f.g.Progress(context.Background(), keyledger.Delivered{PromptTokens: 0, CompletionTokens: f.delivered})
	switch {
	case errors.Is(err, keyledger.ErrBudgetExhausted):
		f.done = true // the handler ends the stream with what it delivered
	case err != nil:
		t.Fatalf("Progress: %v", err)
	case s.cutAfter > 0 && f.chunks >= s.cutAfter:
		f.done = true // the client went away: what was written is charged
	}
}

// complete completes a request and returns its overshoot: the charge
// beyond the hold it had at completion.
func complete(t *testing.T, e *env, f *flight, writeOff bool) credits.Amount {
	t.Helper()
	ctx := context.Background()
	o := keyledger.Outcome{StatusCode: f.s.status, CompletionTokens: f.delivered}
	if f.s.status >= 400 {
		o = keyledger.Outcome{StatusCode: f.s.status, ErrorType: "upstream_error"}
	}
	hold, err := e.kl.Credits.Hold(ctx, f.g.Hold.ID)
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.g.Complete(ctx, o)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if o.StatusCode < 400 && f.delivered > 0 && res.Record.Cost.IsZero() && res.Record.ErrorType != "unpaid" {
		t.Fatalf("delivered %d tokens at zero cost: %+v", f.delivered, res)
	}
	if !writeOff && !res.Shortfall.IsZero() {
		t.Fatalf("shortfall %s under the debt policy", res.Shortfall)
	}
	if hold.State != credits.HoldActive {
		return res.Charged
	}
	if over := res.Charged.Sub(hold.Amount); over.IsPositive() {
		return over
	}
	return credits.Amount{}
}

func TestMoneyPropertyRandomShapes(t *testing.T) {
	seeds, rounds := 6, 25
	if testing.Short() {
		seeds, rounds = 2, 10
	}
	forEachMoneyBackend(t, func(t *testing.T, b backend) {
		for _, writeOff := range []bool{false, true} {
			t.Run(fmt.Sprint("writeoff=", writeOff), func(t *testing.T) {
				e := newEnvWith(t, b, func(o *keyledger.Options) {
					o.Catalog = bigCatalog(t)
					if writeOff {
						o.Overrun = credits.OverrunWriteOff
					}
				})
				for seed := range uint64(seeds) {
					runMoneyProgram(t, e, seed, rounds, writeOff)
				}
			})
		}
	})
}

// FuzzMoneyEdges runs the money property from a fuzzed seed on memstore.
func FuzzMoneyEdges(f *testing.F) {
	f.Add(uint64(1), uint8(5), false)
	f.Add(uint64(42), uint8(20), true)
	f.Fuzz(func(t *testing.T, seed uint64, rounds uint8, writeOff bool) {
		e := newEnvWith(t, backends[0], func(o *keyledger.Options) {
			o.Catalog = bigCatalog(t)
			if writeOff {
				o.Overrun = credits.OverrunWriteOff
			}
		})
		runMoneyProgram(t, e, seed, int(rounds%32)+1, writeOff)
	})
}
