package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The keys page shows each key's spend limit, spent this period and what
// is left; the edit page sets and removes it with a CSRF-protected form,
// and refuses bad input with a message, changing nothing.
func TestKeySpendLimitForm(t *testing.T) {
	e := newEnv(t)
	b, a := e.signup("Meera")
	ctx := context.Background()
	_, id := b.createKey("limited", nil)

	page := "/dashboard/keys/" + id
	b.mustGet(page, http.StatusOK)
	for _, want := range []string{`id="spend-limit"`, `action="/dashboard/keys/` + id + `/limit"`, `name="period"`, `value="lifetime"`, "No limit"} {
		if !strings.Contains(b.last, want) {
			t.Fatalf("edit page lacks %s", want)
		}
	}
	// Without the CSRF token: refused.
	if r := b.post(page+"/limit", url.Values{"amount": {"5"}, "period": {"day"}, "action": {"set"}}); r.status != http.StatusForbidden {
		t.Fatalf("no CSRF: %d", r.status)
	}
	for _, bad := range []url.Values{
		{"amount": {"5.001"}, "period": {"day"}}, {"amount": {"-5"}, "period": {"day"}}, {"amount": {"abc"}, "period": {"day"}},
		{"amount": {"5"}, "period": {"year"}}, {"amount": {""}, "period": {"week"}},
	} {
		bad.Set("action", "set")
		if r := b.submit(page, page+"/limit", bad); r.status != http.StatusBadRequest || !strings.Contains(r.body, `class="error"`) && !strings.Contains(r.body, "role=\"alert\"") {
			t.Fatalf("bad limit %v: %d\n%s", bad, r.status, r.body)
		}
	}
	if _, ok, _ := e.kl.KeySpend(ctx, a.ID, id); ok {
		t.Fatal("a refused form set a limit")
	}
	r := b.submit(page, page+"/limit", url.Values{"amount": {"₹5.00"}, "period": {"day"}, "action": {"set"}})
	if r.status != http.StatusSeeOther || r.location != "/dashboard/keys?done=limit" {
		t.Fatalf("set: %d %q\n%s", r.status, r.location, r.body)
	}
	ks, ok, err := e.kl.KeySpend(ctx, a.ID, id)
	if err != nil || !ok || ks.Limit.String() != "5" || ks.Period != "day" {
		t.Fatalf("limit %+v %v %v", ks, ok, err)
	}
	list := b.mustGet("/dashboard/keys", http.StatusOK)
	if !strings.Contains(list.body, "5.00 / day") || !strings.Contains(list.body, "spent 0.00 · 5.00 left · resets 2026-03-11 00:00 IST") {
		t.Fatalf("list does not show the limit:\n%s", list.body)
	}
	b.mustGet(page, http.StatusOK)
	if !strings.Contains(b.last, `value="5.00"`) || !strings.Contains(b.last, `value="day" selected`) || !strings.Contains(b.last, "Remove limit") {
		t.Fatalf("edit page does not show the limit:\n%s", b.last)
	}
	r = b.submit(page, page+"/limit", url.Values{"action": {"clear"}})
	if r.status != http.StatusSeeOther || r.location != "/dashboard/keys?done=limit-removed" {
		t.Fatalf("clear: %d %q", r.status, r.location)
	}
	if _, ok, _ := e.kl.KeySpend(ctx, a.ID, id); ok {
		t.Fatal("limit not removed")
	}
	// Another account's key: not found.
	c, _ := e.signup("Ravi")
	c.mustGet("/dashboard/keys", http.StatusOK)
	if r := c.post(page+"/limit", url.Values{"amount": {"5"}, "period": {"day"}, "action": {"set"}, "csrf": {c.token()}}); r.status != http.StatusNotFound {
		t.Fatalf("another account's key: %d", r.status)
	}
}
