// Package apikey issues, verifies and manages the API keys of a paid API.
//
// A raw key is <prefix><body><checksum>: the prefix names the key type (and
// with it the environment, live or test), the body is 28 base62 characters
// from crypto/rand and the checksum is a CRC32 of prefix and body in 6 base62
// characters. The checksum lets Verify reject a mistyped or fabricated key
// before any hashing or store call. Only the SHA-256 of a raw key is stored;
// the raw key exists once, in the result of Create or Rotate.
//
// Verification runs in this documented order:
//
//  1. format: prefix, length, alphabet, checksum (ErrMalformed);
//  2. hash lookup: the in-process cache, the negative cache of unknown
//     hashes, then the store (ErrUnknown);
//  3. key status (ErrRevoked, ErrDisabled);
//  4. expiry of the key, or of the grace period of a rotated secret
//     (ErrExpired);
//  5. account status (ErrAccountInactive);
//  6. the caller's Verified.Permit(model, scope) (ErrModelNotAllowed,
//     ErrScopeNotAllowed).
//
// Changes made through a Service take effect in its own cache at once;
// changes made by other processes are seen within Options.RefreshInterval
// (5 seconds by default), or as soon as the store reports them when it
// implements ChangeNotifier: store/pgstore delivers them with
// LISTEN/NOTIFY, in well under a second (its tests assert one second).
// Revoking or disabling a key through the Service also cancels the contexts
// that Bind tied to it, and so does a reported change in another process.
// InvalidateKey and InvalidateAll apply such changes by hand.
//
// The package defines the Store it needs; backends in store/memstore,
// store/sqlitestore and store/pgstore implement it. A host that only wants
// API keys writes
//
//	keys, err := apikey.NewService(memstore.New(), nil)
package apikey

import (
	"context"
	"slices"
	"time"

	"github.com/keyledger/keyledger/errkind"
)

// Errors returned by Service and by Store implementations. Match them with
// errors.Is. The denials of Verify and Permit are returned unwrapped, so
// comparing with == also works and the hot path allocates nothing.
var (
	ErrNotFound        = errkind.New(errkind.NotFound, "apikey: not found")
	ErrAccountNotFound = errkind.New(errkind.NotFound, "apikey: account not found")
	ErrMalformed       = errkind.New(errkind.Unauthenticated, "apikey: malformed key")
	ErrUnknown         = errkind.New(errkind.Unauthenticated, "apikey: unknown key")
	ErrRevoked         = errkind.New(errkind.Unauthenticated, "apikey: key revoked")
	ErrDisabled        = errkind.New(errkind.Unauthenticated, "apikey: key disabled")
	ErrExpired         = errkind.New(errkind.Unauthenticated, "apikey: key expired")
	ErrAccountInactive = errkind.New(errkind.Unauthenticated, "apikey: account is not active")
	ErrModelNotAllowed = errkind.New(errkind.Forbidden, "apikey: model not allowed for this key")
	ErrScopeNotAllowed = errkind.New(errkind.Forbidden, "apikey: scope not allowed for this key")
	// ErrEnvironmentNotAllowed reports a test key acting on live keys (or
	// creating one).
	ErrEnvironmentNotAllowed = errkind.New(errkind.Forbidden, "apikey: a test key cannot act on live keys")
	ErrInvalidName           = errkind.New(errkind.Invalid, "apikey: name must be 1-120 characters of valid UTF-8")
	ErrInvalidType           = errkind.New(errkind.Invalid, "apikey: unknown key type")
	ErrInvalidModels         = errkind.New(errkind.Invalid, "apikey: invalid model list")
	ErrInvalidScopes         = errkind.New(errkind.Invalid, "apikey: invalid scope list")
	ErrInvalidExpiry         = errkind.New(errkind.Invalid, "apikey: expiry must be in the future (and before 2200)")
	ErrInvalidGrace          = errkind.New(errkind.Invalid, "apikey: grace period must not be negative")
	ErrInvalidRateLimits     = errkind.New(errkind.Invalid, "apikey: rate limits must be from 0 to 1000000000 a minute")
	ErrInvalidMetadata       = errkind.New(errkind.Invalid, "apikey: invalid metadata")
	ErrInvalidCursor         = errkind.New(errkind.Invalid, "apikey: invalid cursor")
	ErrInvalidFormat         = errkind.New(errkind.Invalid, "apikey: invalid key format configuration")
	ErrInvalidOptions        = errkind.New(errkind.Invalid, "apikey: invalid options")
)

// Status is the lifecycle state of a key.
type Status string

