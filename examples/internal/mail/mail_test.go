package mail

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
)

// smtpServer is a minimal in-process SMTP server: EHLO, STARTTLS, AUTH
// PLAIN, MAIL, RCPT, DATA, QUIT. It records what it received.
type smtpServer struct {
	ln       net.Listener
	tls      *tls.Config
	noTLS    bool // do not offer STARTTLS
	user, pw string

	mu   sync.Mutex
	got  []received
	errs []string
}

type received struct {
	from, to, data string
	tls, authed    bool
}

func newSMTPServer(t *testing.T, noTLS bool) (*smtpServer, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpServer{ln: ln, noTLS: noTLS, user: "mailer", pw: "s3cret-smtp",
		tls: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}}
	go s.serve()
	t.Cleanup(func() { ln.Close() })
	return s, pool
}

func (s *smtpServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.session(c)
	}
}

func (s *smtpServer) fail(msg string) {
	s.mu.Lock()
	s.errs = append(s.errs, msg)
	s.mu.Unlock()
}

func (s *smtpServer) session(c net.Conn) {
	defer c.Close()
	tp := textproto.NewConn(c)
	var r received
	_ = tp.PrintfLine("220 test ESMTP")
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
		switch cmd {
		case "EHLO", "HELO":
			exts := []string{"250-test"}
			if !s.noTLS && !r.tls {
				exts = append(exts, "250-STARTTLS")
			}
			if r.tls || s.noTLS {
				exts = append(exts, "250-AUTH PLAIN")
			}
			exts = append(exts, "250 8BITMIME")
			for _, e := range exts {
				_ = tp.PrintfLine("%s", e)
			}
		case "STARTTLS":
			_ = tp.PrintfLine("220 go ahead")
			tc := tls.Server(c, s.tls)
			if err := tc.Handshake(); err != nil {
				s.fail("handshake: " + err.Error())
				return
			}
			c = tc
			tp = textproto.NewConn(tc)
			r.tls = true
		case "AUTH":
			f := strings.Fields(line)
			if len(f) != 3 || f[1] != "PLAIN" {
				_ = tp.PrintfLine("504 only PLAIN")
				continue
			}
			b, _ := base64.StdEncoding.DecodeString(f[2])
			parts := strings.Split(string(b), "\x00")
			if len(parts) != 3 || parts[1] != s.user || parts[2] != s.pw {
				_ = tp.PrintfLine("535 bad credentials")
				continue
			}
			r.authed = true
			_ = tp.PrintfLine("235 ok")
		case "MAIL":
			r.from = strings.TrimSuffix(strings.TrimPrefix(line[5:], "FROM:<"), ">")
			if i := strings.Index(r.from, ">"); i >= 0 {
				r.from = r.from[:i]
			}
			_ = tp.PrintfLine("250 ok")
		case "RCPT":
			r.to = strings.TrimSuffix(strings.TrimPrefix(line[5:], "TO:<"), ">")
			_ = tp.PrintfLine("250 ok")
		case "DATA":
			_ = tp.PrintfLine("354 go")
			b, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			r.data = string(b)
			s.mu.Lock()
			s.got = append(s.got, r)
			s.mu.Unlock()
			_ = tp.PrintfLine("250 queued")
		case "QUIT":
			_ = tp.PrintfLine("221 bye")
			return
		default:
			_ = tp.PrintfLine("502 unknown")
		}
	}
}

func (s *smtpServer) received() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.got...)
}

var expires = time.Date(2026, 5, 1, 11, 0, 0, 0, time.UTC)

func TestSMTPMailerUsesSTARTTLSAndAuth(t *testing.T) {
	srv, pool := newSMTPServer(t, false)
	m := &SMTPMailer{Addr: srv.ln.Addr().String(), From: "noreply@forii.example", Username: srv.user, Password: srv.pw,
		Links: Links{BaseURL: "https://api.forii.example/", Product: "Forii", VerifyPath: "/v1/verify-email"}, TLSConfig: &tls.Config{RootCAs: pool}}
	err := m.SendMail(context.Background(), account.Message{Kind: account.MailVerifyEmail, To: "asha@example.com",
		Token: "klt_secret-token-value", ExpiresAt: expires})
	if err != nil {
		t.Fatal(err)
	}
	got := srv.received()
	if len(got) != 1 || !got[0].tls || !got[0].authed || got[0].from != "noreply@forii.example" || got[0].to != "asha@example.com" {
		t.Fatalf("received %+v (errors %v)", got, srv.errs)
	}
	d := got[0].data
	for _, want := range []string{"To: asha@example.com", "Subject: Confirm your Forii email address",
		"https://api.forii.example/v1/verify-email?token=klt_secret-token-value"} {
		if !strings.Contains(d, want) {
			t.Errorf("mail lacks %q:\n%s", want, d)
		}
	}
	// Wrong credentials fail, and say so.
	m.Password = "wrong"
	if err := m.SendMail(context.Background(), account.Message{Kind: account.MailAlreadyRegistered, To: "asha@example.com"}); err == nil {
		t.Fatal("wrong SMTP password accepted")
	}
}

func TestSMTPMailerRefusesPlaintextToRemoteHosts(t *testing.T) {
	srv, _ := newSMTPServer(t, true)
	// On loopback without STARTTLS (a local relay) delivery works.
	m := &SMTPMailer{Addr: srv.ln.Addr().String(), From: "noreply@forii.example"}
	if err := m.SendMail(context.Background(), account.Message{Kind: account.MailAlreadyRegistered, To: "a@example.com"}); err != nil {
		t.Fatalf("loopback relay: %v", err)
	}
	// Header injection through the recipient is refused before dialing.
	if err := m.SendMail(context.Background(), account.Message{To: "a@example.com\r\nBcc: x@example.com"}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("injected recipient: %v", err)
	}
	if err := (&SMTPMailer{Addr: "nohost", From: "a@example.com"}).Check(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("bad address: %v", err)
	}
}

func TestDirMailerWritesFilesOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mail")
	m := &DirMailer{Dir: dir, Links: Links{BaseURL: "http://127.0.0.1:8080"}}
	if err := m.SendMail(context.Background(), account.Message{Kind: account.MailPasswordReset, To: "r@example.com",
		Token: "klt_reset-secret", ExpiresAt: expires}); err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadDir(dir)
	if err != nil || len(files) != 1 || !strings.HasSuffix(files[0].Name(), ".eml") || strings.Contains(files[0].Name(), "klt_") {
		t.Fatalf("files %v %v", files, err)
	}
	info, _ := files[0].Info()
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", info.Mode())
	}
	b, _ := os.ReadFile(filepath.Join(dir, files[0].Name()))
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	found := false
	for sc.Scan() {
		found = found || strings.Contains(sc.Text(), "klt_reset-secret")
	}
	if !found || !strings.Contains(string(b), "Subject: Reset your keyledger password") {
		t.Fatalf("mail file:\n%s", b)
	}
}
