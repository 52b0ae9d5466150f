// Package netguard refuses outbound connections to addresses a webhook must
// never reach: loopback, private, link-local, CGNAT, multicast, reserved and
// cloud metadata addresses (169.254.169.254, fd00:ec2::254), including
// IPv4 addresses wrapped in IPv6 forms. Guard.Control is a net.Dialer
// Control function: it sees the address after DNS resolution, so a name
// that resolves (or re-resolves, by DNS rebinding) to a refused address
// fails at connect time. An allowlist of prefixes (tests) is let through.
package netguard

import (
	"github.com/keyledger/keyledger/errkind"
	"net"
	"net/netip"
	"syscall"
)

// ErrBlocked is returned (wrapped with the address) for a refused address.
var ErrBlocked = errkind.New(errkind.Forbidden, "netguard: address not allowed")

// blockedPrefixes are the special-purpose ranges (RFC 6890 and friends)
// that the netip predicates do not cover. Among them, the IPv6 forms that
// carry an IPv4 address other than those Blocked judges as IPv4: the
// deprecated IPv4-compatible ::a.b.c.d (::/96), SIIT's IPv4-translated
// ::ffff:0:a.b.c.d, the local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215:
// a network's translator may map it to private IPv4) and Teredo
// (2001::/32); no webhook receiver is reached through them.
var blockedPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
		"::/96", "::ffff:0:0:0/96", "64:ff9b:1::/48", "2001::/32",
		"fc00::/7", "fe80::/10", "ff00::/8", "2001:db8::/32", "3fff::/20",
		"100::/64", "fec0::/10",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// nat64 is NAT64's well-known prefix (RFC 6052), whose last 32 bits are
// the IPv4 address.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// Guard decides which addresses may be dialled. The zero Guard refuses
// every blocked address and allows nothing extra.
type Guard struct {
	// Allow lists prefixes that are allowed although blocked (tests: a
	// receiver on 127.0.0.1).
	Allow []netip.Prefix
}

// Allowed reports whether ip is in the allowlist.
func (g *Guard) Allowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range g.Allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Check reports whether ip may be dialled: it is allowlisted or not blocked.
func (g *Guard) Check(ip netip.Addr) error {
	if g.Allowed(ip) || !Blocked(ip) {
		return nil
	}
	return ErrBlocked
}

// Blocked reports whether ip is in a range a webhook may not reach. IPv4
// addresses mapped into IPv6 (::ffff:a.b.c.d), and the IPv4 parts of NAT64
// (64:ff9b::/96) and 6to4 (2002::/16) addresses, are judged as IPv4.
func Blocked(ip netip.Addr) bool {
	if !ip.IsValid() {
		return true
	}
	ip = ip.WithZone("").Unmap()
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64.Contains(ip):
			return Blocked(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		case b[0] == 0x20 && b[1] == 0x02: // 6to4
			return Blocked(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
		}
	}
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsMulticast() || ip.IsUnspecified() || ip.IsInterfaceLocalMulticast() {
		return true
	}
	for _, p := range blockedPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Control is a net.Dialer Control function: it refuses a connection to a
// blocked address that is not allowlisted. address is the resolved
// "ip:port" the dialer is about to connect to.
func (g *Guard) Control(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return ErrBlocked
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return ErrBlocked
	}
	if err := g.Check(ip); err != nil {
		return &net.AddrError{Err: err.Error(), Addr: ip.String()}
	}
	return nil
}
