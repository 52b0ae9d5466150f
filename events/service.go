package events

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/internal/id"
	"github.com/keyledger/keyledger/internal/netguard"
)

// Options configure a Service; nil means defaults.
type Options struct {
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Allow lists address prefixes a webhook may reach although they are
	// loopback or private, and over plain http: for tests only (a receiver
	// on 127.0.0.1). Empty in production.
	Allow []netip.Prefix
	// LookupIP resolves a webhook host at create time
	// (net.DefaultResolver.LookupNetIP if nil).
	LookupIP func(ctx context.Context, host string) ([]netip.Addr, error)
	// MaxEndpoints per account (10 if 0).
	MaxEndpoints int
}

// Service manages webhook endpoints and alert thresholds.
type Service struct {
	st  Store
	opt Options
	ids *id.Generator
	g   netguard.Guard
}

// NewService returns a Service over st.
func NewService(st Store, opt *Options) *Service {
	var o Options
	if opt != nil {
		o = *opt
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LookupIP == nil {
		o.LookupIP = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if o.MaxEndpoints <= 0 {
		o.MaxEndpoints = 10
	}
	return &Service{st: st, opt: o, ids: id.NewGenerator(o.Now), g: netguard.Guard{Allow: o.Allow}}
}

// Guard returns the address guard the service checks URLs with; the
// dispatcher dials through the same rules.
func (s *Service) Guard() netguard.Guard { return s.g }

// CheckURL validates a webhook URL: https (http only to an allowlisted
// address), no user info, a host whose every address (after DNS
// resolution) is public or allowlisted. It returns ErrInvalidURL or
// ErrBlockedAddress.
func (s *Service) CheckURL(ctx context.Context, raw string) error {
	if len(raw) > 2048 {
		return ErrInvalidURL
	}
	u, err := url.Parse(raw)
	if err != nil || u.User != nil || u.Host == "" || u.Opaque != "" || u.Fragment != "" {
		return ErrInvalidURL
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return ErrInvalidURL
	}
	host := u.Hostname()
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		h := strings.TrimSuffix(strings.ToLower(host), ".")
		if h == "localhost" || strings.HasSuffix(h, ".localhost") || strings.HasSuffix(h, ".internal") {
			return ErrBlockedAddress
		}
		addrs, err = s.opt.LookupIP(ctx, host)
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("%w (the host does not resolve)", ErrInvalidURL)
		}
	}
	allowed := true
	for _, a := range addrs {
		if s.g.Check(a) != nil {
			return ErrBlockedAddress
		}
		allowed = allowed && s.g.Allowed(a)
	}
	if u.Scheme == "http" && !allowed {
		return ErrInvalidURL
	}
	return nil
}

// CreateEndpoint adds a webhook endpoint to the account and returns it
// with its signing secret: the only time the secret is shown. It returns
// ErrInvalidURL, ErrBlockedAddress, ErrTooManyEndpoints or
// ErrAccountNotFound.
func (s *Service) CreateEndpoint(ctx context.Context, accountID, rawURL, description string) (Endpoint, error) {
	if err := s.CheckURL(ctx, rawURL); err != nil {
		return Endpoint{}, err
	}
	description = cleanDescription(description)
	var b [32]byte
	_, _ = rand.Read(b[:])
	e := Endpoint{
		ID: s.ids.New("we_"), AccountID: accountID, URL: rawURL, Description: description,
		Secret: "whsec_" + base64.RawURLEncoding.EncodeToString(b[:]), CreatedAt: s.opt.Now().UTC(),
	}
	if err := s.st.CreateWebhookEndpoint(ctx, e, s.opt.MaxEndpoints); err != nil {
		return Endpoint{}, err
	}
	return e, nil
}

// maxDescription bounds an endpoint's description (bytes).
const maxDescription = 200

// cleanDescription makes free text storable: valid UTF-8 (PostgreSQL
// refuses anything else, NUL included, with an error), control characters
// as spaces, trimmed, and cut to maxDescription bytes at a rune boundary.
func cleanDescription(d string) string {
	d = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(d, "\uFFFD"))
	d = strings.TrimSpace(d)
	if len(d) > maxDescription {
		n := maxDescription
		for n > 0 && !utf8.RuneStart(d[n]) {
			n--
		}
		d = strings.TrimSpace(d[:n])
	}
	return d
}

// Endpoints lists the account's endpoints without their secrets.
func (s *Service) Endpoints(ctx context.Context, accountID string) ([]Endpoint, error) {
	es, err := s.st.WebhookEndpoints(ctx, accountID)
	for i := range es {
		es[i].Secret = ""
	}
	return es, err
}

// DeleteEndpoint removes an endpoint of the account (ErrNotFound if the
// account has no such endpoint). Events not yet delivered to it are not.
func (s *Service) DeleteEndpoint(ctx context.Context, accountID, id string) error {
	return s.st.DeleteWebhookEndpoint(ctx, accountID, id)
}

// SetAlertThresholds sets the account's low-balance thresholds (at most 5
// distinct positive amounts; none clears them). A balance.low event is
// written each time the balance falls from at or above one of them to
// below it.
func (s *Service) SetAlertThresholds(ctx context.Context, accountID string, low []decimal.Decimal) ([]decimal.Decimal, error) {
	if len(low) > 5 {
		return nil, ErrInvalidThreshold
	}
	out := slices.Clone(low)
	for _, d := range out {
		if !d.IsPositive() || d.Exponent() < -18 || d.Cmp(decimal.New(1, 15)) > 0 {
			return nil, ErrInvalidThreshold
		}
	}
	slices.SortFunc(out, func(a, b decimal.Decimal) int { return b.Cmp(a) })
	for i := 1; i < len(out); i++ {
		if out[i].Equal(out[i-1]) {
			return nil, ErrInvalidThreshold
		}
	}
	return out, s.st.SetAlertThresholds(ctx, accountID, out)
}

// AlertThresholds returns the account's low-balance thresholds, highest
// first.
func (s *Service) AlertThresholds(ctx context.Context, accountID string) ([]decimal.Decimal, error) {
	return s.st.AlertThresholds(ctx, accountID)
}

// Deliveries returns the account's latest delivery attempts, newest first
// (limit clamped to 1..200, default 50).
func (s *Service) Deliveries(ctx context.Context, accountID string, limit int) ([]Delivery, error) {
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 200)
	return s.st.WebhookDeliveries(ctx, accountID, limit)
}
