// Package dashboard is a customer dashboard for a keyledger-based API that
// a host mounts under any path prefix: sign in and sign up, API keys
// (create with a name, type, allowed models and expiry, the new key shown
// exactly once; edit, rotate, revoke), usage by day with a chart and CSV
// export, the request log, balance and ledger transactions, buying credits,
// auto-recharge settings, invoices and billing (tax) details.
//
// A new or rotated key is shown after POST → redirect → GET: the form's
// POST seals the secret (AES-GCM under a key derived from CSRFSecret,
// bound to the slot and the account) into a 5-minute slot of
// Options.Slots, and the page that shows it empties the slot, so a reload
// creates nothing and shows nothing. Below 640 px the keys, requests and
// transactions tables become stacked cards (CSS only).
//
//	dash, err := dashboard.New(kl, &dashboard.Options{BasePath: "/dashboard", ProductName: "Forii"})
//	mux.Handle("/dashboard/", dash)
//
// Pages are rendered on the server with html/template, so every form works
// without JavaScript; a small script embedded with the CSS adds a
// copy-to-clipboard button to a new key. Responses carry a
// Content-Security-Policy that allows no inline script or style.
//
// # Sessions and security
//
// By default people sign in with keyledger account sessions
// (account.Service.Login): the session token lives in an HttpOnly,
// SameSite=Lax cookie scoped to BasePath, Secure when the request came over
// TLS or Options.SecureCookies is set. A host with its own login sets
// Options.Authenticate instead, and the dashboard's sign-in pages are gone.
//
// Every POST form carries a CSRF token: an HMAC, under a per-handler
// secret, of a random per-browser cookie and the signed-in account, checked
// in constant time; a POST without a valid token is refused with 403 and
// changes nothing. Every id in a path or form is looked up within the
// signed-in account, so another account's key or invoice is 404.
//
// # Host hooks
//
// Buying credits and invoices depend on the host's payment provider and
// invoicing, so they are small interfaces in Options (Payments, Invoices);
// without them those sections are hidden. Auto-recharge settings edit the
// ledger policy directly and need a credits.Recharger on the KeyLedger to
// take effect.
package dashboard

import (
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"github.com/keyledger/keyledger/auditlog"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/errkind"
)

// Errors of the package. Hooks return ErrNotFound for an id that does not
// belong to the account; the dashboard answers 404.
var (
	ErrNotFound         = errkind.New(errkind.NotFound, "dashboard: not found")
	ErrUnauthenticated  = errkind.New(errkind.Unauthenticated, "dashboard: not signed in")
	ErrInvalidOptions   = errkind.New(errkind.Invalid, "dashboard: invalid options")
	errCSRF             = errors.New("dashboard: invalid CSRF token")
	errMethodNotAllowed = errors.New("dashboard: method not allowed")
	errBadRequest       = errkind.New(errkind.Invalid, "dashboard: bad request")
)

// UserError is an error whose Message the dashboard shows to the person as
// it is, with status 400: hooks return it for input they refuse ("The
// amount must be at least ₹1.00."). Other errors from hooks are logged and
// shown as an internal error.
type UserError struct {
	Message string
}

func (e *UserError) Error() string { return e.Message }

// Kind is errkind.Invalid.
func (e *UserError) Kind() errkind.Kind { return errkind.Invalid }

// userErrorf returns a *UserError with a formatted message.
func userErrorf(format string, args ...any) error {
	return &UserError{Message: fmt.Sprintf(format, args...)}
}

// Section is one part of the dashboard, shown in its navigation.
type Section string

