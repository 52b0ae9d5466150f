package storetest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/outbox"
)

// OutboxBacklog is the number of pending events BenchOutboxBacklog queues
// behind one account's failing head.
const OutboxBacklog = 20_000

// BenchOutboxBacklog measures one dispatcher round for a healthy account
// (append an event, claim it, finish it delivered) while another account
// has backlog pending events queued behind a head whose endpoint keeps
// failing (retried an hour later): an account's backlog must not make
// every other account's delivery slower (compare queued=0).
func BenchOutboxBacklog(b *testing.B, newStore NewStoreFunc, backlog int) {
	e := newEnv(b, newStore, nil)
	o := outboxOf(b, e.st)
	now := e.clk.Now()
	evs := make([]events.Event, 0, 1000)
	for i := range backlog {
		evs = append(evs, events.Event{ID: fmt.Sprintf("evt_stuck_%d", i), Type: events.KeyCreated, AccountID: "acct_stuck", Time: now, Data: json.RawMessage(`{}`)})
		if len(evs) == cap(evs) || i == backlog-1 {
			if err := o.AppendEvents(ctx(), evs); err != nil {
				b.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	lease := now.Add(time.Minute)
	if backlog > 0 {
		p, err := o.ClaimEvents(ctx(), now, lease, "c0", 1)
		if err != nil || len(p) != 1 || p[0].AccountID != "acct_stuck" {
			b.Fatalf("claim of the stuck head = %+v, %v", p, err)
		}
		if err := o.FinishEvent(ctx(), now, outbox.Result{EventID: p[0].ID, Claim: "c0", State: outbox.StatePending, NextAt: now.Add(time.Hour), Attempts: 1}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		ev := events.Event{ID: fmt.Sprintf("evt_ok_%d", i), Type: events.KeyCreated, AccountID: "acct_ok", Time: now, Data: json.RawMessage(`{}`)}
		if err := o.AppendEvents(ctx(), []events.Event{ev}); err != nil {
			b.Fatal(err)
		}
		claim := fmt.Sprintf("c%d", i)
		p, err := o.ClaimEvents(ctx(), now, lease, claim, 32)
		if err != nil || len(p) != 1 || p[0].ID != ev.ID {
			b.Fatalf("claim = %+v, %v; want %s alone", p, err, ev.ID)
		}
		if err := o.FinishEvent(ctx(), now, outbox.Result{EventID: ev.ID, Claim: claim, State: outbox.StateDelivered, Attempts: 1}); err != nil {
			b.Fatal(err)
		}
	}
}
