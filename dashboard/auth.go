package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/keyledger/keyledger/auditlog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/credits"
)

// Cookie names. Both are scoped to BasePath.
const (
	sessionCookie = "kl_session"
	csrfCookie    = "kl_csrf"
)

// csrfNonceLen is the encoded length of the random per-browser CSRF
// cookie (32 bytes, base64url without padding).
var csrfNonceLen = base64.RawURLEncoding.EncodedLen(32)

// viewer is the signed-in account of a request.
type viewer struct {
	Account account.Account
	loc     *time.Location
	csrf    string
	// session is the keyledger session token, when the dashboard's own
	// sessions are in use.
	session account.Secret
}

// cookiePath is the Path of the dashboard's cookies.
func (h *Handler) cookiePath() string { return h.base + "/" }

func (h *Handler) secure(r *http.Request) bool { return r.TLS != nil || h.o.SecureCookies }

// setCookie sets an HttpOnly, SameSite=Lax cookie of the dashboard.
// maxAge < 0 deletes it; 0 makes it a browser-session cookie.
func (h *Handler) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: h.cookiePath(), MaxAge: maxAge,
		HttpOnly: true, Secure: h.secure(r), SameSite: http.SameSiteLaxMode,
	})
}

// csrfNonce returns the browser's CSRF cookie, issuing one if it has none
// (or a malformed one).
func (h *Handler) csrfNonce(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && validNonce(c.Value) {
		return c.Value
	}
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (Go ≥ 1.24)
	n := base64.RawURLEncoding.EncodeToString(b[:])
	h.setCookie(w, r, csrfCookie, n, 0)
	// Later reads in this request see the new nonce.
	r.AddCookie(&http.Cookie{Name: csrfCookie, Value: n})
	return n
}

