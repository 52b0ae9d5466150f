package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// dashClient is a browser without JavaScript: a cookie jar, no redirects
// followed.
type dashClient struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (d *dashClient) send(method, path string, form url.Values) (int, string, string) {
	d.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, d.base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := d.c.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Location")
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// post submits a form of page with values and the page's CSRF token.
func (d *dashClient) post(page, action string, values url.Values) (int, string, string) {
	d.t.Helper()
	_, body, _ := d.send("GET", page, nil)
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		d.t.Fatalf("no CSRF token on %s:\n%s", page, body)
	}
	values.Set("csrf", m[1])
	return d.send("POST", action, values)
}

// OpenRush's product is used through keyledger's dashboard: API access,
// activity and billing, in whole credits, buying in $10 steps.
func TestDashboardMounted(t *testing.T) {
	srv, _, _ := start(t)
	jar, _ := cookiejar.New(nil)
	d := &dashClient{t: t, base: srv.URL, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if st, _, loc := d.post("/dashboard/signup", "/dashboard/signup", url.Values{"name": {"Rae"}, "email": {"rae@example.com"}, "password": {"correct horse battery"}}); st != http.StatusSeeOther {
		t.Fatalf("sign up: %d %q", st, loc)
	}
	st, page, _ := d.send("GET", "/dashboard/balance", nil)
	if st != 200 || !strings.Contains(page, `id="balance">500 <small>credits`) {
		t.Fatalf("balance page (500 credits from the sign-up grant): %d\n%s", st, page)
	}
	// Not a $10 step: refused with the step named.
	if st, body, _ := d.post("/dashboard/credits", "/dashboard/credits", url.Values{"amount": {"500"}}); st != http.StatusBadRequest || !strings.Contains(body, "$10 steps of 1000 credits") {
		t.Fatalf("500 credits: %d\n%s", st, body)
	}
	st, checkout, _ := d.post("/dashboard/credits", "/dashboard/credits", url.Values{"amount": {"2000"}})
	if st != 200 || !strings.Contains(checkout, "Pay $20") {
		t.Fatalf("checkout of $20: %d\n%s", st, checkout)
	}
	fields := url.Values{}
	for _, m := range regexp.MustCompile(`type="hidden" name="([a-z_]+)" value="([^"]*)"`).FindAllStringSubmatch(checkout, -1) {
		fields.Set(m[1], m[2])
	}
	for range 2 { // a replayed checkout credits once
		if st, body, _ := d.send("POST", "/dashboard/credits/complete", fields); st != http.StatusSeeOther {
			t.Fatalf("complete: %d\n%s", st, body)
		}
	}
	if _, page, _ := d.send("GET", "/dashboard/balance", nil); !regexp.MustCompile(`id="balance">2,?500 <small>credits`).MatchString(page) {
		t.Fatalf("balance after buying $20 (2000 credits) once:\n%s", page)
	}
	// API access: keys are created in the dashboard.
	if st, _, loc := d.post("/dashboard/keys", "/dashboard/keys", url.Values{"name": {"ci"}}); st != http.StatusSeeOther || !strings.Contains(loc, "/dashboard/keys/new?slot=") {
		t.Fatalf("create key: %d %q", st, loc)
	}
}
