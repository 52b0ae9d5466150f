package httpapi

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// maxForwardedHops bounds how many X-Forwarded-For entries ClientAddr reads
// from the right; a longer header cannot make it do more work.
const maxForwardedHops = 32

// TrustedProxies are the reverse proxies whose X-Forwarded-For entries a
// server believes. The zero value trusts nobody: the client address is
// always the connection's.
type TrustedProxies struct {
	prefixes []netip.Prefix
}

// ParseTrustedProxies parses a comma-separated list of CIDR prefixes or
// single addresses ("10.0.0.0/8,192.0.2.1"), as the example servers'
// -trusted-proxies flag takes it. An empty string trusts nobody. It returns
// ErrInvalidTrustedProxies for anything else.
func ParseTrustedProxies(s string) (TrustedProxies, error) {
	var tp TrustedProxies
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			tp.prefixes = append(tp.prefixes, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return TrustedProxies{}, fmt.Errorf("%w: %q", ErrInvalidTrustedProxies, f)
		}
		a = a.Unmap()
		tp.prefixes = append(tp.prefixes, netip.PrefixFrom(a, a.BitLen()))
	}
	return tp, nil
}

// Trusts reports whether a is one of the trusted proxies.
func (tp TrustedProxies) Trusts(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range tp.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr returns the address of the client a request comes from: the
// connection's peer, unless that peer is a trusted proxy, in which case
// X-Forwarded-For is read from the right (the entries proxies appended),
// skipping trusted proxies, and the first untrusted address is the client.
// Entries a client wrote itself sit to the left of those and are never
// reached while an untrusted hop is between them, so a header from an
// untrusted peer changes nothing. An unparsable entry stops the walk at the
// last trusted hop. The result is a canonical address string ("" only when
// RemoteAddr is not an IP address, as in some tests).
func (tp TrustedProxies) ClientAddr(r *http.Request) string {
	peer, ok := parseHostAddr(r.RemoteAddr)
	if !ok {
		return ""
	}
	if !tp.Trusts(peer) {
		return peer.String()
	}
	client := peer
	hops := 0
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0 && hops < maxForwardedHops; i-- {
		entries := strings.Split(xff[i], ",")
		for j := len(entries) - 1; j >= 0 && hops < maxForwardedHops; j-- {
			hops++
			a, ok := parseHostAddr(strings.TrimSpace(entries[j]))
			if !ok {
				return client.String()
			}
			client = a
			if !tp.Trusts(a) {
				return a.String()
			}
		}
	}
	return client.String()
}

// parseHostAddr parses "ip", "ip:port" or "[ip]:port".
func parseHostAddr(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.WithZone("").Unmap(), true
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.WithZone("").Unmap(), true
}
