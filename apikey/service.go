package apikey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/keyledger/keyledger/internal/cache"
	"github.com/keyledger/keyledger/internal/id"
	"github.com/keyledger/keyledger/internal/norm"
)

// Options configure a Service. The zero value and nil give the defaults.
type Options struct {
	// Now is the clock (time.Now by default).
	Now func() time.Time
	// IDPrefix starts every key ID ("key_" by default; OpenRush uses
	// "cred_").
	IDPrefix string
	// Format issues and parses raw keys (DefaultFormat by default).
	Format *Format
	// Scopes is the set of scopes keys may carry (DefaultScopes if nil):
	// names of 1-64 characters of a-z, 0-9, '_', '.', ':', '-'.
	Scopes []string
	// RefreshInterval is how long Verify serves a key, or the absence of
	// one, from its in-process cache before reading the store again (5
	// seconds by default; negative disables both caches). Changes made
	// through this Service take effect at once; changes made by other
	// processes within RefreshInterval, or as soon as the store reports
	// them if it is a ChangeNotifier.
	RefreshInterval time.Duration
	// CacheSize bounds the number of cached keys (10,000 by default).
	CacheSize int
	// NegativeCacheSize bounds the number of cached unknown hashes, kept
	// apart so that a flood of forged keys cannot evict real ones (10,000
	// by default).
	NegativeCacheSize int
	// LastUsedInterval is how often last_used_at is written: Verify records
	// uses in memory (to the second) and a background flusher writes the
	// latest use of every key in one store call per interval, so each key
	// is written at most once per interval (1 minute by default; negative
	// disables last-used tracking). Close flushes.
	LastUsedInterval time.Duration
	// Logger receives unexpected, non-fatal failures such as a failed
	// background flush (slog.Default if nil). Raw keys never reach it.
	Logger *slog.Logger
}

func (o *Options) withDefaults() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.IDPrefix == "" {
		r.IDPrefix = "key_"
	}
	if r.Format == nil {
		r.Format = DefaultFormat()
	}
	if r.Scopes == nil {
		r.Scopes = DefaultScopes()
	}
	for _, s := range r.Scopes {
		if !validScopeName(s) {
			return r, fmt.Errorf("%w: scope name %q", ErrInvalidOptions, s)
		}
	}
	if r.RefreshInterval == 0 {
		r.RefreshInterval = 5 * time.Second
	}
	if r.CacheSize == 0 {
		r.CacheSize = 10_000
	}
	if r.NegativeCacheSize == 0 {
		r.NegativeCacheSize = 10_000
	}
	if r.LastUsedInterval == 0 {
		r.LastUsedInterval = time.Minute
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	if r.CacheSize < 0 || r.NegativeCacheSize < 0 {
		return r, fmt.Errorf("%w: negative cache size", ErrInvalidOptions)
	}
	return r, nil
}

