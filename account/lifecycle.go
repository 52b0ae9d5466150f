package account

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"time"
)

// TokenKind says what a one-time token is for.
type TokenKind string

// Token kinds.
const (
	TokenVerifyEmail   TokenKind = "verify_email"
	TokenPasswordReset TokenKind = "password_reset"
)

// Token is a one-time token as stored: only its SHA-256, never the token.
type Token struct {
	Hash      [32]byte  `json:"-"`
	Kind      TokenKind `json:"kind"`
	AccountID string    `json:"account_id"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// MessageKind says which mail a Message is.
type MessageKind string

// Mails the Service sends.
const (
	// MailVerifyEmail carries a verification token for a new account.
	MailVerifyEmail MessageKind = "verify_email"
	// MailPasswordReset carries a password reset token.
	MailPasswordReset MessageKind = "password_reset"
	// MailAlreadyRegistered tells the owner of an address that someone
	// tried to sign up with it again (sign-up answers the same either way,
	// so the mail is what tells them). It carries no token.
	MailAlreadyRegistered MessageKind = "already_registered"
)

// Message is one mail the Service asks its Mailer to send. Token is a
// secret (whoever holds it verifies the address or resets the password):
// a Mailer puts it in a link of the mail it composes and never logs it.
type Message struct {
	Kind      MessageKind
	To        string
	AccountID string
	Token     Secret    // empty for MailAlreadyRegistered
	ExpiresAt time.Time // when Token stops working
}

// Mailer delivers the Service's mails. SendMail must not log Token.
type Mailer interface {
	SendMail(ctx context.Context, m Message) error
}

// closedDomain is the address domain of scrubbed accounts (.invalid is
// reserved by RFC 2606, so it can never be a real mailbox).
const closedDomain = "@closed.invalid"

// ClosedName is the name of every closed account.
const ClosedName = "Closed account"

// EmailHash is what is kept of a closed account's email: a SHA-256 of the
// normalized address under a fixed label, so that signing up again with
// it can be recognized (no second signup grant) without keeping the
// address.
func EmailHash(normalizedEmail string) [32]byte {
	return sha256.Sum256([]byte("keyledger closed account email\x00" + normalizedEmail))
}

// Scrub returns a with its personal fields removed, as CloseAccount stores
// it: the name becomes ClosedName, the email a placeholder unique to the
// account in the reserved .invalid domain, metadata is dropped, the status
// is closed. The ID, plan, limits, time zone and creation time stay, so the
// account's ledger and usage still read.
func Scrub(a Account, now time.Time) Account {
	a = a.Clone()
	a.Name = ClosedName
	a.Email = "closed-" + strings.ToLower(a.ID) + closedDomain
	a.Metadata = nil
	a.Status = StatusClosed
	a.UpdatedAt = now
	return a
}

// Scrubbed reports whether a was already closed by CloseAccount.
func Scrubbed(a Account) bool {
	return a.Status == StatusClosed && strings.HasSuffix(a.Email, closedDomain)
}

// newOneTimeToken makes a token of kind for an account and stores its hash.
// mailToken creates a one-time token of kind for a and mails it as mk.
func (s *Service) mailToken(ctx context.Context, kind TokenKind, mk MessageKind, a Account) error {
	tok, t, err := s.newOneTimeToken(ctx, kind, a.ID)
	if err != nil {
		return err
	}
	return s.opt.Mailer.SendMail(ctx, Message{Kind: mk, To: a.Email, AccountID: a.ID, Token: tok, ExpiresAt: t.ExpiresAt})
}

func (s *Service) newOneTimeToken(ctx context.Context, kind TokenKind, accountID string) (Secret, Token, error) {
	tok := newToken(s.opt.OneTimeTokenPrefix)
	h, _ := hashToken(s.opt.OneTimeTokenPrefix, tok)
	now := s.opt.Now()
	t := Token{Hash: h, Kind: kind, AccountID: accountID, CreatedAt: now, ExpiresAt: now.Add(s.opt.TokenTTL)}
	if err := s.store.CreateToken(ctx, t); err != nil {
		return "", Token{}, err
	}
	return tok, t, nil
}

// consume checks a token's shape, then consumes it in the store.
func (s *Service) consume(ctx context.Context, kind TokenKind, tok Secret) (Token, error) {
	h, ok := hashToken(s.opt.OneTimeTokenPrefix, tok)
	if !ok {
		return Token{}, ErrTokenInvalid
	}
	return s.store.ConsumeToken(ctx, kind, h, s.opt.Now())
}

// SendVerification mails the account a new email verification token
// (valid for Options.TokenTTL). It returns ErrNoMailer, ErrNotFound,
// ErrClosed, or the Mailer's error.
func (s *Service) SendVerification(ctx context.Context, accountID string) error {
	if s.opt.Mailer == nil {
		return ErrNoMailer
	}
	a, err := s.store.Account(ctx, accountID)
	if err != nil {
		return err
	}
	if a.Status == StatusClosed {
		return ErrClosed
	}
	return s.mailToken(ctx, TokenVerifyEmail, MailVerifyEmail, a)
}

// VerifyEmail consumes a verification token and returns its account. A
// token works once, until it expires; otherwise ErrTokenInvalid. A closed
// account is ErrClosed.
func (s *Service) VerifyEmail(ctx context.Context, tok Secret) (Account, error) {
	t, err := s.consume(ctx, TokenVerifyEmail, tok)
	if err != nil {
		return Account{}, err
	}
	a, err := s.store.Account(ctx, t.AccountID)
	if err != nil {
		return Account{}, err
	}
	if a.Status == StatusClosed {
		return Account{}, ErrClosed
	}
	return s.changed(ctx, a, Change{Verified: true})
}

// NotifyAlreadyRegistered mails the owner of email that someone tried to
// sign up with it, so that a sign-up can answer the same whether or not
// the address is taken. Unknown or closed addresses get nothing.
func (s *Service) NotifyAlreadyRegistered(ctx context.Context, email string) error {
	if s.opt.Mailer == nil {
		return ErrNoMailer
	}
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	a, err := s.store.AccountByEmail(ctx, e)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil || a.Status == StatusClosed {
		return err
	}
	return s.opt.Mailer.SendMail(ctx, Message{Kind: MailAlreadyRegistered, To: a.Email, AccountID: a.ID})
}

// RequestPasswordReset mails a reset token to the account with this email.
// It returns nil whether or not such an account exists (and for a
// malformed address), so its answer reveals nothing; only closed and
// unknown addresses get no mail. It returns ErrNoMailer, or a store or
// Mailer failure.
func (s *Service) RequestPasswordReset(ctx context.Context, email string) error {
	if s.opt.Mailer == nil {
		return ErrNoMailer
	}
	e, err := NormalizeEmail(email)
	if err != nil {
		return nil
	}
	a, err := s.store.AccountByEmail(ctx, e)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if a.Status == StatusClosed {
		return nil
	}
	return s.mailToken(ctx, TokenPasswordReset, MailPasswordReset, a)
}

// ResetPassword consumes a reset token and sets the new password, revoking
// every session of the account. It returns ErrInvalidPassword (the token
// is then still usable), ErrTokenInvalid, ErrClosed or ErrBusy.
func (s *Service) ResetPassword(ctx context.Context, tok Secret, password Secret) (Account, error) {
	if err := s.checkPasswordPolicy(password); err != nil {
		return Account{}, err
	}
	if _, ok := hashToken(s.opt.OneTimeTokenPrefix, tok); !ok {
		return Account{}, ErrTokenInvalid
	}
	h, err := s.hash(ctx, password) // before consuming: a busy gate leaves the token usable
	if err != nil {
		return Account{}, err
	}
	t, err := s.consume(ctx, TokenPasswordReset, tok)
	if err != nil {
		return Account{}, err
	}
	a, err := s.store.Account(ctx, t.AccountID)
	if err != nil {
		return Account{}, err
	}
	if a.Status == StatusClosed {
		return Account{}, ErrClosed
	}
	now := s.opt.Now()
	if err := s.store.SetPasswordHash(ctx, a.ID, h, now); err != nil {
		return Account{}, err
	}
	s.forgetSessions(a.ID)
	if _, err := s.store.RevokeSessions(ctx, a.ID, now); err != nil {
		return Account{}, err
	}
	return a, nil
}

// ChangePassword replaces the password of a signed-in account after
// checking the current one, revokes every session and opens a new one for
// the caller, so that only the session returned stays signed in. It
// returns ErrInvalidCredentials (wrong current password),
// ErrInvalidPassword, ErrNotFound, ErrSuspended, ErrClosed or ErrBusy.
func (s *Service) ChangePassword(ctx context.Context, accountID string, current, password Secret) (Secret, Session, error) {
	if err := s.checkPasswordPolicy(password); err != nil {
		return "", Session{}, err
	}
	a, err := s.store.Account(ctx, accountID)
	if err != nil {
		return "", Session{}, err
	}
	hash, err := s.store.PasswordHash(ctx, accountID)
	if err != nil {
		return "", Session{}, err
	}
	if err := s.gate.acquire(ctx); err != nil {
		return "", Session{}, err
	}
	ok := false
	if hash != "" && len(current) <= maxPasswordBytes {
		ok, _ = checkPassword(hash, current.Reveal(), s.opt.Argon2)
	}
	var newHash string
	if ok {
		newHash = hashPassword(s.opt.Argon2, password.Reveal())
	}
	s.gate.release()
	if !ok {
		return "", Session{}, ErrInvalidCredentials
	}
	switch a.Status {
	case StatusSuspended:
		return "", Session{}, ErrSuspended
	case StatusClosed:
		return "", Session{}, ErrClosed
	}
	now := s.opt.Now()
	if err := s.store.SetPasswordHash(ctx, a.ID, newHash, now); err != nil {
		return "", Session{}, err
	}
	s.forgetSessions(a.ID)
	if _, err := s.store.RevokeSessions(ctx, a.ID, now); err != nil {
		return "", Session{}, err
	}
	return s.openSession(ctx, a.ID, now)
}

// openSession creates a session for an account.
func (s *Service) openSession(ctx context.Context, accountID string, now time.Time) (Secret, Session, error) {
	tok := newToken(s.opt.SessionTokenPrefix)
	h, _ := hashToken(s.opt.SessionTokenPrefix, tok)
	sess := Session{TokenHash: h, AccountID: accountID, CreatedAt: now, ExpiresAt: now.Add(s.opt.SessionTTL)}
	if err := s.store.CreateSession(ctx, sess); err != nil {
		return "", Session{}, err
	}
	return tok, sess, nil
}

// Close closes an account for good: its sessions and one-time tokens are
// revoked, its personal fields scrubbed (Scrub) and a hash of its email
// kept (EmailClosed), in one store transaction. It cannot sign in again.
// The account's ledger and usage are not touched (the facade's
// KeyLedger.CloseAccount also revokes its API keys). Closing twice is not
// an error. It returns ErrNotFound.
func (s *Service) Close(ctx context.Context, accountID string) (Account, error) {
	a, err := s.store.CloseAccount(ctx, accountID, s.opt.Now())
	if err != nil {
		return Account{}, err
	}
	s.forgetSessions(accountID)
	return s.changed(ctx, a, Change{Closed: true})
}

// EmailClosed reports whether an account with this email was closed (any
// case; false for a malformed address).
func (s *Service) EmailClosed(ctx context.Context, email string) (bool, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return false, nil
	}
	return s.store.EmailClosed(ctx, EmailHash(e))
}

// CheckPassword confirms a signed-in account's password before a
// sensitive change (closing the account). It returns
// ErrInvalidCredentials, ErrNotFound or ErrBusy.
func (s *Service) CheckPassword(ctx context.Context, accountID string, password Secret) error {
	hash, err := s.store.PasswordHash(ctx, accountID)
	if err != nil {
		return err
	}
	if err := s.gate.acquire(ctx); err != nil {
		return err
	}
	ok := false
	if hash != "" && len(password) <= maxPasswordBytes {
		ok, _ = checkPassword(hash, password.Reveal(), s.opt.Argon2)
	}
	s.gate.release()
	if !ok {
		return ErrInvalidCredentials
	}
	return nil
}
