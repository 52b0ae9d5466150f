package httpapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/ratelimit"
)

// Options configure Middleware. nil means defaults.
type Options struct {
	// Request describes the request to Authorize: model, scope, token
	// estimates. It may read r.Body if it puts back an equivalent reader.
	// A *RequestError (or any error) refuses the request with a 400.
	// nil: Endpoint = r.URL.Path, Method = r.Method.
	Request func(r *http.Request) (keyledger.Request, error)
	// Errors renders refusals (OpenAIErrors by default).
	Errors ErrorWriter
	// Logger receives unexpected failures (slog.Default if nil).
	Logger *slog.Logger
	// RequestID returns the client's id of the request, which becomes
	// keyledger.Request.ID (the idempotency key of its hold and its usage
	// record) when Request leaves it empty: a client that retries a
	// request with the same id — on this instance or another — is charged
	// at most once. It returns "" for none (keyledger generates one) and a
	// *RequestError to refuse the request. nil: the Idempotency-Key header,
	// else X-Request-Id, checked by ValidRequestID.
	RequestID func(r *http.Request) (string, error)
}

// Request-id headers read by the default Options.RequestID, and the
// response header that carries the request's id back.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderRequestID      = "X-Request-Id"
)

// MaxRequestIDLen bounds a client's request id.
const MaxRequestIDLen = 128

