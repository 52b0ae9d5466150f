package main

import (
	"strings"
	"testing"
)

func FuzzParseInspectDomain(f *testing.F) {
	for _, s := range []string{`{"domain":"example.com"}`, `{"domain":"a..b"}`, `{"domain":1}`, `{`, `{"domain":"x.com"} 1`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := parseInspectDomain(b)
		if err == nil && (req.Domain == "" || len(req.Domain) > 253 || strings.ToLower(req.Domain) != req.Domain || !strings.Contains(req.Domain, ".")) {
			t.Fatalf("accepted domain %q", req.Domain)
		}
	})
}

func FuzzParseKeywordVolume(f *testing.F) {
	for _, s := range []string{`{"keyword":"shoes"}`, `{"keyword":""}`, `{"keyword":"\u00ff"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := parseKeywordVolume(b)
		if err == nil && (strings.TrimSpace(req.Keyword) == "" || len([]rune(req.Keyword)) > 200) {
			t.Fatalf("accepted keyword %q", req.Keyword)
		}
	})
}

func FuzzParsePurchase(f *testing.F) {
	for _, s := range []string{`{"amount_usd":10}`, `{"amount_usd":15}`, `{"amount_usd":"10"}`, `{"amount_usd":1e1}`, `{"amount_usd":-10}`, `{"amount_usd":10.0}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		usd, err := parsePurchase(b)
		if err == nil && (usd < 10 || usd > maxPurchaseUSD || usd%10 != 0) {
			t.Fatalf("accepted amount %d from %q", usd, b)
		}
	})
}

func FuzzParseCreateCredential(f *testing.F) {
	for _, s := range []string{`{"name":"prod"}`, `{"name":"p","expires_at":"2030-01-01T00:00:00Z"}`, `{"name":"p","expires_at":"x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := parseCreateCredential(b)
		if err == nil && strings.TrimSpace(req.Name) == "" {
			t.Fatalf("accepted empty name from %q", b)
		}
	})
}
