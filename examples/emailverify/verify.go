package main

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/keyledger/keyledger/internal/cache"
)

// Result values of a verification.
const (
	Deliverable   = "deliverable"
	Undeliverable = "undeliverable"
	Risky         = "risky"
	Unknown       = "unknown"
)

// Result is the verdict on one address.
type Result struct {
	Email       string   `json:"email"`
	Result      string   `json:"result"`
	Reason      string   `json:"reason"`
	SyntaxValid bool     `json:"syntax_valid"`
	Domain      string   `json:"domain,omitempty"`
	MXFound     bool     `json:"mx_found"`
	MXRecords   []string `json:"mx_records,omitempty"`
	Disposable  bool     `json:"disposable"`
	RoleAccount bool     `json:"role_account"`
}

// Resolver looks up the mail exchangers of a domain. *net.Resolver
// implements it; tests use a fake.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
}

// mxAnswer is a cached MX lookup.
type mxAnswer struct {
	hosts []string
	// reason is set when the domain has no mail exchangers.
	reason string
}

// checker verifies addresses: syntax, then MX records through the
// resolver, each lookup bounded by timeout and definitive answers cached
// for mxTTL. A lookup that cannot finish in time, or fails in a way that
// says nothing about the domain, gives Unknown with a reason.
type checker struct {
	resolver Resolver
	timeout  time.Duration
	mxTTL    time.Duration
	mx       *cache.Cache[string, mxAnswer]
}

func newChecker(r Resolver, now func() time.Time) *checker {
	return &checker{resolver: r, timeout: 2 * time.Second, mxTTL: time.Hour, mx: cache.New[string, mxAnswer](100_000, now)}
}

var disposable = []string{"mailinator.com", "guerrillamail.com", "10minutemail.com", "tempmail.com", "yopmail.com", "trashmail.com"}

var roles = []string{"admin", "info", "support", "sales", "contact", "noreply", "no-reply", "postmaster", "webmaster", "abuse", "billing"}

// Verify checks one address. It never blocks longer than the timeout
// (plus scheduling), whatever the resolver does.
func (c *checker) Verify(ctx context.Context, email string) Result {
	local, domain, ok := parseEmail(email)
	res := Result{Email: email}
	if !ok {
		res.Result, res.Reason = Undeliverable, "invalid_syntax"
		return res
	}
	res.SyntaxValid, res.Domain = true, domain
	res.Disposable = slices.Contains(disposable, domain)
	res.RoleAccount = slices.Contains(roles, local)
	ans, reason := c.lookup(ctx, domain)
	switch {
	case reason != "":
		res.Result, res.Reason = Unknown, reason
	case ans.reason != "":
		res.Result, res.Reason = Undeliverable, ans.reason
	default:
		res.MXFound, res.MXRecords = true, ans.hosts
		switch {
		case res.Disposable:
			res.Result, res.Reason = Risky, "disposable_domain"
		case res.RoleAccount:
			res.Result, res.Reason = Risky, "role_account"
		default:
			res.Result, res.Reason = Deliverable, "mx_records_found"
		}
	}
	return res
}

// lookup returns the domain's MX answer, or a reason why DNS could not
// give one.
func (c *checker) lookup(ctx context.Context, domain string) (mxAnswer, string) {
	if a, ok := c.mx.Get(domain); ok {
		return a, ""
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	type reply struct {
		mx  []*net.MX
		err error
	}
	ch := make(chan reply, 1) // buffered: a resolver that ignores ctx cannot leak a blocked send
	go func() {
		mx, err := c.resolver.LookupMX(ctx, domain)
		ch <- reply{mx, err}
	}()
	var rep reply
	select {
	case rep = <-ch:
	case <-ctx.Done():
		return mxAnswer{}, "dns_timeout"
	}
	var dnsErr *net.DNSError
	switch {
	case rep.err == nil && len(rep.mx) == 0:
		a := mxAnswer{reason: "no_mx_records"}
		c.mx.Set(domain, a, c.mxTTL)
		return a, ""
	case rep.err == nil:
		a := mxAnswer{}
		for _, m := range rep.mx {
			h := strings.TrimSuffix(m.Host, ".")
			if h == "" { // a "null MX" (RFC 7505): the domain takes no mail
				a = mxAnswer{reason: "null_mx"}
				break
			}
			a.hosts = append(a.hosts, h)
		}
		c.mx.Set(domain, a, c.mxTTL)
		return a, ""
	case errors.As(rep.err, &dnsErr) && dnsErr.IsNotFound:
		a := mxAnswer{reason: "domain_not_found"}
		c.mx.Set(domain, a, c.mxTTL)
		return a, ""
	case errors.Is(rep.err, context.DeadlineExceeded), errors.As(rep.err, &dnsErr) && dnsErr.IsTimeout:
		return mxAnswer{}, "dns_timeout"
	}
	return mxAnswer{}, "dns_error"
}

// testResult is the deterministic verdict a kw_test_ key gets, without any
// DNS lookup: the local part decides ("undeliverable@…", "risky@…",
// "unknown@…"; anything else with valid syntax is deliverable).
func testResult(email string) Result {
	local, domain, ok := parseEmail(email)
	res := Result{Email: email}
	if !ok {
		res.Result, res.Reason = Undeliverable, "invalid_syntax"
		return res
	}
	res.SyntaxValid, res.Domain = true, domain
	switch local {
	case "undeliverable":
		res.Result, res.Reason = Undeliverable, "no_mx_records"
	case "risky":
		res.Result, res.Reason, res.MXFound, res.RoleAccount = Risky, "role_account", true, true
	case "unknown":
		res.Result, res.Reason = Unknown, "dns_timeout"
	default:
		res.Result, res.Reason, res.MXFound = Deliverable, "mx_records_found", true
		res.MXRecords = []string{"mx.test." + domain}
	}
	return res
}

// normalizeEmail trims an address and lower-cases its domain (local parts
// are case-sensitive in principle; lower-casing them too, as every
// provider does, makes the cache key stable).
func normalizeEmail(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// parseEmail checks the syntax of a bare address: one '@', a local part of
// 1-64 characters of RFC 5322 atext and inner single dots, a domain of at
// least two DNS labels, 254 characters in all.
func parseEmail(s string) (local, domain string, ok bool) {
	if len(s) > 254 {
		return "", "", false
	}
	local, domain, found := strings.Cut(s, "@")
	if !found || strings.Contains(domain, "@") || local == "" || len(local) > 64 {
		return "", "", false
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return "", "", false
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".!#$%&'*+/=?^_`{|}~-", c) >= 0) {
			return "", "", false
		}
	}
	if !validDomain(domain) {
		return "", "", false
	}
	return local, domain, true
}

// validDomain reports whether d is a host name of at least two labels of
// a-z, 0-9 and inner '-', each 1-63 long (the caller lower-cases).
func validDomain(d string) bool {
	if len(d) > 253 {
		return false
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
