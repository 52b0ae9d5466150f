package main

import "testing"

// TestCounters: the account route counts live verifications (single and
// batch) and the cache hit rate from the usage rollups; test keys and
// status checks count nothing.
func TestCounters(t *testing.T) {
	e := start(t)
	_, key := e.user(t, "ada@example.com", "professional", "100")
	for _, email := range []string{"a@example.com", "a@example.com", "a@example.com", "b@example.com"} {
		data(t, e.srv.Do(t, "POST", "/v1/verify", key, map[string]string{"email": email}), 200)
	}
	waitJob(t, e, key, batch(t, e, key, []string{"c@example.com", "d@example.com", "e@slow.test", "f@example.com"}))
	u := data(t, e.srv.Do(t, "GET", "/v1/account", key, nil), 200)["usage"].(map[string]any)
	// 8 verifications, 2 of them cached.
	if u["verifications_today"] != 8.0 || u["verifications_this_month"] != 8.0 || u["cache_hit_rate"] != 0.25 {
		t.Fatalf("usage %v", u)
	}
	c := data(t, e.srv.Do(t, "GET", "/v1/account", key, nil), 200)["credits"].(map[string]any)
	// 1 + 0.5 + 0.5 + 1 + 3 (the batch's unknown is free) = 6
	if c["used_this_month"] != 6.0 || c["balance"] != 94.0 {
		t.Fatalf("credits %v", c)
	}
}
