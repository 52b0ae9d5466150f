package apikey

import (
	"context"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Bind ties a request context to the key that authorized it, so that the
// request fails when the key does (Forii: "any in-flight requests with this
// key will fail"). The returned context is cancelled, with context.Cause
// giving the reason, when through this Service the key is revoked
// (ErrRevoked), disabled (ErrDisabled) or expired (ErrExpired), when the
// grace period of the rotated secret it was verified with ends (ErrExpired),
// at the secret's expiry (ErrExpired), or when a Verify or refresh in this
// process reads such a state written by another process. Deadlines only
// move earlier: extending a key's expiry does not extend contexts already
// bound. Call the returned function when the request ends: it releases the
// registration and cancels the context.
//
// Bind is race-free with Revoke: if Verify read the key before a Revoke
// but Bind runs after it, Bind looks the key up again and returns a
// cancelled context. A Verified that did not come from Verify yields a
// context cancelled with ErrUnknown.
func (s *Service) Bind(ctx context.Context, v Verified) (context.Context, context.CancelFunc) {
	bctx, unbind, _ := s.BindCause(ctx, v)
	return bctx, unbind
}

// BindCause is Bind that also returns the bound context's cancel function,
// so that the caller can end the bound work early with a cause of its own
// (keyledger stops a request whose balance ran out). Calling it does not
// unbind: the returned CancelFunc still must be called.
func (s *Service) BindCause(ctx context.Context, v Verified) (context.Context, context.CancelFunc, context.CancelCauseFunc) {
	bctx, cancel := context.WithCancelCause(ctx)
	if v.e == nil {
		cancel(ErrUnknown)
		return bctx, func() {}, cancel
	}
	b := &binding{keyID: v.KeyID, hash: v.e.hash, cancel: cancel}
	left := time.Duration(math.MaxInt64)
	if v.e.notAfter != math.MaxInt64 {
		left = time.Duration(v.e.notAfter - s.nanos())
	}
	s.binds.add(b, left)
	// Revoke and friends write the store, drop the cache entries, advance
	// epoch and then cancel the registered bindings. Either that
	// cancellation saw b, or b was registered after it and epoch has moved
	// since Verify read it: then look again, through the cache (which can
	// no longer hold the old state) or the store.
	if s.binds.epoch.Load() != v.epoch {
		now := s.nanos()
		e, err := s.lookup(ctx, v.e.hash, now)
		if err == nil {
			err = e.check(now)
		}
		switch {
		case err != nil:
			s.binds.drop(b, err)
		case e.notAfter != math.MaxInt64:
			// A rotation or new expiry may have shortened the secret's life.
			s.binds.shorten(b, time.Duration(e.notAfter-now))
		}
	}
	return bctx, func() { s.binds.drop(b, context.Canceled) }, cancel
}

// bindings is the registry of bound contexts, sharded by key ID. Each shard
// maps a key ID to a doubly linked list of its bindings, so registering and
// releasing are O(1) and a key without bindings costs nothing.
type bindings struct {
	// epoch advances on every change made through the Service that may
	// invalidate a key (revoke, disable, update, rotate, expire, account
	// invalidation).
	epoch  atomic.Uint64
	count  atomic.Int64
	seed   maphash.Seed
	shards [16]bindShard
}

type bindShard struct {
	mu sync.Mutex
	m  map[string]*binding // key ID -> head of its list
}

// binding is one bound context. Its fields after cancel are guarded by the
// shard's mutex.
type binding struct {
	keyID  string
	hash   [32]byte // the secret it was verified with
	cancel context.CancelCauseFunc

	linked     bool
	prev, next *binding
	timer      *time.Timer // fires at due with ErrExpired
	due        time.Time
}

func (r *bindings) init() {
	r.seed = maphash.MakeSeed()
	for i := range r.shards {
		r.shards[i].m = make(map[string]*binding)
	}
}

func (r *bindings) shard(keyID string) *bindShard {
	return &r.shards[maphash.String(r.seed, keyID)%uint64(len(r.shards))]
}

// add registers b, to expire with ErrExpired after left.
func (r *bindings) add(b *binding, left time.Duration) {
	sh := r.shard(b.keyID)
	sh.mu.Lock()
	b.linked = true
	if head := sh.m[b.keyID]; head != nil {
		b.next, head.prev = head, b
	}
	sh.m[b.keyID] = b
	r.count.Add(1)
	expired := left <= 0
	if !expired && left != math.MaxInt64 {
		r.deadlineLocked(b, left)
	}
	sh.mu.Unlock()
	if expired {
		r.drop(b, ErrExpired)
	}
}

// deadlineLocked makes b expire after left unless it already expires sooner.
func (r *bindings) deadlineLocked(b *binding, left time.Duration) {
	due := time.Now().Add(left)
	switch {
	case b.timer == nil:
		b.timer = time.AfterFunc(left, func() { r.drop(b, ErrExpired) })
	case due.Before(b.due):
		b.timer.Reset(left)
	default:
		return
	}
	b.due = due
}

// shorten makes b expire after left unless it ends sooner anyway.
func (r *bindings) shorten(b *binding, left time.Duration) {
	if left <= 0 {
		r.drop(b, ErrExpired)
		return
	}
	sh := r.shard(b.keyID)
	sh.mu.Lock()
	if b.linked {
		r.deadlineLocked(b, left)
	}
	sh.mu.Unlock()
}

func (sh *bindShard) unlinkLocked(b *binding) {
	if b.prev != nil {
		b.prev.next = b.next
	} else if b.next != nil {
		sh.m[b.keyID] = b.next
	} else {
		delete(sh.m, b.keyID)
	}
	if b.next != nil {
		b.next.prev = b.prev
	}
	b.prev, b.next, b.linked = nil, nil, false
	if b.timer != nil {
		b.timer.Stop()
	}
}

// drop unregisters b and cancels its context with cause; a second drop of
// the same binding does nothing.
func (r *bindings) drop(b *binding, cause error) {
	sh := r.shard(b.keyID)
	sh.mu.Lock()
	linked := b.linked
	if linked {
		sh.unlinkLocked(b)
		r.count.Add(-1)
	}
	sh.mu.Unlock()
	b.cancel(cause) // first cause wins; later calls are no-ops
}

// expire ends the bindings of a key whose secret hash satisfies match (all
// if match is nil): at once with cause if left <= 0, else with ErrExpired
// after left unless they end sooner anyway.
func (r *bindings) expire(keyID string, match func([32]byte) bool, left time.Duration, cause error) {
	sh := r.shard(keyID)
	var ended []*binding
	sh.mu.Lock()
	for b := sh.m[keyID]; b != nil; b = b.next {
		switch {
		case match != nil && !match(b.hash):
		case left <= 0:
			ended = append(ended, b)
		default:
			r.deadlineLocked(b, left)
		}
	}
	for _, b := range ended {
		sh.unlinkLocked(b)
	}
	r.count.Add(-int64(len(ended)))
	sh.mu.Unlock()
	for _, b := range ended {
		b.cancel(cause)
	}
}
