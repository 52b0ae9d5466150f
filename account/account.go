// Package account holds the customers of a paid API: accounts, the plan
// catalog that sets their limits and signup grants, password hashing with
// argon2id, and session tokens for management APIs (dashboards, key
// management).
//
// The package defines the Store it needs (AccountStore and SessionStore);
// backends in store/memstore, store/sqlitestore and store/pgstore implement
// it. A host that only wants accounts writes
//
//	accounts, err := account.NewService(memstore.New(), nil)
package account

import (
	"context"
	"time"

	"github.com/keyledger/keyledger/errkind"
)

// Errors returned by Service and by Store implementations. Match them with
// errors.Is.
var (
	ErrNotFound           = errkind.New(errkind.NotFound, "account: not found")
	ErrEmailTaken         = errkind.New(errkind.Conflict, "account: email already registered")
	ErrInvalidEmail       = errkind.New(errkind.Invalid, "account: invalid email address")
	ErrInvalidName        = errkind.New(errkind.Invalid, "account: name must be 1-120 characters of valid UTF-8")
	ErrUnknownPlan        = errkind.New(errkind.Invalid, "account: unknown plan")
	ErrInvalidTimeZone    = errkind.New(errkind.Invalid, "account: invalid IANA time zone")
	ErrInvalidStatus      = errkind.New(errkind.Invalid, "account: invalid status")
	ErrInvalidMetadata    = errkind.New(errkind.Invalid, "account: invalid metadata")
	ErrInvalidLimits      = errkind.New(errkind.Invalid, "account: limits must be between 0 and MaxPerMinute")
	ErrInvalidPassword    = errkind.New(errkind.Invalid, "account: password does not meet the length policy")
	ErrInvalidCredentials = errkind.New(errkind.Unauthenticated, "account: invalid email or password")
	ErrSuspended          = errkind.New(errkind.Forbidden, "account: account is suspended")
	ErrClosed             = errkind.New(errkind.Forbidden, "account: account is closed")
	ErrSessionInvalid     = errkind.New(errkind.Unauthenticated, "account: invalid session token")
	ErrSessionExpired     = errkind.New(errkind.Unauthenticated, "account: session expired")
	ErrSessionRevoked     = errkind.New(errkind.Unauthenticated, "account: session revoked")
	ErrInvalidCursor      = errkind.New(errkind.Invalid, "account: invalid cursor")
	ErrInvalidPlanCatalog = errkind.New(errkind.Invalid, "account: invalid plan catalog")
	ErrInvalidOptions     = errkind.New(errkind.Invalid, "account: invalid options")
	// ErrBusy reports that password hashing is at capacity: every hashing
	// slot is running and the queue is full. Retry after BusyRetryAfter
	// (HTTP 503 with Retry-After).
	ErrBusy = errkind.New(errkind.Unavailable, "account: too many password checks in progress, retry shortly")
	// ErrTokenInvalid reports a verification or reset token that is
	// malformed, unknown, already used or expired.
	ErrTokenInvalid = errkind.New(errkind.Invalid, "account: invalid or expired token")
	// ErrNoMailer reports a mail flow (verification, password reset) on a
	// Service without Options.Mailer.
	ErrNoMailer = errkind.New(errkind.Unavailable, "account: no mailer configured")
)

// Status is the lifecycle state of an account.
type Status string

// Account states. Only active accounts can log in and use their keys.
const (
	StatusActive    Status = "active"
	StatusSuspended Status = "suspended"
	StatusClosed    Status = "closed"
)

// Valid reports whether s is one of the defined states.
func (s Status) Valid() bool {
	return s == StatusActive || s == StatusSuspended || s == StatusClosed
}

