package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/httpapi"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/store/storetest"
	"github.com/keyledger/keyledger/usage"
)

type backend struct {
	name string
	open func(t testing.TB) store.Store
}

var backends = []backend{
	{"memory", func(testing.TB) store.Store { return store.Driver(memstore.New()) }},
	{"sqlite", func(t testing.TB) store.Store {
		st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "k.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return store.Driver(st)
	}},
}

type env struct {
	kl      *keyledger.KeyLedger
	clk     *fakeclock.Clock
	account account.Account
	raw     apikey.RawKey
	key     apikey.APIKey
}

func newEnv(t testing.TB, b backend) *env {
	t.Helper()
	st := b.open(t)
	clk := fakeclock.New(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
	pb, err := usage.NewPriceBook(
		[]usage.ModelPrice{{Model: "test-model", PromptPerMillion: decimal.NewFromInt(100000), CompletionPerMillion: decimal.NewFromInt(200000)}},
		[]usage.OperationPrice{{Operation: "/v1/op", PerUnit: decimal.NewFromInt(1)}})
	if err != nil {
		t.Fatal(err)
	}
	kl, err := keyledger.New(store.Wrap(st), &keyledger.Options{Now: clk.Now, Prices: pb,
		Accounts: &account.Options{Argon2: account.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 16}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl.Close(context.Background()); st.Close() })
	ctx := context.Background()
	a, err := kl.Signup(ctx, account.CreateParams{Name: "M", Email: "m@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	raw, k, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	return &env{kl: kl, clk: clk, account: a, raw: raw, key: k}
}

func (e *env) do(h http.Handler, method, path, key string, body io.Reader) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, body)
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func (e *env) balance(t testing.TB) credits.Amount {
	b, err := e.kl.Credits.Balance(context.Background(), e.account.ID)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func errorCode(t testing.TB, w *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct {
		Error struct{ Code, Type, Message string } `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q: %v", w.Body.String(), err)
	}
	return body.Error.Code
}

func forEach(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, newEnv(t, b)) })
	}
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })

func TestHeadersAndCharge(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		h := httpapi.Middleware(e.kl, nil)(ok)
		w := e.do(h, "POST", "/v1/op", e.raw.Reveal(), strings.NewReader("payload"))
		if w.Code != 200 || w.Header().Get("X-Ratelimit-Limit-Requests") != "60" || w.Header().Get("X-Ratelimit-Remaining-Requests") != "59" {
			t.Fatalf("status %d headers %v", w.Code, w.Header())
		}
		if reset := w.Header().Get("X-Ratelimit-Reset"); reset == "" || reset < "1777" {
			t.Fatalf("reset %q", reset)
		}
		if got := e.balance(t); !got.Equal(credits.NewAmount(decimal.NewFromInt(49))) {
			t.Fatalf("balance %s, want 49", got)
		}
		pg, err := e.kl.Usage.List(context.Background(), usage.ListQuery{AccountID: e.account.ID, Limit: 10})
		if err != nil || len(pg.Records) != 1 {
			t.Fatalf("records %+v %v", pg, err)
		}
		rec := pg.Records[0]
		if rec.Endpoint != "/v1/op" || rec.Method != "POST" || rec.StatusCode != 200 || rec.RequestBytes != 7 || rec.ResponseBytes != 2 || rec.KeyID != e.key.ID {
			t.Fatalf("record %+v", rec)
		}
	})
}

// The middleware hands its handler a copy of the request: serving one
// request value twice must not chain the first body (and the grant its
// wrapper holds) into the second, and the handler still reads the body.
func TestRequestNotModified(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		var got []string
		h := httpapi.Middleware(e.kl, nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			got = append(got, string(b))
		}))
		body := strings.NewReader("payload")
		r := httptest.NewRequest("POST", "/v1/free", body)
		r.Header.Set("Authorization", "Bearer "+e.raw.Reveal())
		before, ctx := r.Body, r.Context()
		for range 2 {
			body.Reset("payload")
			h.ServeHTTP(httptest.NewRecorder(), r)
			if r.Body != before || r.Context() != ctx {
				t.Fatal("the middleware modified the caller's request")
			}
		}
		if len(got) != 2 || got[0] != "payload" || got[1] != "payload" {
			t.Fatalf("handler read %q, want the payload twice", got)
		}
	})
}

func TestRefusals(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		h := httpapi.Middleware(e.kl, nil)(ok)
		for _, c := range []struct {
			key, path string
			status    int
			code      string
		}{
			{"", "/v1/op", 401, httpapi.CodeInvalidAPIKey},
			{"kl_live_notakey", "/v1/op", 401, httpapi.CodeInvalidAPIKey},
		} {
			w := e.do(h, "GET", c.path, c.key, nil)
			if w.Code != c.status || errorCode(t, w) != c.code || w.Header().Get("Content-Type") != "application/json" {
				t.Errorf("%q: %d %s", c.key, w.Code, w.Body)
			}
		}
		// 61st request in a minute: 429 with Retry-After, not charged.
		free := httpapi.Middleware(e.kl, nil)(ok)
		for i := range 60 {
			if w := e.do(free, "GET", "/v1/free", e.raw.Reveal(), nil); w.Code != 200 {
				t.Fatalf("request %d: %d %s", i+1, w.Code, w.Body)
			}
		}
		w := e.do(h, "POST", "/v1/op", e.raw.Reveal(), nil)
		if w.Code != 429 || w.Header().Get("Retry-After") != "1" || errorCode(t, w) != httpapi.CodeRateLimited || w.Header().Get("X-Ratelimit-Remaining-Requests") != "0" {
			t.Fatalf("61st: %d %v %s", w.Code, w.Header(), w.Body)
		}
		if got := e.balance(t); !got.Equal(credits.NewAmount(decimal.NewFromInt(50))) {
			t.Fatalf("balance %s, want 50", got)
		}
	})
}

func TestRevokeCancelsInFlightAndNextIs401(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		started := make(chan struct{})
		cause := make(chan error, 1)
		slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(started)
			<-r.Context().Done() // work until the key dies
			cause <- context.Cause(r.Context())
			http.Error(w, "cancelled", 499)
		})
		h := httpapi.Middleware(e.kl, nil)(slow)
		done := make(chan *httptest.ResponseRecorder)
		go func() { done <- e.do(h, "POST", "/v1/op", e.raw.Reveal(), nil) }()
		<-started
		if _, err := e.kl.Keys.Revoke(context.Background(), e.account.ID, e.key.ID); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-cause:
			if !errors.Is(err, apikey.ErrRevoked) {
				t.Fatalf("cause %v, want ErrRevoked", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("in-flight request not cancelled by Revoke")
		}
		<-done
		w := e.do(httpapi.Middleware(e.kl, nil)(ok), "GET", "/v1/op", e.raw.Reveal(), nil)
		if w.Code != 401 || errorCode(t, w) != httpapi.CodeInvalidAPIKey {
			t.Fatalf("after revoke: %d %s", w.Code, w.Body)
		}
		if got := e.balance(t); !got.Equal(credits.NewAmount(decimal.NewFromInt(50))) {
			t.Fatalf("revoked in-flight request charged: balance %s", got)
		}
	})
}

func TestPanicReleasesHold(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		boom := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })
		h := httpapi.Middleware(e.kl, &httpapi.Options{Request: func(r *http.Request) (keyledger.Request, error) {
			return keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 10}, nil
		}})(boom)
		func() {
			defer func() {
				if p := recover(); p != "boom" {
					t.Fatalf("panic not passed on: %v", p)
				}
			}()
			e.do(h, "POST", "/v1/chat/completions", e.raw.Reveal(), nil)
		}()
		acct, err := e.kl.Credits.Account(context.Background(), e.account.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !acct.Held.IsZero() || !acct.Balance.Equal(credits.NewAmount(decimal.NewFromInt(50))) {
			t.Fatalf("after panic: held %s balance %s", acct.Held, acct.Balance)
		}
		// The request is completed, not just abandoned: it is in the
		// request log as the server error it was, charged nothing.
		rec := onlyRecord(t, e)
		if rec.StatusCode != http.StatusInternalServerError || rec.ErrorType != "handler_panic" || !rec.Cost.IsZero() {
			t.Fatalf("record of the panicked request: status %d, error %q, cost %s", rec.StatusCode, rec.ErrorType, rec.Cost)
		}
	})
}

func TestReportedTokensAreCharged(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		h := httpapi.Middleware(e.kl, &httpapi.Options{Request: func(r *http.Request) (keyledger.Request, error) {
			return keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 100}, nil
		}})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			httpapi.FromContext(r.Context()).Report(keyledger.Outcome{PromptTokens: 10, CompletionTokens: 20})
			io.WriteString(w, "{}")
		}))
		if w := e.do(h, "POST", "/v1/chat/completions", e.raw.Reveal(), nil); w.Code != 200 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		// 10×0.1 + 20×0.2 = 5
		if got := e.balance(t); !got.Equal(credits.NewAmount(decimal.NewFromInt(45))) {
			t.Fatalf("balance %s, want 45", got)
		}
	})
}

func BenchmarkMiddleware(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		e := newEnv(b, backends[0])
		h := httpapi.Middleware(e.kl, nil)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		r := httptest.NewRequest("GET", "/v1/free", nil)
		r.Header.Set("Authorization", "Bearer "+e.raw.Reveal())
		b.ReportAllocs()
		retained := storetest.RetainedHeap(b)
		for b.Loop() {
			e.clk.Advance(time.Second) // stay under 60 RPM
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != 200 {
				b.Fatal(w.Code, w.Body.String())
			}
		}
		retained(e, h)
	})
}

func TestClientGoneStillPaysForReportedUsage(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx, cancel := context.WithCancel(context.Background())
		h := httpapi.Middleware(e.kl, &httpapi.Options{Request: func(r *http.Request) (keyledger.Request, error) {
			return keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 10}, nil
		}})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			httpapi.FromContext(r.Context()).Report(keyledger.Outcome{PromptTokens: 10, CompletionTokens: 10})
			cancel() // the client disconnects before anything is written
		}))
		r := httptest.NewRequest("POST", "/v1/chat/completions", nil).WithContext(ctx)
		r.Header.Set("Authorization", "Bearer "+e.raw.Reveal())
		h.ServeHTTP(httptest.NewRecorder(), r)
		// 10×0.1 + 10×0.2 = 3
		if got := e.balance(t); !got.Equal(credits.NewAmount(decimal.NewFromInt(47))) {
			t.Fatalf("balance %s, want 47", got)
		}
	})
}
