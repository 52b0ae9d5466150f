package main

import (
	"net/url"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/examples/internal/e2e"
)

// checkUsage runs after TestTools' inspect_domain (200), keyword_volume
// (200) and failing inspect_domain (502): three records, newest first.
func checkUsage(t *testing.T, srv *e2e.Server, key string) {
	t.Helper()
	type page struct {
		Data       []map[string]any `json:"data"`
		NextCursor *string          `json:"next_cursor"`
	}
	var pg page
	r := srv.Do(t, "GET", "/v1/me/usage", key, nil)
	r.Decode(t, &pg)
	if r.Status != 200 || len(pg.Data) != 3 || pg.NextCursor != nil {
		t.Fatalf("usage: %d %s", r.Status, r.Body)
	}
	fields := []string{"id", "account_id", "credential_id", "auth_source", "endpoint", "method", "status_code", "response_time_ms",
		"request_bytes", "response_bytes", "dataforseo_cost_usd", "credits_charged", "error_type", "error_message", "created_at"}
	for _, it := range pg.Data {
		for _, f := range fields {
			if _, ok := it[f]; !ok {
				t.Fatalf("item lacks %s: %v", f, it)
			}
		}
		if !strings.HasPrefix(it["id"].(string), "log_") || !strings.HasPrefix(it["credential_id"].(string), "cred_") ||
			!strings.HasPrefix(it["account_id"].(string), "acct_") || it["auth_source"] != "api_key" || it["method"] != "POST" ||
			it["request_bytes"].(float64) <= 0 {
			t.Fatalf("item %v", it)
		}
	}
	failed, kw, ok := pg.Data[0], pg.Data[1], pg.Data[2]
	if failed["status_code"] != 502.0 || failed["error_type"] != "upstream_error" || failed["error_message"] == nil || failed["credits_charged"] != 0.0 {
		t.Fatalf("failed call %v", failed)
	}
	if kw["endpoint"] != "/v1/tools/keyword_volume" || kw["credits_charged"] != 1.0 || kw["dataforseo_cost_usd"] != 0.0005 {
		t.Fatalf("keyword call %v", kw)
	}
	if ok["endpoint"] != "/v1/tools/inspect_domain" || ok["status_code"] != 200.0 || ok["credits_charged"] != 3.0 ||
		ok["dataforseo_cost_usd"] != 0.002 || ok["error_type"] != nil || ok["response_bytes"].(float64) <= 0 {
		t.Fatalf("inspect call %v", ok)
	}
	// Paging with limit and cursor visits each record once.
	var seen []string
	cursor := ""
	for {
		q := url.Values{"limit": {"1"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var p page
		r := srv.Do(t, "GET", "/v1/me/usage?"+q.Encode(), key, nil)
		r.Decode(t, &p)
		if r.Status != 200 || len(p.Data) != 1 {
			t.Fatalf("page: %d %s", r.Status, r.Body)
		}
		seen = append(seen, p.Data[0]["id"].(string))
		if p.NextCursor == nil {
			break
		}
		cursor = *p.NextCursor
	}
	if len(seen) != 3 || seen[0] != failed["id"] || seen[2] != ok["id"] {
		t.Fatalf("paged %v", seen)
	}
	for q, n := range map[string]int{"limit=0": 1, "limit=-5": 1, "limit=100000": 3, "limit=2": 2} {
		var p page
		srv.Do(t, "GET", "/v1/me/usage?"+q, key, nil).Decode(t, &p)
		if len(p.Data) != n {
			t.Errorf("%s: %d items, want %d", q, len(p.Data), n)
		}
	}
	for _, q := range []string{"limit=abc", "limit=1.5", "cursor=***", "cursor=bm90LWEtY3Vyc29y"} {
		if r := srv.Do(t, "GET", "/v1/me/usage?"+q, key, nil); r.Status != 400 || errCode(t, r) != "invalid_request" {
			t.Errorf("%s: %d %s", q, r.Status, r.Body)
		}
	}
}

func FuzzParseUsageQuery(f *testing.F) {
	for _, s := range []string{"limit=50", "limit=abc", "limit=-1&cursor=x", "cursor=MTIzLmxvZ18x", "limit=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		limit, _, err := parseUsageQuery(q)
		if err == nil && (limit < 1 || limit > 500) {
			t.Fatalf("limit %d from %q", limit, raw)
		}
	})
}
