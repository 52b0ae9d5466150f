package account

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"runtime"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/keyledger/keyledger/internal/cache"
	"github.com/keyledger/keyledger/internal/id"
	"github.com/keyledger/keyledger/internal/norm"
)

// Options configure a Service. The zero value and nil give the defaults.
type Options struct {
	// Now is the clock (time.Now by default).
	Now func() time.Time
	// IDPrefix starts every account ID ("acct_" by default; "usr_" for the
	// email-verify seed).
	IDPrefix string
	// Catalog is the plan catalog (DefaultCatalog by default).
	Catalog *Catalog
	// Argon2 are the password hashing parameters (DefaultArgon2Params if zero).
	Argon2 Argon2Params
	// MinPasswordLen is the minimum password length in runes (8 by default).
	// Passwords are at most 1024 bytes.
	MinPasswordLen int
	// SessionTTL is how long a session lasts (24 hours by default).
	SessionTTL time.Duration
	// SessionTokenPrefix starts every session token ("kls_" by default).
	SessionTokenPrefix string
	// SessionCacheTTL bounds how long a verified session is served from the
	// in-process cache (5 seconds by default; negative disables the cache).
	// Logout and status changes made through this Service take effect at
	// once; those made by other processes within SessionCacheTTL.
	SessionCacheTTL time.Duration
	// SessionCacheSize bounds the number of cached sessions (10,000 by default).
	SessionCacheSize int
	// Logger receives unexpected, non-fatal failures (slog.Default if nil).
	// Secrets never reach it.
	Logger *slog.Logger
	// MaxConcurrentHashes bounds the argon2id computations (logins,
	// sign-ups, password changes) running at once: GOMAXPROCS by default,
	// negative for no bound. Each holds Argon2.MemoryKiB (19 MiB by
	// default), so hashing never holds more than MaxConcurrentHashes times
	// that (HashMemoryBound).
	MaxConcurrentHashes int
	// Mailer sends verification and password reset mails; nil disables
	// those flows (they return ErrNoMailer).
	Mailer Mailer
	// TokenTTL is how long a verification or reset token works (1 hour
	// by default).
	TokenTTL time.Duration
	// OneTimeTokenPrefix starts every verification and reset token
	// ("klt_" by default).
	OneTimeTokenPrefix string
	// HashQueue is how many callers may wait for a hashing slot (twice
	// MaxConcurrentHashes by default, negative for none); callers beyond
	// it get ErrBusy at once.
	HashQueue int
	// Changed, if set, is called after Update, Close or VerifyEmail changed
	// an account, with the account after the change and what changed. Its
	// error is returned with the account (the change itself stays
	// committed). keyledger.New installs one that keeps the facade's caches
	// and the account's ledger in step, so that a host calling this Service
	// directly cannot skip that bookkeeping.
	Changed func(ctx context.Context, a Account, c Change) error
}

// Change is what Update, Close or VerifyEmail changed, for
// Options.Changed.
type Change struct {
	// Update holds the fields Update was given (nil: unchanged).
	Update UpdateParams
	// Closed is set by Close; Verified by VerifyEmail.
	Closed, Verified bool
}

// changed runs Options.Changed, if any.
func (s *Service) changed(ctx context.Context, a Account, c Change) (Account, error) {
	if s.opt.Changed == nil {
		return a, nil
	}
	return a, s.opt.Changed(ctx, a, c)
}

const (
	maxEmailLen       = 254
	maxPasswordBytes  = 1024
	defaultTimeZoneID = "UTC"
)