// Service creates, lists, changes and verifies API keys. It is safe for
// concurrent use. Call Close when done, to stop the last-used flusher and
// write what it holds.
type Service struct {
	store   Store
	opt     Options
	format  *Format
	ids     *id.Generator
	keys    *cache.Cache[[32]byte, *entry]   // nil when caching is disabled
	unknown *cache.Cache[[32]byte, struct{}] // nil when caching is disabled
	binds   bindings
	used    lastUsed
	mono    *monoClock // the default clock of Verify; nil when Options.Now is set

	watch *watcher // applies a ChangeNotifier's changes; nil without one

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// NewService returns a Service over st. opts may be nil. Unless last-used
// tracking is disabled it starts a background flusher that Close stops; if
// st is a ChangeNotifier it subscribes to the changes of other processes
// until Close.
func NewService(st Store, opts *Options) (*Service, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Service{store: st, opt: o, format: o.Format, ids: id.NewGenerator(o.Now)}
	if opts == nil || opts.Now == nil {
		s.mono = newMonoClock()
	}
	if o.RefreshInterval > 0 {
		s.keys = cache.NewHashed[[32]byte, *entry](o.CacheSize, o.Now, shardHash)
		s.unknown = cache.NewHashed[[32]byte, struct{}](o.NegativeCacheSize, o.Now, shardHash)
	}
	s.binds.init()
	s.used.pending = make(map[string]int64)
	if o.LastUsedInterval > 0 {
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.flushLoop()
	}
	if cn, ok := st.(ChangeNotifier); ok {
		s.startWatch(cn)
	}
	return s, nil
}

// shardHash spreads SHA-256 keys over cache shards by their first bytes,
// which are already uniformly random.
func shardHash(h [32]byte) uint64 {
	return uint64(h[0]) | uint64(h[1])<<8 | uint64(h[2])<<16 | uint64(h[3])<<24
}

// Format returns the key format the Service issues and accepts.
func (s *Service) Format() *Format { return s.format }

// CreateParams are the inputs of Create.
type CreateParams struct {
	AccountID string
	Name      string
	Type      string            // a KeyType.Name; the Format's first type if empty
	Models    []string          // allowed models; empty allows all
	Scopes    []string          // from Options.Scopes; empty allows everything
	ExpiresAt time.Time         // zero: never; otherwise in the future
	Metadata  map[string]string // up to 64 keys of 64 bytes, values up to 1 KiB
}

// Create validates p and stores a new active key. It returns the raw key —
// the only time it exists outside the client — and the stored key. Errors
// are ErrInvalidName, ErrInvalidType, ErrInvalidModels, ErrInvalidScopes,
// ErrInvalidExpiry, ErrInvalidMetadata and ErrAccountNotFound, writing
// nothing in each case.
func (s *Service) Create(ctx context.Context, p CreateParams) (RawKey, APIKey, error) {
	if reservedMetadata(p.Metadata) {
		return "", APIKey{}, fmt.Errorf("%w: keys starting with %q are reserved", ErrInvalidMetadata, reservedMetadataPrefix)
	}
	return s.create(ctx, p)
}

// create is Create after the reserved metadata check (CreateChild sets
// ParentMetadataKey itself).
func (s *Service) create(ctx context.Context, p CreateParams) (RawKey, APIKey, error) {
	name, err := normalizeName(p.Name)
	if err != nil {
		return "", APIKey{}, err
	}
	ti := s.format.typeIndex(p.Type)
	if ti < 0 {
		return "", APIKey{}, fmt.Errorf("%w: %q", ErrInvalidType, p.Type)
	}
	models, err := normalizeModels(p.Models)
	if err != nil {
		return "", APIKey{}, err
	}
	scopes, err := normalizeScopes(p.Scopes, s.opt.Scopes)
	if err != nil {
		return "", APIKey{}, err
	}
	if err := validateMetadata(p.Metadata); err != nil {
		return "", APIKey{}, err
	}
	now := s.opt.Now()
	if !p.ExpiresAt.IsZero() && !validExpiry(p.ExpiresAt, now) {
		return "", APIKey{}, ErrInvalidExpiry
	}
	if p.AccountID == "" {
		return "", APIKey{}, ErrAccountNotFound
	}
	t := s.format.types[ti]
	raw := s.format.generate(ti)
	k := APIKey{
		ID: s.ids.New(s.opt.IDPrefix), AccountID: p.AccountID, Name: name, Type: t.Name,
		Environment: t.Environment, Prefix: t.Prefix, Hint: s.hint(raw, t),
		Models: models, Scopes: scopes, Status: StatusActive, Metadata: cloneMap(p.Metadata),
		CreatedAt: now, UpdatedAt: now, ExpiresAt: p.ExpiresAt,
	}
	if len(k.Metadata) == 0 {
		k.Metadata = nil
	}
	h := hashKey(string(raw))
	if err := s.store.CreateAPIKey(ctx, k, h); err != nil {
		return "", APIKey{}, err
	}
	if s.unknown != nil {
		// Only a 166-bit guess could have put h in the negative cache, but
		// a new key must work at once without relying on that.
		s.unknown.Delete(h)
	}
	return raw, s.present(k, now), nil
}

func (s *Service) hint(raw RawKey, t KeyType) string {
	return string(raw[:len(t.Prefix)+s.format.hintChars])
}

// present is how keys leave the Service: an active key past its expiry
// reads as StatusExpired, and a grace period that has ended is not shown.
func (s *Service) present(k APIKey, now time.Time) APIKey {
	if k.Status == StatusActive && !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) {
		k.Status = StatusExpired
	}
	if !k.GraceUntil.IsZero() && !now.Before(k.GraceUntil) {
		k.GraceUntil = time.Time{}
	}
	return k
}

