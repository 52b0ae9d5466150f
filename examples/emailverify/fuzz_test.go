package main

import (
	"strings"
	"testing"
	"time"
)

func FuzzParseEmail(f *testing.F) {
	for _, s := range []string{"a@example.com", "a..b@x.com", "@x.com", "a@b", "a@-x.com", "a@b@c.com", strings.Repeat("a", 70) + "@x.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		local, domain, ok := parseEmail(s)
		if !ok {
			return
		}
		if local+"@"+domain != s || len(local) > 64 || len(s) > 254 || !strings.Contains(domain, ".") || !validDomain(domain) {
			t.Fatalf("accepted %q as %q @ %q", s, local, domain)
		}
		if r := testResult(s); !r.SyntaxValid {
			t.Fatalf("testResult disagrees on %q", s)
		}
	})
}

func FuzzParseVerify(f *testing.F) {
	for _, s := range []string{`{"email":"a@b.com"}`, `{"email":""}`, `{"email":1}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseVerify(b)
		if err == nil && (e == "" || len(e) > 320 || e != strings.ToLower(strings.TrimSpace(e))) {
			t.Fatalf("accepted %q", e)
		}
	})
}

func FuzzParseBatch(f *testing.F) {
	for _, s := range []string{`{"emails":["a@b.com"]}`, `{"emails":[]}`, `{"emails":[""]}`, `{"emails":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := parseBatch(b)
		if err == nil && (len(es) == 0 || len(es) > maxBatch) {
			t.Fatalf("accepted %d emails", len(es))
		}
	})
}

func FuzzParseCreateKey(f *testing.F) {
	for _, s := range []string{`{"name":"k"}`, `{"name":"k","environment":"test"}`, `{"name":"k","environment":"prod"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := parseCreateKey(b)
		if err == nil && (req.Environment != "live" && req.Environment != "test" || strings.TrimSpace(req.Name) == "") {
			t.Fatalf("accepted %+v", req)
		}
	})
}

func FuzzParseWait(f *testing.F) {
	for _, s := range []string{"5s", "0", "-1s", "31s", "forever", "1h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseWait(s)
		if err == nil && (d < 0 || d > maxWait) {
			t.Fatalf("accepted %v", d)
		}
		_ = time.Second
	})
}