func (o *Options) withDefaults() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.IDPrefix == "" {
		r.IDPrefix = "acct_"
	}
	if r.Catalog == nil {
		r.Catalog = DefaultCatalog()
	}
	if r.Argon2 == (Argon2Params{}) {
		r.Argon2 = DefaultArgon2Params()
	}
	if !r.Argon2.valid() {
		return r, fmt.Errorf("%w: argon2 parameters out of range", ErrInvalidOptions)
	}
	if r.MinPasswordLen == 0 {
		r.MinPasswordLen = 8
	}
	if r.SessionTTL == 0 {
		r.SessionTTL = 24 * time.Hour
	}
	if r.SessionTokenPrefix == "" {
		r.SessionTokenPrefix = "kls_"
	}
	if r.SessionCacheTTL == 0 {
		r.SessionCacheTTL = 5 * time.Second
	}
	if r.SessionCacheSize == 0 {
		r.SessionCacheSize = 10_000
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	if r.TokenTTL == 0 {
		r.TokenTTL = time.Hour
	}
	if r.OneTimeTokenPrefix == "" {
		r.OneTimeTokenPrefix = "klt_"
	}
	if r.OneTimeTokenPrefix == r.SessionTokenPrefix || r.TokenTTL < 0 {
		return r, fmt.Errorf("%w: one-time tokens need their own prefix and a positive TTL", ErrInvalidOptions)
	}
	if r.MaxConcurrentHashes == 0 {
		r.MaxConcurrentHashes = runtime.GOMAXPROCS(0)
	}
	if r.HashQueue == 0 {
		r.HashQueue = 2 * max(r.MaxConcurrentHashes, 1)
	}
	r.HashQueue = max(r.HashQueue, 0)
	if r.MinPasswordLen < 0 || r.SessionTTL < 0 || r.SessionCacheSize < 0 {
		return r, fmt.Errorf("%w: negative length, TTL or size", ErrInvalidOptions)
	}
	return r, nil
}

// Service manages accounts and their sessions. It is safe for concurrent use.
type Service struct {
	store Store
	opt   Options
	ids   *id.Generator
	cache *cache.Cache[[32]byte, Session] // nil when disabled
	gate  *hashGate                       // nil when unbounded

	dummyOnce sync.Once
	dummyHash string
}

// NewService returns a Service over st. opts may be nil.
func NewService(st Store, opts *Options) (*Service, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Service{store: st, opt: o, ids: id.NewGenerator(o.Now), gate: newHashGate(o.MaxConcurrentHashes, o.HashQueue)}
	if o.SessionCacheTTL > 0 {
		s.cache = cache.New[[32]byte, Session](o.SessionCacheSize, o.Now)
	}
	return s, nil
}

// Catalog returns the plan catalog the Service validates plans against.
func (s *Service) Catalog() *Catalog { return s.opt.Catalog }

// CreateParams are the inputs of Create.
type CreateParams struct {
	Name  string
	Email string
	// Password may be empty for accounts that never log in (created by an
	// admin tool); otherwise it must satisfy the length policy.
	Password Secret
	Plan     string // the catalog's default plan if empty
	TimeZone string // "UTC" if empty
	Metadata map[string]string
}

// Create validates p and stores a new active account. It returns
// ErrInvalidName, ErrInvalidEmail, ErrInvalidPassword, ErrUnknownPlan,
// ErrInvalidTimeZone, ErrInvalidMetadata, ErrEmailTaken or (when password
// hashing is at capacity) ErrBusy, writing nothing in each case.
func (s *Service) Create(ctx context.Context, p CreateParams) (Account, error) {
	name, err := normalizeName(p.Name)
	if err != nil {
		return Account{}, err
	}
	email, err := NormalizeEmail(p.Email)
	if err != nil {
		return Account{}, err
	}
	if p.Plan == "" {
		p.Plan = s.opt.Catalog.Default().ID
	}
	if _, ok := s.opt.Catalog.Plan(p.Plan); !ok {
		return Account{}, fmt.Errorf("%w: %q", ErrUnknownPlan, p.Plan)
	}
	tz, err := normalizeTimeZone(p.TimeZone)
	if err != nil {
		return Account{}, err
	}
	if err := validateMetadata(p.Metadata); err != nil {
		return Account{}, err
	}
	var hash string
	if p.Password != "" {
		if err := s.checkPasswordPolicy(p.Password); err != nil {
			return Account{}, err
		}
		if hash, err = s.hash(ctx, p.Password); err != nil {
			return Account{}, err
		}
	}
	now := s.opt.Now()
	a := Account{
		ID: s.ids.New(s.opt.IDPrefix), Name: name, Email: email, Plan: p.Plan,
		Status: StatusActive, TimeZone: tz, Metadata: cloneMap(p.Metadata),
		CreatedAt: now, UpdatedAt: now,
	}
	if len(a.Metadata) == 0 {
		a.Metadata = nil
	}
	if err := s.store.CreateAccount(ctx, a, hash); err != nil {
		return Account{}, err
	}
	return a, nil
}

