package auditlog_test

import (
	"context"
	"fmt"
	"time"

	"github.com/keyledger/keyledger/auditlog"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// A host sets the actor and client once per request (middleware) and the
// entries appended with that context carry them. keyledger.New does the
// appending for every management change; a host appends its own actions.
func Example() {
	ctx := context.Background()
	clock := func() time.Time { return time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC) }
	log, _ := auditlog.NewService(store.Driver(memstore.New()), &auditlog.Options{Now: clock})

	ctx = auditlog.WithActor(ctx, auditlog.Actor{Kind: auditlog.ActorSession, ID: "acct_1"})
	ctx = auditlog.WithClient(ctx, "203.0.113.9", "Mozilla/5.0")
	_, _ = log.Append(ctx, auditlog.Entry{AccountID: "acct_1", Action: "webhook.create",
		Target: auditlog.Target{Type: "webhook", ID: "wh_1"}, Changes: auditlog.Diff([3]string{"url", "", "https://example.com/hook"})})
	_, _ = log.Append(context.Background(), auditlog.Entry{AccountID: "acct_1", Action: "credits.grant"})

	p, _ := log.List(context.Background(), auditlog.Query{AccountID: "acct_1", Action: "webhook.*"})
	for _, e := range p.Entries {
		fmt.Println(e.Time.Format(time.RFC3339), e.Actor, e.Action, e.Target.ID, e.ClientIP, e.Changes[0].Field, e.Changes[0].After)
	}
	// Output:
	// 2026-12-01T09:00:00Z session:acct_1 webhook.create wh_1 203.0.113.9 url https://example.com/hook
}
