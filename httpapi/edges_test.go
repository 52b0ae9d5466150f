package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/httpapi"
	"github.com/keyledger/keyledger/usage"
)

// modelRequest reserves a test-model call: 10 prompt tokens and up to 100
// completion tokens (21 at 0.1 and 0.2 a token).
func modelRequest(*http.Request) (keyledger.Request, error) {
	return keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 100}, nil
}

func onlyRecord(t *testing.T, e *env) usage.Record {
	t.Helper()
	pg, err := e.kl.Usage.List(context.Background(), usage.ListQuery{AccountID: e.account.ID, Limit: 10})
	if err != nil || len(pg.Records) != 1 {
		t.Fatalf("records %+v %v", pg, err)
	}
	return pg.Records[0]
}

// A handler that answers 200 for a model call but reports no usage (a
// careless handler, an upstream without usage) pays its reservation, not ₹0.
func TestSuccessWithoutUsageChargesTheReservation(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		h := httpapi.Middleware(e.kl, &httpapi.Options{Request: modelRequest})(ok)
		if w := e.do(h, "POST", "/v1/chat", e.raw.Reveal(), nil); w.Code != 200 {
			t.Fatalf("status %d %s", w.Code, w.Body)
		}
		rec := onlyRecord(t, e)
		if rec.PromptTokens != 10 || rec.CompletionTokens != 100 || !rec.Cost.Equal(credits.NewAmount(decimal.NewFromInt(21))) || rec.Metadata["usage"] != "reservation" {
			t.Fatalf("record %+v", rec)
		}
		if got := e.balance(t); !got.Equal(credits.NewAmount(decimal.NewFromInt(29))) {
			t.Fatalf("balance %s, want 29", got)
		}
	})
}

// A failed or free request is not charged the reservation.
func TestFailureWithoutUsageIsFree(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		h := httpapi.Middleware(e.kl, &httpapi.Options{Request: modelRequest})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "upstream down", http.StatusBadGateway)
		}))
		if w := e.do(h, "POST", "/v1/chat", e.raw.Reveal(), nil); w.Code != 502 {
			t.Fatalf("status %d", w.Code)
		}
		if rec := onlyRecord(t, e); !rec.Cost.IsZero() {
			t.Fatalf("record %+v", rec)
		}
		if got := e.balance(t); !got.Equal(credits.NewAmount(decimal.NewFromInt(50))) {
			t.Fatalf("balance %s, want 50", got)
		}
	})
}

// A stream the balance cannot fund is stopped through its context with
// ErrBudgetExhausted; that is not a revoked key, and what it delivered is
// charged.
func TestBudgetExhaustedIsNotAKeyInvalidation(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		var delivered int64
		h := httpapi.Middleware(e.kl, &httpapi.Options{Request: func(*http.Request) (keyledger.Request, error) {
			return keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 10_000, HoldCompletionTokens: 50}, nil
		}})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := httpapi.FromContext(r.Context())
			for r.Context().Err() == nil {
				delivered += 10
				_, _ = w.Write([]byte("tokens "))
				if err := info.Grant.Progress(r.Context(), keyledger.Delivered{PromptTokens: 10, CompletionTokens: delivered}); err != nil {
					if !errors.Is(err, keyledger.ErrBudgetExhausted) {
						t.Error(err)
					}
					break
				}
			}
			if cause := context.Cause(r.Context()); !errors.Is(cause, keyledger.ErrBudgetExhausted) {
				t.Errorf("handler context cause %v", cause)
			}
			info.Report(keyledger.Outcome{PromptTokens: 10, CompletionTokens: delivered})
		}))
		if w := e.do(h, "POST", "/v1/chat", e.raw.Reveal(), nil); w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
		rec := onlyRecord(t, e)
		want := decimal.NewFromInt(1).Add(decimal.NewFromFloat(0.2).Mul(decimal.NewFromInt(delivered)))
		if rec.ErrorType != "" || rec.CompletionTokens != delivered || !rec.Cost.Decimal().Equal(want) {
			t.Fatalf("record %+v, delivered %d", rec, delivered)
		}
		// The balance of 50 funds 245 tokens; the stream stopped within one chunk of it.
		if delivered < 245 || delivered > 255 {
			t.Fatalf("stopped after %d tokens", delivered)
		}
	})
}

