package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/auditlog"
	"github.com/keyledger/keyledger/internal/fakeclock"
)

// runAudit is the audit-log group: round trip, paging (also under
// concurrent appends), filters, tenant isolation and bounded pruning.
func runAudit(t *testing.T, newStore NewStoreFunc) {
	ctx := context.Background()
	setup := func(t *testing.T, o *auditlog.Options) (*auditlog.Service, *fakeclock.Clock) {
		st := newStore(t)
		t.Cleanup(func() { _ = st.Close() })
		clk := fakeclock.New(epoch)
		var opts auditlog.Options
		if o != nil {
			opts = *o
		}
		opts.Now = clk.Now
		svc, err := auditlog.NewService(st, &opts)
		if err != nil {
			t.Fatal(err)
		}
		return svc, clk
	}
	listAll := func(t *testing.T, svc *auditlog.Service, q auditlog.Query) []auditlog.Entry {
		t.Helper()
		var all []auditlog.Entry
		for pages := 0; ; pages++ {
			if pages > 1000 {
				t.Fatal("paging does not end")
			}
			p, err := svc.List(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, p.Entries...)
			if p.NextCursor == "" {
				return all
			}
			q.Cursor = p.NextCursor
		}
	}

	t.Run("RoundTrip", func(t *testing.T) {
		svc, clk := setup(t, nil)
		actx := auditlog.WithClient(auditlog.WithActor(ctx, auditlog.Actor{Kind: auditlog.ActorSession, ID: "acct_a"}),
			"203.0.113.7", "curl/8.0")
		in := auditlog.Entry{AccountID: "acct_a", Action: "key.update", Target: auditlog.Target{Type: "key", ID: "key_1"},
			Changes: []auditlog.Change{{Field: "name", Before: "old", After: "new ✓"}}}
		got, err := svc.Append(actx, in)
		if err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		if _, err := svc.Append(ctx, auditlog.Entry{AccountID: "acct_a", Action: "credits.grant"}); err != nil {
			t.Fatal(err)
		}
		p, err := svc.List(ctx, auditlog.Query{AccountID: "acct_a"})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Entries) != 2 || p.NextCursor != "" {
			t.Fatalf("list = %+v", p)
		}
		if p.Entries[0].Action != "credits.grant" || p.Entries[0].Actor.Kind != auditlog.ActorSystem {
			t.Errorf("newest first, system actor by default: %+v", p.Entries[0])
		}
		e := p.Entries[1]
		if e.ID != got.ID || e.ID == "" || !e.Time.Equal(epoch) || e.Actor != (auditlog.Actor{Kind: auditlog.ActorSession, ID: "acct_a"}) ||
			e.Target != in.Target || e.ClientIP != "203.0.113.7" || e.UserAgent != "curl/8.0" ||
			len(e.Changes) != 1 || e.Changes[0] != in.Changes[0] {
			t.Errorf("stored %+v, want %+v", e, got)
		}
		// The caller's slices are copied in and out.
		p.Entries[1].Changes[0].After = "mutated"
		p2, _ := svc.List(ctx, auditlog.Query{AccountID: "acct_a"})
		if p2.Entries[1].Changes[0].After != "new ✓" {
			t.Error("stored entry changed through a returned slice")
		}
		if _, err := svc.Append(ctx, auditlog.Entry{ID: got.ID, AccountID: "acct_a", Action: "x.y"}); !errors.Is(err, auditlog.ErrDuplicateEntry) {
			t.Errorf("duplicate ID: %v", err)
		}
		for _, bad := range []auditlog.Entry{{Action: "x.y"}, {AccountID: "acct_a"}, {AccountID: "acct_a", Action: "x.y", Actor: auditlog.Actor{Kind: "root"}}} {
			if _, err := svc.Append(ctx, bad); !errors.Is(err, auditlog.ErrInvalidEntry) {
				t.Errorf("Append(%+v) = %v, want ErrInvalidEntry", bad, err)
			}
		}
		if _, err := svc.List(ctx, auditlog.Query{AccountID: "acct_a", Cursor: "bogus"}); !errors.Is(err, auditlog.ErrInvalidCursor) {
			t.Errorf("bad cursor: %v", err)
		}
		p3, err := svc.List(ctx, auditlog.Query{AccountID: "acct_none"})
		if err != nil || len(p3.Entries) != 0 || p3.Entries == nil {
			t.Errorf("empty account: %+v, %v", p3, err)
		}
	})

	t.Run("Paging", func(t *testing.T) {
		svc, clk := setup(t, nil)
		var ids []string
		for i := range 23 {
			e, err := svc.Append(ctx, auditlog.Entry{AccountID: "acct_a", Action: "key.create", Target: auditlog.Target{Type: "key", ID: fmt.Sprint(i)}})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, e.ID)
			if i%3 == 0 {
				clk.Advance(time.Millisecond) // some entries share a time
			}
		}
		all := listAll(t, svc, auditlog.Query{AccountID: "acct_a", Limit: 5})
		if len(all) != 23 {
			t.Fatalf("paged %d entries, want 23", len(all))
		}
		for i, e := range all {
			if e.ID != ids[22-i] {
				t.Fatalf("entry %d = %s, want %s (newest first, each once)", i, e.ID, ids[22-i])
			}
		}
	})

	t.Run("PagingUnderConcurrentAppends", func(t *testing.T) {
		svc, _ := setup(t, nil)
		const before = 40
		existing := map[string]bool{}
		for range before {
			e, err := svc.Append(ctx, auditlog.Entry{AccountID: "acct_a", Action: "key.create"})
			if err != nil {
				t.Fatal(err)
			}
			existing[e.ID] = true
		}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := svc.Append(ctx, auditlog.Entry{AccountID: "acct_a", Action: "key.update"}); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		seen := map[string]bool{}
		var last int64
		q := auditlog.Query{AccountID: "acct_a", Limit: 3}
		for {
			p, err := svc.List(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range p.Entries {
				if seen[e.ID] {
					t.Fatalf("entry %s listed twice", e.ID)
				}
				if last != 0 && e.Seq >= last {
					t.Fatalf("order broken: seq %d after %d", e.Seq, last)
				}
				seen[e.ID], last = true, e.Seq
			}
			if p.NextCursor == "" {
				break
			}
			q.Cursor = p.NextCursor
		}
		close(stop)
		wg.Wait()
		for id := range existing {
			if !seen[id] {
				t.Errorf("entry %s that existed before paging started was skipped", id)
			}
		}
	})

	t.Run("Filters", func(t *testing.T) {
		svc, clk := setup(t, nil)
		key := auditlog.WithActor(ctx, auditlog.Actor{Kind: auditlog.ActorKey, ID: "key_1"})
		admin := auditlog.WithActor(ctx, auditlog.Actor{Kind: auditlog.ActorAdmin, ID: "cli"})
		t0 := clk.Now()
		add := func(c context.Context, action string) {
			if _, err := svc.Append(c, auditlog.Entry{AccountID: "acct_a", Action: action}); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Minute)
		}
		add(key, "key.create")      // t0
		add(key, "key.revoke")      // t0+1m
		add(admin, "credits.grant") // t0+2m
		add(ctx, "key.rotate")      // t0+3m
		add(admin, "key.create")    // t0+4m
		cases := []struct {
			name string
			q    auditlog.Query
			want []string
		}{
			{"action", auditlog.Query{Action: "key.create"}, []string{"key.create", "key.create"}},
			{"action prefix", auditlog.Query{Action: "key.*"}, []string{"key.create", "key.rotate", "key.revoke", "key.create"}},
			{"actor kind", auditlog.Query{Actor: auditlog.Actor{Kind: auditlog.ActorAdmin}}, []string{"key.create", "credits.grant"}},
			{"actor id", auditlog.Query{Actor: auditlog.Actor{Kind: auditlog.ActorKey, ID: "key_1"}}, []string{"key.revoke", "key.create"}},
			{"actor other id", auditlog.Query{Actor: auditlog.Actor{Kind: auditlog.ActorKey, ID: "key_2"}}, nil},
			{"system", auditlog.Query{Actor: auditlog.Actor{Kind: auditlog.ActorSystem}}, []string{"key.rotate"}},
			{"since", auditlog.Query{Since: t0.Add(3 * time.Minute)}, []string{"key.create", "key.rotate"}},
			{"until", auditlog.Query{Until: t0.Add(time.Minute)}, []string{"key.create"}},
			{"range+action", auditlog.Query{Since: t0.Add(time.Minute), Until: t0.Add(4 * time.Minute), Action: "key.*"}, []string{"key.rotate", "key.revoke"}},
		}
		for _, c := range cases {
			c.q.AccountID = "acct_a"
			c.q.Limit = 2 // and paged
			var got []string
			for _, e := range listAll(t, svc, c.q) {
				got = append(got, e.Action)
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("%s: %v, want %v", c.name, got, c.want)
			}
		}
		if _, err := svc.List(ctx, auditlog.Query{AccountID: "acct_a", Since: t0, Until: t0.Add(-time.Second)}); !errors.Is(err, auditlog.ErrInvalidQuery) {
			t.Errorf("inverted range: %v", err)
		}
		if _, err := svc.List(ctx, auditlog.Query{AccountID: "acct_a", Actor: auditlog.Actor{Kind: "root"}}); !errors.Is(err, auditlog.ErrInvalidQuery) {
			t.Errorf("unknown actor kind: %v", err)
		}
	})

	t.Run("TenantIsolation", func(t *testing.T) {
		svc, _ := setup(t, nil)
		for i := range 6 {
			acc := []string{"acct_a", "acct_b"}[i%2]
			if _, err := svc.Append(ctx, auditlog.Entry{AccountID: acc, Action: "key.create", Target: auditlog.Target{Type: "key", ID: acc}}); err != nil {
				t.Fatal(err)
			}
		}
		pa, _ := svc.List(ctx, auditlog.Query{AccountID: "acct_a", Limit: 1})
		// B's list, even with A's cursor, shows only B's entries.
		for _, q := range []auditlog.Query{{AccountID: "acct_b"}, {AccountID: "acct_b", Cursor: pa.NextCursor}} {
			for _, e := range listAll(t, svc, q) {
				if e.AccountID != "acct_b" || e.Target.ID != "acct_b" {
					t.Errorf("account B's log shows %+v", e)
				}
			}
		}
		if got := listAll(t, svc, auditlog.Query{AccountID: "acct_b"}); len(got) != 3 {
			t.Errorf("account B has %d entries, want 3", len(got))
		}
	})

	t.Run("PruneBounded", func(t *testing.T) {
		svc, clk := setup(t, &auditlog.Options{Retention: 24 * time.Hour, PruneBatch: 10, PruneMaxBatches: 2})
		for i := range 35 {
			acc := []string{"acct_a", "acct_b"}[i%2]
			if _, err := svc.Append(ctx, auditlog.Entry{AccountID: acc, Action: "key.create"}); err != nil {
				t.Fatal(err)
			}
		}
		clk.Advance(20 * time.Hour)
		var fresh []string
		for range 5 {
			e, err := svc.Append(ctx, auditlog.Entry{AccountID: "acct_a", Action: "key.revoke"})
			if err != nil {
				t.Fatal(err)
			}
			fresh = append(fresh, e.ID)
		}
		if n, err := svc.Prune(ctx); err != nil || n != 0 {
			t.Fatalf("nothing is due yet: pruned %d, %v", n, err)
		}
		clk.Advance(5 * time.Hour) // the first 35 are 25 h old, the others 5 h
		n, err := svc.Prune(ctx)
		if err != nil || n != 20 {
			t.Fatalf("first prune deleted %d (%v), want 20: two batches of 10", n, err)
		}
		if n, err = svc.Prune(ctx); err != nil || n != 15 {
			t.Fatalf("second prune deleted %d (%v), want the 15 left", n, err)
		}
		if n, err = svc.Prune(ctx); err != nil || n != 0 {
			t.Fatalf("third prune deleted %d (%v), want 0", n, err)
		}
		rest := append(listAll(t, svc, auditlog.Query{AccountID: "acct_a"}), listAll(t, svc, auditlog.Query{AccountID: "acct_b"})...)
		if len(rest) != 5 {
			t.Fatalf("%d entries left, want the 5 fresh ones", len(rest))
		}
		for i, e := range rest {
			if e.ID != fresh[4-i] {
				t.Errorf("kept %s, want %s", e.ID, fresh[4-i])
			}
		}
	})
}