// Get returns the key with the given ID in the account, or ErrNotFound (also
// when it belongs to another account).
func (s *Service) Get(ctx context.Context, accountID, keyID string) (APIKey, error) {
	k, err := s.store.APIKey(ctx, accountID, keyID)
	if err != nil {
		return APIKey{}, err
	}
	return s.present(k, s.opt.Now()), nil
}

// ListParams select a page of an account's keys.
type ListParams struct {
	Cursor string // NextCursor of the previous page; "" for the first
	Limit  int    // 50 by default, clamped to 1..500
}

// Page is one page of keys in creation order.
type Page struct {
	Keys       []APIKey
	NextCursor string // "" on the last page
}

// List returns the account's keys in creation order, revoked ones included,
// or ErrInvalidCursor.
func (s *Service) List(ctx context.Context, accountID string, p ListParams) (Page, error) {
	if p.Cursor != "" && !id.Valid(s.opt.IDPrefix, p.Cursor) {
		return Page{}, ErrInvalidCursor
	}
	limit := norm.ClampLimit(p.Limit)
	ks, err := s.store.ListAPIKeys(ctx, accountID, p.Cursor, limit+1)
	if err != nil {
		return Page{}, err
	}
	var pg Page
	if len(ks) > limit {
		ks = ks[:limit]
		pg.NextCursor = ks[limit-1].ID
	}
	now := s.opt.Now()
	for i := range ks {
		ks[i] = s.present(ks[i], now)
	}
	pg.Keys = ks
	return pg, nil
}

// UpdateParams are the inputs of Update; nil fields are left unchanged.
type UpdateParams struct {
	Name *string
	// Models replaces the allowed models; a pointer to an empty slice
	// allows all (FPT's "edit permission").
	Models *[]string
	// Scopes replaces the scopes; a pointer to an empty slice allows all.
	Scopes *[]string
	// ExpiresAt replaces the expiry: a future time, or a pointer to the
	// zero time for none.
	ExpiresAt *time.Time
	Metadata  map[string]string // replaces the whole map when non-nil
	// RateLimits replaces the key's own per-minute limits (zero fields:
	// none of its own). Checked here only for range (ErrInvalidRateLimits);
	// the keyledger facade's SetKeyRateLimits also keeps them below the
	// plan's.
	RateLimits *RateLimits
}

// Update validates p and applies it atomically. It returns ErrNotFound,
// ErrInvalidName, ErrInvalidModels, ErrInvalidScopes, ErrInvalidExpiry or
// ErrInvalidMetadata, writing nothing on error. The next Verify in this
// process sees the change.
func (s *Service) Update(ctx context.Context, accountID, keyID string, p UpdateParams) (APIKey, error) {
	var u Update
	if p.Name != nil {
		n, err := normalizeName(*p.Name)
		if err != nil {
			return APIKey{}, err
		}
		u.Name = &n
	}
	if p.Models != nil {
		ms, err := normalizeModels(*p.Models)
		if err != nil {
			return APIKey{}, err
		}
		u.Models = &ms
	}
	if p.Scopes != nil {
		ss, err := normalizeScopes(*p.Scopes, s.opt.Scopes)
		if err != nil {
			return APIKey{}, err
		}
		u.Scopes = &ss
	}
	if p.Metadata != nil {
		if err := validateMetadata(p.Metadata); err != nil {
			return APIKey{}, err
		}
		if reservedMetadata(p.Metadata) {
			return APIKey{}, fmt.Errorf("%w: keys starting with %q are reserved", ErrInvalidMetadata, reservedMetadataPrefix)
		}
		// The parent link survives a metadata replacement.
		cur, err := s.store.APIKey(ctx, accountID, keyID)
		if err != nil {
			return APIKey{}, err
		}
		u.Metadata = p.Metadata
		if parent := cur.Metadata[ParentMetadataKey]; parent != "" {
			u.Metadata = cloneMap(p.Metadata)
			u.Metadata[ParentMetadataKey] = parent
		}
	}
	if p.RateLimits != nil {
		if !p.RateLimits.valid() {
			return APIKey{}, ErrInvalidRateLimits
		}
		rl := *p.RateLimits
		u.RateLimits = &rl
	}
	now := s.opt.Now()
	if p.ExpiresAt != nil {
		if !p.ExpiresAt.IsZero() && !validExpiry(*p.ExpiresAt, now) {
			return APIKey{}, ErrInvalidExpiry
		}
		u.ExpiresAt = p.ExpiresAt
	}
	return s.apply(ctx, accountID, keyID, u, now, nil)
}

