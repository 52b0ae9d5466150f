package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/pgtest"
)

// The invariants checked after every run of random chat completions
// through the gateway to the stub upstream, per account:
//
//  1. Σ usage record costs = −Σ debit entries, and Σ of all entries = the
//     balance (the ledger reconciles; a debt is a negative balance).
//  2. The balance is never below −(the largest single charge): debt comes
//     only from one request's overshoot.
//  3. No usage record of delivered tokens is at zero cost.
//  4. Nothing is left held: every hold was settled or released.
//  5. Charged = delivered: the completion tokens of the records equal the
//     tokens the clients received, except that a client that left
//     midway may have been written (and charged) a little more than it
//     read.
//
// Request shapes: model (two limit fields, two prices), n 1-4, no limit or
// one in either field or both, streaming or not, include_usage, an
// upstream that honours or ignores its limit and reports usage or not,
// clients that leave after k events, four requests at a time on two
// ₹50 accounts without rate limits (so runs meet the balance edge), topped
// up now and then.

// propertyStep is one random request.
type propertyStep struct {
	body    map[string]any
	stream  bool
	leaveAt int // > 0: the client leaves after this many events
}

func randomStep(rng *rand.Rand) propertyStep {
	models := []string{"test/gpt", "test/gpt", "test/llama", "test/dear"}
	extra := map[string]any{"x_stub": map[string]any{
		"answer": 1 + rng.IntN(300), "ignore_limits": rng.IntN(5) == 0, "omit_usage": rng.IntN(3) == 0,
	}}
	if n := 1 + rng.IntN(4); n > 1 {
		extra["n"] = n
	}
	limit := 1 + rng.IntN(300)
	switch rng.IntN(4) {
	case 1:
		extra["max_tokens"] = limit
	case 2:
		extra["max_completion_tokens"] = limit
	case 3:
		extra["max_tokens"], extra["max_completion_tokens"] = limit+rng.IntN(10), limit
	}
	st := propertyStep{stream: rng.IntN(2) == 0}
	if st.stream {
		extra["stream"] = true
		if rng.IntN(2) == 0 {
			extra["stream_options"] = map[string]any{"include_usage": true}
		}
		if rng.IntN(3) == 0 {
			st.leaveAt = 1 + rng.IntN(40)
		}
	}
	st.body = chatJSON(models[rng.IntN(len(models))], extra)
	return st
}

// run sends the step and returns the status and the completion tokens
// the client received; left reports a client that left midway.
func (st propertyStep) run(t *testing.T, g *gw, key string) (status int, received int64, left bool) {
	raw, _ := json.Marshal(st.body)
	req, _ := http.NewRequest("POST", g.base+chatEndpoint, bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := g.c.Do(req)
	if err != nil {
		t.Error(err)
		return 0, 0, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || st.leaveAt == 0 {
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, int64(strings.Count(string(b), stubToken)), false
	}
	rd := bufio.NewReader(resp.Body)
	for events := 0; events < st.leaveAt; {
		line, err := rd.ReadString('\n')
		if err != nil {
			return resp.StatusCode, received, false // the stream ended first
		}
		if strings.HasPrefix(line, "data: ") {
			events++
			received += int64(strings.Count(line, stubToken))
		}
	}
	return resp.StatusCode, received, true // Close with unread data resets
}

func TestPropertyChargedEqualsDelivered(t *testing.T) {
	backends := []struct {
		name string
		cfg  func(t *testing.T) config
	}{
		{"sqlite", func(*testing.T) config { return config{} }},
		{"postgres", func(t *testing.T) config { return config{postgres: pgtest.DSN(t)} }},
	}
	seeds := []uint64{1, 2, 3}
	steps := 48
	if testing.Short() {
		seeds, steps = seeds[:1], 24
	}
	for _, b := range backends {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("%s/seed=%d", b.name, seed), func(t *testing.T) {
				runProperty(t, b.cfg(t), seed, steps)
			})
		}
	}
}

