package httpapi_test

import (
	"errors"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/keyledger/keyledger/httpapi"
)

func TestClientAddr(t *testing.T) {
	tp, err := httpapi.ParseTrustedProxies(" 10.0.0.0/8, 192.0.2.1 ,::1")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"untrusted peer, no header", "203.0.113.5:4000", nil, "203.0.113.5"},
		{"untrusted peer's header is ignored", "203.0.113.5:4000", []string{"1.2.3.4"}, "203.0.113.5"},
		{"trusted proxy appends the client", "10.1.2.3:5000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"client-written entries left of the proxy's are ignored", "10.1.2.3:5000", []string{"1.2.3.4, 198.51.100.7"}, "198.51.100.7"},
		{"chain of trusted proxies", "192.0.2.1:80", []string{"198.51.100.7, 10.9.9.9"}, "198.51.100.7"},
		{"several header lines", "10.1.2.3:5000", []string{"1.1.1.1", "198.51.100.8, 10.0.0.2"}, "198.51.100.8"},
		{"garbage stops at the last trusted hop", "10.1.2.3:5000", []string{"not-an-ip"}, "10.1.2.3"},
		{"trusted proxy, no header", "10.1.2.3:5000", nil, "10.1.2.3"},
		{"all hops trusted", "10.1.2.3:5000", []string{"10.4.4.4"}, "10.4.4.4"},
		{"ipv6 peer", "[::1]:9", []string{"2001:db8::1"}, "2001:db8::1"},
		{"mapped ipv4", "[::ffff:10.0.0.1]:9", []string{"198.51.100.9:1234"}, "198.51.100.9"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := tp.ClientAddr(r); got != c.want {
			t.Errorf("%s: ClientAddr = %q, want %q", c.name, got, c.want)
		}
	}
	// Nobody trusted: always the peer.
	var none httpapi.TrustedProxies
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.1.2.3:5000"
	r.Header.Set("X-Forwarded-For", "198.51.100.7")
	if got := none.ClientAddr(r); got != "10.1.2.3" {
		t.Fatalf("zero TrustedProxies: %q", got)
	}
	if !tp.Trusts(netip.MustParseAddr("10.200.0.1")) || tp.Trusts(netip.MustParseAddr("11.0.0.1")) {
		t.Fatal("Trusts")
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "fe80::1%eth0", "1.2.3"} {
		if _, err := httpapi.ParseTrustedProxies(bad); !errors.Is(err, httpapi.ErrInvalidTrustedProxies) {
			t.Errorf("ParseTrustedProxies(%q): %v", bad, err)
		}
	}
}

func FuzzClientAddr(f *testing.F) {
	f.Add("10.0.0.0/8", "10.1.2.3:5000", "1.2.3.4, 198.51.100.7")
	f.Add("", "203.0.113.5:1", "x")
	f.Add("::1,192.0.2.0/24", "[::1]:9", "[2001:db8::1]:80,,")
	f.Fuzz(func(t *testing.T, proxies, remote, xff string) {
		tp, err := httpapi.ParseTrustedProxies(proxies)
		if err != nil {
			return
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", xff)
		got := tp.ClientAddr(r)
		if got == "" {
			return
		}
		a, err := netip.ParseAddr(got)
		if err != nil {
			t.Fatalf("ClientAddr returned %q, not an address", got)
		}
		// An untrusted peer is always the answer, whatever the header says.
		var none httpapi.TrustedProxies
		if peer := none.ClientAddr(r); !tp.Trusts(netip.MustParseAddr(peer)) && peer != got {
			t.Fatalf("untrusted peer %s, but ClientAddr = %s", peer, a)
		}
	})
}
