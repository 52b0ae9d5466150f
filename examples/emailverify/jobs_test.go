package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/e2e"
	"github.com/keyledger/keyledger/internal/pgtest"
)

// clock is a settable fake clock, safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.ns.Store(t.UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func jobOf(t *testing.T, g *inproc, key, id, query string) (int, jobView) {
	t.Helper()
	rec := e2e.Serve(g.h, "GET", "/v1/verify/batch/"+id, query, "Bearer "+key, nil)
	var env struct {
		Data jobView `json:"data"`
	}
	if rec.Code == 200 {
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
			t.Fatalf("job %s: %v", rec.Body, err)
		}
	}
	return rec.Code, env.Data
}

// A finished job survives a restart: the server closed and reopened on
// the same SQLite file serves it with the same results and exact charge.
func TestJobSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ev.db")
	g := openInproc(t, path, "", io.Discard, time.Now)
	tn := g.newTenant(t, "Restart")
	code, before := jobOf(t, g, tn.key, tn.jobID, "")
	if code != 200 || before.Status != JobCompleted {
		t.Fatalf("before restart: %d %+v", code, before)
	}
	g.close()
	g2 := openInproc(t, path, "", io.Discard, time.Now)
	code, after := jobOf(t, g2, tn.key, tn.jobID, "")
	if code != 200 || after.Status != JobCompleted || len(after.Results) != 2 ||
		!after.CreditsCharged.Equal(before.CreditsCharged) || !after.CreditsCharged.Equal(credits.AmountFromInt(2)) {
		t.Fatalf("after restart: %d %+v (before %+v)", code, after, before)
	}
}

