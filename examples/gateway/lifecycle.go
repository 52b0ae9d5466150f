package main

import (
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/examples/internal/ghscan"
	"github.com/keyledger/keyledger/examples/internal/mail"
	"github.com/keyledger/keyledger/httpapi"
)

// abuseConfig is the part of the command line about abuse resistance:
// which proxies' X-Forwarded-For to believe and whether cookies are Secure.
type abuseConfig struct {
	trustedProxies string
	proxies        httpapi.TrustedProxies
	secureCookies  string // "auto", "true" or "false"

	// Mail: -smtp turns email verification on; -mail-dir is the
	// development mailer's directory otherwise.
	mailDir, smtpAddr, smtpFrom, smtpUser, publicURL string
	smtpPassword                                     string // $SMTP_PASSWORD, never a flag
	adminToken                                       string // $GATEWAY_ADMIN_TOKEN, never a flag

	// GitHub secret scanning: with either, /v1/leaked-keys needs GitHub's
	// signature.
	githubKeysFile, githubKeysURL string

	demo bool // allow demo mode (the Razorpay simulator's documented secrets) off loopback
}

// addAbuseFlags registers the abuse-resistance flags on fs.
func addAbuseFlags(fs *flag.FlagSet, c *abuseConfig) {
	fs.StringVar(&c.trustedProxies, "trusted-proxies", "", "comma-separated CIDR prefixes or addresses of reverse proxies whose X-Forwarded-For entry names the client (login and sign-up throttles key on it); default: none, the connection's address is the client")
	fs.StringVar(&c.secureCookies, "secure-cookies", "auto", "mark dashboard cookies Secure: true, false, or auto (true unless -addr is a loopback address, e.g. behind a TLS-terminating proxy)")
	fs.StringVar(&c.mailDir, "mail-dir", "", "development mailer: write password reset mails as files in this directory, never to the log (default: \"mail\" next to -db)")
	fs.StringVar(&c.smtpAddr, "smtp", "", "SMTP server host:port for account mail (STARTTLS; user from -smtp-user, password from $SMTP_PASSWORD); turns email verification on: sign-ups get their grant once the address is confirmed")
	fs.StringVar(&c.smtpFrom, "smtp-from", "", "sender address of account mail (required with -smtp)")
	fs.StringVar(&c.smtpUser, "smtp-user", "", "SMTP user name (AUTH PLAIN over STARTTLS)")
	fs.BoolVar(&c.demo, "demo", false, "allow demo mode (the simulated Razorpay checkout with its documented test secrets, used when no -razorpay-key-id is given) on a non-loopback -addr; on loopback it is always allowed")
	fs.StringVar(&c.githubKeysFile, "github-keys", "", "file of GitHub's secret scanning public keys (the JSON of https://api.github.com/meta/public_keys/secret_scanning); /v1/leaked-keys then needs GitHub's signature")
	fs.StringVar(&c.githubKeysURL, "github-keys-url", "", "URL of GitHub's secret scanning public keys, fetched and cached (e.g. https://api.github.com/meta/public_keys/secret_scanning); /v1/leaked-keys then needs GitHub's signature")
	fs.StringVar(&c.publicURL, "public-url", "", "public base URL for links in mails and, with a real -razorpay-key-id, where the dashboard's Razorpay Checkout returns, e.g. https://api.example.com (default for mails: http://-addr; the dashboard sells no credits in live mode without it)")
}

// check validates the flags once parsed.
func (c *abuseConfig) check() error {
	p, err := httpapi.ParseTrustedProxies(c.trustedProxies)
	if err != nil {
		return errors.New("-trusted-proxies: " + err.Error())
	}
	c.proxies = p
	switch c.secureCookies {
	case "auto", "true", "false":
	default:
		return errors.New("-secure-cookies must be true, false or auto")
	}
	if c.adminToken != "" && len(c.adminToken) < 32 {
		return errors.New("$GATEWAY_ADMIN_TOKEN must be at least 32 bytes")
	}
	if c.smtpAddr != "" && c.smtpFrom == "" {
		return errors.New("-smtp needs -smtp-from")
	}
	if c.githubKeysURL != "" {
		u, err := url.Parse(c.githubKeysURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errors.New("-github-keys-url must be an http(s) URL")
		}
	}
	if c.publicURL != "" {
		u, err := url.Parse(c.publicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errors.New("-public-url must be an http(s) URL")
		}
	}
	return nil
}

