package apikey

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"
)

// lastUsed holds the uses not yet written: key ID -> latest use (unix
// nanoseconds). It has at most one entry per key.
type lastUsed struct {
	mu      sync.Mutex
	pending map[string]int64
}

// usePrecision is how finely uses are recorded in memory: a key verified
// continuously reaches the shared map at most once a second.
const usePrecision = int64(time.Second)

// recordUse notes a successful Verify. At most once per key per second (or
// per LastUsedInterval if shorter) does it reach the shared map; the common
// case is one atomic load on the cache entry. The store is written by
// FlushLastUsed, once per interval for all keys.
func (s *Service) recordUse(e *entry, now int64) {
	iv := min(int64(s.opt.LastUsedInterval), usePrecision)
	if iv <= 0 {
		return
	}
	t := e.touched.Load()
	if now-t < iv || !e.touched.CompareAndSwap(t, now) {
		return
	}
	s.used.mu.Lock()
	if now > s.used.pending[e.v.KeyID] {
		s.used.pending[e.v.KeyID] = now
	}
	s.used.mu.Unlock()
}

// FlushLastUsed writes the recorded uses now, in one store call, instead of
// waiting for the background flusher (tests, shutdown). On failure the uses
// are kept for the next flush and the store's error is returned.
func (s *Service) FlushLastUsed(ctx context.Context) error {
	s.used.mu.Lock()
	p := s.used.pending
	if len(p) == 0 {
		s.used.mu.Unlock()
		return nil
	}
	s.used.pending = make(map[string]int64, len(p))
	s.used.mu.Unlock()

	uses := make([]Use, 0, len(p))
	for id, t := range p {
		uses = append(uses, Use{KeyID: id, At: time.Unix(0, t).UTC()})
	}
	// A fixed order keeps concurrent flushes from locking rows in
	// different orders on backends with row locks.
	slices.SortFunc(uses, func(a, b Use) int { return strings.Compare(a.KeyID, b.KeyID) })
	if err := s.store.TouchAPIKeys(ctx, uses); err != nil {
		s.used.mu.Lock()
		for id, t := range p {
			if t > s.used.pending[id] {
				s.used.pending[id] = t
			}
		}
		s.used.mu.Unlock()
		return err
	}
	return nil
}

func (s *Service) flushLoop() {
	defer close(s.done)
	t := time.NewTicker(s.opt.LastUsedInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), s.opt.LastUsedInterval)
			if err := s.FlushLastUsed(ctx); err != nil {
				s.opt.Logger.Warn("apikey: writing last_used_at failed; will retry", "error", err)
			}
			cancel()
		}
	}
}
