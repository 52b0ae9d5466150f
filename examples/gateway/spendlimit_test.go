package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/fakeclock"
)

// A key with a ₹5 daily limit is refused at the edge with 402
// key_budget_exceeded (never a 429), naming when it resets, and works again
// after midnight in the account's time zone (IST).
func TestKeySpendLimitResetsAtISTMidnight(t *testing.T) {
	// 20:00 IST on 14 January.
	clk := fakeclock.New(time.Date(2026, 1, 14, 14, 30, 0, 0, time.UTC))
	g := startGatewayAt(t, clk.Now, filepath.Join(t.TempDir(), "gw.db"), "-models", pricyCatalog(t, "1000000", ""))
	u := g.signup("Limit")
	path := "/v1/accounts/" + u.id + "/apiKeys/" + u.keyID
	k := g.must(200, "PATCH", path, u.token, `{"spend_limit": {"amount_inr": "5.00", "period": "day"}}`)
	midnight := "2026-01-14T18:30:00Z" // 00:00 IST on 15 January
	sl, _ := k["spend_limit"].(map[string]any)
	if sl == nil || sl["amount_inr"] != "5.00" || sl["period"] != "day" || sl["spent_this_period_inr"] != "0.00" ||
		sl["remaining_inr"] != "5.00" || sl["resets_at"] != midnight {
		t.Fatalf("spend_limit after PATCH: %v", k["spend_limit"])
	}
	// ₹1 a completion token: a 6-token request never fits ₹5 (400 naming the limit).
	st, _, b := g.do("POST", chatEndpoint, u.key, chatBody("test/pricy", 6, false))
	if st != 400 || !strings.Contains(string(b), "key_limit_exceeded") || !strings.Contains(string(b), "5 INR") {
		t.Fatalf("whole-limit request: %d %s", st, short(b))
	}
	for i := range 5 {
		if st, _, b := g.do("POST", chatEndpoint, u.key, chatBody("test/pricy", 1, i%2 == 0)); st != 200 {
			t.Fatalf("request %d within the limit: %d %s", i, st, short(b))
		}
	}
	st, h, b := g.do("POST", chatEndpoint, u.key, chatBody("test/pricy", 1, false))
	var body struct {
		Error struct {
			Code     string `json:"code"`
			ResetsAt string `json:"resets_at"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &body)
	if st != 402 || body.Error.Code != "key_budget_exceeded" {
		t.Fatalf("at the edge: %d %s", st, b)
	}
	if body.Error.ResetsAt != midnight || h.Get("X-Key-Budget-Reset") != midnight ||
		h.Get("Retry-After") != "Wed, 14 Jan 2026 18:30:00 GMT" {
		t.Fatalf("reset: body %q, X-Key-Budget-Reset %q, Retry-After %q", body.Error.ResetsAt, h.Get("X-Key-Budget-Reset"), h.Get("Retry-After"))
	}
	// The account balance (₹45) is still there for the account's other keys.
	other := g.must(201, "POST", "/v1/accounts/"+u.id+"/apiKeys", u.token, map[string]any{"name": "other"})
	if other["spend_limit"] != nil {
		t.Fatalf("new key without a limit: %v", other["spend_limit"])
	}
	g.logs.Secret("other key", other["key"].(string))
	if st, _, b := g.do("POST", chatEndpoint, other["key"].(string), chatBody("test/pricy", 1, false)); st != 200 {
		t.Fatalf("another key of the account: %d %s", st, short(b))
	}
	list := g.must(200, "GET", "/v1/accounts/"+u.id+"/apiKeys", u.token, nil)
	found := false
	for _, it := range list["data"].([]any) {
		m := it.(map[string]any)
		if m["id"] == u.keyID {
			sl := m["spend_limit"].(map[string]any)
			found = sl["spent_this_period_inr"] == "5.00" && sl["remaining_inr"] == "0.00"
		}
	}
	if !found {
		t.Fatalf("list: %v", list["data"])
	}
	// One second before midnight IST: still refused; at midnight: served.
	clk.Set(time.Date(2026, 1, 14, 18, 29, 59, 0, time.UTC))
	if st, _, _ := g.do("POST", chatEndpoint, u.key, chatBody("test/pricy", 1, false)); st != 402 {
		t.Fatalf("before midnight: %d", st)
	}
	clk.Set(time.Date(2026, 1, 14, 18, 30, 0, 0, time.UTC))
	if st, _, b := g.do("POST", chatEndpoint, u.key, chatBody("test/pricy", 1, false)); st != 200 {
		t.Fatalf("after IST midnight: %d %s", st, short(b))
	}
	k = g.must(200, "GET", path, u.token, nil)
	sl = k["spend_limit"].(map[string]any)
	if sl["spent_this_period_inr"] != "1.00" || sl["resets_at"] != "2026-01-15T18:30:00Z" {
		t.Fatalf("next day: %v", sl)
	}
	// null removes the limit.
	if k := g.must(200, "PATCH", path, u.token, `{"spend_limit": null}`); k["spend_limit"] != nil {
		t.Fatalf("after null: %v", k["spend_limit"])
	}
}

// Bad spend limits are 400s naming the field, and change nothing.
func TestKeySpendLimitValidation(t *testing.T) {
	g := startGateway(t)
	u := g.signup("Valid")
	path := "/v1/accounts/" + u.id + "/apiKeys/" + u.keyID
	g.must(200, "PATCH", path, u.token, `{"spend_limit": {"amount_inr": 7.5, "period": "week"}}`)
	for _, c := range []struct{ body, field string }{
		{`{"spend_limit": {"amount_inr": "5.001", "period": "day"}}`, "spend_limit.amount_inr"},
		{`{"spend_limit": {"amount_inr": "0", "period": "day"}}`, "spend_limit.amount_inr"},
		{`{"spend_limit": {"amount_inr": "-1", "period": "day"}}`, "spend_limit.amount_inr"},
		{`{"spend_limit": {"amount_inr": "1e9", "period": "day"}}`, "spend_limit.amount_inr"},
		{`{"spend_limit": {"amount_inr": "abc", "period": "day"}}`, "spend_limit.amount_inr"},
		{`{"spend_limit": {"period": "day"}}`, "spend_limit.amount_inr"},
		{`{"spend_limit": {"amount_inr": "5", "period": "year"}}`, "spend_limit.period"},
		{`{"spend_limit": {"amount_inr": "5"}}`, "spend_limit.period"},
		{`{"spend_limit": {"amount_inr": "5", "period": "day", "rpm": 3}}`, "spend_limit"},
		{`{"spend_limit": "5.00"}`, "spend_limit"},
	} {
		st, _, b := g.do("PATCH", path, u.token, c.body)
		if st != 400 || !strings.Contains(string(b), c.field) {
			t.Fatalf("%s: %d %s", c.body, st, b)
		}
		st, _, b = g.do("POST", "/v1/accounts/"+u.id+"/apiKeys", u.token, `{"name": "x", `+strings.TrimPrefix(c.body, "{"))
		if st != 400 || !strings.Contains(string(b), c.field) {
			t.Fatalf("create with %s: %d %s", c.body, st, b)
		}
	}
	k := g.must(200, "GET", path, u.token, nil)
	if sl := k["spend_limit"].(map[string]any); sl["amount_inr"] != "7.50" || sl["period"] != "week" {
		t.Fatalf("limit changed by refused updates: %v", sl)
	}
	// Another account cannot read or set the key's limit.
	v := g.signup("Other")
	if st, _, _ := g.do("PATCH", "/v1/accounts/"+v.id+"/apiKeys/"+u.keyID, v.token, `{"spend_limit": null}`); st != http.StatusNotFound {
		t.Fatalf("another account's key: %d", st)
	}
	if st, _, _ := g.do("GET", "/v1/accounts/"+v.id+"/apiKeys/"+u.keyID, v.token, nil); st != http.StatusNotFound {
		t.Fatalf("another account's key read: %d", st)
	}
}

// FuzzParseSpendLimit: any spend_limit value is a limit, no limit, or a
// 400 — never a panic, never a non-positive or over-precise limit.
func FuzzParseSpendLimit(f *testing.F) {
	for _, s := range []string{``, `null`, `{"amount_inr":"5.00","period":"day"}`, `{"amount_inr":5,"period":"lifetime"}`,
		`{"amount_inr":"1e2","period":"month"}`, `{"amount_inr":"-0","period":"week"}`, `[]`, `"x"`, `{"amount_inr":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, l, err := parseSpendLimit(b)
		if err != nil {
			var re *requestError
			if !errors.As(err, &re) || !strings.HasPrefix(re.msg, "spend_limit") {
				t.Fatalf("error %v is not a 400 naming spend_limit", err)
			}
			return
		}
		if l != nil && (!l.Amount.IsPositive() || !l.Period.Valid() || l.Amount.Cmp(maxSpendLimitINR) > 0) {
			t.Fatalf("accepted %+v from %q", l, b)
		}
	})
}
