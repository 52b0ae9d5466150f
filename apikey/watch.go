package apikey

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"
)

// Change is a change of keys or accounts committed through any Service
// sharing a store, possibly in another process, as a ChangeNotifier reports
// it.
type Change struct {
	// KeyID is set when a key was revoked, disabled, expired, updated or
	// rotated.
	KeyID string
	// AccountID is set when an account's plan or status changed.
	AccountID string
	// All is set when changes may have been missed (the notifier's
	// connection dropped and came back): everything cached must be read
	// again.
	All bool
}

// ChangeNotifier is an optional Store capability of a store shared by
// several processes (store/pgstore, through LISTEN/NOTIFY). NewService
// subscribes when its Store implements it, so that a key revoked, disabled,
// updated or rotated in any process leaves the verify cache of this one as
// soon as the notification arrives — not only after RefreshInterval — and
// contexts bound to it here are cancelled; Close unsubscribes.
type ChangeNotifier interface {
	// WatchKeyChanges calls fn for every change committed after the call,
	// from one goroutine, until stop is called. fn must return quickly.
	// When the notifier cannot be sure it saw every change (it connected
	// or reconnected), it calls fn with Change.All set.
	WatchKeyChanges(fn func(Change)) (stop func())
}

// InvalidateKey drops the cached entries of a key, so that the next Verify
// reads it from the store, and reads the key again for the contexts bound
// to it in this process: they are cancelled (cause ErrRevoked, ErrDisabled,
// ErrExpired or ErrAccountInactive) if the secret they were verified with no
// longer verifies, and their deadline moves to a new, earlier expiry. The
// Service calls it for the changes a ChangeNotifier reports; hosts that
// learn of changes another way may call it too. It returns the store's
// error, if any, after dropping the cache entries.
func (s *Service) InvalidateKey(ctx context.Context, keyID string) error {
	s.forget(keyID)
	return s.recheck(ctx, keyID, s.binds.hashes(keyID))
}

// InvalidateAll drops every cached key and unknown hash and reads again
// every key that has contexts bound in this process, as InvalidateKey does
// for one key.
func (s *Service) InvalidateAll(ctx context.Context) error {
	if s.keys != nil {
		s.keys.DeleteFunc(func([32]byte, *entry) bool { return true })
		s.unknown.DeleteFunc(func([32]byte, struct{}) bool { return true })
	}
	s.binds.epoch.Add(1)
	var errs []error
	for keyID, hashes := range s.binds.all() {
		errs = append(errs, s.recheck(ctx, keyID, hashes))
	}
	return errors.Join(errs...)
}

// recheck reads the secrets hashes of a key from the store (and caches
// them) and ends or shortens the contexts bound with each.
func (s *Service) recheck(ctx context.Context, keyID string, hashes [][32]byte) error {
	for _, h := range hashes {
		now := s.nanos()
		e, err := s.lookup(ctx, h, now) // load cancels on a revoked, disabled or inactive key
		match := func(b [32]byte) bool { return b == h }
		switch {
		case err == ErrUnknown:
			// The secret was rotated away without a grace period.
			s.binds.expire(keyID, match, 0, ErrExpired)
		case err != nil:
			return err
		default:
			if err := e.check(now); err != nil {
				s.binds.expire(keyID, match, 0, err)
			} else if e.notAfter != math.MaxInt64 {
				s.binds.expire(keyID, match, time.Duration(e.notAfter-now), ErrExpired)
			}
		}
	}
	return nil
}

// hashes returns the distinct secrets that contexts bound to keyID were
// verified with.
func (r *bindings) hashes(keyID string) [][32]byte {
	sh := r.shard(keyID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var out [][32]byte
	for b := sh.m[keyID]; b != nil; b = b.next {
		if !containsHash(out, b.hash) {
			out = append(out, b.hash)
		}
	}
	return out
}

// all returns hashes for every key with bound contexts.
func (r *bindings) all() map[string][][32]byte {
	out := make(map[string][][32]byte)
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for keyID, head := range sh.m {
			var hs [][32]byte
			for b := head; b != nil; b = b.next {
				if !containsHash(hs, b.hash) {
					hs = append(hs, b.hash)
				}
			}
			out[keyID] = hs
		}
		sh.mu.Unlock()
	}
	return out
}

func containsHash(hs [][32]byte, h [32]byte) bool {
	for _, x := range hs {
		if x == h {
			return true
		}
	}
	return false
}

// watcher applies the changes a ChangeNotifier reports, on its own
// goroutine: the notifier's callback only queues them.
type watcher struct {
	stopNotify func()
	mu         sync.Mutex
	all        bool
	keys       map[string]struct{}
	accts      map[string]struct{}
	wake       chan struct{}
	quit       chan struct{}
	done       chan struct{}
}

// watchTimeout bounds the store reads of one batch of changes.
const watchTimeout = 10 * time.Second

func (s *Service) startWatch(cn ChangeNotifier) {
	w := &watcher{keys: make(map[string]struct{}), accts: make(map[string]struct{}),
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	s.watch = w
	go s.watchLoop(w)
	w.stopNotify = cn.WatchKeyChanges(func(c Change) {
		w.mu.Lock()
		switch {
		case c.All:
			w.all = true
		case c.KeyID != "":
			w.keys[c.KeyID] = struct{}{}
		case c.AccountID != "":
			w.accts[c.AccountID] = struct{}{}
		}
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	})
}

func (s *Service) watchLoop(w *watcher) {
	defer close(w.done)
	for {
		select {
		case <-w.quit:
			return
		case <-w.wake:
		}
		w.mu.Lock()
		all, keys, accts := w.all, w.keys, w.accts
		w.all, w.keys, w.accts = false, make(map[string]struct{}), make(map[string]struct{})
		w.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), watchTimeout)
		var err error
		if all {
			err = s.InvalidateAll(ctx)
		} else {
			for id := range accts {
				s.InvalidateAccount(id)
			}
			for id := range keys {
				err = errors.Join(err, s.InvalidateKey(ctx, id))
			}
		}
		cancel()
		if err != nil {
			// The caches are dropped; only the re-check of bound contexts
			// failed, and the next Verify or Bind of the key reads it again.
			s.opt.Logger.Warn("apikey: re-reading changed keys failed", "error", err)
		}
	}
}

func (w *watcher) stop() {
	w.stopNotify()
	close(w.quit)
	<-w.done
}