// Get returns the account with the given ID, or ErrNotFound.
func (s *Service) Get(ctx context.Context, id string) (Account, error) {
	return s.store.Account(ctx, id)
}

// GetByEmail returns the account with the given email (any case), or
// ErrNotFound (ErrInvalidEmail if it is not an address).
func (s *Service) GetByEmail(ctx context.Context, email string) (Account, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return Account{}, err
	}
	return s.store.AccountByEmail(ctx, e)
}

// UpdateParams are the inputs of Update; nil fields are left unchanged.
type UpdateParams struct {
	Name     *string
	Plan     *string
	Status   *Status
	TimeZone *string
	// Limits overrides the plan's limits; a pointer to a zero Limits clears
	// the override.
	Limits   *Limits
	Metadata map[string]string // replaces the whole map when non-nil
}

// Update validates p and applies it atomically. It returns ErrNotFound,
// ErrInvalidName, ErrUnknownPlan, ErrInvalidStatus, ErrInvalidTimeZone,
// ErrInvalidLimits or ErrInvalidMetadata, writing nothing on error. Closing
// an account revokes all its sessions; suspending it makes them fail until
// it is active again.
func (s *Service) Update(ctx context.Context, id string, p UpdateParams) (Account, error) {
	var u Update
	if p.Name != nil {
		n, err := normalizeName(*p.Name)
		if err != nil {
			return Account{}, err
		}
		u.Name = &n
	}
	if p.Plan != nil {
		if _, ok := s.opt.Catalog.Plan(*p.Plan); !ok {
			return Account{}, fmt.Errorf("%w: %q", ErrUnknownPlan, *p.Plan)
		}
		u.Plan = p.Plan
	}
	if p.Status != nil {
		if !p.Status.Valid() {
			return Account{}, fmt.Errorf("%w: %q", ErrInvalidStatus, *p.Status)
		}
		u.Status = p.Status
	}
	if p.TimeZone != nil {
		tz, err := normalizeTimeZone(*p.TimeZone)
		if err != nil {
			return Account{}, err
		}
		u.TimeZone = &tz
	}
	if p.Limits != nil {
		if !p.Limits.valid() {
			return Account{}, ErrInvalidLimits
		}
		u.Limits = p.Limits
	}
	if p.Metadata != nil {
		if err := validateMetadata(p.Metadata); err != nil {
			return Account{}, err
		}
		u.Metadata = p.Metadata
	}
	now := s.opt.Now()
	a, err := s.store.UpdateAccount(ctx, id, u, now)
	if err != nil {
		return Account{}, err
	}
	if u.Status != nil && *u.Status != StatusActive {
		s.forgetSessions(a.ID)
		if *u.Status == StatusClosed {
			if _, err := s.store.RevokeSessions(ctx, a.ID, now); err != nil {
				return a, err
			}
		}
	}
	return s.changed(ctx, a, Change{Update: p})
}

// ListParams select a page of accounts.
type ListParams struct {
	Cursor string // NextCursor of the previous page; "" for the first
	Limit  int    // 50 by default, clamped to 1..500
}

// Page is one page of accounts in creation order.
type Page struct {
	Accounts   []Account
	NextCursor string // "" on the last page
}

// List returns accounts in creation order, or ErrInvalidCursor.
func (s *Service) List(ctx context.Context, p ListParams) (Page, error) {
	if p.Cursor != "" && !id.Valid(s.opt.IDPrefix, p.Cursor) {
		return Page{}, ErrInvalidCursor
	}
	limit := ClampLimit(p.Limit)
	as, err := s.store.ListAccounts(ctx, p.Cursor, limit+1)
	if err != nil {
		return Page{}, err
	}
	var pg Page
	if len(as) > limit {
		as = as[:limit]
		pg.NextCursor = as[limit-1].ID
	}
	pg.Accounts = as
	return pg, nil
}