// Sections.
const (
	SectionKeys         Section = "keys"
	SectionUsage        Section = "usage"
	SectionRequests     Section = "requests"
	SectionBalance      Section = "balance"
	SectionCredits      Section = "credits" // buying credits (needs Options.Payments)
	SectionAutoRecharge Section = "auto-recharge"
	SectionInvoices     Section = "invoices" // needs Options.Invoices
	// SectionWebhooks manages webhook endpoints and low-balance alerts
	// (KeyLedger.Webhooks) and shows recent deliveries.
	SectionWebhooks Section = "webhooks"
	// SectionBillingDetails edits the customer's tax details (GSTIN, legal
	// name, address, state); needs Options.BillingDetails.
	SectionBillingDetails Section = "billing-details"
	// SectionActivity is the account's audit log: who changed what.
	SectionActivity Section = "activity"
)

// allSections is the navigation order.
var allSections = []Section{SectionKeys, SectionUsage, SectionRequests, SectionBalance, SectionCredits, SectionAutoRecharge, SectionInvoices, SectionBillingDetails, SectionWebhooks, SectionActivity}

// Options configure New. nil means defaults.
type Options struct {
	// BasePath is the path prefix the dashboard is mounted under, without
	// a trailing slash ("/dashboard"); "" mounts it at the root. Mount the
	// handler on BasePath+"/", with or without http.StripPrefix.
	BasePath string
	// ProductName brands the pages ("keyledger" by default).
	ProductName string
	// Currency labels amounts of the ledger ("INR", "credits"; the credit
	// unit's code by default).
	Currency string
	// Sections lists what to show, in navigation order of the package.
	// nil shows everything that can work: SectionCredits only with
	// Payments and SectionInvoices only with Invoices.
	Sections []Section

	// Authenticate, if set, replaces keyledger sessions with the host's
	// own login: it returns the keyledger account ID of the request's
	// user, or an error (ErrUnauthenticated) when nobody is signed in. The
	// dashboard's sign-in, sign-up and sign-out routes are then not
	// served.
	Authenticate func(r *http.Request) (accountID string, err error)
	// SignInURL is where an unauthenticated browser is sent when
	// Authenticate is set ("" answers 401). SignOutURL, if set, is linked
	// as "Sign out".
	SignInURL, SignOutURL string
	// DisableSignup hides the sign-up page of keyledger sessions.
	DisableSignup bool
	// TimeZone is the IANA time zone of accounts created by sign-up
	// ("UTC" by default). Usage days follow each account's own zone.
	TimeZone string
	// VerifySignups makes sign-up confirm the email address: the account
	// gets its signup grant once the mailed link (/verify) is opened, and
	// a taken address gets the same answer as a new one (its owner is
	// mailed). The KeyLedger's account service needs a Mailer. Off: the
	// account is created, granted and signed in at once.
	VerifySignups bool
	// Throttle, if set, limits failed sign-ins and sign-ups per client
	// address (keyledger.NewAuthThrottle); a refused attempt is a 429 page
	// with Retry-After. nil: no throttle (password hashing is still
	// bounded by the account service).
	Throttle *keyledger.AuthThrottle
	// ClientAddr returns the address the throttle keys on (the
	// connection's address by default; httpapi.TrustedProxies.ClientAddr
	// behind a proxy).
	ClientAddr func(r *http.Request) string

	// KeyTypes are the key types offered when creating a key (every type
	// of the key format by default).
	KeyTypes []string
	// KeyTypeNotes explain the key types on the creation form, by type
	// name (e.g. "sdk": "for inference only"). Optional.
	KeyTypeNotes map[string]string
	// Models are the choices of a key's allowed models (the models of the
	// KeyLedger's price book by default). When there are none, allowed
	// models are typed as a comma-separated list.
	Models []string

	// Payments sells credits (SectionCredits); nil hides it.
	Payments Payments
	// BillingDetails reads and saves the customer's tax details shown on
	// invoices (SectionBillingDetails); nil hides the section.
	BillingDetails BillingDetailsStore
	// Invoices lists invoices and serves their PDFs (SectionInvoices); nil
	// hides it.
	Invoices Invoices

	// CSRFSecret keys the CSRF tokens (at least 32 bytes). nil: a random
	// secret per Handler, which is right for one process; several
	// instances behind one load balancer must share a secret.
	CSRFSecret []byte
	// Slots holds a new key's sealed secret between the creation POST and
	// the page that shows it (see SecretSlots). nil keeps them in the
	// process: give every instance behind one load balancer a shared one.
	Slots SecretSlots
	// SecureCookies marks cookies Secure even on plain-HTTP requests
	// (behind a TLS-terminating proxy). Requests over TLS always get
	// Secure cookies.
	SecureCookies bool

	// Now is the clock (time.Now by default).
	Now func() time.Time
	// Logger receives unexpected failures (slog.Default if nil). Form
	// values, keys, passwords and session tokens never reach it.
	Logger *slog.Logger
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Handler is the dashboard. It is safe for concurrent use.
type Handler struct {
	kl       *keyledger.KeyLedger
	o        Options
	base     string
	sections map[Section]bool
	nav      []navItem
	secret   []byte
	pages    map[string]*template.Template
	mux      *http.ServeMux
	static   http.Handler
	slots    SecretSlots
	models   []string
	keyTypes []string
}

type navItem struct {
	Section Section
	Label   string
	Path    string
}

var sectionLabels = map[Section]string{
	SectionKeys: "API keys", SectionUsage: "Usage", SectionRequests: "Requests", SectionBalance: "Balance",
	SectionCredits: "Buy credits", SectionAutoRecharge: "Auto-recharge", SectionInvoices: "Invoices", SectionBillingDetails: "Billing details", SectionWebhooks: "Webhooks",
	SectionActivity: "Activity",
}

// New returns the dashboard of kl. It returns ErrInvalidOptions for a
// BasePath that is not a clean absolute path, an unknown section, a
// section whose hook is missing, or a short CSRFSecret.
func New(kl *keyledger.KeyLedger, opts *Options) (*Handler, error) {
	if kl == nil {
		return nil, fmt.Errorf("%w: nil KeyLedger", ErrInvalidOptions)
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.BasePath != "" && (!strings.HasPrefix(o.BasePath, "/") || strings.HasSuffix(o.BasePath, "/") ||
		strings.ContainsAny(o.BasePath, "?#\\\"'<> ") || strings.Contains(o.BasePath, "//") || strings.Contains(o.BasePath, "/.")) {
		return nil, fmt.Errorf("%w: BasePath %q must be \"\" or an absolute path without a trailing slash", ErrInvalidOptions, o.BasePath)
	}
	if o.ProductName == "" {
		o.ProductName = "keyledger"
	}
	if o.Currency == "" {
		o.Currency = kl.Credits.Unit().Code
	}
	if o.TimeZone == "" {
		o.TimeZone = "UTC"
	}
	if _, err := time.LoadLocation(o.TimeZone); err != nil || o.TimeZone == "Local" {
		return nil, fmt.Errorf("%w: TimeZone %q", ErrInvalidOptions, o.TimeZone)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	h := &Handler{kl: kl, o: o, base: o.BasePath, sections: map[Section]bool{}, slots: o.Slots}
	if h.slots == nil {
		h.slots = &memSlots{}
	}
	if o.CSRFSecret != nil {
		if len(o.CSRFSecret) < 32 {
			return nil, fmt.Errorf("%w: CSRFSecret must be at least 32 bytes", ErrInvalidOptions)
		}
		h.secret = slices.Clone(o.CSRFSecret)
	} else {
		h.secret = make([]byte, 32)
		_, _ = rand.Read(h.secret) // never fails (Go ≥ 1.24)
	}
	if o.Sections == nil {
		for _, s := range allSections {
			if (s == SectionCredits && o.Payments == nil) || (s == SectionInvoices && o.Invoices == nil) || (s == SectionBillingDetails && o.BillingDetails == nil) {
				continue
			}
			h.sections[s] = true
		}
	}
	for _, s := range o.Sections {
		if _, ok := sectionLabels[s]; !ok {
			return nil, fmt.Errorf("%w: unknown section %q", ErrInvalidOptions, s)
		}
		if (s == SectionCredits && o.Payments == nil) || (s == SectionInvoices && o.Invoices == nil) || (s == SectionBillingDetails && o.BillingDetails == nil) {
			return nil, fmt.Errorf("%w: section %q needs its hook (Payments or Invoices)", ErrInvalidOptions, s)
		}
		h.sections[s] = true
	}
	h.nav = append(h.nav, navItem{Section: "", Label: "Overview", Path: h.base + "/"})
	for _, s := range allSections {
		if h.sections[s] {
			h.nav = append(h.nav, navItem{Section: s, Label: sectionLabels[s], Path: h.base + "/" + string(s)})
		}
	}
	if err := h.initChoices(); err != nil {
		return nil, err
	}
	if err := h.parseTemplates(); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	h.static = http.StripPrefix("/static/", http.FileServerFS(sub))
	h.routes()
	return h, nil
}

// initChoices settles the key types and model choices of the key forms.
func (h *Handler) initChoices() error {
	types := h.kl.Keys.Format().Types()
	if h.o.KeyTypes == nil {
		for _, t := range types {
			h.keyTypes = append(h.keyTypes, t.Name)
		}
	}
	for _, name := range h.o.KeyTypes {
		if !slices.ContainsFunc(types, func(t apikey.KeyType) bool { return t.Name == name }) {
			return fmt.Errorf("%w: key type %q is not in the key format", ErrInvalidOptions, name)
		}
		h.keyTypes = append(h.keyTypes, name)
	}
	if h.o.Models != nil {
		h.models = slices.Clone(h.o.Models)
	} else if h.kl.Prices != nil {
		for _, m := range h.kl.Prices.Models() {
			h.models = append(h.models, m.Model)
		}
	}
	slices.Sort(h.models)
	h.models = slices.Compact(h.models)
	return nil
}

// routes registers every page on the internal mux, whose paths are
// relative to BasePath.
func (h *Handler) routes() {
	m := http.NewServeMux()
	m.Handle("GET /static/", h.static)
	m.HandleFunc("GET /{$}", h.home)
	if h.o.Authenticate == nil {
		m.HandleFunc("GET /signin", h.signInPage)
		m.HandleFunc("POST /signin", h.signIn)
		if !h.o.DisableSignup {
			m.HandleFunc("GET /signup", h.signUpPage)
			m.HandleFunc("POST /signup", h.signUp)
		}
		m.HandleFunc("POST /signout", h.signOut)
		m.HandleFunc("GET /forgot", h.forgotPage)
		m.HandleFunc("POST /forgot", h.forgot)
		m.HandleFunc("GET /reset", h.resetPage)
		m.HandleFunc("POST /reset", h.reset)
		m.HandleFunc("GET /verify", h.verifyEmail)
		m.HandleFunc("GET /password", h.authed(h.passwordPage))
		m.HandleFunc("POST /password", h.authedPost(h.changePassword))
	}
	if h.sections[SectionKeys] {
		m.HandleFunc("GET /keys", h.authed(h.keysPage))
		m.HandleFunc("POST /keys", h.authedPost(h.createKey))
		m.HandleFunc("GET /keys/new", h.authed(h.newKeyPage))
		m.HandleFunc("GET /keys/{id}", h.authed(h.editKeyPage))
		m.HandleFunc("POST /keys/{id}", h.authedPost(h.updateKey))
		m.HandleFunc("POST /keys/{id}/limit", h.authedPost(h.setKeyLimit))
		m.HandleFunc("GET /keys/{id}/rotate", h.authed(h.rotateKeyPage))
		m.HandleFunc("POST /keys/{id}/rotate", h.authedPost(h.rotateKey))
		m.HandleFunc("GET /keys/{id}/revoke", h.authed(h.revokeKeyPage))
		m.HandleFunc("POST /keys/{id}/revoke", h.authedPost(h.revokeKey))
	}
	if h.sections[SectionUsage] {
		m.HandleFunc("GET /usage", h.authed(h.usagePage))
		m.HandleFunc("GET /usage.csv", h.authed(h.usageCSV))
	}
	if h.sections[SectionRequests] {
		m.HandleFunc("GET /requests", h.authed(h.requestsPage))
	}
	if h.sections[SectionBalance] {
		m.HandleFunc("GET /balance", h.authed(h.balancePage))
	}
	if h.sections[SectionCredits] {
		m.HandleFunc("GET /credits", h.authed(h.creditsPage))
		m.HandleFunc("POST /credits", h.authedPost(h.startPurchase))
		m.HandleFunc("POST /credits/complete", h.authedPost(h.completePurchase))
	}
	if h.sections[SectionAutoRecharge] {
		m.HandleFunc("GET /auto-recharge", h.authed(h.autoRechargePage))
		m.HandleFunc("POST /auto-recharge", h.authedPost(h.saveAutoRecharge))
	}
	if h.sections[SectionBillingDetails] {
		m.HandleFunc("GET /billing-details", h.authed(h.billingDetailsPage))
		m.HandleFunc("POST /billing-details", h.authedPost(h.saveBillingDetails))
	}
	if h.sections[SectionWebhooks] {
		m.HandleFunc("GET /webhooks", h.authed(h.webhooksPage))
		m.HandleFunc("POST /webhooks", h.authedPost(h.createWebhook))
		m.HandleFunc("GET /webhooks/new", h.authed(h.newWebhookPage))
		m.HandleFunc("POST /webhooks/{id}/delete", h.authedPost(h.deleteWebhook))
		m.HandleFunc("POST /webhooks/thresholds", h.authedPost(h.saveThresholds))
	}
	if h.sections[SectionActivity] {
		m.HandleFunc("GET /activity", h.authed(h.activityPage))
	}
	if h.sections[SectionInvoices] {
		m.HandleFunc("GET /invoices", h.authed(h.invoicesPage))
		m.HandleFunc("GET /invoices/{id}/pdf", h.authed(h.invoicePDF))
	}
	h.mux = m
}

// maxFormBytes bounds a form body.
const maxFormBytes = 64 << 10

// ServeHTTP serves the dashboard. Paths are taken relative to BasePath;
// a host that mounted the handler behind http.StripPrefix is served the
// same.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setSecurityHeaders(w.Header(), "")
	p := r.URL.Path
	if h.base != "" {
		if rest, ok := strings.CutPrefix(p, h.base); ok && (rest == "" || rest[0] == '/') {
			p = rest
		}
	}
	if p == "" {
		http.Redirect(w, r, h.base+"/", http.StatusMovedPermanently)
		return
	}
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.Path, u.RawPath = p, ""
	r2.URL = &u
	r2 = r2.WithContext(auditlog.WithClient(r.Context(), h.clientAddr(r), r.UserAgent())) // the client of audited changes
	if r.Body != nil && r.Method == http.MethodPost {
		r2.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	}
	// The mux's own 404 and 405 answers become dashboard pages.
	if _, pattern := h.mux.Handler(r2); pattern == "" {
		h.fail(w, r2, nil, h.notFoundOrMethod(r2))
		return
	}
	h.mux.ServeHTTP(w, r2)
}

// notFoundOrMethod tells a wrong method on a known path from an unknown
// path.
func (h *Handler) notFoundOrMethod(r *http.Request) error {
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		if m == r.Method {
			continue
		}
		probe := new(http.Request)
		*probe = *r
		probe.Method = m
		if _, pattern := h.mux.Handler(probe); pattern != "" {
			return errMethodNotAllowed
		}
	}
	return ErrNotFound
}

// setSecurityHeaders sets the headers of every response. formAction adds
// an origin forms may post to (an external checkout).
func setSecurityHeaders(hd http.Header, formAction string) {
	fa := "'self'"
	if formAction != "" {
		fa += " " + formAction
	}
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action "+fa+"; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "same-origin")
}
