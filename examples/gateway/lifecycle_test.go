package main

import (
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

var tokenRe = regexp.MustCompile(`klt_[A-Za-z0-9_-]{43}`)

// mailToken waits for nothing: it reads the newest mail file of dir and
// returns the token in it.
func mailToken(t *testing.T, dir string) string {
	t.Helper()
	files, err := os.ReadDir(dir)
	if err != nil || len(files) == 0 {
		t.Fatalf("no mail in %s: %v", dir, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, files[len(files)-1].Name()))
	if err != nil {
		t.Fatal(err)
	}
	tok := tokenRe.FindString(string(b))
	if tok == "" {
		t.Fatalf("no token in mail:\n%s", b)
	}
	return tok
}

// In the development default, password reset mails go to files in
// -mail-dir (never to the log), a reset signs every session out, a
// password change keeps only the new session, and a closed account cannot
// sign in, keeps no working key, and its address earns no second grant.
func TestAccountLifecycleDevelopmentMode(t *testing.T) {
	mailDir := filepath.Join(t.TempDir(), "mail")
	g := startGateway(t, "-mail-dir", mailDir)
	u := g.signup("Life")
	email := ""
	a := g.must(200, "GET", "/v1/accounts/"+u.id, u.token, nil)
	email = a["email"].(string)

	// Forgot: the same answer for a stranger's address, and no mail.
	for _, e := range []string{"stranger@example.com", email} {
		r := g.must(202, "POST", "/v1/password/forgot", "", map[string]string{"email": e})
		if r["status"] != "reset_mail_sent_if_registered" {
			t.Fatalf("forgot: %v", r)
		}
	}
	files, _ := os.ReadDir(mailDir)
	if len(files) != 1 {
		t.Fatalf("%d mail files, want 1 (none for the stranger)", len(files))
	}
	reset := mailToken(t, mailDir)
	g.logs.Secret("reset token", reset)
	g.must(400, "POST", "/v1/password/reset", "", map[string]string{"token": reset, "password": "short"})
	g.must(200, "POST", "/v1/password/reset", "", map[string]string{"token": reset, "password": "a brand new password"})
	g.must(400, "POST", "/v1/password/reset", "", map[string]string{"token": reset, "password": "yet another password"})
	g.must(401, "GET", "/v1/accounts/"+u.id, u.token, nil) // every session signed out
	g.must(401, "POST", "/v1/sessions", "", map[string]string{"email": email, "password": "correct horse battery"})
	s1 := g.must(201, "POST", "/v1/sessions", "", map[string]string{"email": email, "password": "a brand new password"})["token"].(string)
	s2 := g.must(201, "POST", "/v1/sessions", "", map[string]string{"email": email, "password": "a brand new password"})["token"].(string)

	// Change: the current password is needed; other sessions end.
	g.must(401, "POST", "/v1/accounts/"+u.id+"/password", s1, map[string]string{"current_password": "wrong one", "new_password": "third password"})
	ch := g.must(201, "POST", "/v1/accounts/"+u.id+"/password", s1, map[string]string{"current_password": "a brand new password", "new_password": "third password"})
	s3 := ch["token"].(string)
	g.must(401, "GET", "/v1/accounts/"+u.id, s2, nil)
	g.must(401, "GET", "/v1/accounts/"+u.id, s1, nil)
	g.must(200, "GET", "/v1/accounts/"+u.id, s3, nil)

	// Customers cannot change their own plan: there is no such route, and
	// the operator route is 404 to a session.
	g.must(404, "PATCH", "/v1/admin/accounts/"+u.id, s3, map[string]string{"plan": "enterprise"})
	g.must(404, "PATCH", "/v1/accounts/"+u.id, s3, map[string]string{"plan": "enterprise"})

	// Close: the password is needed; then nothing works.
	g.must(401, "DELETE", "/v1/accounts/"+u.id, s3, map[string]string{"password": "wrong"})
	c := g.must(200, "DELETE", "/v1/accounts/"+u.id, s3, map[string]string{"password": "third password"})
	if c["status"] != "closed" {
		t.Fatalf("close: %v", c)
	}
	g.must(401, "GET", "/v1/accounts/"+u.id, s3, nil)
	g.must(401, "POST", "/v1/sessions", "", map[string]string{"email": email, "password": "third password"})
	st, _, body := g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("forii/deepseek-v3", 8, false))
	if st != 401 {
		t.Fatalf("a closed account's key: %d %s", st, body)
	}
	// The address can sign up again, without a second ₹50.
	again := g.must(201, "POST", "/v1/accounts", "", map[string]string{"name": "Back", "email": email, "password": "correct horse battery"})
	if num(t, again["credits_inr"]).String() != "0" {
		t.Fatalf("second signup grant: %v", again)
	}
	if strings.Contains(g.logs.String(), reset) {
		t.Fatal("the reset token reached the log")
	}
}

// An operator changes a plan with the admin token; the new limits apply.
func TestAdminSetsPlan(t *testing.T) {
	t.Setenv("GATEWAY_ADMIN_TOKEN", "an-operator-token-of-at-least-32-bytes!")
	g := startGateway(t)
	g.logs.Secret("admin token", "an-operator-token-of-at-least-32-bytes!")
	u := g.signup("Upgrade")
	g.must(404, "PATCH", "/v1/admin/accounts/"+u.id, "not-the-admin-token", map[string]string{"plan": "pro"})
	g.must(400, "PATCH", "/v1/admin/accounts/"+u.id, "an-operator-token-of-at-least-32-bytes!", map[string]string{"plan": "platinum"})
	g.must(404, "PATCH", "/v1/admin/accounts/acct_nope", "an-operator-token-of-at-least-32-bytes!", map[string]string{"plan": "pro"})
	a := g.must(200, "PATCH", "/v1/admin/accounts/"+u.id, "an-operator-token-of-at-least-32-bytes!", map[string]string{"plan": "pro"})
	if a["plan"] != "pro" {
		t.Fatalf("set plan: %v", a)
	}
	_, h, _ := g.do("POST", "/inference/v1/chat/completions", u.key, chatBody("forii/deepseek-v3", 8, false))
	if got := h.Get("X-Ratelimit-Limit-Requests"); got != "6000" {
		t.Fatalf("limit after the plan change: %q, want Pro's 6000", got)
	}
}