// ClampLimit applies the page size rule shared by every list in keyledger:
// 50 when unset (zero or negative), at most 500.
func ClampLimit(n int) int { return norm.ClampLimit(n) }

// SetPassword replaces the account's password and revokes all its sessions.
// It returns ErrInvalidPassword, ErrNotFound or ErrBusy.
func (s *Service) SetPassword(ctx context.Context, accountID string, password Secret) error {
	if err := s.checkPasswordPolicy(password); err != nil {
		return err
	}
	h, err := s.hash(ctx, password)
	if err != nil {
		return err
	}
	now := s.opt.Now()
	if err := s.store.SetPasswordHash(ctx, accountID, h, now); err != nil {
		return err
	}
	s.forgetSessions(accountID)
	_, err = s.store.RevokeSessions(ctx, accountID, now)
	return err
}

// Login checks an email and password and opens a session. Unknown emails and
// wrong passwords both return ErrInvalidCredentials and take the same time
// (a dummy hash is checked for unknown emails). Correct credentials of a
// suspended or closed account return ErrSuspended or ErrClosed. A hash made
// with other Argon2 parameters is replaced on success. When password
// hashing is at capacity (MaxConcurrentHashes running, HashQueue waiting)
// it returns ErrBusy before any work, whatever the email.
func (s *Service) Login(ctx context.Context, email string, password Secret) (Secret, Session, error) {
	tooLong := len(password) > maxPasswordBytes // never matches a stored password
	if tooLong {
		password = password[:maxPasswordBytes] // same work as any other password
	}
	if err := s.gate.acquire(ctx); err != nil {
		return "", Session{}, err
	}
	a, hash, err := s.credentials(ctx, email)
	if err != nil {
		s.gate.release()
		return "", Session{}, err
	}
	if hash == "" {
		hash = s.dummy() // unknown email or no password: same work, no match
		a = Account{}
	}
	ok, rehash := checkPassword(hash, password.Reveal(), s.opt.Argon2)
	s.gate.release()
	if !ok || tooLong || a.ID == "" {
		return "", Session{}, ErrInvalidCredentials
	}
	switch a.Status {
	case StatusSuspended:
		return "", Session{}, ErrSuspended
	case StatusClosed:
		return "", Session{}, ErrClosed
	}
	now := s.opt.Now()
	if rehash {
		h, err := s.hash(ctx, password)
		if err == nil {
			err = s.store.SetPasswordHash(ctx, a.ID, h, now)
		}
		if err != nil {
			s.opt.Logger.WarnContext(ctx, "account: rehash password failed", "account_id", a.ID, "error", err)
		}
	}
	return s.openSession(ctx, a.ID, now)
}

// credentials returns the account and hash for an email; a missing account
// or malformed email yields a zero account and "" without error, so Login
// does the same work in every case.
func (s *Service) credentials(ctx context.Context, email string) (Account, string, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return Account{}, "", nil
	}
	a, err := s.store.AccountByEmail(ctx, e)
	if errors.Is(err, ErrNotFound) {
		return Account{}, "", nil
	}
	if err != nil {
		return Account{}, "", err
	}
	hash, err := s.store.PasswordHash(ctx, a.ID)
	if errors.Is(err, ErrNotFound) {
		return Account{}, "", nil
	}
	return a, hash, err
}

func (s *Service) dummy() string {
	s.dummyOnce.Do(func() { s.dummyHash = hashPassword(s.opt.Argon2, "keyledger dummy password") })
	return s.dummyHash
}

