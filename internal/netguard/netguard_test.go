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