// smtpSink is a loopback SMTP relay without TLS that keeps each message.
type smtpSink struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs []string
}

func newSMTPSink(t *testing.T) *smtpSink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpSink{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.session(c)
		}
	}()
	return s
}

func (s *smtpSink) session(c net.Conn) {
	defer c.Close()
	tp := textproto.NewConn(c)
	_ = tp.PrintfLine("220 sink")
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		switch strings.ToUpper(strings.SplitN(line, " ", 2)[0]) {
		case "EHLO", "HELO":
			_ = tp.PrintfLine("250 sink")
		case "DATA":
			_ = tp.PrintfLine("354 go")
			b, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(b))
			s.mu.Unlock()
			_ = tp.PrintfLine("250 ok")
		case "QUIT":
			_ = tp.PrintfLine("221 bye")
			return
		default:
			_ = tp.PrintfLine("250 ok")
		}
	}
}

func (s *smtpSink) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

// With -smtp, sign-up answers 202 alike for new and taken addresses, pays
// no grant until the mailed link is opened, and pays it once.
func TestSignupVerificationMode(t *testing.T) {
	sink := newSMTPSink(t)
	g := startGateway(t, "-smtp", sink.ln.Addr().String(), "-smtp-from", "noreply@forii.example")
	first := g.must(202, "POST", "/v1/accounts", "", map[string]string{"name": "V", "email": "v@example.com", "password": "correct horse battery"})
	dup := g.must(202, "POST", "/v1/accounts", "", map[string]string{"name": "W", "email": "V@example.com", "password": "another password"})
	if first["status"] != dup["status"] || first["message"] != dup["message"] || first["id"] != nil {
		t.Fatalf("sign-up answers differ or leak: %v vs %v", first, dup)
	}
	msgs := sink.all()
	if len(msgs) != 2 || !strings.Contains(msgs[0], "Confirm your Forii email address") || !strings.Contains(msgs[1], "already has an account") {
		t.Fatalf("mails: %q", msgs)
	}
	tok := tokenRe.FindString(msgs[0])
	g.logs.Secret("verification token", tok)
	sess := g.must(201, "POST", "/v1/sessions", "", map[string]string{"email": "v@example.com", "password": "correct horse battery"})
	bal := g.must(200, "GET", "/v1/accounts/"+sess["account_id"].(string)+"/balance", sess["token"].(string), nil)
	if num(t, bal["credits_inr"]).String() != "0" {
		t.Fatalf("grant before verification: %v", bal)
	}
	a := g.must(200, "GET", "/v1/verify-email?token="+tok, "", nil)
	if num(t, a["credits_inr"]).String() != "50" {
		t.Fatalf("after verification: %v", a)
	}
	g.must(400, "GET", "/v1/verify-email?token="+tok, "", nil)
}

func TestAbuseFlags(t *testing.T) {
	parse := func(args ...string) (config, error) { return parseFlags(args, io.Discard) }
	// Demo mode: loopback only, unless -demo or real Razorpay secrets.
	if _, err := parse("-addr", "0.0.0.0:8080"); err == nil || !strings.Contains(err.Error(), "demo mode") {
		t.Fatalf("demo mode on 0.0.0.0: %v", err)
	}
	if _, err := parse("-addr", "0.0.0.0:8080", "-demo"); err != nil {
		t.Fatalf("-demo: %v", err)
	}
	if _, err := parse("-addr", "0.0.0.0:8080", "-razorpay-key-id", "rzp_live_x", "-razorpay-secret", "s1", "-razorpay-webhook-secret", "s2"); err != nil {
		t.Fatalf("real secrets: %v", err)
	}
	for _, addr := range []string{"127.0.0.1:8080", "localhost:8080", "[::1]:8080"} {
		c, err := parse("-addr", addr)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if c.abuse.secure(addr) {
			t.Fatalf("auto Secure cookies on loopback %s", addr)
		}
	}
	c, _ := parse("-addr", "0.0.0.0:8080", "-demo")
	if !c.abuse.secure(c.addr) {
		t.Fatal("auto Secure cookies off on 0.0.0.0")
	}
	c, _ = parse("-addr", "0.0.0.0:8080", "-demo", "-secure-cookies", "false")
	if c.abuse.secure(c.addr) {
		t.Fatal("-secure-cookies false ignored")
	}
	for _, bad := range [][]string{
		{"-trusted-proxies", "10.0.0.0/33"},
		{"-secure-cookies", "maybe"},
		{"-smtp", "mail.example.com:587"}, // no -smtp-from
		{"-github-keys-url", "ftp://x"},
		{"-public-url", "nope"},
	} {
		if _, err := parse(bad...); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
	c, err := parse("-trusted-proxies", "10.0.0.0/8,192.0.2.1")
	if err != nil || !c.abuse.proxies.Trusts(netip.MustParseAddr("10.1.1.1")) {
		t.Fatalf("-trusted-proxies: %v", err)
	}
}
