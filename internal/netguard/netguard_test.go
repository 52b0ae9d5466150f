package netguard

import (
	"net/netip"
	"testing"
)

func TestBlocked(t *testing.T) {
	for _, c := range []struct {
		ip   string
		want bool
	}{
		{"127.0.0.1", true}, {"127.9.9.9", true}, {"10.1.2.3", true}, {"172.16.0.1", true},
		{"172.31.255.255", true}, {"192.168.1.1", true}, {"169.254.169.254", true},
		{"100.64.0.1", true}, {"100.127.255.254", true}, {"0.0.0.0", true}, {"255.255.255.255", true},
		{"224.0.0.1", true}, {"::1", true}, {"::", true}, {"fe80::1", true}, {"fd00:ec2::254", true},
		{"fc00::1", true}, {"::ffff:127.0.0.1", true}, {"::ffff:169.254.169.254", true},
		{"64:ff9b::a9fe:a9fe", true}, {"2002:7f00:1::1", true}, {"fe80::1%eth0", true},
		{"8.8.8.8", false}, {"1.1.1.1", false}, {"172.32.0.1", false}, {"100.128.0.1", false},
		{"2606:4700:4700::1111", false}, {"::ffff:8.8.8.8", false},
	} {
		if got := Blocked(netip.MustParseAddr(c.ip)); got != c.want {
			t.Errorf("Blocked(%s) = %v, want %v", c.ip, got, c.want)
		}
	}
}

func TestControl(t *testing.T) {
	g := &Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:443", true}, {"127.0.0.2:443", false}, {"[::1]:443", false},
		{"169.254.169.254:80", false}, {"8.8.8.8:443", true}, {"nonsense", false}, {"host:80", false},
	} {
		if err := g.Control("tcp", c.addr, nil); (err == nil) != c.ok {
			t.Errorf("Control(%s) = %v, want ok=%v", c.addr, err, c.ok)
		}
	}
}

// TestBlockedIPv4InOtherIPv6Forms: the IPv6 forms that carry an IPv4
// address besides ::ffff:0:0/96, NAT64's well-known prefix and 6to4 —
// the local-use NAT64 prefix (RFC 8215: 64:ff9b:1::/48, which a network's
// translator may map to private IPv4), the deprecated IPv4-compatible
// ::a.b.c.d, SIIT's IPv4-translated ::ffff:0:a.b.c.d and Teredo — are
// refused, as are the new documentation prefix and a public address
// checked through them.
func TestBlockedIPv4InOtherIPv6Forms(t *testing.T) {
	for _, ip := range []string{
		"64:ff9b:1::7f00:1", "64:ff9b:1::a00:1", "64:ff9b:1:ffff::a9fe:a9fe", "64:ff9b:1::808:808",
		"::127.0.0.1", "::10.0.0.1", "::169.254.169.254", "::8.8.8.8",
		"::ffff:0:127.0.0.1", "::ffff:0:10.0.0.1",
		"2001:0:4136:e378:8000:63bf:80ff:fffe", "2001::1",
		"3fff::1",
	} {
		if !Blocked(netip.MustParseAddr(ip)) {
			t.Errorf("Blocked(%s) = false", ip)
		}
	}
	for _, ip := range []string{"2001:4860:4860::8888", "2a00:1450:4001::1", "64:ff9b::808:808"} {
		if Blocked(netip.MustParseAddr(ip)) {
			t.Errorf("Blocked(%s) = true, want a public address let through", ip)
		}
	}
}