// VerifySession returns the live session for tok. It checks the token's shape
// before any hashing or store call, then the cache, then the store. It
// returns ErrSessionInvalid (malformed, forged or unknown), ErrSessionRevoked,
// ErrSessionExpired, ErrSuspended or ErrClosed.
func (s *Service) VerifySession(ctx context.Context, tok Secret) (Session, error) {
	h, ok := hashToken(s.opt.SessionTokenPrefix, tok)
	if !ok {
		return Session{}, ErrSessionInvalid
	}
	now := s.opt.Now()
	if s.cache != nil {
		if sess, ok := s.cache.Get(h); ok {
			if !now.Before(sess.ExpiresAt) {
				return Session{}, ErrSessionExpired
			}
			return sess, nil
		}
	}
	sess, err := s.store.Session(ctx, h)
	if err != nil {
		return Session{}, err
	}
	switch {
	case !sess.RevokedAt.IsZero():
		return Session{}, ErrSessionRevoked
	case !now.Before(sess.ExpiresAt):
		return Session{}, ErrSessionExpired
	}
	a, err := s.store.Account(ctx, sess.AccountID)
	if err != nil {
		return Session{}, err
	}
	switch a.Status {
	case StatusSuspended:
		return Session{}, ErrSuspended
	case StatusClosed:
		return Session{}, ErrClosed
	}
	if s.cache != nil {
		s.cache.Set(h, sess, min(s.opt.SessionCacheTTL, sess.ExpiresAt.Sub(now)))
	}
	return sess, nil
}

// Logout revokes the session of tok. It returns ErrSessionInvalid for a
// malformed or unknown token; logging out twice is not an error.
func (s *Service) Logout(ctx context.Context, tok Secret) error {
	h, ok := hashToken(s.opt.SessionTokenPrefix, tok)
	if !ok {
		return ErrSessionInvalid
	}
	if s.cache != nil {
		s.cache.Delete(h)
	}
	return s.store.RevokeSession(ctx, h, s.opt.Now())
}

// LogoutAll revokes every session of an account and returns how many.
func (s *Service) LogoutAll(ctx context.Context, accountID string) (int, error) {
	s.forgetSessions(accountID)
	return s.store.RevokeSessions(ctx, accountID, s.opt.Now())
}

// PurgeExpiredSessions deletes sessions that expired before now - keep.
func (s *Service) PurgeExpiredSessions(ctx context.Context, keep time.Duration) (int, error) {
	return s.store.DeleteExpiredSessions(ctx, s.opt.Now().Add(-keep))
}

func (s *Service) forgetSessions(accountID string) {
	if s.cache != nil {
		s.cache.DeleteFunc(func(_ [32]byte, sess Session) bool { return sess.AccountID == accountID })
	}
}

func (s *Service) checkPasswordPolicy(p Secret) error {
	if len(p) > maxPasswordBytes || utf8.RuneCountInString(string(p)) < s.opt.MinPasswordLen || !utf8.ValidString(string(p)) {
		return ErrInvalidPassword
	}
	return nil
}

// NormalizeEmail trims and lower-cases an address and checks that it is a
// bare RFC 5322 address (no display name) of at most 254 bytes with a dot in
// its domain. It returns ErrInvalidEmail otherwise.
func NormalizeEmail(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" || len(s) > maxEmailLen {
		return "", ErrInvalidEmail
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Name != "" || addr.Address != s {
		return "", ErrInvalidEmail
	}
	at := strings.LastIndexByte(s, '@')
	if domain := s[at+1:]; !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.HasPrefix(domain, "[") {
		return "", ErrInvalidEmail
	}
	return s, nil
}

func normalizeName(s string) (string, error) {
	n, ok := norm.Name(s)
	if !ok {
		return "", ErrInvalidName
	}
	return n, nil
}

func normalizeTimeZone(tz string) (string, error) {
	tz = strings.TrimSpace(tz)
	if tz == "" {
		return defaultTimeZoneID, nil
	}
	if strings.EqualFold(tz, "local") || strings.ContainsAny(tz, `\`) || strings.Contains(tz, "..") {
		return "", fmt.Errorf("%w: %q", ErrInvalidTimeZone, tz)
	}
	if _, err := time.LoadLocation(tz); err != nil {
		return "", fmt.Errorf("%w: %q", ErrInvalidTimeZone, tz)
	}
	return tz, nil
}

func validateMetadata(m map[string]string) error {
	if err := norm.Metadata(m); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidMetadata, err)
	}
	return nil
}
