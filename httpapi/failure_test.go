package httpapi_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/httpapi"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/store/storefault"
)

// A store that is down is a 503 with Retry-After, and the handler never
// runs: nothing is served that could not be metered.
func TestStoreDownIs503WithRetryAfter(t *testing.T) {
	fs := storefault.New(store.Driver(memstore.New()), nil)
	e := newEnv(t, backend{"faulty", func(testing.TB) store.Store { return fs }})
	var served atomic.Int64
	h := httpapi.Middleware(e.kl, &httpapi.Options{Request: modelRequest})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
	}))
	fs.SetRules(storefault.Rule{Methods: []string{"ApplySpends"}, Mode: storefault.Before})
	w := e.do(h, "POST", "/v1/chat", e.raw.Reveal(), nil)
	fs.SetRules()
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" || errorCode(t, w) != httpapi.CodeUnavailable {
		t.Fatalf("store down: %d Retry-After %q %s, want 503, 1, %s", w.Code, w.Header().Get("Retry-After"), w.Body, httpapi.CodeUnavailable)
	}
	if served.Load() != 0 {
		t.Fatal("the handler ran although the request could not be held")
	}
	if w := e.do(h, "POST", "/v1/chat", e.raw.Reveal(), nil); w.Code != 200 || served.Load() != 1 {
		t.Fatalf("store back: %d %s", w.Code, w.Body)
	}
}

// A client's request id names the request: a retry after completion is a
// 409 and charged once; the id comes back in X-Request-Id; a malformed id
// is a 400.
func TestClientRequestIDChargesOnce(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		h := httpapi.Middleware(e.kl, &httpapi.Options{Request: modelRequest})(ok)
		send := func(header, id string) *httptest.ResponseRecorder {
			r := httptest.NewRequest("POST", "/v1/chat", strings.NewReader("{}"))
			r.Header.Set("Authorization", "Bearer "+e.raw.Reveal())
			r.Header.Set(header, id)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			return w
		}
		before := e.balance(t)
		w := send("Idempotency-Key", "client-req-0001")
		if w.Code != 200 || w.Header().Get("X-Request-Id") != "client-req-0001" {
			t.Fatalf("first: %d, X-Request-Id %q", w.Code, w.Header().Get("X-Request-Id"))
		}
		charged := before.Sub(e.balance(t))
		if !charged.IsPositive() {
			t.Fatalf("first request charged %s", charged)
		}
		if w := send("X-Request-Id", "client-req-0001"); w.Code != http.StatusConflict || errorCode(t, w) != httpapi.CodeDuplicateRequest {
			t.Fatalf("retry of a completed request: %d %s, want 409 %s", w.Code, w.Body, httpapi.CodeDuplicateRequest)
		}
		if got := before.Sub(e.balance(t)); !got.Equal(charged) {
			t.Fatalf("charged %s after the retry, want %s once", got, charged)
		}
		for _, bad := range []string{"has space", strings.Repeat("x", httpapi.MaxRequestIDLen+1), "ünïcode"} {
			if w := send("Idempotency-Key", bad); w.Code != 400 {
				t.Fatalf("request id %q: %d, want 400", bad, w.Code)
			}
		}
		if got := before.Sub(e.balance(t)); !got.Equal(charged) {
			t.Fatalf("refused ids charged: %s, want %s", got, charged)
		}
	})
}

// A Complete that fails for good (the store stayed down past its deadline)
// aborts the response: the client never gets a complete answer whose
// usage was not recorded.
func TestFailedCompleteAbortsTheResponse(t *testing.T) {
	fs := storefault.New(store.Driver(memstore.New()), nil)
	e := newEnv(t, backend{"faulty", func(testing.TB) store.Store { return fs }})
	kl, err := keyledger.New(store.Wrap(fs), &keyledger.Options{Now: e.clk.Now, Prices: e.kl.Prices, CompleteTimeout: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close(context.Background())
	h := httpapi.Middleware(kl, &httpapi.Options{Request: modelRequest, Logger: slog.New(slog.DiscardHandler)})(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fs.SetRules(storefault.Rule{Methods: []string{"MeterUsage"}, Mode: storefault.Before})
			io.WriteString(w, "the answer")
		}))
	defer fs.SetRules()
	var p any
	func() {
		defer func() { p = recover() }()
		e.do(h, "POST", "/v1/chat", e.raw.Reveal(), nil)
	}()
	if p != http.ErrAbortHandler {
		t.Fatalf("a request whose usage could not be recorded ended with %v, want the http.ErrAbortHandler panic", p)
	}
}

// FuzzRequestIDHeader: any Idempotency-Key value is either a valid id,
// used and echoed, or refused with a 400; a free request replayed under a
// used id is still answered (its second record is refused by the meter's
// idempotency key, and logged).
func FuzzRequestIDHeader(f *testing.F) {
	for _, s := range []string{"req-1", "req-1", "", " ", "a:b.c_d-e", strings.Repeat("z", 129), "ü", "\x00"} {
		f.Add(s)
	}
	e := newEnv(f, backends[0])
	ent := "enterprise" // no rate limits: every call gets an answer about its id
	if _, err := e.kl.UpdateAccount(context.Background(), e.account.ID, account.UpdateParams{Plan: &ent}); err != nil {
		f.Fatal(err)
	}
	h := httpapi.Middleware(e.kl, &httpapi.Options{Logger: slog.New(slog.DiscardHandler)})(ok)
	f.Fuzz(func(t *testing.T, id string) {
		r := httptest.NewRequest("GET", "/v1/free", nil)
		r.Header.Set("Authorization", "Bearer "+e.raw.Reveal())
		r.Header["Idempotency-Key"] = []string{id}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch {
		case id == "":
			if w.Code != 200 || w.Header().Get("X-Request-Id") != "" {
				t.Fatalf("no id: %d %q", w.Code, w.Header().Get("X-Request-Id"))
			}
		case httpapi.ValidRequestID(id):
			if w.Code != 200 || w.Header().Get("X-Request-Id") != id {
				t.Fatalf("valid id %q: %d, echoed %q", id, w.Code, w.Header().Get("X-Request-Id"))
			}
			if len(id) > httpapi.MaxRequestIDLen {
				t.Fatalf("an id of %d bytes accepted", len(id))
			}
		default:
			if w.Code != 400 {
				t.Fatalf("invalid id %q: %d, want 400", id, w.Code)
			}
		}
	})
}
