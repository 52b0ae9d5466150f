package apikey

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync/atomic"
	"time"
)

// Verifier is what request-path code (HTTP middleware) needs from a Service.
type Verifier interface {
	Verify(ctx context.Context, raw RawKey) (Verified, error)
	Bind(ctx context.Context, v Verified) (context.Context, context.CancelFunc)
}

var _ Verifier = (*Service)(nil)

// Verified is a key that passed Verify: who is calling and what the key may
// do. Its slices are shared with the Service's cache: read them, never
// modify them.
type Verified struct {
	KeyID       string
	AccountID   string
	Plan        string // the owning account's plan, read with the key
	Type        string // KeyType.Name
	Environment Environment
	Models      []string // allowed models; empty allows all
	Scopes      []string // allowed scopes; empty allows all
	// RateLimits are the key's own per-minute limits (zero: the plan's).
	RateLimits RateLimits
	// ExpiresAt is when the presented secret stops working: the key's
	// expiry, or the end of the grace period of a rotated secret if that is
	// earlier. Zero means never.
	ExpiresAt time.Time

	e     *entry // the cache entry Verify read; nil in a zero Verified
	epoch uint64 // bindings.epoch when Verify started
}

// Permit checks a request against the key's restrictions: model must be one
// of Models and scope one of Scopes, unless the list is empty. An empty
// model or scope is not checked. The denials, ErrModelNotAllowed and
// ErrScopeNotAllowed, are 403-class errors: the key is valid but may not do
// this.
func (v *Verified) Permit(model, scope string) error {
	if model != "" && len(v.Models) > 0 && !slices.Contains(v.Models, model) {
		return ErrModelNotAllowed
	}
	if scope != "" && len(v.Scopes) > 0 && !slices.Contains(v.Scopes, scope) {
		return ErrScopeNotAllowed
	}
	return nil
}

// entry is what the cache holds for one hash: immutable apart from touched.
type entry struct {
	v        Verified
	hash     [32]byte
	deny     error // ErrRevoked or ErrDisabled from the key's status, else nil
	notAfter int64 // unix nanoseconds when the secret stops working; MaxInt64 for never
	inactive bool  // the owning account is not active
	touched  atomic.Int64
}

func newEntry(h [32]byte, m Match) *entry {
	k := m.Key
	e := &entry{hash: h, notAfter: math.MaxInt64, inactive: m.AccountStatus != AccountActive, v: Verified{
		KeyID: k.ID, AccountID: k.AccountID, Plan: m.AccountPlan, Type: k.Type, Environment: k.Environment,
		Models: k.Models, Scopes: k.Scopes, ExpiresAt: k.ExpiresAt, RateLimits: k.RateLimits,
	}}
	switch k.Status {
	case StatusActive:
	case StatusDisabled:
		e.deny = ErrDisabled
	default:
		e.deny = ErrRevoked
	}
	if m.Previous {
		end := k.GraceUntil
		if end.IsZero() {
			end = time.Unix(0, 1) // a previous secret without a grace period has ended
		}
		if e.v.ExpiresAt.IsZero() || end.Before(e.v.ExpiresAt) {
			e.v.ExpiresAt = end
		}
	}
	if !e.v.ExpiresAt.IsZero() {
		e.notAfter = e.v.ExpiresAt.UnixNano()
	}
	return e
}

// check applies steps 3-5 of the verification order at time now.
func (e *entry) check(now int64) error {
	switch {
	case e.deny != nil:
		return e.deny
	case now >= e.notAfter:
		return ErrExpired
	case e.inactive:
		return ErrAccountInactive
	}
	return nil
}

// Verify checks a raw key in the order the package documentation gives and
// returns the verified key, or ErrMalformed, ErrUnknown, ErrRevoked,
// ErrDisabled, ErrExpired or ErrAccountInactive (unwrapped), or a store
// error. A cached key costs one SHA-256, one clock read and one cache
// lookup, and allocates nothing; a malformed key costs neither hash nor
// store call. A successful Verify records the use for last_used_at.
func (s *Service) Verify(ctx context.Context, raw RawKey) (Verified, error) {
	if s.format.match(string(raw)) < 0 {
		return Verified{}, ErrMalformed
	}
	h := hashKey(string(raw))
	epoch := s.binds.epoch.Load() // before the lookup; see Bind
	now := s.nanos()
	e, err := s.lookup(ctx, h, now)
	if err != nil {
		return Verified{}, err
	}
	if err := e.check(now); err != nil {
		return Verified{}, err
	}
	s.recordUse(e, now)
	v := e.v
	v.e, v.epoch = e, epoch
	return v, nil
}

// lookup returns the entry for h from the caches or the store, or
// ErrUnknown. Values loaded from the store are cached only if no
// invalidation started since before the load (cache.SetIfUnchanged), so a
// key revoked through this Service can never be cached as active again.
func (s *Service) lookup(ctx context.Context, h [32]byte, now int64) (*entry, error) {
	if s.keys == nil {
		return s.load(ctx, h)
	}
	if e, ok := s.keys.GetAt(h, now); ok {
		return e, nil
	}
	if _, ok := s.unknown.GetAt(h, now); ok {
		return nil, ErrUnknown
	}
	kv, uv := s.keys.Version(), s.unknown.Version()
	e, err := s.load(ctx, h)
	switch {
	case err == nil:
		s.keys.SetIfUnchanged(h, e, s.opt.RefreshInterval, kv)
	case err == ErrUnknown:
		s.unknown.SetIfUnchanged(h, struct{}{}, s.opt.RefreshInterval, uv)
	}
	return e, err
}

// load reads h from the store. A key it finds revoked, disabled or without
// an active account may have been changed by another process: contexts
// bound to it here are cancelled now.
func (s *Service) load(ctx context.Context, h [32]byte) (*entry, error) {
	m, err := s.store.APIKeyByHash(ctx, h)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrUnknown
	}
	if err != nil {
		return nil, err
	}
	e := newEntry(h, m)
	switch {
	case e.deny != nil:
		s.binds.expire(e.v.KeyID, nil, 0, e.deny)
	case e.inactive:
		s.binds.expire(e.v.KeyID, nil, 0, ErrAccountInactive)
	}
	return e, nil
}
