package httpapi

import (
	"net/http"
	"strings"
	"testing"
)

func TestCredential(t *testing.T) {
	cases := []struct {
		name    string
		headers map[string][]string
		want    string
		ok      bool
	}{
		{"bearer", map[string][]string{"Authorization": {"Bearer forii_sk_abc"}}, "forii_sk_abc", true},
		{"lower scheme", map[string][]string{"Authorization": {"bearer  or_x"}}, "or_x", true},
		{"x-api-key", map[string][]string{"X-Api-Key": {" kw_live_1 "}}, "kw_live_1", true},
		{"both agree", map[string][]string{"Authorization": {"Bearer k1"}, "X-Api-Key": {"k1"}}, "k1", true},
		{"both disagree", map[string][]string{"Authorization": {"Bearer k1"}, "X-Api-Key": {"k2"}}, "", false},
		{"basic", map[string][]string{"Authorization": {"Basic dXNlcjpwYXNz"}}, "", false},
		{"no token", map[string][]string{"Authorization": {"Bearer "}}, "", false},
		{"two auth", map[string][]string{"Authorization": {"Bearer a", "Bearer b"}}, "", false},
		{"space inside", map[string][]string{"Authorization": {"Bearer a b"}}, "", false},
		{"control", map[string][]string{"Authorization": {"Bearer a\x01b"}}, "", false},
		{"too long", map[string][]string{"Authorization": {"Bearer " + strings.Repeat("k", 600)}}, "", false},
		{"none", nil, "", false},
	}
	for _, c := range cases {
		r, _ := http.NewRequest("GET", "/", nil)
		for k, vs := range c.headers {
			for _, v := range vs {
				r.Header.Add(k, v)
			}
		}
		got, ok := Credential(r)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: got %q %v, want %q %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer  x", "Basic y", "", "Bearer"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, ok := ParseBearer(h)
		if ok && (tok == "" || len(tok) > maxCredentialLen || strings.ContainsAny(tok, " \t\r\n")) {
			t.Fatalf("ParseBearer(%q) = %q", h, tok)
		}
	})
}