// apply writes u, then makes the change visible in this process: it drops
// the key's cache entries and cancels its bound contexts with cause (if not
// nil) or moves their deadline to the key's new expiry.
func (s *Service) apply(ctx context.Context, accountID, keyID string, u Update, now time.Time, cause error) (APIKey, error) {
	k, err := s.store.UpdateAPIKey(ctx, accountID, keyID, u, now)
	// Forget even on error: the write may have happened before it failed.
	s.forget(keyID)
	if err != nil {
		return APIKey{}, err
	}
	switch {
	case cause != nil:
		s.binds.expire(keyID, nil, 0, cause)
	case u.ExpiresAt != nil && !k.ExpiresAt.IsZero():
		s.binds.expire(keyID, nil, k.ExpiresAt.Sub(now), ErrExpired)
	}
	return s.present(k, now), nil
}

// forget drops every cache entry of a key (current and previous secret) and
// tells Bind that a change happened. It runs after the store write; see
// cache.SetIfUnchanged and Bind for why that order makes both race-free.
func (s *Service) forget(keyID string) {
	if s.keys != nil {
		s.keys.DeleteFunc(func(_ [32]byte, e *entry) bool { return e.v.KeyID == keyID })
	}
	s.binds.epoch.Add(1)
}

// Revoke permanently revokes a key and every key created from it with
// CreateChild (and theirs): the next Verify in this process fails with
// ErrRevoked and contexts bound to those keys are cancelled with cause
// ErrRevoked. Revoking twice is not an error. It returns ErrNotFound.
func (s *Service) Revoke(ctx context.Context, accountID, keyID string) (APIKey, error) {
	st := StatusRevoked
	k, err := s.apply(ctx, accountID, keyID, Update{Status: &st}, s.opt.Now(), ErrRevoked)
	if err != nil {
		return k, err
	}
	return k, s.cascade(ctx, accountID, keyID, StatusRevoked, ErrRevoked)
}

// Expire makes a key expire now: Verify fails with ErrExpired and bound
// contexts are cancelled with that cause. It returns ErrNotFound.
func (s *Service) Expire(ctx context.Context, accountID, keyID string) (APIKey, error) {
	now := s.opt.Now()
	return s.apply(ctx, accountID, keyID, Update{ExpiresAt: &now}, now, ErrExpired)
}

// maxGrace bounds a rotation's grace period (longer is the same as forever
// for a key, and keeps GraceUntil within what stores can hold).
const maxGrace = 100 * 365 * 24 * time.Hour

// validExpiry reports whether t is after now and before 2200: stores keep
// times as int64 unix nanoseconds, which end in 2262.
func validExpiry(t, now time.Time) bool { return t.After(now) && t.Year() < 2200 }

// Rotate gives a key a new secret and returns it with the updated key. The
// key keeps its ID, settings and usage history; the old secret keeps working
// until now+grace, but never past the key's own expiry, and contexts bound
// with it are cancelled (cause ErrExpired) when that time comes. A grace of
// zero ends the old secret at once; rotating again within a grace period
// ends the older secret at once. It returns ErrInvalidGrace, ErrNotFound,
// ErrRevoked, ErrDisabled or ErrExpired.
func (s *Service) Rotate(ctx context.Context, accountID, keyID string, grace time.Duration) (RawKey, APIKey, error) {
	if grace < 0 {
		return "", APIKey{}, ErrInvalidGrace
	}
	cur, err := s.store.APIKey(ctx, accountID, keyID)
	if err != nil {
		return "", APIKey{}, err
	}
	ti := s.format.typeIndex(cur.Type)
	if ti < 0 || s.format.types[ti].Prefix != cur.Prefix {
		return "", APIKey{}, fmt.Errorf("%w: key type %q with prefix %q is not in the format", ErrInvalidType, cur.Type, cur.Prefix)
	}
	now := s.opt.Now()
	t := s.format.types[ti]
	raw := s.format.generate(ti)
	h := hashKey(string(raw))
	r := Rotation{Hash: h, Hint: s.hint(raw, t)}
	if grace > 0 {
		r.GraceUntil = now.Add(min(grace, maxGrace))
		if !cur.ExpiresAt.IsZero() && cur.ExpiresAt.Before(r.GraceUntil) {
			r.GraceUntil = cur.ExpiresAt
		}
	}
	k, err := s.store.RotateAPIKey(ctx, accountID, keyID, r, now)
	s.forget(keyID)
	if err != nil {
		return "", APIKey{}, err
	}
	if s.unknown != nil {
		s.unknown.Delete(h)
	}
	// Contexts bound with an older secret live until the grace period ends.
	var left time.Duration
	if grace > 0 {
		left = r.GraceUntil.Sub(now)
	}
	s.binds.expire(keyID, func(b [32]byte) bool { return b != h }, left, ErrExpired)
	return raw, s.present(k, now), nil
}

