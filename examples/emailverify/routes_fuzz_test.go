package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/e2e"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/examples/internal/server"
	"github.com/keyledger/keyledger/examples/internal/subscription"
)

// staticDNS answers example.com with two MX hosts and every other name
// with NXDOMAIN, at once.
type staticDNS struct{}

func (staticDNS) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	if name == "example.com" {
		return []*net.MX{{Host: "mx1.example.com.", Pref: 10}, {Host: "mx2.example.com.", Pref: 20}}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// inproc is the API built in-process on a SQLite file in a temporary
// directory (or a PostgreSQL database) and driven through its
// http.Handler.
type inproc struct {
	s     *api
	h     http.Handler
	close func() // stops the jobs and closes the databases; idempotent
}

func newInproc(tb testing.TB, logs io.Writer) *inproc {
	tb.Helper()
	g := openInproc(tb, filepath.Join(tb.TempDir(), "ev.db"), "", logs, time.Now)
	return g
}

// openInproc opens the API on the SQLite file path, or on the PostgreSQL
// database dsn if it is not empty, with the clock now. Its jobs are
// stopped and its databases closed by g.close or at cleanup.
func openInproc(tb testing.TB, path, dsn string, logs io.Writer, now func() time.Time) *inproc {
	tb.Helper()
	ctx := context.Background()
	env, err := server.Open(ctx, server.Config{Profile: profiles.EmailVerify,
		DB: path, Postgres: dsn, LogLevel: "debug", Stderr: logs, Now: now})
	if err != nil {
		tb.Fatal(err)
	}
	var store *jobStore
	if dsn != "" {
		store, err = openJobStorePG(ctx, dsn)
	} else {
		store, err = openJobStore(ctx, path)
	}
	if err != nil {
		tb.Fatal(err)
	}
	prof, _ := profiles.Get(profiles.EmailVerify)
	subs, err := subscription.New(env.KL, prof.MonthlyGrants, now)
	if err != nil {
		tb.Fatal(err)
	}
	jobCtx, stopJobs := context.WithCancel(ctx)
	s := &api{kl: env.KL, log: env.Log, now: now, check: newChecker(staticDNS{}, now),
		jobs: newJobs(jobCtx, now, store), subs: subs}
	var once sync.Once
	closeAll := func() {
		once.Do(func() {
			stopJobs()
			s.jobs.Wait() // jobs meter and save: before the KeyLedger and the job store close
			_ = store.Close()
			_ = env.Close(ctx)
		})
	}
	tb.Cleanup(closeAll)
	return &inproc{s: s, h: s.routes(), close: closeAll}
}

// tenant is a Professional account with a million credits, no effective
// rate limit, a live key, a test key, a spare live key (for revoke) and a
// finished batch job.
type tenant struct {
	id, key, keyID, testKey, spareKey, spareKeyID string
	jobID                                         string
}

func (g *inproc) newTenant(tb testing.TB, name string) tenant {
	tb.Helper()
	ctx := context.Background()
	a, err := g.s.kl.Signup(ctx, account.CreateParams{Name: name, Email: strings.ToLower(name) + "@example.com", Plan: "professional"})
	if err != nil {
		tb.Fatal(err)
	}
	unlimited := account.Limits{RequestsPerMinute: account.MaxPerMinute}
	if _, err := g.s.kl.UpdateAccount(ctx, a.ID, account.UpdateParams{Limits: &unlimited}); err != nil {
		tb.Fatal(err)
	}
	if _, err := g.s.kl.Credits.Adjust(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.AmountFromInt(1_000_000), IdempotencyKey: "test-adjust"}); err != nil {
		tb.Fatal(err)
	}
	t := tenant{id: a.ID}
	var testID string
	for _, k := range []struct {
		raw, id *string
		env     string
	}{{&t.key, &t.keyID, "live"}, {&t.testKey, &testID, "test"}, {&t.spareKey, &t.spareKeyID, "live"}} {
		raw, key, err := g.s.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k", Type: k.env})
		if err != nil {
			tb.Fatal(err)
		}
		*k.raw, *k.id = raw.Reveal(), key.ID
	}
	rec := e2e.Serve(g.h, "POST", "/v1/verify/batch", "", "Bearer "+t.key, []byte(`{"emails":["ada@example.com","bob@nowhere.test"]}`))
	var sub struct {
		Data struct {
			JobID string `json:"job_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &sub); err != nil || rec.Code != 202 {
		tb.Fatalf("batch: %d %s", rec.Code, rec.Body)
	}
	t.jobID = sub.Data.JobID
	if rec := e2e.Serve(g.h, "GET", "/v1/verify/batch/"+t.jobID, "wait=10s", "Bearer "+t.key, nil); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"completed"`) {
		tb.Fatalf("job: %d %s", rec.Code, rec.Body)
	}
	return t
}

// FuzzRoutes drives every route of routeTable through the real handler
// with a fuzzed body, query, credential and path id. An empty credential
// is the tenant's live key (its test key when the id is "test"), an empty
// id its spare key or finished job, so that handlers are reached past
// authentication. No 5xx, and every error is a JSON error envelope.
func FuzzRoutes(f *testing.F) {
	g := newInproc(f, io.Discard)
	t := g.newTenant(f, "Fuzz")
	routes := g.s.routeTable()
	seeds := map[string][]string{
		"POST /v1/api-keys":             {`{"name":"ci","environment":"test"}`},
		"POST /v1/verify":               {`{"email":"Ada@Example.com"}`, `{"email":"info@mailinator.com"}`},
		"POST /v1/verify/batch":         {`{"emails":["a@example.com","b@example.com"]}`},
		"GET /v1/verify/batch/{job_id}": {"wait=1ms", "wait=-1s"},
		"DELETE /v1/api-keys/{key_id}":  {``},
	}
	for i, rt := range routes {
		f.Add(uint8(i), "test", "", "", []byte(nil))
		e2e.AddRouteSeeds(f, i, "wait=31s&x=%zz", "Bearer kw_live_forged", `{"email":`, seeds[rt.pattern])
	}
	ids := map[string]string{"key_id": t.spareKeyID, "job_id": t.jobID}
	f.Fuzz(func(tt *testing.T, ri uint8, param, query, cred string, body []byte) {
		rt := routes[int(ri)%len(routes)]
		method, pattern, _ := strings.Cut(rt.pattern, " ")
		auth := cred
		if cred == "" {
			auth = "Bearer " + t.key
			if param == "test" {
				auth, param = "Bearer "+t.testKey, ""
			}
		}
		path := e2e.FillPattern(pattern, param, ids)
		e2e.CheckAnswer(tt, rt.pattern+"?"+query, e2e.Serve(g.h, method, path, query, auth, body))
	})
}

// globalRoutes are the routes without path ids and why another tenant's
// ids cannot reach them: each acts on the account of the presented key.
var globalRoutes = map[string]string{
	"GET /v1/account":       "the key's account",
	"GET /v1/api-keys":      "the key's account",
	"POST /v1/api-keys":     "creates a key of the key's account",
	"POST /v1/verify":       "charges the key's account",
	"POST /v1/verify/batch": "charges the key's account",
}

// TestCrossTenantIDsAreNotFound enumerates routeTable: every route with a
// path id called with A's key and B's key or job id is 404, and B's key
// and job are as they were; a route without ids must be in globalRoutes.
func TestCrossTenantIDsAreNotFound(t *testing.T) {
	g := newInproc(t, io.Discard)
	a, b := g.newTenant(t, "Alice"), g.newTenant(t, "Bob")
	var patterns []string
	for _, rt := range g.s.routeTable() {
		patterns = append(patterns, rt.pattern)
	}
	for _, key := range []string{a.key, a.testKey} {
		n := e2e.CrossTenant(t, patterns, globalRoutes, map[string]string{"key_id": b.spareKeyID, "job_id": b.jobID},
			func(method, _, path string) *httptest.ResponseRecorder {
				return e2e.Serve(g.h, method, path, "", "Bearer "+key, nil)
			})
		if n < 2 {
			t.Fatalf("only %d routes with ids found", n)
		}
	}
	// A's lists show nothing of B's.
	for _, p := range []string{"/v1/account", "/v1/api-keys"} {
		rec := e2e.Serve(g.h, "GET", p, "", "Bearer "+a.key, nil)
		for _, id := range []string{b.id, b.keyID, b.spareKeyID, b.jobID} {
			if strings.Contains(rec.Body.String(), id) {
				t.Errorf("A's %s shows B's %s: %s", p, id, rec.Body)
			}
		}
	}
	// B's spare key still works; B's job is still there.
	if rec := e2e.Serve(g.h, "GET", "/v1/verify/batch/"+b.jobID, "", "Bearer "+b.spareKey, nil); rec.Code != 200 {
		t.Fatalf("B's job with B's spare key: %d %s", rec.Code, rec.Body)
	}
}