// Key states. Stores hold active, revoked and disabled; StatusExpired is
// reported by the Service for an active key whose expiry has passed.
// Revoked is final; disabled (a leaked key) can only become revoked.
const (
	StatusActive   Status = "active"
	StatusRevoked  Status = "revoked"
	StatusDisabled Status = "disabled"
	StatusExpired  Status = "expired"
)

// Environment separates live keys from test keys (email-verify's kw_live_
// and kw_test_). The key type decides it.
type Environment string

// Environments.
const (
	EnvLive Environment = "live"
	EnvTest Environment = "test"
)

// Valid reports whether e is EnvLive or EnvTest.
func (e Environment) Valid() bool { return e == EnvLive || e == EnvTest }

// APIKey is the stored, displayable part of a key. It never holds the raw
// key or its hash.
type APIKey struct {
	ID          string      `json:"id"`         // "key_" + time-sortable UUIDv7 (prefix configurable, "cred_" for OpenRush)
	AccountID   string      `json:"account_id"` // the owning account
	Name        string      `json:"name"`       // 1-120 runes, trimmed
	Type        string      `json:"type"`       // KeyType.Name, e.g. "sdk" or "api"
	Environment Environment `json:"environment"`
	// Prefix is the key type's prefix, e.g. "kw_live_".
	Prefix string `json:"prefix"`
	// Hint is the prefix plus the first HintChars body characters, e.g.
	// "kw_live_abc1": what a key list shows. Render it as it is or with a
	// trailing "..." ("or_abc123...").
	Hint string `json:"hint"`
	// Models lists the models the key may use; empty means all.
	Models []string `json:"models,omitempty"`
	// Scopes lists what the key may do ("inference", "read", "manage");
	// empty means everything.
	Scopes []string `json:"scopes,omitempty"`
	Status Status   `json:"status"`
	// GraceUntil is when the previous secret of a rotated key stops
	// working; zero when there is none.
	GraceUntil time.Time         `json:"grace_until,omitzero"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	// RateLimits are the key's own per-minute limits (zero fields: the
	// plan's). The keyledger facade allows only limits below the plan's
	// and applies the lower of the two.
	RateLimits RateLimits `json:"rate_limits,omitzero"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	RotatedAt  time.Time  `json:"rotated_at,omitzero"`   // zero if never rotated
	LastUsedAt time.Time  `json:"last_used_at,omitzero"` // zero if never used; written in batches
	ExpiresAt  time.Time  `json:"expires_at,omitzero"`   // zero: never expires
}

// RateLimits are per-minute limits of one key; zero means no limit of the
// key's own.
type RateLimits struct {
	RequestsPerMinute         int64 `json:"requests_per_minute,omitempty"`
	PromptTokensPerMinute     int64 `json:"prompt_tokens_per_minute,omitempty"`
	CompletionTokensPerMinute int64 `json:"completion_tokens_per_minute,omitempty"`
}

// maxPerMinute bounds a key's rate limits (as account.MaxPerMinute).
const maxPerMinute = 1_000_000_000

func (l RateLimits) valid() bool {
	ok := func(n int64) bool { return n >= 0 && n <= maxPerMinute }
	return ok(l.RequestsPerMinute) && ok(l.PromptTokensPerMinute) && ok(l.CompletionTokensPerMinute)
}

