package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/usage"
)

const testPassword = "correct horse battery"

// testStart is the fake clock's start: 10:00 in Kolkata.
var testStart = time.Date(2026, 3, 10, 4, 30, 0, 0, time.UTC)

// env is a dashboard over a memstore KeyLedger on a fake clock, mounted at
// /dashboard/ of a test server, with fake payments and invoices.
type env struct {
	t     *testing.T
	kl    *keyledger.KeyLedger
	h     *Handler
	srv   *httptest.Server
	clock *fakeclock.Clock
	pay   *fakePayments
}

func newEnv(t *testing.T, mutate ...func(*Options)) *env {
	t.Helper()
	return newEnvWithMailer(t, nil, mutate...)
}

// newEnvWithMailer is newEnv with a Mailer on the account service.
func newEnvWithMailer(t *testing.T, mailer account.Mailer, mutate ...func(*Options)) *env {
	t.Helper()
	clock := fakeclock.New(testStart)
	prices, err := usage.NewPriceBook([]usage.ModelPrice{
		{Model: "forii/deepseek-v3", PromptPerMillion: decimal.NewFromInt(25), CompletionPerMillion: decimal.NewFromInt(100)},
		{Model: "forii/llama-3.1-8b", PromptPerMillion: decimal.NewFromInt(5), CompletionPerMillion: decimal.NewFromInt(10)},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	format, err := apikey.NewFormat(apikey.FormatConfig{Types: []apikey.KeyType{{Name: "sdk", Prefix: "forii_sk_"}, {Name: "api", Prefix: "forii_"}}})
	if err != nil {
		t.Fatal(err)
	}
	kl, err := keyledger.New(memstore.New(), &keyledger.Options{
		Now: clock.Now, Prices: prices,
		Accounts: &account.Options{Argon2: account.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 16}, Mailer: mailer},
		Keys:     &apikey.Options{Format: format},
		Credits:  &credits.Options{Unit: credits.INR()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kl.Close(context.Background()) })
	e := &env{t: t, kl: kl, clock: clock}
	e.pay = &fakePayments{kl: kl, orders: map[string]fakeOrder{}}
	o := &Options{BasePath: "/dashboard", ProductName: "Forii", Currency: "INR", TimeZone: "Asia/Kolkata",
		Payments: e.pay, Invoices: e.pay, Now: clock.Now}
	for _, m := range mutate {
		m(o)
	}
	if e.h, err = New(kl, o); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/dashboard/", e.h)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	return e
}

// browser is a client with its own cookie jar that does not follow
// redirects, so tests see every 303.
type browser struct {
	e    *env
	c    *http.Client
	last string // body of the last GET, for its CSRF token
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type resp struct {
	status   int
	body     string
	location string
	header   http.Header
}

func (b *browser) do(req *http.Request) resp {
	b.e.t.Helper()
	res, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, body: string(body), location: res.Header.Get("Location"), header: res.Header}
}

// get fetches a path of the test server.
func (b *browser) get(path string) resp {
	b.e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.e.srv.URL+path, nil)
	r := b.do(req)
	b.last = r.body
	return r
}

// mustGet fetches a page and checks its status.
func (b *browser) mustGet(path string, want int) resp {
	b.e.t.Helper()
	r := b.get(path)
	if r.status != want {
		b.e.t.Fatalf("GET %s: status %d, want %d\n%s", path, r.status, want, r.body)
	}
	return r
}

// post submits a form as is.
func (b *browser) post(path string, form url.Values) resp {
	b.e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// token returns the CSRF token of the last page fetched.
func (b *browser) token() string {
	b.e.t.Helper()
	m := csrfRe.FindStringSubmatch(b.last)
	if m == nil {
		b.e.t.Fatalf("no CSRF token on the last page:\n%s", b.last)
	}
	return m[1]
}

// submit fetches page, then posts form with the page's CSRF token to
// action, as a browser submitting a form does.
func (b *browser) submit(page, action string, form url.Values) resp {
	b.e.t.Helper()
	b.mustGet(page, http.StatusOK)
	f := url.Values{}
	for k, v := range form {
		f[k] = v
	}
	f.Set("csrf", b.token())
	return b.post(action, f)
}

var emailSeq struct {
	sync.Mutex
	n int
}

// signup signs a new account up through the dashboard and returns the
// browser (signed in) and the account.
func (e *env) signup(name string) (*browser, account.Account) {
	e.t.Helper()
	emailSeq.Lock()
	emailSeq.n++
	local := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' {
			return r
		}
		return -1
	}, strings.ToLower(name))
	email := fmt.Sprintf("%s%d@example.com", local, emailSeq.n)
	emailSeq.Unlock()
	b := e.browser()
	r := b.submit("/dashboard/signup", "/dashboard/signup", url.Values{"name": {name}, "email": {email}, "password": {testPassword}})
	if r.status != http.StatusSeeOther || r.location != "/dashboard/keys?done=welcome" {
		e.t.Fatalf("signup: %d %q\n%s", r.status, r.location, r.body)
	}
	a, err := e.kl.Accounts.GetByEmail(context.Background(), email)
	if err != nil {
		e.t.Fatal(err)
	}
	return b, a
}