// ValidRequestID reports whether id may name a request: 1 to
// MaxRequestIDLen bytes of ASCII letters, digits and . _ : -.
func ValidRequestID(id string) bool {
	if id == "" || len(id) > MaxRequestIDLen {
		return false
	}
	for i := range len(id) {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// headerRequestID is the default Options.RequestID.
func headerRequestID(r *http.Request) (string, error) {
	for _, h := range [2]string{HeaderIdempotencyKey, HeaderRequestID} {
		if v := r.Header.Get(h); v != "" {
			if !ValidRequestID(v) {
				return "", &RequestError{Message: "The " + h + " header must be 1-128 characters of letters, digits and . _ : -"}
			}
			return v, nil
		}
	}
	return "", nil
}

// Info is what the middleware gives the handler through the request
// context: the grant, and a place to report what the request used.
type Info struct {
	Grant *keyledger.Grant

	mu  sync.Mutex
	out keyledger.Outcome
}

type infoKey struct{}

// FromContext returns the Info of a request that passed the middleware, or
// nil.
func FromContext(ctx context.Context) *Info {
	i, _ := ctx.Value(infoKey{}).(*Info)
	return i
}

// Report sets what the request used: tokens, units, upstream cost, an error
// type and message, metadata. The middleware adds the status, the byte
// counts and the latency when the handler returns. Later calls replace
// earlier ones.
func (i *Info) Report(o keyledger.Outcome) {
	i.mu.Lock()
	i.out = o
	i.mu.Unlock()
}

func (i *Info) outcome() keyledger.Outcome {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.out
}

// Middleware authorizes every request with its API key before next runs,
// and completes it when next returns — also when next panics (the panic is
// passed on after the hold is released) or the client goes away. Every
// admitted response and every 429 carries X-Ratelimit-Limit-Requests,
// X-Ratelimit-Remaining-Requests, X-Ratelimit-Reset (unix seconds) and the
// same for prompt and completion tokens where the plan limits them. The
// handler runs under a context that is cancelled if the key is revoked, or
// with cause keyledger.ErrBudgetExhausted when Grant.Progress finds the
// balance cannot fund more (the handler then ends its response cleanly and
// reports what it delivered). A 2xx model call whose handler reports no
// usage is charged its reservation (metadata usage=reservation), never
// nothing. A client request id (Idempotency-Key or X-Request-Id, see
// Options.RequestID) names the request, so that a retry is charged once;
// it is echoed in X-Request-Id. A store or rate limiter that is down is a
// 503 with Retry-After (keyledger.ErrUnavailable): nothing is served that
// could not be metered. If Complete fails because its store stayed down
// past keyledger.Options.CompleteTimeout, the response is aborted
// (http.ErrAbortHandler) so that the client never receives a complete
// response whose usage was not recorded — provided the handler did not
// flush a response of declared length before returning.
func Middleware(kl *keyledger.KeyLedger, opts *Options) func(http.Handler) http.Handler {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Errors == nil {
		o.Errors = OpenAIErrors
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.RequestID == nil {
		o.RequestID = headerRequestID
	}
	if o.Request == nil {
		o.Request = func(r *http.Request) (keyledger.Request, error) {
			return keyledger.Request{Endpoint: r.URL.Path, Method: r.Method}, nil
		}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			serve(kl, &o, next, w, r)
		})
	}
}

func (o *Options) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := Classify(err)
	if e.Status >= 500 {
		o.Logger.ErrorContext(r.Context(), "httpapi: request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	o.Errors.WriteError(w, r, e)
}

func serve(kl *keyledger.KeyLedger, o *Options, next http.Handler, w http.ResponseWriter, r *http.Request) {
	raw, ok := Credential(r)
	if !ok {
		o.fail(w, r, errMissingKey)
		return
	}
	req, err := o.Request(r)
	if err != nil {
		if _, isReq := err.(*RequestError); !isReq {
			err = &RequestError{Message: "The request could not be read: " + err.Error()}
		}
		// The key comes first: an unknown key is a 401 whatever the body,
		// and a known key's 400 carries its rate-limit state.
		v, verr := kl.Keys.Verify(r.Context(), apikey.RawKey(raw))
		if verr != nil {
			o.fail(w, r, verr)
			return
		}
		setBudgetHeaders(kl, w, r, v)
		o.fail(w, r, err)
		return
	}
	if req.ID == "" {
		if req.ID, err = o.RequestID(r); err != nil {
			if _, isReq := err.(*RequestError); !isReq {
				err = &RequestError{Message: "Invalid request id: " + err.Error()}
			}
			o.fail(w, r, err)
			return
		}
	}
	if req.Method == "" {
		req.Method = r.Method
	}
	if req.Endpoint == "" {
		req.Endpoint = r.URL.Path
	}
	g, err := kl.Authorize(r.Context(), apikey.RawKey(raw), req)
	if err != nil {
		if le, ok := err.(*keyledger.LimitError); ok {
			SetRateLimitHeaders(w.Header(), le.Budget)
		} else if !keyError(err) {
			// Refused after the key was identified (402, 403, 404, 400):
			// the response still carries the key's rate-limit state, and
			// the request shows in the account's request log and error
			// counts (never charged).
			if v, verr := kl.Keys.Verify(r.Context(), apikey.RawKey(raw)); verr == nil {
				setBudgetHeaders(kl, w, r, v)
				if keyledger.RecordableRefusal(err) {
					e := Classify(err)
					if rerr := kl.RecordRefusal(r.Context(), v, req, e.Status, e.Code, e.Message); rerr != nil {
						o.Logger.WarnContext(r.Context(), "httpapi: recording a refused request failed", "status", e.Status, "error", rerr)
					}
				}
			}
		}
		o.fail(w, r, err)
		return
	}
	SetRateLimitHeaders(w.Header(), g.Budget)
	if req.ID != "" {
		w.Header().Set(HeaderRequestID, g.ID)
	}
	in := r.Body
	if in == nil {
		in = http.NoBody
	}
	// One allocation for the request's three pieces of state.
	st := &struct {
		info Info
		rec  recorder
		body countingBody
	}{info: Info{Grant: g}, rec: recorder{ResponseWriter: w}, body: countingBody{ReadCloser: in}}
	info, rec, body := &st.info, &st.rec, &st.body
	// The handler gets a copy of the request with the counting body: the
	// caller's request is not modified (a caller that serves one request
	// value twice, as a retry or a test may, would otherwise chain every
	// earlier body, and the grant each one holds, into the next).
	inner := r.WithContext(context.WithValue(g.Context(), infoKey{}, info))
	inner.Body = body
	defer func() {
		p := recover()
		out := info.outcome()
		out.StatusCode = rec.status
		cause := context.Cause(g.Context())
		switch {
		case p != nil:
			out.StatusCode, out.ErrorType, out.ErrorMessage = http.StatusInternalServerError, "handler_panic", "the handler panicked"
		case cause != nil && r.Context().Err() == nil && !errors.Is(cause, keyledger.ErrBudgetExhausted):
			// The key was revoked, disabled or expired while the request ran.
			if out.ErrorType == "" {
				out.ErrorType, out.ErrorMessage = "key_invalidated", context.Cause(g.Context()).Error()
			}
		case out.StatusCode == 0 && r.Context().Err() != nil && !reported(out):
			out.StatusCode = 499 // client closed the request before a response, and nothing was used
		case out.StatusCode == 0 && r.Context().Err() != nil:
			// The client went away, but the handler reported usage: it pays
			// for what it used; status 0 records that no response was sent.
		case out.StatusCode == 0:
			out.StatusCode = http.StatusOK
		}
		if out.StatusCode >= 200 && out.StatusCode < 300 && out.ErrorType == "" && !reported(out) && g.Estimate.IsPositive() {
			// A billable model call that succeeded but reported no usage is
			// charged its reservation, never nothing. (An endpoint that is
			// free reserves nothing: its Request has no estimate. Operations
			// are charged their reserved units by Complete already.)
			if res := g.Reserved(); res.PromptTokens > 0 || res.CompletionTokens > 0 {
				out.PromptTokens, out.CompletionTokens = res.PromptTokens, res.CompletionTokens
				out.Metadata = withMeta(out.Metadata, "usage", "reservation")
			}
		}
		// The declared length, or what the handler read of a chunked body.
		out.RequestBytes, out.ResponseBytes = max(r.ContentLength, body.n), rec.bytes
		if _, err := g.Complete(r.Context(), out); err != nil {
			o.Logger.ErrorContext(r.Context(), "httpapi: completing request failed", "request_id", g.ID, "error", err)
			if p == nil && errors.Is(err, keyledger.ErrUnavailable) {
				// The store stayed down: net/http ends a response (its last
				// buffered bytes, the final chunk) only when the handler
				// returns, so aborting here means the client never sees a
				// complete response whose usage was not recorded, and
				// retries it instead. (A domain answer — a free request
				// replayed under a used id — is not retried: it is logged.)
				p = http.ErrAbortHandler
			}
		}
		if p != nil {
			panic(p)
		}
	}()
	next.ServeHTTP(rec, inner)
}

// setBudgetHeaders writes the X-Ratelimit-* headers of a verified key's
// current budgets, if the limiter answers.
func setBudgetHeaders(kl *keyledger.KeyLedger, w http.ResponseWriter, r *http.Request, v apikey.Verified) {
	if b, err := kl.Budget(r.Context(), v); err == nil {
		SetRateLimitHeaders(w.Header(), b)
	}
}

// keyError reports an Authorize error about the key itself (the key was
// not identified, or may not be used at all).
func keyError(err error) bool {
	for _, e := range []error{apikey.ErrMalformed, apikey.ErrUnknown, apikey.ErrRevoked, apikey.ErrDisabled,
		apikey.ErrExpired, apikey.ErrAccountInactive} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// withMeta returns m with k set to v, copying m (which the handler may
// still hold).
func withMeta(m map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for mk, mv := range m {
		out[mk] = mv
	}
	out[k] = v
	return out
}

// reported tells whether the handler reported any usage.
func reported(o keyledger.Outcome) bool {
	return o.PromptTokens > 0 || o.CompletionTokens > 0 || o.Units > 0 || o.CachedUnits > 0
}

// Rate-limit header names, in canonical form so they are stored without
// canonicalisation.
var rateLimitHeaders = [3][3]string{
	{"X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset"},
	{"X-Ratelimit-Limit-Prompt-Tokens", "X-Ratelimit-Remaining-Prompt-Tokens", "X-Ratelimit-Reset-Prompt-Tokens"},
	{"X-Ratelimit-Limit-Completion-Tokens", "X-Ratelimit-Remaining-Completion-Tokens", "X-Ratelimit-Reset-Completion-Tokens"},
}

// SetRateLimitHeaders writes the X-Ratelimit-* headers of a budget: limit,
// remaining and reset (unix seconds) for requests, and the same for prompt
// and completion tokens where the plan limits them.
func SetRateLimitHeaders(h http.Header, b keyledger.Budget) {
	// All values are formatted into one string and the header slices share
	// one backing array: two allocations for up to nine headers.
	var (
		buf  [9 * 20]byte
		ends [9]int
	)
	txt := buf[:0]
	n := 0
	for _, res := range [3]ratelimit.Result{b.Requests, b.PromptTokens, b.CompletionTokens} {
		if res.Limit == 0 {
			continue
		}
		reset := (res.ResetUnixNano + 999_999_999) / 1_000_000_000
		for _, v := range [3]int64{res.Limit, res.Remaining, reset} {
			txt = strconv.AppendInt(txt, v, 10)
			ends[n] = len(txt)
			n++
		}
	}
	if n == 0 {
		return
	}
	all := string(txt)
	vals := make([]string, n)
	n, start := 0, 0
	for i, res := range [3]ratelimit.Result{b.Requests, b.PromptTokens, b.CompletionTokens} {
		if res.Limit == 0 {
			continue
		}
		for j := range 3 {
			vals[n] = all[start:ends[n]]
			h[rateLimitHeaders[i][j]] = vals[n : n+1 : n+1]
			start = ends[n]
			n++
		}
	}
}

// countingBody counts the request bytes the handler reads.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}