func runProperty(t *testing.T, c config, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 17))
	up := newOpenAIStub(t, stubConfig{})
	c.upstream, c.modelsFile = up.URL+"/v1", stubCatalog(t)
	c.limits.streamHoldTokens = 1 + int64(rng.IntN(64))
	g, s, hs := startServed(t, c)
	users := []user{g.signup(fmt.Sprintf("Prop%da", seed)), g.signup(fmt.Sprintf("Prop%db", seed))}
	ctx := context.Background()
	enterprise := "enterprise" // no per-minute limits: the runs meet the balance, not the rate limits
	for _, u := range users {
		if _, err := s.kl.Accounts.Update(ctx, u.id, account.UpdateParams{Plan: &enterprise}); err != nil {
			t.Fatal(err)
		}
	}

	var received [2]int64
	var leftCount [2]int
	var mu sync.Mutex
	for i := 0; i < steps; i += 4 {
		var wg sync.WaitGroup
		for j := range 4 {
			st, who := randomStep(rng), j%2
			wg.Go(func() {
				status, got, left := st.run(t, g, users[who].key)
				mu.Lock()
				defer mu.Unlock()
				if status == 200 {
					received[who] += got
					if left {
						leftCount[who]++
					}
				} else if status != 402 && status != 400 && status != 429 {
					t.Errorf("status %d for %v", status, st.body)
				}
			})
		}
		wg.Wait()
		if rng.IntN(4) == 0 { // a top-up, which pays any debt first
			who := rng.IntN(2)
			if _, err := s.kl.Credits.Grant(ctx, credits.CreditParams{AccountID: users[who].id, Amount: credits.AmountFromInt(20),
				IdempotencyKey: fmt.Sprintf("topup-%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	hs.Close() // waits for every handler, so every request is complete

	for who, u := range users {
		var costs, maxCost credits.Amount
		var charged int64
		for _, r := range records(t, s, u.id) {
			costs = costs.Add(r.Cost)
			if r.Cost.Cmp(maxCost) > 0 {
				maxCost = r.Cost
			}
			if r.StatusCode == 200 && r.ErrorType == "" {
				charged += r.CompletionTokens
				if r.CompletionTokens > 0 && r.Cost.IsZero() && !strings.HasPrefix(r.Model, "forii/") {
					t.Errorf("record %s: %d completion tokens at zero cost", r.ID, r.CompletionTokens)
				}
			}
		}
		var debits, all credits.Amount
		for cursor := ""; ; {
			page, err := s.kl.Credits.Entries(ctx, u.id, credits.EntryFilter{}, cursor, 500)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page.Entries {
				all = all.Add(e.Amount)
				if e.Type == credits.EntryDebit {
					debits = debits.Add(e.Amount)
				}
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		acct, err := s.kl.Credits.Account(ctx, u.id)
		if err != nil {
			t.Fatal(err)
		}
		if !costs.Equal(debits.Neg()) || !all.Equal(acct.Balance) {
			t.Errorf("account %d: Σ costs %s, Σ debits %s, Σ entries %s, balance %s", who, costs, debits, all, acct.Balance)
		}
		if acct.Balance.Add(maxCost).IsNegative() {
			t.Errorf("account %d: balance %s below −(largest charge %s)", who, acct.Balance, maxCost)
		}
		if !acct.Held.IsZero() {
			t.Errorf("account %d: %s still held", who, acct.Held)
		}
		// Charged = delivered (a client that left may have been written a
		// few events it never read).
		if charged < received[who] || (leftCount[who] == 0 && charged != received[who]) {
			t.Errorf("account %d: received %d completion tokens (%d clients left midway), charged %d", who, received[who], leftCount[who], charged)
		}
		t.Logf("account %d: received %d tokens (%d clients left midway), charged %d, spent %s, balance %s", who, received[who], leftCount[who], charged, costs, acct.Balance)
	}
}

// FuzzChargedEqualsDelivered runs the property on SQLite from fuzzed
// seeds, a few requests each.
func FuzzChargedEqualsDelivered(f *testing.F) {
	f.Add(uint64(4))
	f.Add(uint64(5))
	f.Fuzz(func(t *testing.T, seed uint64) {
		runProperty(t, config{}, seed, 8)
	})
}
