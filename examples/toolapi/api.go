package main

import (
	"bytes"
	"errors"
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
	"github.com/keyledger/keyledger/httpapi"
)

// api serves OpenRush's /v1/me routes and the tools.
type api struct {
	kl            *keyledger.KeyLedger
	log           *slog.Logger
	upstream      Upstream
	creditsPerUSD int64
	now           func() time.Time // the clock keyledger runs on
	dash          http.Handler     // the customer dashboard at dashboardPath
}

// errorBody is OpenRush's error shape: {"error":{"type","code","message"}}.
type errorBody struct {
	Error struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// errorWriter renders every classified error (the middleware's and the
// handlers') in one shape.
var errorWriter = httpapi.ErrorWriterFunc(func(w http.ResponseWriter, _ *http.Request, e httpapi.Error) {
	var b errorBody
	b.Error.Type, b.Error.Code, b.Error.Message = e.Type, e.Code, e.Message
	httpapi.WriteJSON(w, e, b)
})

func (s *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := jsonapi.Classify(err)
	if e.Status >= 500 {
		s.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	errorWriter.WriteError(w, r, e)
}

func (s *api) ok(w http.ResponseWriter, status int, v any) {
	httpapi.WriteJSON(w, httpapi.Error{Status: status}, v)
}

// route is one registered route ("METHOD /path" pattern and handler). The
// table is the single source of the router; tests enumerate it.
type route struct {
	pattern string
	h       http.Handler
}

// routeTable lists every route of the API.
func (s *api) routeTable() []route {
	paid := httpapi.Middleware(s.kl, &httpapi.Options{Request: toolRequest, Errors: errorWriter, Logger: s.log})
	return []route{
		{"GET /v1/me/credits", s.auth(s.getCredits)},
		{"POST /v1/me/credits/purchase", s.auth(s.purchase)},
		{"GET /v1/me/api-credentials", s.auth(s.listCredentials)},
		{"POST /v1/me/api-credentials", s.auth(s.createCredential)},
		{"POST /v1/me/api-credentials/{id}/revoke", s.auth(s.revokeCredential)},
		{"GET /v1/me/usage", s.auth(s.listUsage)},
		{"POST /v1/tools/inspect_domain", paid(http.HandlerFunc(s.inspectDomain))},
		{"POST /v1/tools/keyword_volume", paid(http.HandlerFunc(s.keywordVolume))},
	}
}

func (s *api) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routeTable() {
		mux.Handle(rt.pattern, rt.h)
	}
	if s.dash != nil {
		mux.Handle(dashboardPath+"/", s.dash)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, jsonapi.ErrNotFound)
	})
	return jsonapi.LimitBody(errorWriter)(mux)
}

// auth verifies the request's API key for a free management route.
func (s *api) auth(h func(http.ResponseWriter, *http.Request, apikey.Verified)) http.HandlerFunc {
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
		h(w, r, v)
	}
}

// GET /v1/me/credits → {balance}.
func (s *api) getCredits(w http.ResponseWriter, r *http.Request, v apikey.Verified) {
	bal, err := s.kl.Credits.Balance(r.Context(), v.AccountID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.ok(w, http.StatusOK, map[string]credits.Amount{"balance": bal})
}

// purchaseRequest is the body of POST /v1/me/credits/purchase.
type purchaseRequest struct {
	AmountUSD jsonNumber `json:"amount_usd"`
}

// jsonNumber accepts a JSON number only (not a string holding one).
type jsonNumber string

func (n *jsonNumber) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || !(b[0] == '-' || b[0] >= '0' && b[0] <= '9') {
		return errNotNumber
	}
	*n = jsonNumber(b)
	return nil
}

var errNotNumber = errors.New("amount_usd must be a number")

// maxPurchaseUSD bounds one simulated purchase.
const maxPurchaseUSD = 10_000