// createKey creates a key through the dashboard and returns its raw
// secret and ID.
func (b *browser) createKey(name string, extra url.Values) (string, string) {
	b.e.t.Helper()
	f := url.Values{"name": {name}, "type": {"sdk"}}
	for k, v := range extra {
		f[k] = v
	}
	r := b.submit("/dashboard/keys", "/dashboard/keys", f)
	if r.status != http.StatusSeeOther || !strings.HasPrefix(r.location, "/dashboard/keys/new?slot=") {
		b.e.t.Fatalf("create key: %d %q, want a redirect to the key's page\n%s", r.status, r.location, r.body)
	}
	if r = b.get(r.location); r.status != http.StatusOK {
		b.e.t.Fatalf("new key page: %d\n%s", r.status, r.body)
	}
	m := regexp.MustCompile(`id="new-key" class="secret" type="text" readonly value="([^"]+)"`).FindStringSubmatch(r.body)
	if m == nil {
		b.e.t.Fatalf("no new key on the page:\n%s", r.body)
	}
	v, err := b.e.kl.Keys.Verify(context.Background(), apikey.RawKey(m[1]))
	if err != nil {
		b.e.t.Fatalf("the shown key does not verify: %v", err)
	}
	return m[1], v.KeyID
}

// use makes one metered request with a raw key.
func (e *env) use(raw, model string, prompt, completion int64, status int) {
	e.t.Helper()
	ctx := context.Background()
	g, err := e.kl.Authorize(ctx, apikey.RawKey(raw), keyledger.Request{Model: model, PromptTokens: prompt, MaxCompletionTokens: completion})
	if err != nil {
		e.t.Fatal(err)
	}
	out := keyledger.Outcome{StatusCode: status, PromptTokens: prompt, CompletionTokens: completion, Latency: 120 * time.Millisecond}
	if status >= 400 {
		out.ErrorType, out.ErrorMessage = "upstream_error", "model overloaded"
	}
	if _, err := g.Complete(ctx, out); err != nil {
		e.t.Fatal(err)
	}
}

// fakePayments is a payment provider that signs its checkout fields with
// a fixed secret, the way Razorpay's checkout does, and invoices every
// purchase.
type fakePayments struct {
	kl     *keyledger.KeyLedger
	mu     sync.Mutex
	orders map[string]fakeOrder
	n      int
	// failStart, if set, fails StartPurchase (an unexpected error).
	failStart error
}

type fakeOrder struct {
	account string
	amount  credits.Amount
	paid    bool
}

func (p *fakePayments) CheckAmount(a credits.Amount) error {
	if a.Cmp(credits.AmountFromInt(1)) < 0 {
		return &UserError{Message: "The amount must be at least 1.00."}
	}
	if a.Cmp(credits.AmountFromInt(500000)) > 0 {
		return &UserError{Message: "The amount must be at most 500000.00."}
	}
	return nil
}

func (p *fakePayments) StartPurchase(_ context.Context, acct string, a credits.Amount) (Checkout, error) {
	if p.failStart != nil {
		return Checkout{}, p.failStart
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	id := fmt.Sprintf("order_%03d", p.n)
	p.orders[id] = fakeOrder{account: acct, amount: a}
	return Checkout{OrderID: id, Amount: a, Fields: []Field{{"order_id", id}, {"signature", "sig-" + id}}, Note: "Test mode."}, nil
}

func (p *fakePayments) CompletePurchase(ctx context.Context, acct string, form url.Values) (Purchase, error) {
	id := form.Get("order_id")
	p.mu.Lock()
	o, ok := p.orders[id]
	p.mu.Unlock()
	if !ok || o.account != acct {
		return Purchase{}, ErrNotFound
	}
	if form.Get("signature") != "sig-"+id {
		return Purchase{}, &UserError{Message: "The payment signature does not match."}
	}
	e, err := p.kl.Credits.Purchase(ctx, credits.CreditParams{AccountID: acct, Amount: o.amount, Reference: id, Description: "Purchase " + id, IdempotencyKey: "order:" + id})
	if err != nil {
		return Purchase{}, err
	}
	p.mu.Lock()
	o.paid = true
	p.orders[id] = o
	p.mu.Unlock()
	return Purchase{Amount: o.amount, TransactionID: e.ID, InvoiceID: "inv_" + id}, nil
}

func (p *fakePayments) ListInvoices(_ context.Context, acct string) ([]Invoice, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Invoice
	for id, o := range p.orders {
		if o.account == acct && o.paid {
			out = append(out, Invoice{ID: "inv_" + id, Number: "INV/" + id, Date: testStart, Amount: o.amount, Description: "Credits"})
		}
	}
	return out, nil
}

func (p *fakePayments) InvoicePDF(_ context.Context, acct, id string) (string, []byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	o, ok := p.orders[strings.TrimPrefix(id, "inv_")]
	if !ok || o.account != acct || !o.paid {
		return "", nil, ErrNotFound
	}
	return "INV-" + id + ".pdf", []byte("%PDF-1.4 fake " + id), nil
}

var errBoom = errors.New("boom")
