package main

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/internal/fakeclock"
)

// heapPeak samples the live heap (runtime/metrics) until stop is closed
// and returns the highest value seen.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-stop:
				out <- peak
				return
			default:
				runtime.Gosched()
			}
		}
	}()
	return out
}

// A flood of 200 concurrent wrong-password logins — 160 for distinct
// emails, which no throttle stops, and 40 for one real account — ends in
// 401, 429 and 503 only, hashes at most HashMemoryBound at once, and leaves
// the gateway answering the right password. The heap is sampled with
// runtime/metrics; nothing is timed.
func TestLoginFloodIsBounded(t *testing.T) {
	// A frozen clock: the throttle's budgets must not refill however long
	// the hashes take on a loaded machine.
	clk := fakeclock.New(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
	g := newInprocAt(t, io.Discard, clk.Now)
	ctx := context.Background()
	const pw = "the right password"
	if _, err := g.s.kl.Signup(ctx, account.CreateParams{Name: "Owner", Email: "owner@example.com", Password: pw}); err != nil {
		t.Fatal(err)
	}
	bound := g.s.kl.Accounts.HashMemoryBound()
	if bound == 0 || bound > int64(runtime.GOMAXPROCS(0))*20<<20 {
		t.Fatalf("HashMemoryBound = %d", bound)
	}
	runtime.GC()
	base := make([]metrics.Sample, 1)
	base[0].Name = "/memory/classes/heap/objects:bytes"
	metrics.Read(base)

	stop := make(chan struct{})
	peakc := heapPeak(stop)
	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		owner401 atomic.Int32
		start    = make(chan struct{})
		wg       sync.WaitGroup
	)
	for i := range 200 {
		email := fmt.Sprintf("guess%d@example.com", i)
		if i%5 == 0 {
			email = "owner@example.com"
		}
		wg.Go(func() {
			<-start
			rec := g.serve("POST", "/v1/sessions", "", "", []byte(`{"email":"`+email+`","password":"wrong guess `+strconv.Itoa(i)+`"}`))
			switch rec.Code {
			case 429, 503:
				ra, err := strconv.Atoi(rec.Header().Get("Retry-After"))
				if err != nil || ra < 1 || ra > 60 {
					t.Errorf("%d without a sane Retry-After: %q", rec.Code, rec.Header().Get("Retry-After"))
				}
			case 401:
				if email == "owner@example.com" {
					owner401.Add(1)
				}
			default:
				t.Errorf("login flood: %d %s", rec.Code, rec.Body)
			}
			mu.Lock()
			statuses[rec.Code]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	close(stop)
	peak := <-peakc
	grew := int64(peak) - int64(base[0].Value.Uint64())
	t.Logf("statuses %v; heap %d MiB before, peak %d MiB (+%d MiB); hash bound %d MiB",
		statuses, base[0].Value.Uint64()>>20, peak>>20, grew>>20, bound>>20)
	// Finished hashes are garbage until the collector runs (GOGC=100), so
	// the heap may hold about twice the bound; 200 unbounded hashes would
	// hold up to 3.8 GiB.
	if limit := 4*bound + 32<<20; grew > limit {
		t.Fatalf("heap grew %d MiB under the flood, more than %d MiB", grew>>20, limit>>20)
	}
	if n := owner401.Load(); n > 10 {
		t.Fatalf("%d wrong passwords for one email and address were checked; the throttle allows 10 a minute", n)
	}
	// Of 40 guesses at one account from one address at most 10 were
	// checked: every other one was throttled (429) or refused by the full
	// hashing gate (503).
	if n := 40 - int(owner401.Load()); n < 30 {
		t.Fatalf("only %d of 40 guesses at one account were refused", n)
	}
	// Guessing on, one at a time, from one address: the 11th failed
	// login within the minute is throttled, and from then on the right
	// password is too — but the owner, from another address, signs in.
	login := func(remote, pw string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/v1/sessions", strings.NewReader(`{"email":"owner@example.com","password":"`+pw+`"}`))
		r.RemoteAddr = remote
		rec := httptest.NewRecorder()
		g.h.ServeHTTP(rec, r)
		return rec
	}
	guesses := 0
	for ; guesses < 11; guesses++ {
		rec := login("203.0.113.66:1234", "another wrong guess")
		if rec.Code == 429 {
			break
		}
		if rec.Code != 401 {
			t.Fatalf("guess %d: %d %s", guesses, rec.Code, rec.Body)
		}
	}
	if guesses > 10 {
		t.Fatal("11 failed logins in a row from one address were all checked")
	}
	if rec := login("203.0.113.66:1234", pw); rec.Code != 429 || !strings.Contains(rec.Body.String(), "10 failed logins per minute") {
		t.Fatalf("right password from the throttled address: %d %s", rec.Code, rec.Body)
	}
	if rec := login("198.51.100.20:4000", pw); rec.Code != 201 {
		t.Fatalf("owner from another address: %d %s", rec.Code, rec.Body)
	}
}

// The body-size check (413) runs before any throttle: oversized logins and
// sign-ups spend nothing of an address's budgets.
func TestTooLargeBeforeThrottle(t *testing.T) {
	clk := fakeclock.New(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
	g := newInprocAt(t, io.Discard, clk.Now)
	if _, err := g.s.kl.Signup(context.Background(), account.CreateParams{Name: "Owner", Email: "owner@example.com", Password: "the right password"}); err != nil {
		t.Fatal(err)
	}
	huge := `{"email":"owner@example.com","password":"` + strings.Repeat("x", maxBodyBytes) + `"}`
	for range 15 {
		if rec := g.serve("POST", "/v1/sessions", "", "", []byte(huge)); rec.Code != 413 {
			t.Fatalf("oversized login: %d", rec.Code)
		}
		if rec := g.serve("POST", "/v1/accounts", "", "", []byte(huge)); rec.Code != 413 {
			t.Fatalf("oversized sign-up: %d", rec.Code)
		}
	}
	if rec := g.serve("POST", "/v1/sessions", "", "", []byte(`{"email":"owner@example.com","password":"the right password"}`)); rec.Code != 201 {
		t.Fatalf("login after oversized requests: %d %s", rec.Code, rec.Body)
	}
	for i := range 10 {
		body := fmt.Sprintf(`{"name":"N","email":"n%d@example.com","password":"correct horse"}`, i)
		if rec := g.serve("POST", "/v1/accounts", "", "", []byte(body)); rec.Code != 201 {
			t.Fatalf("sign-up %d after oversized ones: %d %s", i, rec.Code, rec.Body)
		}
	}
	if rec := g.serve("POST", "/v1/accounts", "", "", []byte(`{"name":"N","email":"n11@example.com","password":"correct horse"}`)); rec.Code != 429 {
		t.Fatalf("11th sign-up in an hour: %d", rec.Code)
	}
}
