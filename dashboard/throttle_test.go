package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/ratelimit"
)

// With a Throttle, the sign-in and sign-up pages refuse the 11th failed
// sign-in and the 11th sign-up of an address with a 429 page and a
// Retry-After of at most a minute, and the right password works again
// once the window passes.
func TestDashboardThrottle(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		th, err := keyledger.NewAuthThrottle(ratelimit.NewMemory(&ratelimit.MemoryOptions{Now: o.Now}), nil)
		if err != nil {
			t.Fatal(err)
		}
		o.Throttle = th
	})
	if _, err := e.kl.Signup(context.Background(), account.CreateParams{Name: "Owner", Email: "owner@example.com", Password: testPassword}); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	signIn := func(pw string) resp {
		return b.submit("/dashboard/signin", "/dashboard/signin", url.Values{"email": {"owner@example.com"}, "password": {pw}})
	}
	for i := range 10 {
		if r := signIn("wrong password"); r.status != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i, r.status)
		}
	}
	r := signIn(testPassword)
	if r.status != http.StatusTooManyRequests || !strings.Contains(r.body, "10 failed logins per minute") {
		t.Fatalf("11th sign-in: %d\n%s", r.status, r.body)
	}
	if ra := r.header.Get("Retry-After"); ra == "" || len(ra) > 2 {
		t.Fatalf("Retry-After %q", ra)
	}
	e.clock.Advance(time.Minute)
	if r := signIn(testPassword); r.status != http.StatusSeeOther {
		t.Fatalf("after the window: %d\n%s", r.status, r.body)
	}

	for range 10 {
		e.signup("Person")
	}
	r = e.browser().submit("/dashboard/signup", "/dashboard/signup", url.Values{"name": {"One more"}, "email": {"more@example.com"}, "password": {testPassword}})
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "60" {
		t.Fatalf("11th sign-up: %d %q\n%s", r.status, r.header.Get("Retry-After"), r.body)
	}
}
