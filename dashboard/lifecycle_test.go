package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/keyledger/keyledger/account"
)

// outbox is a Mailer that keeps every message.
type outbox struct {
	mu   sync.Mutex
	msgs []account.Message
}

func (o *outbox) SendMail(_ context.Context, m account.Message) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.msgs = append(o.msgs, m)
	return nil
}

func (o *outbox) all() []account.Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]account.Message(nil), o.msgs...)
}

// Forgot → mailed link → reset page signs every session out; change
// password keeps only this browser signed in.
func TestPasswordPages(t *testing.T) {
	mb := &outbox{}
	e := newEnvWithMailer(t, mb)
	b, a := e.signup("Pat")
	other := e.browser()
	if r := other.submit("/dashboard/signin", "/dashboard/signin", url.Values{"email": {a.Email}, "password": {testPassword}}); r.status != http.StatusSeeOther {
		t.Fatalf("second sign-in: %d", r.status)
	}
	// Change: wrong current password refused; right one keeps this browser only.
	if r := b.submit("/dashboard/password", "/dashboard/password", url.Values{"current_password": {"nope nope"}, "new_password": {"second password"}}); r.status != http.StatusBadRequest || !strings.Contains(r.body, "current password is wrong") {
		t.Fatalf("wrong current: %d\n%s", r.status, r.body)
	}
	r := b.submit("/dashboard/password", "/dashboard/password", url.Values{"current_password": {testPassword}, "new_password": {"second password"}})
	if r.status != http.StatusSeeOther || r.location != "/dashboard/?done=password" {
		t.Fatalf("change: %d %q\n%s", r.status, r.location, r.body)
	}
	b.mustGet("/dashboard/keys", http.StatusOK)
	if r := other.get("/dashboard/keys"); r.status != http.StatusSeeOther {
		t.Fatalf("the other session survived a password change: %d", r.status)
	}

	// Forgot: the same page for a stranger, and no mail for them.
	anon := e.browser()
	for _, email := range []string{"stranger@example.com", a.Email} {
		r := anon.submit("/dashboard/forgot", "/dashboard/forgot", url.Values{"email": {email}})
		if r.status != http.StatusOK || !strings.Contains(r.body, "If an account uses this address") {
			t.Fatalf("forgot %s: %d\n%s", email, r.status, r.body)
		}
	}
	msgs := mb.all()
	if len(msgs) != 1 || msgs[0].Kind != account.MailPasswordReset || msgs[0].To != a.Email {
		t.Fatalf("mails %+v", msgs)
	}
	tok := msgs[0].Token.Reveal()
	page := anon.mustGet("/dashboard/reset?token="+url.QueryEscape(tok), http.StatusOK)
	if !strings.Contains(page.body, `name="token" value="`+tok+`"`) {
		t.Fatalf("reset page lacks the token:\n%s", page.body)
	}
	f := url.Values{"token": {tok}, "password": {"third password"}, "csrf": {anon.token()}}
	if r := anon.post("/dashboard/reset", f); r.status != http.StatusOK || !strings.Contains(r.body, "every session was signed out") {
		t.Fatalf("reset: %d\n%s", r.status, r.body)
	}
	if r := b.get("/dashboard/keys"); r.status != http.StatusSeeOther {
		t.Fatalf("a session survived the reset: %d", r.status)
	}
	anon.mustGet("/dashboard/signin", http.StatusOK)
	f.Set("csrf", anon.token())
	if r := anon.post("/dashboard/reset", f); r.status != http.StatusBadRequest || !strings.Contains(r.body, "already used or expired") {
		t.Fatalf("reused token: %d\n%s", r.status, r.body)
	}
	if r := anon.submit("/dashboard/signin", "/dashboard/signin", url.Values{"email": {a.Email}, "password": {"third password"}}); r.status != http.StatusSeeOther {
		t.Fatalf("sign in with the new password: %d\n%s", r.status, r.body)
	}
}

// With VerifySignups, sign-up answers the same for a new and a taken
// address, and the mailed link pays the grant once.
func TestVerifiedSignupPages(t *testing.T) {
	mb := &outbox{}
	e := newEnvWithMailer(t, mb, func(o *Options) { o.VerifySignups = true })
	b := e.browser()
	form := url.Values{"name": {"Val"}, "email": {"val@example.com"}, "password": {testPassword}}
	first := b.submit("/dashboard/signup", "/dashboard/signup", form)
	form.Set("email", "VAL@example.com")
	second := b.submit("/dashboard/signup", "/dashboard/signup", form)
	if first.status != http.StatusOK || second.status != http.StatusOK || !strings.Contains(first.body, "Check your mail") ||
		strings.ReplaceAll(first.body, b.token(), "") != strings.ReplaceAll(second.body, b.token(), "") {
		t.Fatalf("sign-up pages differ: %d %d\n%s\n%s", first.status, second.status, first.body, second.body)
	}
	msgs := mb.all()
	if len(msgs) != 2 || msgs[0].Kind != account.MailVerifyEmail || msgs[1].Kind != account.MailAlreadyRegistered {
		t.Fatalf("mails %+v", msgs)
	}
	a, err := e.kl.Accounts.GetByEmail(context.Background(), "val@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if bal, _ := e.kl.Credits.Balance(context.Background(), a.ID); !bal.IsZero() {
		t.Fatalf("grant before verification: %s", bal)
	}
	r := b.mustGet("/dashboard/verify?token="+url.QueryEscape(msgs[0].Token.Reveal()), http.StatusOK)
	if !strings.Contains(r.body, "Address confirmed") {
		t.Fatalf("verify page:\n%s", r.body)
	}
	if bal, _ := e.kl.Credits.Balance(context.Background(), a.ID); bal.String() != "50" {
		t.Fatalf("balance after verification: %s", bal)
	}
	b.mustGet("/dashboard/verify?token="+url.QueryEscape(msgs[0].Token.Reveal()), http.StatusBadRequest)
}