// An account in debt is refused with a 402 that names the debt.
func TestDebtIsA402NamingIt(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		g, err := e.kl.Authorize(ctx, e.raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 10})
		if err != nil {
			t.Fatal(err)
		}
		// The upstream ignored the limit: 260 tokens for 53, on a balance of 50.
		if res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 10, CompletionTokens: 260}); err != nil || !res.Charged.Equal(credits.NewAmount(decimal.NewFromInt(53))) {
			t.Fatalf("Complete: %+v %v", res, err)
		}
		h := httpapi.Middleware(e.kl, &httpapi.Options{Request: modelRequest})(ok)
		w := e.do(h, "POST", "/v1/chat", e.raw.Reveal(), strings.NewReader("{}"))
		var body struct {
			Error struct{ Code, Type, Message string } `json:"error"`
		}
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != 402 || body.Error.Code != httpapi.CodeInsufficientQuota || !strings.Contains(body.Error.Message, "owes 3 ") {
			t.Fatalf("in debt: %d %s", w.Code, w.Body)
		}
	})
}

// Every response to an identified key carries its rate-limit state, the
// refusals included; a request with an unknown key gets none, and its 401
// comes before any complaint about the body.
func TestRateLimitHeadersOnEveryRefusalOfAKnownKey(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		narrow, _, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: e.account.ID, Name: "narrow", Models: []string{"other-model"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name   string
			key    string
			req    func(*http.Request) (keyledger.Request, error)
			status int
		}{
			{"bad body", e.raw.Reveal(), func(*http.Request) (keyledger.Request, error) {
				return keyledger.Request{}, &httpapi.RequestError{Message: "bad"}
			}, 400},
			{"unknown model", e.raw.Reveal(), func(*http.Request) (keyledger.Request, error) {
				return keyledger.Request{Model: "nope"}, nil
			}, 404},
			{"model not allowed", narrow.Reveal(), modelRequest, 403},
			{"too large", e.raw.Reveal(), func(*http.Request) (keyledger.Request, error) {
				return keyledger.Request{Model: "test-model", MaxCompletionTokens: 20_000}, nil
			}, 400},
			{"insufficient funds", e.raw.Reveal(), func(*http.Request) (keyledger.Request, error) {
				return keyledger.Request{Model: "test-model", MaxCompletionTokens: 9_000}, nil
			}, 402},
		} {
			h := httpapi.Middleware(e.kl, &httpapi.Options{Request: c.req})(ok)
			w := e.do(h, "POST", "/v1/chat", c.key, nil)
			if w.Code != c.status || w.Header().Get("X-Ratelimit-Limit-Requests") != "60" || w.Header().Get("X-Ratelimit-Remaining-Requests") == "" || w.Header().Get("X-Ratelimit-Reset") == "" {
				t.Errorf("%s: %d, headers %v", c.name, w.Code, w.Header())
			}
		}
		bad := httpapi.Middleware(e.kl, &httpapi.Options{Request: func(*http.Request) (keyledger.Request, error) {
			return keyledger.Request{}, &httpapi.RequestError{Message: "bad"}
		}})(ok)
		if w := e.do(bad, "POST", "/v1/chat", "kl_live_notakey", nil); w.Code != 401 || w.Header().Get("X-Ratelimit-Limit-Requests") != "" {
			t.Errorf("unknown key with a bad body: %d, headers %v", w.Code, w.Header())
		}
		// Reading the budgets took nothing: 60 requests still fit.
		free := httpapi.Middleware(e.kl, nil)(ok)
		for i := range 60 {
			if w := e.do(free, "GET", "/v1/free", e.raw.Reveal(), nil); w.Code != 200 {
				t.Fatalf("request %d after the refusals: %d", i+1, w.Code)
			}
		}
	})
}

