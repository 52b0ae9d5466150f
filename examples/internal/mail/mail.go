// Package mail is the example servers' account.Mailer: a development
// mailer that writes each message to a file in a directory (never to the
// log: a verification or reset link is a secret), and an SMTP mailer
// (net/smtp, STARTTLS required unless the server is on loopback).
package mail

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/mail"
	"net/smtp"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyledger/keyledger/account"
)

// Errors.
var (
	ErrInvalidConfig = errors.New("mail: invalid configuration")
	ErrNoSTARTTLS    = errors.New("mail: the SMTP server does not offer STARTTLS")
)

// Links says where the links in mails point: BaseURL is the server's
// public URL ("https://api.example.com"); the paths are appended with the
// token as a query parameter.
type Links struct {
	BaseURL    string
	VerifyPath string // "/verify" by default (a page that confirms the address)
	ResetPath  string // "/reset" by default (a page that asks for the new password)
	Product    string // "keyledger" by default
}

func (l Links) withDefaults() Links {
	if l.VerifyPath == "" {
		l.VerifyPath = "/verify"
	}
	if l.ResetPath == "" {
		l.ResetPath = "/reset"
	}
	if l.Product == "" {
		l.Product = "keyledger"
	}
	l.BaseURL = strings.TrimRight(l.BaseURL, "/")
	return l
}

// Compose renders a message as a subject and a plain-text body. The body
// holds the token (in a link); treat it as a secret.
func Compose(m account.Message, l Links) (subject, body string) {
	l = l.withDefaults()
	link := func(path string) string {
		return l.BaseURL + path + "?token=" + url.QueryEscape(m.Token.Reveal())
	}
	exp := m.ExpiresAt.UTC().Format(time.RFC1123)
	switch m.Kind {
	case account.MailVerifyEmail:
		return "Confirm your " + l.Product + " email address",
			"Open this link to confirm your address and receive your signup credits:\n\n  " + link(l.VerifyPath) +
				"\n\nThe link works once, until " + exp + ". If you did not sign up, ignore this mail.\n"
	case account.MailPasswordReset:
		return "Reset your " + l.Product + " password",
			"Someone asked to reset the password of your account. To choose a new one, open this link:\n\n  " +
				link(l.ResetPath) + "\n\nIt works once, until " + exp + ". If it was not you, ignore this mail;\n" +
				"your password is unchanged.\n"
	case account.MailAlreadyRegistered:
		return "Sign-up attempt for your " + l.Product + " account",
			"Someone tried to sign up with this address, which already has an account.\n" +
				"If it was you, sign in instead, or reset your password if you forgot it.\n"
	}
	return l.Product + " account notice", "This is a notice about your account.\n"
}

// rfc5322 renders the message with headers.
func rfc5322(from, to, subject, body string, now time.Time) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@keyledger>\r\n",
		from, to, mime.QEncoding.Encode("utf-8", subject), now.UTC().Format(time.RFC1123Z), randomID())
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	b.WriteString(strings.ReplaceAll(body, "\n", "\r\n"))
	return b.Bytes()
}

func randomID() string {
	var r [12]byte
	_, _ = rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

// validAddr checks one bare address (no header injection).
func validAddr(a string) bool {
	p, err := mail.ParseAddress(a)
	return err == nil && p.Address == a && !strings.ContainsAny(a, "\r\n")
}

// DirMailer writes every message as an .eml file (mode 0600) in Dir: the
// development mailer. It never logs a message.
type DirMailer struct {
	Dir   string
	From  string // "keyledger@localhost" by default
	Links Links
	Now   func() time.Time
}

// SendMail implements account.Mailer.
func (d *DirMailer) SendMail(_ context.Context, m account.Message) error {
	if !validAddr(m.To) {
		return fmt.Errorf("%w: recipient %q", ErrInvalidConfig, m.To)
	}
	now := time.Now
	if d.Now != nil {
		now = d.Now
	}
	from := d.From
	if from == "" {
		from = "keyledger@localhost"
	}
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return fmt.Errorf("mail: %w", err)
	}
	subject, body := Compose(m, d.Links)
	name := fmt.Sprintf("%s-%s-%s.eml", now().UTC().Format("20060102T150405.000000000"), m.Kind, randomID())
	if err := os.WriteFile(filepath.Join(d.Dir, name), rfc5322(from, m.To, subject, body, now()), 0o600); err != nil {
		return fmt.Errorf("mail: %w", err)
	}
	return nil
}

// SMTPMailer sends messages through an SMTP server with net/smtp. It
// requires STARTTLS unless the server's host is a loopback address, and
// authenticates with PLAIN when Username is set.
type SMTPMailer struct {
	Addr     string // host:port
	From     string
	Username string
	Password string
	Links    Links
	// TLSConfig is used for STARTTLS (ServerName defaults to Addr's host).
	TLSConfig *tls.Config
	// Timeout bounds one whole delivery (30 seconds by default).
	Timeout time.Duration
	Now     func() time.Time
}

// Check validates the configuration.
func (s *SMTPMailer) Check() error {
	if _, _, err := net.SplitHostPort(s.Addr); err != nil {
		return fmt.Errorf("%w: SMTP address %q must be host:port", ErrInvalidConfig, s.Addr)
	}
	if !validAddr(s.From) {
		return fmt.Errorf("%w: sender %q", ErrInvalidConfig, s.From)
	}
	return nil
}

// SendMail implements account.Mailer.
func (s *SMTPMailer) SendMail(ctx context.Context, m account.Message) error {
	if err := s.Check(); err != nil {
		return err
	}
	if !validAddr(m.To) {
		return fmt.Errorf("%w: recipient %q", ErrInvalidConfig, m.To)
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	host, _, _ := net.SplitHostPort(s.Addr)
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("mail: dial %s: %w", s.Addr, err)
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("mail: %w", err)
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return fmt.Errorf("mail: EHLO: %w", err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		if s.TLSConfig != nil {
			cfg = s.TLSConfig.Clone()
			if cfg.ServerName == "" {
				cfg.ServerName = host
			}
		}
		if err := c.StartTLS(cfg); err != nil {
			return fmt.Errorf("mail: STARTTLS: %w", err)
		}
	} else if ip := net.ParseIP(host); !(host == "localhost" || ip != nil && ip.IsLoopback()) {
		return ErrNoSTARTTLS
	}
	if s.Username != "" {
		// net/smtp refuses PLAIN over an unencrypted non-loopback link.
		if err := c.Auth(smtp.PlainAuth("", s.Username, s.Password, host)); err != nil {
			return fmt.Errorf("mail: AUTH: %w", err)
		}
	}
	subject, body := Compose(m, s.Links)
	if err := c.Mail(s.From); err != nil {
		return fmt.Errorf("mail: MAIL FROM: %w", err)
	}
	if err := c.Rcpt(m.To); err != nil {
		return fmt.Errorf("mail: RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("mail: DATA: %w", err)
	}
	if _, err := w.Write(rfc5322(s.From, m.To, subject, body, now())); err != nil {
		return fmt.Errorf("mail: DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("mail: DATA: %w", err)
	}
	if err := c.Quit(); err != nil {
		return fmt.Errorf("mail: QUIT: %w", err)
	}
	return nil
}
