package main

import (
	"errors"
	"flag"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/httpapi"
)

// abuseConfig is the part of the command line about abuse resistance:
// which proxies' X-Forwarded-For to believe and whether cookies are Secure.
type abuseConfig struct {
	trustedProxies string
	proxies        httpapi.TrustedProxies
	secureCookies  string // "auto", "true" or "false"
}

// addAbuseFlags registers the abuse-resistance flags on fs.
func addAbuseFlags(fs *flag.FlagSet, c *abuseConfig) {
	fs.StringVar(&c.trustedProxies, "trusted-proxies", "", "comma-separated CIDR prefixes or addresses of reverse proxies whose X-Forwarded-For entry names the client (login and sign-up throttles key on it); default: none, the connection's address is the client")
	fs.StringVar(&c.secureCookies, "secure-cookies", "auto", "mark dashboard cookies Secure: true, false, or auto (true unless -addr is a loopback address, e.g. behind a TLS-terminating proxy)")
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
	return nil
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
	default:
		return false
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err != nil || !a.IsLoopback()
}

// setupAbuse installs the login and sign-up throttles on the gateway's
// rate limiter (Redis when -redis is set, so every instance shares them).
func (s *server) setupAbuse(c abuseConfig) error {
	th, err := keyledger.NewAuthThrottle(s.kl.Limiter, nil)
	if err != nil {
		return err
	}
	s.throttle, s.proxies = th, c.proxies
	return nil
}

// clientAddr is the address the throttles key on: the connection's, or
// the X-Forwarded-For entry a trusted proxy added.
func (s *server) clientAddr(r *http.Request) string { return s.proxies.ClientAddr(r) }