// parsePurchase validates a purchase body: amount_usd a positive multiple
// of 10 up to maxPurchaseUSD.
func parsePurchase(b []byte) (int64, error) {
	var req purchaseRequest
	if err := jsonapi.DecodeBytes(b, &req); err != nil {
		return 0, err
	}
	bad := jsonapi.Invalidf("amount_usd must be a multiple of 10 between 10 and %d.", maxPurchaseUSD)
	if req.AmountUSD == "" {
		return 0, bad
	}
	a, err := credits.ParseAmount(string(req.AmountUSD))
	if err != nil || !a.IsPositive() || !a.MultipleOf(credits.AmountFromInt(10)) || a.Cmp(credits.AmountFromInt(maxPurchaseUSD)) > 0 {
		return 0, bad
	}
	return a.Decimal().IntPart(), nil
}

// POST /v1/me/credits/purchase {amount_usd} with an Idempotency-Key header:
// a simulated checkout that credits creditsPerUSD per dollar. A replay with
// the same key and amount returns the first purchase; another amount is 409.
func (s *api) purchase(w http.ResponseWriter, r *http.Request, v apikey.Verified) {
	idem := r.Header.Get("Idempotency-Key")
	if idem == "" || len(idem) > 200 || !utf8.ValidString(idem) {
		s.fail(w, r, jsonapi.Invalid("An Idempotency-Key header (1-200 characters) is required."))
		return
	}
	body, _ := io.ReadAll(r.Body)
	usd, err := parsePurchase(body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	amount := credits.AmountFromInt(usd * s.creditsPerUSD)
	e, err := s.kl.Credits.Purchase(r.Context(), credits.CreditParams{
		AccountID: v.AccountID, Amount: amount, Reference: "simulated-checkout",
		Description: "Credit purchase (simulated checkout)", IdempotencyKey: "purchase:" + idem,
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	bal, err := s.kl.Credits.Balance(r.Context(), v.AccountID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.ok(w, http.StatusOK, map[string]any{
		"transaction_id": e.ID, "amount_usd": usd, "credits_added": e.Amount, "balance": bal,
	})
}

// credentialJSON is OpenRush's api_credential item.
type credentialJSON struct {
	ID         string     `json:"id"`
	AccountID  string     `json:"account_id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	IsActive   bool       `json:"is_active"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
}

func stamp(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }

func optStamp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	ts := stamp(t)
	return &ts
}

func (s *api) credential(k apikey.APIKey) credentialJSON {
	now := s.now()
	return credentialJSON{
		ID: k.ID, AccountID: k.AccountID, Name: k.Name, Prefix: k.Hint + "...",
		IsActive:  k.Status == apikey.StatusActive && (k.ExpiresAt.IsZero() || k.ExpiresAt.After(now)),
		CreatedAt: stamp(k.CreatedAt), LastUsedAt: optStamp(k.LastUsedAt), ExpiresAt: optStamp(k.ExpiresAt),
	}
}

// GET /v1/me/api-credentials → {data:[item]}, every credential of the
// account in creation order, revoked ones included; never a raw key.
func (s *api) listCredentials(w http.ResponseWriter, r *http.Request, v apikey.Verified) {
	out := []credentialJSON{}
	cursor := ""
	for {
		pg, err := s.kl.Keys.List(r.Context(), v.AccountID, apikey.ListParams{Cursor: cursor, Limit: 500})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, k := range pg.Keys {
			out = append(out, s.credential(k))
		}
		if pg.NextCursor == "" {
			break
		}
		cursor = pg.NextCursor
	}
	s.ok(w, http.StatusOK, map[string]any{"data": out})
}

// createCredentialRequest is the body of POST /v1/me/api-credentials.
type createCredentialRequest struct {
	Name      string     `json:"name"`
	ExpiresAt *time.Time `json:"expires_at"`
}

func parseCreateCredential(b []byte) (createCredentialRequest, error) {
	var req createCredentialRequest
	if err := jsonapi.DecodeBytes(b, &req); err != nil {
		return req, err
	}
	n := utf8.RuneCountInString(strings.TrimSpace(req.Name))
	if n < 1 || n > 120 {
		return req, jsonapi.Invalid("name must be 1-120 characters.")
	}
	return req, nil
}

// POST /v1/me/api-credentials {name, expires_at?} → 201 {key, api_credential}.
// The caller's key needs the manage scope (403 otherwise).
func (s *api) createCredential(w http.ResponseWriter, r *http.Request, v apikey.Verified) {
	body, _ := io.ReadAll(r.Body)
	req, err := parseCreateCredential(body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p := apikey.CreateParams{Name: req.Name}
	if req.ExpiresAt != nil {
		p.ExpiresAt = *req.ExpiresAt
	}
	// The caller needs the manage scope; the new key gets at most its
	// scopes and is revoked with it.
	raw, k, err := s.kl.Keys.CreateChild(r.Context(), &v, p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.ok(w, http.StatusCreated, map[string]any{"key": raw.Reveal(), "api_credential": s.credential(k)})
}

// POST /v1/me/api-credentials/{id}/revoke → {api_credential}. The caller's
// key needs the manage scope (403 otherwise); the credentials it created
// are revoked with it. Another account's credential is 404. The key fails on its very next request,
// and requests running with it are cancelled.
func (s *api) revokeCredential(w http.ResponseWriter, r *http.Request, v apikey.Verified) {
	if err := v.CanManage(""); err != nil {
		s.fail(w, r, err)
		return
	}
	k, err := s.kl.Keys.Revoke(r.Context(), v.AccountID, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.ok(w, http.StatusOK, map[string]any{"api_credential": s.credential(k)})
}

// toolRequest describes a tool call to the middleware: the tool's endpoint
// is its price (one unit). A body the tool cannot use is refused with a 400
// before anything is reserved.
func toolRequest(r *http.Request) (keyledger.Request, error) {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	var err error
	switch r.URL.Path {
	case "/v1/tools/inspect_domain":
		_, err = parseInspectDomain(b)
	case "/v1/tools/keyword_volume":
		_, err = parseKeywordVolume(b)
	}
	if err != nil {
		e := jsonapi.Classify(err)
		return keyledger.Request{}, &httpapi.RequestError{Message: e.Message}
	}
	return keyledger.Request{Endpoint: r.URL.Path, Method: r.Method, Units: 1}, nil
}

// upstreamFailed reports a failed upstream call: recorded with its error,
// not charged.
func (s *api) upstreamFailed(w http.ResponseWriter, r *http.Request, cost credits.Amount, err error) {
	httpapi.FromContext(r.Context()).Report(keyledger.Outcome{
		ErrorType: "upstream_error", ErrorMessage: err.Error(), UpstreamCost: cost,
	})
	var b errorBody
	b.Error.Type, b.Error.Code, b.Error.Message = "api_error", "upstream_error", "The data provider failed; you were not charged."
	httpapi.WriteJSON(w, httpapi.Error{Status: http.StatusBadGateway}, b)
}

// POST /v1/tools/inspect_domain {domain}: 3 credits.
func (s *api) inspectDomain(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	req, err := parseInspectDomain(b)
	if err != nil { // checked by toolRequest already
		s.fail(w, r, err)
		return
	}
	rep, cost, err := s.upstream.InspectDomain(r.Context(), req.Domain)
	if err != nil {
		s.upstreamFailed(w, r, cost, err)
		return
	}
	s.charged(w, r, rep, cost)
}

// POST /v1/tools/keyword_volume {keyword}: 1 credit.
func (s *api) keywordVolume(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	req, err := parseKeywordVolume(b)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rep, cost, err := s.upstream.KeywordVolume(r.Context(), req.Keyword)
	if err != nil {
		s.upstreamFailed(w, r, cost, err)
		return
	}
	s.charged(w, r, rep, cost)
}

// charged reports a successful tool call and answers its data with
// credits_charged: the price book's cost of one call of the route, which is
// what the middleware charges for it once the handler returns.
func (s *api) charged(w http.ResponseWriter, r *http.Request, data any, upstreamCost credits.Amount) {
	price, err := s.kl.Prices.OperationCost(r.URL.Path, 1, 0)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	httpapi.FromContext(r.Context()).Report(keyledger.Outcome{UpstreamCost: upstreamCost})
	s.ok(w, http.StatusOK, map[string]any{"data": data, "credits_charged": price})
}
