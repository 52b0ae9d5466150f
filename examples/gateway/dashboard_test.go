package main

import (
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/examples/internal/e2e"
)

// formClient is a browser without JavaScript: it follows no redirects by
// itself, keeps cookies and submits forms with their hidden fields.
type formClient struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newFormClient(t *testing.T, base string) *formClient {
	jar, _ := cookiejar.New(nil)
	return &formClient{t: t, base: base, c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (f *formClient) send(method, path string, form url.Values) (int, string, http.Header) {
	f.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, f.base+path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := f.c.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return res.StatusCode, string(b), res.Header
}

func (f *formClient) get(path string, want int) string {
	f.t.Helper()
	st, body, _ := f.send("GET", path, nil)
	if st != want {
		f.t.Fatalf("GET %s: %d, want %d\n%s", path, st, want, body)
	}
	return body
}

var (
	formRe   = regexp.MustCompile(`(?s)<form method="post" action="([^"]+)"[^>]*>(.*?)</form>`)
	hiddenRe = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
)

// submit posts the form of page whose action is action, with its hidden
// fields and the given values, and returns the status and Location.
func (f *formClient) submit(page, action string, values url.Values) (int, string, string) {
	f.t.Helper()
	body := f.get(page, http.StatusOK)
	return f.submitFrom(body, action, values)
}

func (f *formClient) submitFrom(body, action string, values url.Values) (int, string, string) {
	f.t.Helper()
	for _, m := range formRe.FindAllStringSubmatch(body, -1) {
		if html.UnescapeString(m[1]) != action {
			continue
		}
		form := url.Values{}
		for _, h := range hiddenRe.FindAllStringSubmatch(m[2], -1) {
			form.Set(html.UnescapeString(h[1]), html.UnescapeString(h[2]))
		}
		for k, v := range values {
			form[k] = v
		}
		st, b, hd := f.send("POST", action, form)
		return st, b, hd.Get("Location")
	}
	f.t.Fatalf("no form posting to %s on the page:\n%s", action, body)
	return 0, "", ""
}

// TestDashboardWithoutJavaScript drives the gateway's dashboard with plain
// form posts, as a browser without JavaScript does: sign up, create a key,
// use it, see it in usage and requests, buy credits through the simulated
// Razorpay checkout, download the invoice, revoke the key.
func TestDashboardWithoutJavaScript(t *testing.T) {
	srv := e2e.Start(t, run, "-db", filepath.Join(t.TempDir(), "gw.db"))
	if !slices.Contains(srv.Lines, "dashboard: "+srv.URL+"/dashboard/") {
		t.Fatalf("the dashboard URL is not printed at start: %q", srv.Lines)
	}
	b := newFormClient(t, srv.URL)
	if st, _, hd := b.send("GET", "/dashboard/keys", nil); st != http.StatusSeeOther || !strings.HasPrefix(hd.Get("Location"), "/dashboard/signin") {
		t.Fatalf("not signed in: %d", st)
	}
	st, _, loc := b.submit("/dashboard/signup", "/dashboard/signup", url.Values{"name": {"Asha"}, "email": {"asha@example.com"}, "password": {"correct horse battery"}})
	if st != http.StatusSeeOther || loc != "/dashboard/keys?done=welcome" {
		t.Fatalf("sign up: %d %q", st, loc)
	}

	if welcome := b.get(loc, http.StatusOK); !strings.Contains(welcome, "50.00 INR of free credits") || !strings.Contains(welcome, ">Overview</a>") {
		t.Fatalf("the welcome page does not mention the sign-up grant or lacks the Overview item:\n%s", welcome)
	}
	// GST billing details: an invalid GSTIN is refused on the form; valid
	// ones are saved.
	bdPage := b.get("/dashboard/billing-details", http.StatusOK)
	if st, body, _ := b.submitFrom(bdPage, "/dashboard/billing-details", url.Values{"legal_name": {"Asha Traders LLP"}, "tax_id": {"27AAPFU0939F1ZA"}, "address": {"1 Road"}, "state_code": {"27"}}); st != http.StatusBadRequest || !strings.Contains(body, "not a valid GSTIN") {
		t.Fatalf("invalid GSTIN: %d\n%s", st, body)
	}
	if st, _, loc := b.submitFrom(bdPage, "/dashboard/billing-details", url.Values{"legal_name": {"Asha Traders LLP"}, "tax_id": {"27aapfu0939f1zv"}, "address": {"1 Road"}, "state_code": {"27"}}); st != http.StatusSeeOther {
		t.Fatalf("billing details: %d %q", st, loc)
	}
	if saved := b.get("/dashboard/billing-details", http.StatusOK); !strings.Contains(saved, `value="27AAPFU0939F1ZV"`) {
		t.Fatalf("saved details not shown:\n%s", saved)
	}
	page := b.get("/dashboard/keys", http.StatusOK)
	for _, m := range []string{"forii/deepseek-v3", `value="sdk"`, `value="api"`, "for inference only", `placeholder="YYYY-MM-DD"`} {
		if !strings.Contains(page, m) {
			t.Fatalf("key form lacks %s", m)
		}
	}
	st, body, loc := b.submitFrom(page, "/dashboard/keys", url.Values{"name": {"prod-api"}})
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, "/dashboard/keys/new?slot=") {
		t.Fatalf("create key: %d %q, want POST → redirect → GET\n%s", st, loc, body)
	}
	body = b.get(loc, http.StatusOK)
	// Reloading the page shows the key no more and creates none.
	if st, _, hd := b.send("GET", loc, nil); st != http.StatusSeeOther || hd.Get("Location") != "/dashboard/keys?done=shown" {
		t.Fatalf("reload of the new key page: %d %q", st, hd.Get("Location"))
	}
	raw := regexp.MustCompile(`id="new-key"[^>]*value="(forii_sk_[^"]+)"`).FindStringSubmatch(body)
	if raw == nil {
		t.Fatalf("no key on the page:\n%s", body)
	}
	key := raw[1]
	if strings.Contains(b.get("/dashboard/keys", http.StatusOK), key) {
		t.Fatal("the key list shows the secret")
	}

	chat := func() int {
		r := srv.Do(t, "POST", "/inference/v1/chat/completions", key, chatBody("forii/deepseek-v3", 32, false))
		return r.Status
	}
	if st := chat(); st != http.StatusOK {
		t.Fatalf("chat: %d", st)
	}
	usage := b.get("/dashboard/usage", http.StatusOK)
	if !strings.Contains(usage, "forii/deepseek-v3") || !regexp.MustCompile(`class="bar" data-day="[0-9-]+" x="[0-9.]+" y="[0-9.]+" width="[0-9.]+" height="[1-9]`).MatchString(usage) {
		t.Fatalf("usage page has no request or bar:\n%s", usage)
	}
	if reqs := b.get("/dashboard/requests", http.StatusOK); !strings.Contains(reqs, "prod-api") || !strings.Contains(reqs, ">200<") {
		t.Fatalf("requests page:\n%s", reqs)
	}

	// Buy ₹500 through the simulated Razorpay checkout.
	st, body, _ = b.submit("/dashboard/credits", "/dashboard/credits", url.Values{"amount": {"500"}})
	if st != http.StatusOK || !strings.Contains(body, `name="razorpay_signature"`) {
		t.Fatalf("checkout: %d\n%s", st, body)
	}
	st, _, loc = b.submitFrom(body, "/dashboard/credits/complete", nil)
	if st != http.StatusSeeOther || loc != "/dashboard/balance?done=purchased" {
		t.Fatalf("pay: %d %q", st, loc)
	}
	bal := b.get("/dashboard/balance", http.StatusOK)
	if !regexp.MustCompile(`id="balance">549\.\d\d `).MatchString(bal) || !strings.Contains(bal, "Credit purchase, Razorpay order order_") {
		t.Fatalf("balance after purchase:\n%s", bal)
	}
	inv := b.get("/dashboard/invoices", http.StatusOK)
	link := regexp.MustCompile(`href="(/dashboard/invoices/inv_[^"]+/pdf)"`).FindStringSubmatch(inv)
	if link == nil || !strings.Contains(inv, "500.00") {
		t.Fatalf("invoices:\n%s", inv)
	}
	st, pdf, hd := b.send("GET", link[1], nil)
	if st != http.StatusOK || hd.Get("Content-Type") != "application/pdf" || !strings.HasPrefix(pdf, "%PDF") {
		t.Fatalf("invoice PDF: %d %q", st, hd.Get("Content-Type"))
	}

	// Another account sees none of it: its ids are 404.
	keyID := regexp.MustCompile(`data-key-id="([^"]+)"`).FindStringSubmatch(b.get("/dashboard/keys", http.StatusOK))[1]
	eve := newFormClient(t, srv.URL)
	eve.submit("/dashboard/signup", "/dashboard/signup", url.Values{"name": {"Eve"}, "email": {"eve@example.com"}, "password": {"correct horse battery"}})
	for _, p := range []string{"/dashboard/keys/" + keyID + "/revoke", link[1], "/dashboard/usage?key=" + keyID} {
		if st, _, _ := eve.send("GET", p, nil); st != http.StatusNotFound {
			t.Errorf("Eve GET %s: %d, want 404", p, st)
		}
	}

	// Revoke: confirm, then the next call fails.
	st, _, loc = b.submit("/dashboard/keys/"+keyID+"/revoke", "/dashboard/keys/"+keyID+"/revoke", nil)
	if st != http.StatusSeeOther || loc != "/dashboard/keys?done=revoked" {
		t.Fatalf("revoke: %d %q", st, loc)
	}
	if st := chat(); st != http.StatusUnauthorized {
		t.Fatalf("chat with a revoked key: %d, want 401", st)
	}
}

// TestDashboardCSRFSecretAcrossInstances: two gateways on one database
// behind one site accept each other's dashboard forms only when they share
// -dashboard-csrf-secret. (Cookies ignore ports, so one jar serves both.)
func TestDashboardCSRFSecretAcrossInstances(t *testing.T) {
	db := filepath.Join(t.TempDir(), "gw.db")
	secret := strings.Repeat("s", 32)
	// Several processes on one file keep their holds in it (-shared-db).
	a := e2e.Start(t, run, "-db", db, "-shared-db", "-dashboard-csrf-secret", secret)
	b := e2e.Start(t, run, "-db", db, "-shared-db", "-dashboard-csrf-secret", secret)
	c := e2e.Start(t, run, "-db", db, "-shared-db") // a random secret

	ca := newFormClient(t, a.URL)
	ca.submit("/dashboard/signup", "/dashboard/signup", url.Values{"name": {"Asha"}, "email": {"asha@example.com"}, "password": {"correct horse battery"}})
	page := ca.get("/dashboard/keys", http.StatusOK)
	for _, tc := range []struct {
		srv  *e2e.Server
		want int
	}{{b, http.StatusSeeOther}, {c, http.StatusForbidden}} {
		other := &formClient{t: t, base: tc.srv.URL, c: ca.c}
		st, body, loc := other.submitFrom(page, "/dashboard/keys", url.Values{"name": {"k"}})
		if st != tc.want {
			t.Fatalf("form of instance A posted to %s: %d, want %d\n%s", tc.srv.URL, st, tc.want, body)
		}
		if st == http.StatusSeeOther {
			// The key created on B is shown once by A: the slot is in
			// the shared database, sealed under the shared secret.
			shown := ca.get(loc, http.StatusOK)
			if !regexp.MustCompile(`id="new-key"[^>]*value="forii_sk_`).MatchString(shown) {
				t.Fatalf("instance A does not show the key created on B:\n%s", shown)
			}
		}
	}
	if _, err := parseFlags([]string{"-dashboard-csrf-secret", "short"}, io.Discard); err == nil {
		t.Fatal("a short secret was accepted")
	}
}