// validNonce checks the shape of a CSRF cookie.
func validNonce(s string) bool {
	if len(s) != csrfNonceLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// csrfToken is the token of forms for a browser nonce and account ("" before
// sign-in): HMAC-SHA256 under the handler's secret.
func (h *Handler) csrfToken(nonce, accountID string) string {
	m := hmac.New(sha256.New, h.secret)
	m.Write([]byte("keyledger-dashboard-csrf\x00"))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	m.Write([]byte(accountID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF parses the form and checks its csrf field against the
// browser's cookie and the account, in constant time.
func (h *Handler) checkCSRF(r *http.Request, accountID string) error {
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errBadRequest
	}
	c, err := r.Cookie(csrfCookie)
	if err != nil || !validNonce(c.Value) {
		return errCSRF
	}
	want := h.csrfToken(c.Value, accountID)
	if !hmac.Equal([]byte(r.PostForm.Get("csrf")), []byte(want)) {
		return errCSRF
	}
	return nil
}

// authenticate finds the request's account: the host's Authenticate hook,
// or the keyledger session in the session cookie. It returns
// ErrUnauthenticated when nobody is signed in.
func (h *Handler) authenticate(r *http.Request) (*viewer, error) {
	v := &viewer{}
	var acct string
	if h.o.Authenticate != nil {
		id, err := h.o.Authenticate(r)
		if err != nil || id == "" {
			return nil, ErrUnauthenticated
		}
		acct = id
	} else {
		c, err := r.Cookie(sessionCookie)
		if err != nil {
			return nil, ErrUnauthenticated
		}
		tok := account.Secret(c.Value)
		sess, err := h.kl.Accounts.VerifySession(r.Context(), tok)
		if err != nil {
			if isSessionError(err) {
				return nil, ErrUnauthenticated
			}
			return nil, err
		}
		acct, v.session = sess.AccountID, tok
	}
	a, err := h.kl.Accounts.Get(r.Context(), acct)
	if errors.Is(err, account.ErrNotFound) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, err
	}
	if a.Status != account.StatusActive {
		return nil, ErrUnauthenticated
	}
	v.Account, v.loc = a, a.Location()
	return v, nil
}

func isSessionError(err error) bool {
	return errors.Is(err, account.ErrSessionInvalid) || errors.Is(err, account.ErrSessionExpired) ||
		errors.Is(err, account.ErrSessionRevoked) || errors.Is(err, account.ErrSuspended) || errors.Is(err, account.ErrClosed)
}

// signInRedirect sends an unauthenticated browser to sign in, and back to
// the page it asked for (GET only) afterwards.
func (h *Handler) signInRedirect(w http.ResponseWriter, r *http.Request) {
	if h.o.Authenticate != nil {
		if h.o.SignInURL == "" {
			h.fail(w, r, nil, ErrUnauthenticated)
			return
		}
		http.Redirect(w, r, h.o.SignInURL, http.StatusSeeOther)
		return
	}
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		h.setCookie(w, r, sessionCookie, "", -1) // an ended session
	}
	target := h.base + "/signin"
	if r.Method == http.MethodGet {
		next := h.base + r.URL.Path
		if r.URL.RawQuery != "" {
			next += "?" + r.URL.RawQuery
		}
		target += "?next=" + url.QueryEscape(next)
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// authed wraps a page that needs a signed-in account.
func (h *Handler) authed(fn func(http.ResponseWriter, *http.Request, *viewer) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := h.authenticate(r)
		if errors.Is(err, ErrUnauthenticated) {
			h.signInRedirect(w, r)
			return
		}
		if err != nil {
			h.fail(w, r, nil, err)
			return
		}
		v.csrf = h.csrfToken(h.csrfNonce(w, r), v.Account.ID)
		r = r.WithContext(auditlog.WithActor(r.Context(), auditlog.Actor{Kind: auditlog.ActorSession, ID: v.Account.ID}))
		if err := fn(w, r, v); err != nil {
			h.fail(w, r, v, err)
		}
	}
}

// authedPost wraps a form handler that needs a signed-in account and a
// valid CSRF token; it changes nothing otherwise.
func (h *Handler) authedPost(fn func(http.ResponseWriter, *http.Request, *viewer) error) http.HandlerFunc {
	return h.authed(func(w http.ResponseWriter, r *http.Request, v *viewer) error {
		if err := h.checkCSRF(r, v.Account.ID); err != nil {
			return err
		}
		return fn(w, r, v)
	})
}

// redirect answers a successful POST with 303 to a dashboard path.
func (h *Handler) redirect(w http.ResponseWriter, r *http.Request, path string) {
	http.Redirect(w, r, h.base+path, http.StatusSeeOther)
}

// home is the overview page.
func (h *Handler) home(w http.ResponseWriter, r *http.Request) {
	h.authed(func(w http.ResponseWriter, r *http.Request, v *viewer) error {
		type overview struct {
			HasLedger             bool
			Balance, Available    string
			Today, Month          string
			TodayReqs, MonthReqs  int64
			ActiveKeys            int
			UsageLink, KeysLink   bool
			BalanceLink, BuyLink  bool
			MonthName, DayName    string
			UsedThisMonth, MonCap string
		}
		var ov overview
		ctx := r.Context()
		a, err := h.kl.Credits.Account(ctx, v.Account.ID)
		switch {
		case err == nil:
			u := h.kl.Credits.Unit()
			ov.HasLedger, ov.Balance, ov.Available = true, u.Format(a.Balance), u.Format(a.Available)
			ov.UsedThisMonth = u.Format(a.UsedThisMonth)
			if a.Policy.MonthlyCap.IsPositive() {
				ov.MonCap = u.Format(a.Policy.MonthlyCap)
			}
		case !errors.Is(err, credits.ErrUnknownAccount):
			return err
		}
		c, err := h.kl.Usage.Counters(ctx, v.Account.ID, v.loc.String())
		if err != nil {
			return err
		}
		u := h.kl.Credits.Unit()
		ov.Today, ov.Month, ov.TodayReqs, ov.MonthReqs = u.Format(c.Today.Cost), u.Format(c.ThisMonth.Cost), c.Today.Requests, c.ThisMonth.Requests
		ov.DayName, ov.MonthName = c.Day, c.Month
		if h.sections[SectionKeys] {
			keys, err := h.allKeys(r, v)
			if err != nil {
				return err
			}
			now := h.o.Now()
			for _, k := range keys {
				if keyStatus(k, now) == "active" {
					ov.ActiveKeys++
				}
			}
		}
		ov.UsageLink, ov.KeysLink, ov.BalanceLink, ov.BuyLink = h.sections[SectionUsage], h.sections[SectionKeys], h.sections[SectionBalance], h.sections[SectionCredits]
		return h.render(w, r, v, http.StatusOK, "home", "Overview", ov)
	})(w, r)
}

// authForm is the data of the sign-in and sign-up pages.
type authForm struct {
	Name, Email, Next string
	Signup            bool
}

func (h *Handler) signInPage(w http.ResponseWriter, r *http.Request) {
	if _, err := h.authenticate(r); err == nil {
		http.Redirect(w, r, h.safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	h.renderAnon(w, r, http.StatusOK, "signin", "Sign in", authForm{Next: r.URL.Query().Get("next"), Signup: !h.o.DisableSignup}, "")
}

func (h *Handler) signIn(w http.ResponseWriter, r *http.Request) {
	if err := h.checkCSRF(r, ""); err != nil {
		h.fail(w, r, nil, err)
		return
	}
	f := authForm{Email: r.PostForm.Get("email"), Next: r.PostForm.Get("next"), Signup: !h.o.DisableSignup}
	tok, sess, err := h.login(r, f.Email, account.Secret(r.PostForm.Get("password")))
	if err != nil {
		msg, status := "", http.StatusUnauthorized
		if m, st, ok := h.refusal(w, err); ok {
			h.renderAnon(w, r, st, "signin", "Sign in", f, m)
			return
		}
		switch {
		case errors.Is(err, account.ErrInvalidCredentials), errors.Is(err, account.ErrInvalidEmail), errors.Is(err, account.ErrInvalidPassword):
			msg = "Invalid email or password."
		case errors.Is(err, account.ErrSuspended):
			msg, status = "This account is suspended.", http.StatusForbidden
		case errors.Is(err, account.ErrClosed):
			msg, status = "This account is closed.", http.StatusForbidden
		default:
			h.fail(w, r, nil, err)
			return
		}
		h.renderAnon(w, r, status, "signin", "Sign in", f, msg)
		return
	}
	h.startSession(w, r, tok, sess)
	http.Redirect(w, r, h.safeNext(f.Next), http.StatusSeeOther)
}

// startSession sets the session cookie until the session expires.
func (h *Handler) startSession(w http.ResponseWriter, r *http.Request, tok account.Secret, sess account.Session) {
	maxAge := int(sess.ExpiresAt.Sub(h.o.Now()) / time.Second)
	if maxAge <= 0 {
		maxAge = 1
	}
	h.setCookie(w, r, sessionCookie, tok.Reveal(), maxAge)
}

// safeNext returns next if it is a path of this dashboard, else the first
// section.
func (h *Handler) safeNext(next string) string {
	if p, ok := parseNext(h.base, next); ok {
		return p
	}
	if len(h.nav) > 1 { // nav[0] is the overview
		return h.nav[1].Path
	}
	return h.base + "/"
}

// parseNext accepts a post-sign-in target only if it is a local path under
// base: no scheme, no host, no "//" or backslash that a browser could read
// as another origin, no control characters.
func parseNext(base, next string) (string, bool) {
	if next == "" || len(next) > 2048 || !strings.HasPrefix(next, base+"/") {
		return "", false
	}
	if strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\") || strings.Contains(next, "/../") || strings.HasSuffix(next, "/..") {
		return "", false
	}
	for i := 0; i < len(next); i++ {
		if next[i] < 0x21 || next[i] == 0x7f {
			return "", false
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || !strings.HasPrefix(u.Path, base+"/") {
		return "", false
	}
	return next, true
}

func (h *Handler) signUpPage(w http.ResponseWriter, r *http.Request) {
	h.renderAnon(w, r, http.StatusOK, "signup", "Sign up", authForm{Signup: true}, "")
}

func (h *Handler) signUp(w http.ResponseWriter, r *http.Request) {
	if err := h.checkCSRF(r, ""); err != nil {
		h.fail(w, r, nil, err)
		return
	}
	f := authForm{Name: r.PostForm.Get("name"), Email: r.PostForm.Get("email"), Signup: true}
	pw := account.Secret(r.PostForm.Get("password"))
	var a account.Account
	var err error
	if h.o.Throttle != nil {
		err = h.o.Throttle.Signup(r.Context(), h.clientAddr(r))
	}
	if err == nil && h.o.VerifySignups {
		h.signUpVerified(w, r, f, pw)
		return
	}
	if err == nil {
		a, err = h.kl.Signup(r.Context(), account.CreateParams{Name: f.Name, Email: f.Email, Password: pw, TimeZone: h.o.TimeZone})
	}
	if err != nil && a.ID == "" {
		var msg string
		if m, st, ok := h.refusal(w, err); ok {
			h.renderAnon(w, r, st, "signup", "Sign up", f, m)
			return
		}
		switch {
		case errors.Is(err, account.ErrEmailTaken):
			msg = "An account with this email already exists. Sign in instead."
		case errors.Is(err, account.ErrInvalidEmail):
			msg = "Enter a valid email address."
		case errors.Is(err, account.ErrInvalidName):
			msg = "The name must be 1 to 120 characters."
		case errors.Is(err, account.ErrInvalidPassword):
			msg = "The password must be at least 8 characters."
		default:
			h.fail(w, r, nil, err)
			return
		}
		h.renderAnon(w, r, http.StatusBadRequest, "signup", "Sign up", f, msg)
		return
	}
	if err != nil { // the account exists; its ledger is completed on first use of the API
		h.o.Logger.ErrorContext(r.Context(), "dashboard: sign-up could not open the ledger", "account_id", a.ID, "error", err)
	}
	tok, sess, err := h.kl.Accounts.Login(r.Context(), f.Email, pw)
	if err != nil {
		h.fail(w, r, nil, err)
		return
	}
	h.startSession(w, r, tok, sess)
	http.Redirect(w, r, h.safeNext("")+"?done=welcome", http.StatusSeeOther)
}

func (h *Handler) signOut(w http.ResponseWriter, r *http.Request) {
	h.authedPost(func(w http.ResponseWriter, r *http.Request, v *viewer) error {
		if err := h.kl.Accounts.Logout(r.Context(), v.session); err != nil && !errors.Is(err, account.ErrSessionInvalid) {
			return err
		}
		h.setCookie(w, r, sessionCookie, "", -1)
		h.redirect(w, r, "/signin")
		return nil
	})(w, r)
}

// login signs in through the throttle when one is configured.
func (h *Handler) login(r *http.Request, email string, pw account.Secret) (account.Secret, account.Session, error) {
	if h.o.Throttle != nil {
		return h.o.Throttle.Login(r.Context(), h.kl.Accounts, email, pw, h.clientAddr(r))
	}
	return h.kl.Accounts.Login(r.Context(), email, pw)
}

// clientAddr is the address the throttle keys on.
func (h *Handler) clientAddr(r *http.Request) string {
	if h.o.ClientAddr != nil {
		return h.o.ClientAddr(r)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// refusal turns a throttled attempt (429) or a full password-hashing gate
// (503) into a page message, setting Retry-After.
func (h *Handler) refusal(w http.ResponseWriter, err error) (msg string, status int, ok bool) {
	var te *keyledger.ThrottleError
	switch {
	case errors.As(err, &te):
		secs := int64((te.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		return fmt.Sprintf("Too many attempts (at most %s). Try again in %d seconds.", te.Limit, secs), http.StatusTooManyRequests, true
	case errors.Is(err, account.ErrBusy):
		w.Header().Set("Retry-After", strconv.FormatInt(int64(account.BusyRetryAfter/time.Second), 10))
		return "The service is busy. Try again in a moment.", http.StatusServiceUnavailable, true
	}
	return "", 0, false
}