// Clone returns a deep copy of k, so that stores can hand out values that
// callers may modify freely.
func (k APIKey) Clone() APIKey {
	k.Models = slices.Clone(k.Models)
	k.Scopes = slices.Clone(k.Scopes)
	k.Metadata = cloneMap(k.Metadata)
	return k
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

// Update is a partial change of a key; nil fields are left as they are. A
// Store applies it atomically with Apply, so every backend interprets it the
// same way and concurrent updates of different fields never lose each other.
type Update struct {
	Name *string
	// Models replaces the allowed models; a pointer to an empty slice
	// allows all.
	Models *[]string
	// Scopes replaces the scopes; a pointer to an empty slice allows all.
	Scopes *[]string
	// ExpiresAt replaces the expiry; a pointer to the zero time removes it.
	ExpiresAt *time.Time
	// Metadata replaces the whole metadata map when non-nil.
	Metadata map[string]string
	// RateLimits replaces the key's own rate limits.
	RateLimits *RateLimits
	// Status moves the key to StatusRevoked or StatusDisabled. Transitions
	// are one-way: revoked is final, disabled can only become revoked,
	// nothing becomes active again.
	Status *Status
	// EndGrace makes the previous secret of a rotated key stop working now.
	EndGrace bool
}

// Apply returns k with u applied and UpdatedAt set to now.
func (u Update) Apply(k APIKey, now time.Time) APIKey {
	k = k.Clone()
	if u.Name != nil {
		k.Name = *u.Name
	}
	if u.Models != nil {
		k.Models = nilIfEmpty(slices.Clone(*u.Models))
	}
	if u.Scopes != nil {
		k.Scopes = nilIfEmpty(slices.Clone(*u.Scopes))
	}
	if u.ExpiresAt != nil {
		k.ExpiresAt = *u.ExpiresAt
	}
	if u.Metadata != nil {
		k.Metadata = cloneMap(u.Metadata)
		if len(k.Metadata) == 0 {
			k.Metadata = nil
		}
	}
	if u.RateLimits != nil {
		k.RateLimits = *u.RateLimits
	}
	if u.Status != nil {
		switch {
		case *u.Status == StatusRevoked:
			k.Status = StatusRevoked
		case *u.Status == StatusDisabled && k.Status == StatusActive:
			k.Status = StatusDisabled
		}
	}
	if u.EndGrace {
		k.GraceUntil = time.Time{}
	}
	k.UpdatedAt = now
	return k
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// Rotation replaces the secret of a key: Hash and Hint are the new secret's,
// and the old secret stays valid until GraceUntil (zero: not at all).
type Rotation struct {
	Hash       [32]byte
	Hint       string
	GraceUntil time.Time
}

// Apply returns k with the rotation applied at now, or ErrRevoked,
// ErrDisabled or ErrExpired if k cannot be rotated. Stores call it inside
// the transaction that reads k and then keep the old hash as the previous
// secret when GraceUntil is set, and drop it when it is zero.
func (r Rotation) Apply(k APIKey, now time.Time) (APIKey, error) {
	switch {
	case k.Status == StatusRevoked:
		return k, ErrRevoked
	case k.Status == StatusDisabled:
		return k, ErrDisabled
	case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
		return k, ErrExpired
	}
	k = k.Clone()
	k.Hint = r.Hint
	k.GraceUntil = r.GraceUntil
	k.RotatedAt = now
	k.UpdatedAt = now
	return k, nil
}

// AccountActive is the account status (account.StatusActive) under which a
// key verifies. apikey does not import package account; stores report the
// owner's status as a string.
const AccountActive = "active"

// Match is the result of a hash lookup: the key, whether the hash was its
// previous (rotated) secret, and the owning account's plan and status, which
// the backend reads in the same query.
type Match struct {
	Key APIKey
	// Previous is true when the hash is the key's previous secret; it is
	// valid until Key.GraceUntil.
	Previous      bool
	AccountPlan   string
	AccountStatus string
}

// Use records that a key was used at a time, for the batched last_used_at
// write.
type Use struct {
	KeyID string
	At    time.Time
}

// Store persists API keys, addressed by ID within their account and by the
// SHA-256 of their current or previous secret. Implementations are safe for
// concurrent use and receive values the Service has already validated.
type Store interface {
	// CreateAPIKey stores a new key with the hash of its secret. It returns
	// ErrAccountNotFound if k.AccountID does not exist.
	CreateAPIKey(ctx context.Context, k APIKey, hash [32]byte) error
	// APIKey returns the key with the given ID, or ErrNotFound if there is
	// none or it belongs to another account.
	APIKey(ctx context.Context, accountID, keyID string) (APIKey, error)
	// ListAPIKeys returns up to limit keys of the account with IDs greater
	// than afterID ("" for the start), in ID order (creation order).
	ListAPIKeys(ctx context.Context, accountID, afterID string, limit int) ([]APIKey, error)
	// APIKeyByHash returns the key whose current or previous secret has the
	// given hash, with its owner's plan and status, or ErrNotFound. A
	// previous secret is found only while the key has a GraceUntil; whether
	// that time has passed is the caller's concern.
	APIKeyByHash(ctx context.Context, hash [32]byte) (Match, error)
	// UpdateAPIKey applies u atomically (u.Apply) and returns the result,
	// or ErrNotFound if there is no such key in the account. When the
	// result has no GraceUntil the previous secret is forgotten.
	UpdateAPIKey(ctx context.Context, accountID, keyID string, u Update, now time.Time) (APIKey, error)
	// RotateAPIKey applies r atomically (r.Apply): the current hash becomes
	// the previous one if r.GraceUntil is set and is dropped otherwise. It
	// returns ErrNotFound, or ErrRevoked, ErrDisabled or ErrExpired from
	// r.Apply, changing nothing in those cases.
	RotateAPIKey(ctx context.Context, accountID, keyID string, r Rotation, now time.Time) (APIKey, error)
	// TouchAPIKeys sets last_used_at to the later of its current value and
	// each Use's time, for many keys in one call (one transaction where the
	// backend has them). Unknown key IDs are ignored.
	TouchAPIKeys(ctx context.Context, uses []Use) error
}
