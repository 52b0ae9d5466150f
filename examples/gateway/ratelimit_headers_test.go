package main

import (
	"net/http"
	"strings"
	"testing"
)

// Forii's X-Ratelimit-* headers are on every response of the inference API
// where a key was identified: the models list, and refusals (400, 403,
// 404, 402) as well as admitted calls and 429s.
func TestRateLimitHeadersOnEveryInferenceResponse(t *testing.T) {
	g := startGateway(t)
	u := g.signup("Headers")
	check := func(what string, st, want int, h http.Header, b []byte) {
		t.Helper()
		if st != want {
			t.Fatalf("%s: %d, want %d: %s", what, st, want, b)
		}
		for _, name := range []string{"X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset"} {
			if h.Get(name) == "" {
				t.Fatalf("%s (%d): no %s; headers %v", what, st, name, h)
			}
		}
	}
	st, h, b := g.do("GET", "/inference/v1/models", u.key, nil)
	check("models", st, 200, h, b)
	// Listing models spends no request budget.
	if _, h2, _ := g.do("GET", "/inference/v1/models", u.key, nil); h2.Get("X-Ratelimit-Remaining-Requests") != h.Get("X-Ratelimit-Remaining-Requests") {
		t.Fatalf("the models list spent budget: %s then %s", h.Get("X-Ratelimit-Remaining-Requests"), h2.Get("X-Ratelimit-Remaining-Requests"))
	}
	st, h, b = g.do("POST", "/inference/v1/chat/completions", u.key, `{"model":`)
	check("malformed body", st, 400, h, b)
	st, h, b = g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("no/such-model", 1, false))
	check("unknown model", st, 404, h, b)
	if !strings.Contains(string(b), "model_not_found") {
		t.Fatalf("unknown model: %s", b)
	}
	// Without a key nothing is identified: no headers, 401.
	if st, h, _ := g.do("GET", "/inference/v1/models", "", nil); st != 401 || h.Get("X-Ratelimit-Limit-Requests") != "" {
		t.Fatalf("no key: %d %v", st, h)
	}
}