// DisableLeaked handles a raw key found in public (FPT's automatic disable
// of leaked keys). If it is a key's current secret, the key is disabled:
// Verify fails with ErrDisabled and bound contexts are cancelled with that
// cause. If it is the previous secret of a rotated key, only the grace
// period ends and the new secret keeps working. known reports whether the
// raw key belonged to any key; ErrMalformed is returned without a lookup.
func (s *Service) DisableLeaked(ctx context.Context, raw RawKey) (k APIKey, known bool, err error) {
	if s.format.match(string(raw)) < 0 {
		return APIKey{}, false, ErrMalformed
	}
	h := hashKey(string(raw))
	m, err := s.store.APIKeyByHash(ctx, h)
	if errors.Is(err, ErrNotFound) {
		return APIKey{}, false, nil
	}
	if err != nil {
		return APIKey{}, false, err
	}
	if m.Previous {
		k, err = s.apply(ctx, m.Key.AccountID, m.Key.ID, Update{EndGrace: true}, s.opt.Now(), nil)
		if err == nil {
			s.binds.expire(k.ID, func(b [32]byte) bool { return b == h }, 0, ErrDisabled)
		}
		return k, true, err
	}
	st := StatusDisabled
	k, err = s.apply(ctx, m.Key.AccountID, m.Key.ID, Update{Status: &st}, s.opt.Now(), ErrDisabled)
	if err != nil {
		return k, true, err
	}
	// A leaked key's children were made by whoever held it: revoke them.
	return k, true, s.cascade(ctx, m.Key.AccountID, m.Key.ID, StatusRevoked, ErrRevoked)
}

// InvalidateAccount drops the cached keys of an account, so that the next
// Verify reads the account's plan and status again. Hosts (the keyledger
// facade) call it after changing an account in this process.
func (s *Service) InvalidateAccount(accountID string) {
	if s.keys != nil {
		s.keys.DeleteFunc(func(_ [32]byte, e *entry) bool { return e.v.AccountID == accountID })
	}
	s.binds.epoch.Add(1)
}

// Stats describe the Service's in-memory state.
type Stats struct {
	CachedKeys      int // cache entries of known keys (expired ones included)
	CachedUnknown   int // cache entries of unknown hashes
	BoundContexts   int // contexts registered by Bind and not yet released
	PendingLastUsed int // keys whose last use is not yet written
}

// Stats returns the current Stats.
func (s *Service) Stats() Stats {
	var st Stats
	if s.keys != nil {
		st.CachedKeys, st.CachedUnknown = s.keys.Len(), s.unknown.Len()
	}
	st.BoundContexts = int(s.binds.count.Load())
	s.used.mu.Lock()
	st.PendingLastUsed = len(s.used.pending)
	s.used.mu.Unlock()
	return st
}

// Close stops the background last-used flusher and writes the uses it holds
// with ctx, and ends the subscription to a ChangeNotifier. Verify keeps
// working after Close (changes of other processes are then seen within
// RefreshInterval); uses recorded after it are written only by
// FlushLastUsed. Closing twice is not an error.
func (s *Service) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		if s.stop != nil {
			close(s.stop)
			<-s.done
		}
		if s.watch != nil {
			s.watch.stop()
		}
	})
	return s.FlushLastUsed(ctx)
}