// testStores returns the job stores under test: two handles on one
// SQLite file, and two on one PostgreSQL schema if KEYLEDGER_TEST_POSTGRES
// is set (two instances sharing the table).
func testStores(t *testing.T) map[string][2]*jobStore {
	t.Helper()
	ctx := context.Background()
	out := map[string][2]*jobStore{}
	path := filepath.Join(t.TempDir(), "jobs.db")
	var pair [2]*jobStore
	for i := range pair {
		st, err := openJobStore(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		pair[i] = st
	}
	out["sqlite"] = pair
	if base := pgtestDSN(t); base != "" {
		for i := range pair {
			st, err := openJobStorePG(ctx, base)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			pair[i] = st
		}
		out["postgres"] = pair
	}
	return out
}

// pgtestDSN is a fresh PostgreSQL schema, or "" when the variable is unset.
func pgtestDSN(t *testing.T) string {
	t.Helper()
	if os.Getenv(pgtest.Env) == "" {
		return ""
	}
	return pgtest.DSN(t)
}

func rec(id, account string, created time.Time) jobRecord {
	return jobRecord{ID: id, AccountID: account, KeyID: "key_1", TimeZone: "UTC", Test: true, Status: JobProcessing,
		Emails: []string{"a@example.com"}, CreatedAt: created, LeaseUntil: created.Add(jobLease), Owner: "ins_a"}
}

// The per-account cap holds when two instances create jobs concurrently.
func TestJobCapUnderConcurrency(t *testing.T) {
	for name, pair := range testStores(t) {
		t.Run(name, func(t *testing.T) {
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var ok atomic.Int32
			var wg sync.WaitGroup
			for i := range 3 * maxJobsPerAccount {
				wg.Go(func() {
					st := pair[i%2]
					admitted, _, err := st.create(context.Background(), rec("job_"+name+string(rune('A'+i/26))+string(rune('a'+i%26)), "acct_cap", now), now, maxJobsPerAccount)
					if err != nil {
						t.Error(err)
					}
					if admitted {
						ok.Add(1)
					}
				})
			}
			wg.Wait()
			if n := ok.Load(); n != maxJobsPerAccount {
				t.Fatalf("%d jobs admitted, cap %d", n, maxJobsPerAccount)
			}
		})
	}
}

// Finished jobs expire jobTTL after they end: GET stops finding them at
// once, and pruning deletes them in bounded batches.
func TestJobTTLPruning(t *testing.T) {
	for name, pair := range testStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := pair[0]
			c := newClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			for i := range 7 {
				r := rec("job_ttl"+string(rune('a'+i)), "acct_ttl", c.now())
				if ok, _, err := st.create(ctx, r, c.now(), 100); !ok || err != nil {
					t.Fatal(ok, err)
				}
				if err := st.finish(ctx, r.ID, r.Owner, JobCompleted, []Result{{Email: "a@example.com", Result: "deliverable"}},
					[]credits.Amount{credits.AmountFromInt(0)}, credits.AmountFromInt(0), c.now()); err != nil {
					t.Fatal(err)
				}
			}
			c.advance(jobTTL - time.Second)
			if n, err := st.prune(ctx, c.now(), 3); n != 0 || err != nil {
				t.Fatalf("pruned %d before the TTL: %v", n, err)
			}
			if _, err := pair[1].get(ctx, "acct_ttl", "job_ttla", c.now()); err != nil {
				t.Fatalf("before the TTL: %v", err)
			}
			c.advance(time.Second)
			if _, err := pair[1].get(ctx, "acct_ttl", "job_ttla", c.now()); !errors.Is(err, errJobNotFound) {
				t.Fatalf("after the TTL: %v", err)
			}
			var got []int
			for range 4 {
				n, err := st.prune(ctx, c.now(), 3)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, n)
			}
			if want := []int{3, 3, 1, 0}; !equalInts(got, want) {
				t.Fatalf("pruned %v, want %v", got, want)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A live job whose instance died after reserving its holds is resumed by
// the instance that reads it past its lease: every address is verified
// and charged exactly once, nothing stays held, and the dead instance's
// late save is refused.
func TestJobLeaseTakeover(t *testing.T) {
	dead, _, j := newBatchAPI(t, "a@example.com", "b@example.com", "c@example.com")
	holds, err := dead.reserve(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := dead.jobs.store.setHolds(ctx, j.ID, dead.jobs.owner, holds, time.Now().Add(jobLease)); err != nil {
		t.Fatal(err)
	}
	// The instance processed the first address, saved, and died.
	j.results = []Result{{Email: "a@example.com", Result: "deliverable"}}
	mustCharge, err := dead.meterBatchItem(j, 0, j.results[0], holds[0])
	if err != nil {
		t.Fatal(err)
	}
	j.costs, j.charged = []credits.Amount{mustCharge}, mustCharge
	if err := dead.save(ctx, j); err != nil {
		t.Fatal(err)
	}
	// It also metered the second address but died before saving it: the
	// new instance processes it again and must not charge it twice.
	if _, err := dead.meterBatchItem(j, 1, Result{Email: "b@example.com", Result: "deliverable"}, holds[1]); err != nil {
		t.Fatal(err)
	}
	balBefore, err := dead.kl.Credits.Balance(ctx, j.AccountID)
	if err != nil {
		t.Fatal(err)
	}

	// Another instance, its clock past the lease.
	later := func() time.Time { return time.Now().Add(jobLease + time.Second) }
	alive := *dead
	alive.now = later
	alive.jobs = newJobs(context.Background(), later, dead.jobs.store)
	r, err := alive.readJob(ctx, j.AccountID, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Owner != alive.jobs.owner {
		t.Fatalf("owner %s, want the new instance", r.Owner)
	}
	alive.jobs.Wait()
	r, err = alive.jobs.store.get(ctx, j.AccountID, j.ID, later())
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != JobCompleted || len(r.Results) != 3 || len(r.Costs) != 3 {
		t.Fatalf("resumed job %+v", r)
	}
	sum := credits.Amount{}
	for _, c := range r.Costs {
		sum = sum.Add(c)
	}
	if !sum.Equal(r.Charged) || !r.Charged.Equal(credits.AmountFromInt(3)) {
		t.Fatalf("charged %s (costs sum %s), want 3", r.Charged, sum)
	}
	if h := held(t, dead, j.AccountID); !h.IsZero() {
		t.Fatalf("%s credits still held after the takeover", h)
	}
	// Only the third address was charged after the death: the replay of
	// the second returned its committed outcome.
	balAfter, err := dead.kl.Credits.Balance(ctx, j.AccountID)
	if err != nil {
		t.Fatal(err)
	}
	if d := balBefore.Sub(balAfter); !d.Equal(credits.AmountFromInt(1)) {
		t.Fatalf("balance fell by %s after the takeover, want 1", d)
	}
	if err := dead.save(ctx, j); !errors.Is(err, errLeaseLost) {
		t.Fatalf("dead instance's save: %v, want errLeaseLost", err)
	}
}

// A live job whose instance died before recording its holds is marked
// failed, uncharged, when its lease ends (found by the sweeper).
func TestJobLeaseTakeoverWithoutHolds(t *testing.T) {
	dead, _, j := newBatchAPI(t, "a@example.com")
	later := func() time.Time { return time.Now().Add(jobLease + time.Second) }
	alive := *dead
	alive.now = later
	alive.jobs = newJobs(context.Background(), later, dead.jobs.store)
	if err := alive.sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := alive.jobs.store.get(context.Background(), j.AccountID, j.ID, later())
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != JobFailed || !r.Charged.IsZero() || len(r.Results) != 0 {
		t.Fatalf("job %+v, want failed and uncharged", r)
	}
}

// Two instances on one PostgreSQL schema: a job created on one is read,
// and long-polled to completion, on the other.
func TestJobAcrossInstancesPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := openInproc(t, "", dsn, io.Discard, time.Now)
	b := openInproc(t, "", dsn, io.Discard, time.Now)
	tn := a.newTenant(t, "Shared") // submits a job on a and waits for it
	code, v := jobOf(t, b, tn.key, tn.jobID, "")
	if code != 200 || v.Status != JobCompleted || v.Total != 2 || !v.CreditsCharged.Equal(credits.AmountFromInt(2)) {
		t.Fatalf("on the other instance: %d %+v", code, v)
	}
	rec := e2e.Serve(a.h, "POST", "/v1/verify/batch", "", "Bearer "+tn.key, []byte(`{"emails":["x@example.com","y@example.com","z@example.com"]}`))
	if rec.Code != 202 || !strings.Contains(rec.Body.String(), "job_") {
		t.Fatalf("submit: %d %s", rec.Code, rec.Body)
	}
	var sub struct {
		Data struct {
			JobID string `json:"job_id"`
		} `json:"data"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &sub)
	code, v = jobOf(t, b, tn.key, sub.Data.JobID, "wait=10s")
	if code != 200 || v.Status != JobCompleted || v.Processed != 3 {
		t.Fatalf("long poll on the other instance: %d %+v", code, v)
	}
}

// A job stopped by shutdown is saved with its lease given up, and the
// next instance on the database resumes it at start (its first sweep)
// with the holds it did not use: nothing is lost or charged twice.
func TestJobResumedAfterShutdown(t *testing.T) {
	s, _, j := newBatchAPI(t, "a@example.com", "b@example.com")
	ctx := context.Background()
	holds, err := s.reserve(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.jobs.store.setHolds(ctx, j.ID, s.jobs.owner, holds, time.Now().Add(jobLease)); err != nil {
		t.Fatal(err)
	}
	stopped, cancel := context.WithCancel(ctx)
	cancel()
	s.process(stopped, j, holds) // shutdown before the first address
	r, err := s.jobs.store.get(ctx, j.AccountID, j.ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != JobProcessing || !r.LeaseUntil.IsZero() || len(r.Results) != 0 {
		t.Fatalf("after shutdown: %+v", r)
	}
	if h := held(t, s, j.AccountID); !h.Equal(credits.AmountFromInt(2)) {
		t.Fatalf("held %s after shutdown, want 2 (kept for the next instance)", h)
	}
	next := *s
	next.jobs = newJobs(ctx, time.Now, s.jobs.store)
	if err := next.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	next.jobs.Wait()
	r, err = next.jobs.store.get(ctx, j.AccountID, j.ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != JobCompleted || len(r.Results) != 2 || !r.Charged.Equal(credits.AmountFromInt(2)) {
		t.Fatalf("resumed: %+v", r)
	}
	if h := held(t, s, j.AccountID); !h.IsZero() {
		t.Fatalf("%s still held", h)
	}
}
