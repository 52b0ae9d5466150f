package dashboard

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
	"github.com/keyledger/keyledger/usage"
)

// view is what every page template receives.
type view struct {
	Title, Product, Currency string
	Base                     string
	Nav                      []navItem
	Active                   Section
	Account                  string // the signed-in account's email (or name)
	CSRF                     string
	SignedIn                 bool
	SignOut                  bool   // the dashboard's own sign-out form
	SignOutURL               string // the host's sign-out link
	Notice, Error            string
	Data                     any
}

// notices are the confirmations a redirect after a successful form shows,
// chosen by the "done" query parameter (never text from the URL).
var notices = map[string]string{
	"welcome":         "Welcome! Your account is ready. Create an API key to get started.",
	"updated":         "The key was updated.",
	"limit":           "The key's spend limit was saved.",
	"limit-removed":   "The key's spend limit was removed.",
	"revoked":         "The key was revoked. Requests with it now fail.",
	"shown":           "A new key's secret is shown only once; that page has been used. If you did not copy the secret, rotate the key.",
	"purchased":       "Payment received. The credits were added to your balance.",
	"auto-recharge":   "Auto-recharge settings saved.",
	"billing":         "Billing details saved. Invoices issued from now on carry them.",
	"password":        "Your password was changed; every other session was signed out.",
	"webhook-deleted": "The webhook endpoint was deleted.",
	"webhook-shown":   "A new endpoint's secret is shown only once; that page has been used. If you did not copy it, delete the endpoint and add it again.",
	"thresholds":      "Low-balance alerts saved.",
}

// parseTemplates parses every page with the layout.
func (h *Handler) parseTemplates() error {
	funcs := template.FuncMap{
		"money":  func(a credits.Amount) string { return h.kl.Credits.Unit().Format(a) },
		"exact":  exactAmount,
		"num":    formatInt,
		"join":   strings.Join,
		"ms":     func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) },
		"hasStr": func(list []string, s string) bool { return contains(list, s) },
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	h.pages = map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".html")
		if base == "layout" || base == "partials" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", n)
		if err != nil {
			return fmt.Errorf("dashboard: template %s: %w", n, err)
		}
		h.pages[base] = t
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// exactAmount shows every digit of an amount with at least 2 decimals,
// for per-request costs that can be fractions of a paisa.
func exactAmount(a credits.Amount) string {
	s := a.Decimal().String()
	i := strings.IndexByte(s, '.')
	switch {
	case i < 0:
		return s + ".00"
	case len(s)-i-1 < 2:
		return s + strings.Repeat("0", 2-(len(s)-i-1))
	}
	return s
}

// formatInt writes n with thousands separators: 1234567 → "1,234,567".
func formatInt(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// render writes a page for a signed-in viewer.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, v *viewer, status int, page, title string, data any) error {
	return h.renderWithError(w, r, v, status, page, title, data, "")
}

// renderAnon writes a sign-in or sign-up page, with a CSRF token bound to
// the browser alone.
func (h *Handler) renderAnon(w http.ResponseWriter, r *http.Request, status int, page, title string, data any, errMsg string) {
	vw := h.newView(title, data)
	vw.CSRF = h.csrfToken(h.csrfNonce(w, r), "")
	vw.Error = errMsg
	if err := h.write(w, status, page, vw); err != nil {
		h.o.Logger.ErrorContext(r.Context(), "dashboard: rendering failed", "page", page, "error", err)
	}
}

func (h *Handler) newView(title string, data any) *view {
	return &view{Title: title, Product: h.o.ProductName, Currency: h.o.Currency, Base: h.base, Nav: h.nav, Data: data}
}

