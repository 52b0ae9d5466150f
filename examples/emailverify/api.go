package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/jsonapi"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/examples/internal/subscription"
	"github.com/keyledger/keyledger/httpapi"
)

// api serves the email-verification routes.
type api struct {
	kl    *keyledger.KeyLedger
	log   *slog.Logger
	now   func() time.Time
	check *checker
	// jobs runs batch jobs; its store also keeps the verification cache
	// (ev_results), shared by every instance on the database.
	jobs *jobs
	// subs grants each account's plan credits for the current month,
	// ensured on every authenticated request (nil: none, in some tests).
	subs *subscription.Renewer
	// subCursor is where the sweeper's pass over the accounts stands
	// (only the sweeper goroutine uses it).
	subCursor string
}

// envelope is every response: {success, data} or {success:false, error}.
type envelope struct {
	Success bool       `json:"success"`
	Data    any        `json:"data,omitempty"`
	Error   *errorBody `json:"error,omitempty"`
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// errorWriter is the one table from errors to this API's envelope: the
// classification is httpapi.Classify's (extended by jsonapi for management
// errors); only the out-of-credits code is renamed to the API's own.
var errorWriter = httpapi.ErrorWriterFunc(func(w http.ResponseWriter, _ *http.Request, e httpapi.Error) {
	code := e.Code
	if code == httpapi.CodeInsufficientQuota {
		code = "insufficient_credits"
	}
	httpapi.WriteJSON(w, e, envelope{Error: &errorBody{Code: code, Message: e.Message}})
})

func (s *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := jsonapi.Classify(err)
	if e.Status >= 500 {
		s.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	errorWriter.WriteError(w, r, e)
}

func (s *api) ok(w http.ResponseWriter, status int, data any) {
	httpapi.WriteJSON(w, httpapi.Error{Status: status}, envelope{Success: true, Data: data})
}

// route is one registered route ("METHOD /path" pattern and handler). The
// table is the single source of the router; tests enumerate it.
type route struct {
	pattern string
	h       http.HandlerFunc
}

// routeTable lists every route of the API.
func (s *api) routeTable() []route {
	return []route{
		{"GET /v1/account", s.auth(s.getAccount)},
		{"GET /v1/api-keys", s.auth(s.listKeys)},
		{"POST /v1/api-keys", s.auth(s.createKey)},
		{"DELETE /v1/api-keys/{key_id}", s.auth(s.revokeKey)},
		{"POST /v1/verify", s.auth(s.verify)},
		{"POST /v1/verify/batch", s.auth(s.submitBatch)},
		{"GET /v1/verify/batch/{job_id}", s.auth(s.getBatch)},
	}
}

func (s *api) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routeTable() {
		mux.Handle(rt.pattern, rt.h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { s.fail(w, r, jsonapi.ErrNotFound) })
	return jsonapi.LimitBody(errorWriter)(mux)
}

// caller is an authenticated request's key.
type caller struct {
	raw apikey.RawKey
	apikey.Verified
}

// auth verifies the request's API key. Free routes use it alone; paid
// routes go on to kl.Authorize with the same raw key.
func (s *api) auth(h func(http.ResponseWriter, *http.Request, caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		raw, ok := httpapi.Credential(r)
		if !ok {
			s.fail(w, r, apikey.ErrMalformed)
			return
		}
		v, err := s.kl.Keys.Verify(r.Context(), apikey.RawKey(raw))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		// The month's credits before anything reads or spends them: a
		// failure is an error response, never a silently missing grant.
		if err := s.subs.EnsureID(r.Context(), v.AccountID, v.Plan); err != nil {
			s.fail(w, r, err)
			return
		}
		h(w, r, caller{raw: apikey.RawKey(raw), Verified: v})
	}
}

func stamp(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }

func optStamp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	ts := stamp(t)
	return &ts
}

// GET /v1/account: the user, credits and usage counters. Free.
func (s *api) getAccount(w http.ResponseWriter, r *http.Request, c caller) {
	ctx := r.Context()
	a, err := s.kl.Accounts.Get(ctx, c.AccountID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	led, err := s.kl.Credits.Account(ctx, c.AccountID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := s.usageCounters(ctx, a.ID, a.TimeZone)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var limit *credits.Amount
	if cap := led.Policy.MonthlyCap; cap.IsPositive() {
		limit = &cap
	}
	s.ok(w, http.StatusOK, map[string]any{
		"user": map[string]any{
			"user_id": a.ID, "email": a.Email, "name": a.Name, "plan": a.Plan,
			"status": a.Status, "created_at": stamp(a.CreatedAt),
		},
		"credits": map[string]any{"balance": led.Balance, "used_this_month": led.UsedThisMonth, "monthly_limit": limit},
		"usage":   u,
	})
}

// keyJSON is one item of GET /v1/api-keys.
type keyJSON struct {
	KeyID      string     `json:"key_id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	Status     string     `json:"status"`
}

// GET /v1/api-keys: every key of the account, revoked ones included, never
// a raw key. It needs the manage scope; a test key sees only test keys.
func (s *api) listKeys(w http.ResponseWriter, r *http.Request, c caller) {
	if err := c.CanManage(""); err != nil {
		s.fail(w, r, err)
		return
	}
	out := []keyJSON{}
	cursor := ""
	for {
		pg, err := s.kl.Keys.List(r.Context(), c.AccountID, apikey.ListParams{Cursor: cursor, Limit: 500})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, k := range pg.Keys {
			if c.Environment == apikey.EnvTest && k.Environment != apikey.EnvTest {
				continue
			}
			st := string(k.Status)
			if k.Status == apikey.StatusActive && !k.ExpiresAt.IsZero() && !k.ExpiresAt.After(s.now()) {
				st = string(apikey.StatusExpired)
			}
			out = append(out, keyJSON{KeyID: k.ID, Name: k.Name, Prefix: k.Hint, CreatedAt: stamp(k.CreatedAt), LastUsedAt: optStamp(k.LastUsedAt), Status: st})
		}
		if pg.NextCursor == "" {
			break
		}
		cursor = pg.NextCursor
	}
	s.ok(w, http.StatusOK, map[string]any{"keys": out})
}

// createKeyRequest is the body of POST /v1/api-keys.
type createKeyRequest struct {
	Name        string `json:"name"`
	Environment string `json:"environment"`
}

func parseCreateKey(b []byte) (createKeyRequest, error) {
	var req createKeyRequest
	if err := jsonapi.DecodeBytes(b, &req); err != nil {
		return req, err
	}
	if n := utf8.RuneCountInString(strings.TrimSpace(req.Name)); n < 1 || n > 120 {
		return req, jsonapi.Invalid("name must be 1-120 characters.")
	}
	switch req.Environment {
	case "":
		req.Environment = "live"
	case "live", "test":
	default:
		return req, jsonapi.Invalid(`environment must be "live" or "test".`)
	}
	return req, nil
}

// POST /v1/api-keys {name, environment?}: the raw key, shown once. The
// caller's key needs the manage scope, a test key creates only test keys,
// and the new key gets at most the caller's scopes and is revoked with it.
func (s *api) createKey(w http.ResponseWriter, r *http.Request, c caller) {
	b, _ := io.ReadAll(r.Body)
	req, err := parseCreateKey(b)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	raw, k, err := s.kl.Keys.CreateChild(r.Context(), &c.Verified, apikey.CreateParams{Name: req.Name, Type: req.Environment})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.ok(w, http.StatusCreated, map[string]any{
		"key_id": k.ID, "name": k.Name, "key": raw.Reveal(), "prefix": k.Hint,
		"environment": k.Environment, "created_at": stamp(k.CreatedAt),
	})
}

// DELETE /v1/api-keys/{key_id}: revoke at once (and the keys it created);
// another account's key is 404. It needs the manage scope, and a test key
// cannot revoke a live key.
func (s *api) revokeKey(w http.ResponseWriter, r *http.Request, c caller) {
	if err := c.CanManage(""); err != nil {
		s.fail(w, r, err)
		return
	}
	k, err := s.kl.Keys.Get(r.Context(), c.AccountID, r.PathValue("key_id"))
	if err == nil {
		err = c.CanManage(k.Environment)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if _, err := s.kl.Keys.Revoke(r.Context(), c.AccountID, k.ID); err != nil {
		s.fail(w, r, err)
		return
	}
	s.ok(w, http.StatusOK, map[string]string{"message": "API key revoked successfully"})
}

// verifyRequest is the body of POST /v1/verify.
type verifyRequest struct {
	Email string `json:"email"`
}

func parseVerify(b []byte) (string, error) {
	var req verifyRequest
	if err := jsonapi.DecodeBytes(b, &req); err != nil {
		return "", err
	}
	e := normalizeEmail(req.Email)
	if e == "" || len(e) > 320 {
		return "", jsonapi.Invalid("email must be 1-320 characters.")
	}
	return e, nil
}

// verifyResponse is the data of POST /v1/verify.
type verifyResponse struct {
	Result
	Cached         bool           `json:"cached"`
	CreditsCharged credits.Amount `json:"credits_charged"`
}

// POST /v1/verify {email}: 1 credit, 0.5 when the account verified the same
// address within 24 hours (the cached result is returned), nothing for a
// result of unknown (DNS could not answer) or with a test key.
func (s *api) verify(w http.ResponseWriter, r *http.Request, c caller) {
	b, _ := io.ReadAll(r.Body)
	email, err := parseVerify(b)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if c.Environment == apikey.EnvTest {
		// Test traffic takes the plan's rate limits like live traffic but
		// is never charged.
		if err := s.testTraffic(r, c); err != nil {
			s.fail(w, r, err)
			return
		}
		s.ok(w, http.StatusOK, verifyResponse{Result: testResult(email)})
		return
	}
	// The cache is read before authorizing: if it cannot be read, the
	// request fails uncharged rather than at a price that may be wrong.
	cached, hit, err := s.jobs.store.cachedResult(r.Context(), c.AccountID, email, s.now())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	req := keyledger.Request{Endpoint: profiles.OpVerify, Method: r.Method, Units: 1}
	if hit {
		req.CachedUnits = 1
	}
	g, err := s.kl.Authorize(r.Context(), c.raw, req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	start := s.now()
	res := cached
	if !hit {
		res = s.check.Verify(g.Context(), email)
		if res.Result != Unknown {
			s.cacheResult(r.Context(), c.AccountID, email, res)
		}
	}
	out := keyledger.Outcome{StatusCode: http.StatusOK, Units: 1, RequestBytes: int64(len(b)), Latency: s.now().Sub(start)}
	if hit {
		out.CachedUnits = 1
	}
	if res.Result == Unknown {
		out.ErrorType, out.ErrorMessage = "dns_unavailable", res.Reason
	}
	resp := verifyResponse{Result: res, Cached: hit}
	mr, err := g.Complete(context.WithoutCancel(r.Context()), out)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	resp.CreditsCharged = mr.Charged
	s.ok(w, http.StatusOK, resp)
}

// cacheResult stores a fresh result in the shared cache. A failure is
// logged, not returned: the result was charged at the full price, and the
// next verification of the address is a miss, charged in full again.
func (s *api) cacheResult(ctx context.Context, accountID, email string, res Result) {
	ctx, cancel := dbctx(ctx)
	defer cancel()
	if err := s.jobs.store.cacheResult(ctx, accountID, email, res, s.now()); err != nil {
		s.log.WarnContext(ctx, "caching a verification result failed", "account_id", accountID, "error", err)
	}
}

// testTraffic passes a test key's request through the plan's rate limits
// (one request of the key's and the account's budgets) without charging
// or metering it: the test endpoint has no price, and the grant is
// cancelled, which keeps the request counted. It returns the
// *keyledger.LimitError of a refused request (429).
func (s *api) testTraffic(r *http.Request, c caller) error {
	g, err := s.kl.Authorize(r.Context(), c.raw, keyledger.Request{Endpoint: "verify_test", Method: r.Method})
	if err != nil {
		return err
	}
	return g.Cancel(r.Context())
}
