package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/e2e"
	"github.com/keyledger/keyledger/internal/pgtest"
)

func verifyOn(t *testing.T, g *inproc, key, email string) verifyResponse {
	t.Helper()
	rec := e2e.Serve(g.h, "POST", "/v1/verify", "", "Bearer "+key, []byte(`{"email":"`+email+`"}`))
	var env struct {
		Data verifyResponse `json:"data"`
	}
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &env) != nil {
		t.Fatalf("verify %s: %d %s", email, rec.Code, rec.Body)
	}
	return env.Data
}

// Two instances on one database price a cached result the same way: an
// address verified on one is charged the cached price (0.5) on the other,
// for that account only and for 24 hours.
func TestResultCacheAcrossInstances(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			path, dsn := "", ""
			if db == "postgres" {
				if os.Getenv(pgtest.Env) == "" {
					t.Skip(pgtest.Env + " is not set; skipping the shared cache on PostgreSQL (set it to e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
				}
				dsn = pgtest.DSN(t) // fails the test if the server cannot be reached
			} else {
				path = filepath.Join(t.TempDir(), "ev.db")
			}
			c := newClock(time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC))
			a := openInproc(t, path, dsn, io.Discard, c.now)
			b := openInproc(t, path, dsn, io.Discard, c.now)
			_, key := monthlyTenant(t, a, "cache@example.com", "starter")
			_, otherKey := monthlyTenant(t, a, "rival@example.com", "starter")
			one, half := credits.AmountFromInt(1), credits.AmountFromMinor(5, 1)

			if r := verifyOn(t, a, key, "Ada@Example.com"); r.Cached || !r.CreditsCharged.Equal(one) || r.Result.Result != Deliverable {
				t.Fatalf("first verification on instance a: %+v", r)
			}
			c.advance(time.Hour)
			if r := verifyOn(t, b, key, "ada@example.com"); !r.Cached || !r.CreditsCharged.Equal(half) || r.Result.Result != Deliverable || len(r.MXRecords) != 2 {
				t.Fatalf("same address on instance b: %+v, want the cached result at 0.5", r)
			}
			// Another account's verification is not this one's cache hit.
			if r := verifyOn(t, b, otherKey, "ada@example.com"); r.Cached || !r.CreditsCharged.Equal(one) {
				t.Fatalf("another tenant on instance b: %+v, want a full-price miss", r)
			}
			// 24 hours after the first verification the result is stale:
			// full price, and cached again from then.
			c.advance(23 * time.Hour)
			if r := verifyOn(t, b, key, "ada@example.com"); r.Cached || !r.CreditsCharged.Equal(one) {
				t.Fatalf("after 24 hours: %+v, want a full-price miss", r)
			}
			if r := verifyOn(t, a, key, "ada@example.com"); !r.Cached || !r.CreditsCharged.Equal(half) {
				t.Fatalf("re-verified result on instance a: %+v, want cached", r)
			}
		})
	}
}

// The cache prunes expired rows and the oldest rows beyond its bound, in
// bounded statements, on every store under test.
func TestResultCachePruning(t *testing.T) {
	for name, pair := range testStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st, other := pair[0], pair[1]
			c := newClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			put := func(acct, email string) {
				t.Helper()
				if err := st.cacheResult(ctx, acct, email, Result{Email: email, Result: Deliverable}, c.now()); err != nil {
					t.Fatal(err)
				}
			}
			for _, e := range []string{"a@x.com", "b@x.com", "c@x.com", "d@x.com", "e@x.com"} {
				put("usr_old", e)
			}
			c.advance(time.Hour)
			for _, e := range []string{"a@x.com", "b@x.com", "c@x.com"} {
				put("usr_new", e)
			}
			c.advance(time.Minute)
			put("usr_old", "e@x.com") // re-verified: a fresh row
			c.advance(resultTTL - time.Hour - time.Minute)
			if _, hit, err := other.cachedResult(ctx, "usr_old", "a@x.com", c.now()); hit || err != nil {
				t.Fatalf("expired result served: %v %v", hit, err)
			}
			if r, hit, err := other.cachedResult(ctx, "usr_old", "e@x.com", c.now()); !hit || err != nil || r.Result != Deliverable {
				t.Fatalf("re-verified result: %+v %v %v", r, hit, err)
			}
			var got []int
			for range 4 {
				n, err := st.pruneResults(ctx, c.now(), 2)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, n)
			}
			if want := []int{2, 2, 0, 0}; !equalInts(got, want) {
				t.Fatalf("pruned %v, want %v", got, want)
			}
			// Four fresh rows, bound 1: the oldest go first, 2 a statement.
			got = got[:0]
			for range 3 {
				n, err := st.trimResults(ctx, 1, 2)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, n)
			}
			if want := []int{2, 1, 0}; !equalInts(got, want) {
				t.Fatalf("trimmed %v, want %v", got, want)
			}
			if _, hit, _ := other.cachedResult(ctx, "usr_old", "e@x.com", c.now()); !hit {
				t.Fatal("the newest result was trimmed")
			}
			st.maxResults = 0
			if err := st.sweepResults(ctx, c.now()); err != nil {
				t.Fatal(err)
			}
			if _, hit, _ := other.cachedResult(ctx, "usr_old", "e@x.com", c.now()); hit {
				t.Fatal("sweep with bound 0 left a row")
			}
		})
	}
}

// A cache that cannot be read fails the verification uncharged, rather
// than charging a price that may be wrong.
func TestResultCacheUnreadable(t *testing.T) {
	c := newClock(time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC))
	g := openInproc(t, filepath.Join(t.TempDir(), "ev.db"), "", io.Discard, c.now)
	a, key := monthlyTenant(t, g, "broken@example.com", "starter")
	getCredits(t, g, key)
	before, err := g.s.kl.Credits.Balance(context.Background(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.s.jobs.store.db.Close(); err != nil {
		t.Fatal(err)
	}
	rec := e2e.Serve(g.h, "POST", "/v1/verify", "", "Bearer "+key, []byte(`{"email":"ada@example.com"}`))
	var env envelope
	if rec.Code < 500 || json.Unmarshal(rec.Body.Bytes(), &env) != nil || env.Success || env.Error == nil {
		t.Fatalf("verify with the cache unreadable: %d %s", rec.Code, rec.Body)
	}
	after, err := g.s.kl.Credits.Balance(context.Background(), a.ID)
	if err != nil || !after.Equal(before) {
		t.Fatalf("balance %s → %s (%v): charged without a price", before, after, err)
	}
}