// write executes a page into a buffer first, so that a template error
// becomes a clean 500 instead of half a page.
func (h *Handler) write(w http.ResponseWriter, status int, page string, vw *view) error {
	t, ok := h.pages[page]
	if !ok {
		return fmt.Errorf("dashboard: no template %q", page)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", vw); err != nil {
		return err
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
	return nil
}

// pageErr is one row of the error table: what a person is told.
type pageErr struct {
	err     error
	status  int
	message string
}

// errorTable holds the errors whose page says more than their kind's row
// in kindPages, matched in order with errors.Is. Other errors are answered
// by their kind (errkind.Of); one without a kind is a logged 500.
var errorTable = []pageErr{
	{errCSRF, http.StatusForbidden, "This form expired or came from another site. Go back, reload the page and try again."},
	{errMethodNotAllowed, http.StatusMethodNotAllowed, "Method not allowed."},
	{apikey.ErrRevoked, http.StatusConflict, "The key is revoked."},
	{apikey.ErrDisabled, http.StatusConflict, "The key is disabled."},
	{apikey.ErrExpired, http.StatusConflict, "The key has expired."},
	{apikey.ErrInvalidCursor, http.StatusBadRequest, "Invalid page link."},
	{usage.ErrInvalidCursor, http.StatusBadRequest, "Invalid page link."},
	{credits.ErrInvalidCursor, http.StatusBadRequest, "Invalid page link."},
	{credits.ErrUnknownAccount, http.StatusNotFound, "This account has no credit balance yet."},
}

// classify finds the error page of err.
func classify(err error) pageErr {
	var ue *UserError
	if errors.As(err, &ue) {
		return pageErr{err, http.StatusBadRequest, ue.Message}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return pageErr{err, http.StatusRequestEntityTooLarge, "The form is too large."}
	}
	for _, row := range errorTable {
		if errors.Is(err, row.err) {
			return row
		}
	}
	row := kindPages[errkind.Unknown]
	if k := errkind.Of(err); int(k) < len(kindPages) && kindPages[k].status != 0 {
		row = kindPages[k]
	}
	row.err = err
	return row
}

// kindPages is the table from kinds to error pages: a new sentinel of the
// library is answered here without an edit to the dashboard.
var kindPages = [...]pageErr{
	errkind.Unknown:         {nil, http.StatusInternalServerError, "Something went wrong on our side. Try again in a moment."},
	errkind.Invalid:         {nil, http.StatusBadRequest, "Bad request."},
	errkind.NotFound:        {nil, http.StatusNotFound, "Not found."},
	errkind.Conflict:        {nil, http.StatusConflict, "This conflicts with a change made meanwhile. Reload the page and try again."},
	errkind.Unauthenticated: {nil, http.StatusUnauthorized, "Sign in to see this page."},
	errkind.Forbidden:       {nil, http.StatusForbidden, "You may not do this."},
	errkind.PaymentRequired: {nil, http.StatusPaymentRequired, "Not enough credits: add credits to continue."},
	errkind.RateLimited:     {nil, http.StatusTooManyRequests, "Too many attempts. Try again in a minute."},
	errkind.TooLarge:        {nil, http.StatusRequestEntityTooLarge, "The form is too large."},
	errkind.Unavailable:     {nil, http.StatusServiceUnavailable, "The service is busy or unavailable. Try again in a moment."},
	errkind.Internal:        {nil, http.StatusInternalServerError, "Something went wrong on our side. Try again in a moment."},
}

// fail writes the error page of err; only unexpected errors are logged.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, v *viewer, err error) {
	e := classify(err)
	if e.status >= 500 {
		h.o.Logger.ErrorContext(r.Context(), "dashboard: request failed", "method", r.Method, "path", h.base+r.URL.Path, "error", err)
	}
	type errData struct{ Status int }
	vw := h.newView(http.StatusText(e.status), errData{e.status})
	vw.Error = e.message
	if v != nil {
		vw.SignedIn, vw.CSRF, vw.Account = true, v.csrf, v.Account.Email
		vw.SignOut, vw.SignOutURL = h.o.Authenticate == nil, h.o.SignOutURL
	}
	if werr := h.write(w, e.status, "error", vw); werr != nil {
		h.o.Logger.ErrorContext(r.Context(), "dashboard: rendering the error page failed", "error", werr)
		http.Error(w, e.message, e.status)
	}
}