// Account is a customer of the host's API.
type Account struct {
	ID    string `json:"id"`    // "acct_" + time-sortable UUIDv7 (prefix configurable)
	Name  string `json:"name"`  // 1-120 runes, trimmed
	Email string `json:"email"` // normalized: trimmed, lower case; unique
	Plan  string `json:"plan"`  // a Plan ID of the catalog
	// Limits overrides the plan's limits when non-nil (Enterprise contracts).
	Limits    *Limits           `json:"limits,omitempty"`
	Status    Status            `json:"status"`
	TimeZone  string            `json:"time_zone"` // IANA name, "UTC" by default
	Metadata  map[string]string `json:"metadata,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// Clone returns a deep copy of a, so that stores can hand out values that
// callers may modify freely.
func (a Account) Clone() Account {
	if a.Limits != nil {
		l := *a.Limits
		a.Limits = &l
	}
	a.Metadata = cloneMap(a.Metadata)
	return a
}

// Location returns the account's time zone, UTC if it cannot be loaded.
func (a Account) Location() *time.Location {
	if loc, err := time.LoadLocation(a.TimeZone); err == nil {
		return loc
	}
	return time.UTC
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Update is a partial change of an account; nil fields are left as they are.
// A Store applies it atomically, so concurrent updates of different fields
// never lose each other.
type Update struct {
	Name     *string
	Plan     *string
	Status   *Status
	TimeZone *string
	// Limits replaces the limit override; a pointer to a zero Limits clears it.
	Limits *Limits
	// Metadata replaces the whole metadata map when non-nil.
	Metadata map[string]string
}

// Apply returns a with u applied and UpdatedAt set to now. Stores use it so
// that every backend interprets an Update the same way.
func (u Update) Apply(a Account, now time.Time) Account {
	a = a.Clone()
	if u.Name != nil {
		a.Name = *u.Name
	}
	if u.Plan != nil {
		a.Plan = *u.Plan
	}
	if u.Status != nil {
		a.Status = *u.Status
	}
	if u.TimeZone != nil {
		a.TimeZone = *u.TimeZone
	}
	if u.Limits != nil {
		if *u.Limits == (Limits{}) {
			a.Limits = nil
		} else {
			l := *u.Limits
			a.Limits = &l
		}
	}
	if u.Metadata != nil {
		a.Metadata = cloneMap(u.Metadata)
		if len(a.Metadata) == 0 {
			a.Metadata = nil
		}
	}
	a.UpdatedAt = now
	return a
}

// AccountStore persists accounts. Implementations are safe for concurrent
// use and receive values the Service has already validated and normalized.
type AccountStore interface {
	// CreateAccount stores a new account and its password hash ("" for an
	// account that cannot log in). It returns ErrEmailTaken if another
	// account has the same email; of concurrent creations with one email,
	// exactly one succeeds.
	CreateAccount(ctx context.Context, a Account, passwordHash string) error
	// Account returns the account with the given ID, or ErrNotFound.
	Account(ctx context.Context, id string) (Account, error)
	// AccountByEmail returns the account with the given normalized email,
	// or ErrNotFound.
	AccountByEmail(ctx context.Context, email string) (Account, error)
	// UpdateAccount applies u atomically (u.Apply) and returns the result,
	// or ErrNotFound.
	UpdateAccount(ctx context.Context, id string, u Update, now time.Time) (Account, error)
	// ListAccounts returns up to limit accounts with IDs greater than
	// afterID ("" for the start), in ID order (which is creation order).
	ListAccounts(ctx context.Context, afterID string, limit int) ([]Account, error)
	// PasswordHash returns the stored password hash ("" if none), or
	// ErrNotFound.
	PasswordHash(ctx context.Context, id string) (string, error)
	// SetPasswordHash replaces the password hash, or returns ErrNotFound.
	SetPasswordHash(ctx context.Context, id, hash string, now time.Time) error
}

// SessionStore persists session tokens, addressed by the SHA-256 of the token.
type SessionStore interface {
	// CreateSession stores s; ErrNotFound if its account does not exist.
	CreateSession(ctx context.Context, s Session) error
	// Session returns the session with the given token hash, revoked and
	// expired ones included, or ErrSessionInvalid if there is none.
	Session(ctx context.Context, tokenHash [32]byte) (Session, error)
	// RevokeSession marks one session revoked at at (idempotent), or returns
	// ErrSessionInvalid if it does not exist.
	RevokeSession(ctx context.Context, tokenHash [32]byte, at time.Time) error
	// RevokeSessions revokes every unrevoked session of an account and
	// returns how many it revoked.
	RevokeSessions(ctx context.Context, accountID string, at time.Time) (int, error)
	// DeleteExpiredSessions removes sessions that expired before the given
	// time and returns how many it removed.
	DeleteExpiredSessions(ctx context.Context, before time.Time) (int, error)
}

// LifecycleStore persists one-time tokens (email verification, password
// reset) and account closure.
type LifecycleStore interface {
	// CreateToken stores a one-time token, or returns ErrNotFound if its
	// account does not exist.
	CreateToken(ctx context.Context, t Token) error
	// ConsumeToken removes the token of that kind and hash and returns it
	// if it had not expired at at; otherwise (unknown, other kind, used,
	// expired) it returns ErrTokenInvalid. Of concurrent consumers of one
	// token exactly one succeeds.
	ConsumeToken(ctx context.Context, kind TokenKind, hash [32]byte, at time.Time) (Token, error)
	// CloseAccount closes an account in one transaction: it records
	// EmailHash of the current email, replaces the account with
	// Scrub(a, now), clears the password hash, revokes every session at
	// now and deletes every token of the account. It returns the closed
	// account, or ErrNotFound. Closing a scrubbed account again changes
	// nothing.
	CloseAccount(ctx context.Context, id string, now time.Time) (Account, error)
	// EmailClosed reports whether an account with this EmailHash was
	// closed.
	EmailClosed(ctx context.Context, emailHash [32]byte) (bool, error)
}

// Store is what the account Service needs from a backend.
type Store interface {
	AccountStore
	SessionStore
	LifecycleStore
}
