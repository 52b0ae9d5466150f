package dashboard

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// The Activity page lists the account's audit log — actions made through
// the dashboard itself included, with the session as actor — pages it,
// filters it, never shows another account's entries, and refuses bad
// filters with a page naming them.
func TestActivityPage(t *testing.T) {
	e := newEnv(t)
	b, a := e.signup("Asha")
	other, _ := e.signup("Ravi")
	_, keyID := b.createKey("prod", nil)
	for i := range 55 {
		b.createKey("k"+string(rune('a'+i%26)), nil)
	}
	other.createKey("ravi-secret-project", nil)

	r := b.mustGet("/dashboard/activity", http.StatusOK)
	if !strings.Contains(r.body, `aria-current="page">Activity<`) {
		t.Error("no Activity nav link marked current")
	}
	if n := strings.Count(r.body, "<tr"); n != 51 { // header + 50
		t.Fatalf("first page has %d rows", n-1)
	}
	if !strings.Contains(r.body, "session:"+a.ID) || !strings.Contains(r.body, "key.create") || strings.Contains(r.body, "ravi-secret-project") {
		t.Fatalf("activity page:\n%s", r.body)
	}
	next := regexp.MustCompile(`href="([^"]+)" rel="next"`).FindStringSubmatch(r.body)
	if next == nil {
		t.Fatal("no next link")
	}
	r = b.mustGet(html.UnescapeString(next[1]), http.StatusOK)
	// 56 key.create + account.create, credits.grant, session.create, … on page 2
	if !strings.Contains(r.body, "account.create") || !strings.Contains(r.body, "name: prod") || !strings.Contains(r.body, keyID) {
		t.Fatalf("second page:\n%s", r.body)
	}
	r = b.mustGet("/dashboard/activity?action="+url.QueryEscape("credits.*"), http.StatusOK)
	if strings.Contains(r.body, ">key.create<") || !strings.Contains(r.body, ">credits.grant<") {
		t.Fatalf("filtered page:\n%s", r.body)
	}
	b.mustGet("/dashboard/activity?actor=system", http.StatusOK)
	for _, bad := range []string{"?actor=root", "?cursor=garbage", "?action=" + strings.Repeat("x", 100)} {
		if r := b.get("/dashboard/activity" + bad); r.status != http.StatusBadRequest {
			t.Errorf("%s: %d", bad, r.status)
		}
	}
}