// newMailer returns the account mailer and whether sign-ups are verified
// by mail: the SMTP mailer with -smtp (verification on), else the
// development mailer writing files to -mail-dir (verification off:
// sign-up is granted at once, as without mail).
func (c *abuseConfig) newMailer(addr, db string, now func() time.Time) (account.Mailer, bool) {
	base := c.publicURL
	if base == "" {
		base = "http://" + addr
	}
	// The links open the dashboard's pages; API clients can take the
	// token from them for /v1/verify-email and /v1/password/reset.
	links := mail.Links{BaseURL: base, Product: "Forii", VerifyPath: dashboardPath + "/verify", ResetPath: dashboardPath + "/reset"}
	if c.smtpAddr != "" {
		return &mail.SMTPMailer{Addr: c.smtpAddr, From: c.smtpFrom, Username: c.smtpUser, Password: c.smtpPassword,
			Links: links, Now: now}, true
	}
	dir := c.mailDir
	if dir == "" {
		dir = "mail"
		if db != "" {
			dir = filepath.Join(filepath.Dir(db), "mail")
		}
	}
	return &mail.DirMailer{Dir: dir, From: "noreply@forii.localhost", Links: links, Now: now}, false
}

// checkDemo refuses demo mode — the documented Razorpay test secrets, which
// anyone can use to sign a "payment" — on an address other than loopback
// unless -demo says so.
func (c *abuseConfig) checkDemo(addr, rzpKeyID, rzpSecret, rzpWebhook string) error {
	same := func(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
	demo := rzpKeyID == defaultRazorpayKeyID || same(rzpSecret, defaultRazorpaySecret) || same(rzpWebhook, defaultRazorpayWebhookSecret)
	if demo && !c.demo && !loopback(addr) {
		return errors.New("demo mode (the simulated Razorpay checkout and its documented secrets) is only allowed on a loopback -addr; set -razorpay-key-id, -razorpay-secret and -razorpay-webhook-secret, or pass -demo")
	}
	return nil
}

// loopback reports whether addr's host is a loopback address or localhost.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// secure reports whether dashboard cookies are marked Secure for a server
// listening on addr: always with true, with auto unless addr's host is a
// loopback address or "localhost", and otherwise (false, or a config built
// without flags) only on TLS requests.
func (c *abuseConfig) secure(addr string) bool {
	switch c.secureCookies {
	case "true":
		return true
	case "auto":
		return !loopback(addr)
	}
	return false
}

// setupAbuse installs the login and sign-up throttles on the gateway's
// rate limiter (Redis when -redis is set, so every instance shares them),
// and GitHub's signature check of leaked-key reports when configured.
func (s *server) setupAbuse(c abuseConfig) error {
	th, err := keyledger.NewAuthThrottle(s.kl.Limiter, nil)
	if err != nil {
		return err
	}
	if c.githubKeysFile != "" || c.githubKeysURL != "" {
		var fixed ghscan.KeySet
		if c.githubKeysFile != "" {
			b, err := os.ReadFile(c.githubKeysFile)
			if err != nil {
				return fmt.Errorf("-github-keys: %w", err)
			}
			if fixed, err = ghscan.ParseKeys(b); err != nil {
				return fmt.Errorf("-github-keys %s: %w", c.githubKeysFile, err)
			}
		}
		s.github = ghscan.NewVerifier(fixed, c.githubKeysURL, &ghscan.Options{Now: s.now})
	}
	s.throttle, s.proxies, s.adminToken = th, c.proxies, c.adminToken
	return nil
}

// clientAddr is the address the throttles key on: the connection's, or
// the X-Forwarded-For entry a trusted proxy added.
func (s *server) clientAddr(r *http.Request) string { return s.proxies.ClientAddr(r) }
