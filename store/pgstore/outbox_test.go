package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/outbox"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/store"
)

// TestOutboxTwoInstances: two processes' stores on one database, each with
// its own dispatcher, share the outbox (FOR UPDATE SKIP LOCKED). Every event
// is delivered, and no account's event n+1 reaches the receiver before its
// event n has been acknowledged — although the receiver fails some first
// attempts, so events are retried while others flow.
func TestOutboxTwoInstances(t *testing.T) {
	dsn := pgtest.DSN(t)
	st1, st2 := open(t, dsn, nil), open(t, dsn, nil)
	const accounts, per = 8, 15
	var evs []events.Event
	for i := range per {
		for a := range accounts {
			evs = append(evs, events.Event{ID: fmt.Sprintf("evt_%02d_%03d", a, i), Type: events.KeyCreated,
				AccountID: fmt.Sprintf("acct_%02d", a), Time: time.Now(), Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
		}
	}
	for i := 0; i < len(evs); i += 16 { // several transactions, interleaved accounts
		if err := store.Driver(st1).AppendEvents(context.Background(), evs[i:min(i+16, len(evs))]); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu       sync.Mutex
		next     = map[string]int{} // account → the n it may receive next
		attempts = map[string]int{}
		byInst   [2]int
		bad      []string
	)
	hook := func(inst int) events.Hook {
		return func(_ context.Context, e events.Event) error {
			var d struct{ N int }
			_ = json.Unmarshal(e.Data, &d)
			mu.Lock()
			defer mu.Unlock()
			attempts[e.ID]++
			h := fnv.New32a()
			h.Write([]byte(e.ID))
			if attempts[e.ID] == 1 && h.Sum32()%5 == 0 {
				return errors.New("receiver down") // retried; the account's later events wait
			}
			switch {
			case d.N == next[e.AccountID]:
				next[e.AccountID]++
				byInst[inst]++
			case d.N < next[e.AccountID]:
				// a redelivery of an acknowledged event: allowed (at least once)
			default:
				bad = append(bad, fmt.Sprintf("%s got n=%d before n=%d", e.AccountID, d.N, next[e.AccountID]))
			}
			return nil
		}
	}
	done := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for a := range accounts {
			if next[fmt.Sprintf("acct_%02d", a)] < per {
				return false
			}
		}
		return true
	}
	var wg sync.WaitGroup
	for i, st := range []outbox.Store{store.Driver(st1).(outbox.Store), store.Driver(st2).(outbox.Store)} {
		d := outbox.New(st, outbox.Options{Hook: hook(i), Batch: 3, Workers: 2, BackoffBase: time.Nanosecond, BackoffMax: time.Nanosecond,
			Jitter: func() float64 { return 0 }})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				if done() {
					return
				}
				if _, err := d.RunOnce(context.Background()); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("order broken: %v", bad)
	}
	for a := range accounts {
		if n := next[fmt.Sprintf("acct_%02d", a)]; n != per {
			t.Fatalf("acct_%02d: %d of %d events delivered", a, n, per)
		}
	}
	t.Logf("instance 1 delivered %d, instance 2 %d", byInst[0], byInst[1])
}