// A request refused after its key was identified — an unknown model, a
// model the key may not use, no funds — is in the request log with its
// status and error code, and charges nothing; a key error and a bad body
// are not recorded.
func TestRefusalsOfAKnownKeyAreRecorded(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		narrow, _, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: e.account.ID, Name: "narrow", Models: []string{"other-model"}})
		if err != nil {
			t.Fatal(err)
		}
		before := e.balance(t)
		for _, c := range []struct {
			key    string
			req    func(*http.Request) (keyledger.Request, error)
			status int
		}{
			{e.raw.Reveal(), func(*http.Request) (keyledger.Request, error) { return keyledger.Request{Model: "nope"}, nil }, 404},
			{narrow.Reveal(), modelRequest, 403},
			{e.raw.Reveal(), func(*http.Request) (keyledger.Request, error) {
				return keyledger.Request{Model: "test-model", MaxCompletionTokens: 9_000}, nil
			}, 402},
			{e.raw.Reveal(), func(*http.Request) (keyledger.Request, error) {
				return keyledger.Request{}, &httpapi.RequestError{Message: "bad"}
			}, 400},
			{"kl_live_notakey", modelRequest, 401},
		} {
			h := httpapi.Middleware(e.kl, &httpapi.Options{Request: c.req})(ok)
			if w := e.do(h, "POST", "/v1/chat", c.key, nil); w.Code != c.status {
				t.Fatalf("want %d, got %d", c.status, w.Code)
			}
		}
		page, err := e.kl.Usage.List(ctx, usage.ListQuery{AccountID: e.account.ID, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		got := map[int]string{}
		for _, r := range page.Records {
			got[r.StatusCode] = r.ErrorType
			if !r.Cost.IsZero() || r.Billable() {
				t.Errorf("a refusal was billable: %+v", r)
			}
		}
		want := map[int]string{404: "model_not_found", 403: "model_not_allowed", 402: "insufficient_quota"}
		if len(got) != len(want) {
			t.Fatalf("recorded %v, want %v", got, want)
		}
		for st := range want {
			if got[st] == "" {
				t.Errorf("status %d not recorded with its error code: %v", st, got)
			}
		}
		if !e.balance(t).Equal(before) {
			t.Fatalf("refusals charged: %s → %s", before, e.balance(t))
		}
	})
}

// A key that floods refused requests (an unknown model is refused before
// the rate limit) gets its refusals recorded only up to the plan's request
// rate: the flood cannot turn every refusal into a store write, and the
// refusals take nothing from the request budget.
func TestRefusalLogIsBounded(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		h := httpapi.Middleware(e.kl, &httpapi.Options{Request: func(*http.Request) (keyledger.Request, error) {
			return keyledger.Request{Model: "no-such-model"}, nil
		}})(ok)
		for range 200 {
			if w := e.do(h, "POST", "/v1/chat", e.raw.Reveal(), nil); w.Code != 404 {
				t.Fatalf("unknown model: %d", w.Code)
			}
		}
		pg, err := e.kl.Usage.List(context.Background(), usage.ListQuery{AccountID: e.account.ID, Limit: 500})
		if err != nil || len(pg.Records) != 60 {
			t.Fatalf("%d refusals recorded (%v), want the free plan's 60 a minute", len(pg.Records), err)
		}
		free := httpapi.Middleware(e.kl, nil)(ok)
		if w := e.do(free, "GET", "/v1/free", e.raw.Reveal(), nil); w.Code != 200 {
			t.Fatalf("a request after the refused flood: %d", w.Code)
		}
	})
}
