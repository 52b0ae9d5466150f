// Package cache is a bounded, sharded, time-limited in-memory map used by the
// verify paths (sessions, API keys). It never grows past its capacity: when a
// shard is full an arbitrary entry of that shard is evicted, which keeps the
// hot path free of list bookkeeping while bounding memory.
package cache

import (
	"hash/maphash"
	"sync"
	"time"
)

const shardCount = 64

// Cache maps K to V for at most a TTL per entry. It is safe for concurrent use.
type Cache[K comparable, V any] struct {
	seed     maphash.Seed
	now      func() time.Time
	perShard int
	shards   [shardCount]shard[K, V]
}

type shard[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]entry[V]
	_  [40]byte // keep shards on separate cache lines
}

type entry[V any] struct {
	v   V
	exp int64 // unix nanoseconds
}

// New returns a cache holding at most capacity entries (rounded up to a
// multiple of the shard count). now is the clock (time.Now if nil).
func New[K comparable, V any](capacity int, now func() time.Time) *Cache[K, V] {
	if now == nil {
		now = time.Now
	}
	per := (capacity + shardCount - 1) / shardCount
	if per < 1 {
		per = 1
	}
	c := &Cache[K, V]{seed: maphash.MakeSeed(), now: now, perShard: per}
	for i := range c.shards {
		c.shards[i].m = make(map[K]entry[V])
	}
	return c
}

func (c *Cache[K, V]) shard(k K) *shard[K, V] {
	return &c.shards[maphash.Comparable(c.seed, k)%shardCount]
}

// Get returns the value stored for k if it has not expired.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	s := c.shard(k)
	s.mu.RLock()
	e, ok := s.m[k]
	s.mu.RUnlock()
	if !ok || c.now().UnixNano() >= e.exp {
		var zero V
		return zero, false
	}
	return e.v, true
}

// Set stores v for k for ttl, evicting an arbitrary entry of k's shard if it
// is full. A non-positive ttl deletes k.
func (c *Cache[K, V]) Set(k K, v V, ttl time.Duration) {
	if ttl <= 0 {
		c.Delete(k)
		return
	}
	exp := c.now().Add(ttl).UnixNano()
	s := c.shard(k)
	s.mu.Lock()
	if _, ok := s.m[k]; !ok && len(s.m) >= c.perShard {
		for old := range s.m {
			delete(s.m, old)
			break
		}
	}
	s.m[k] = entry[V]{v: v, exp: exp}
	s.mu.Unlock()
}

// Delete removes k.
func (c *Cache[K, V]) Delete(k K) {
	s := c.shard(k)
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

// DeleteFunc removes every entry for which drop returns true.
func (c *Cache[K, V]) DeleteFunc(drop func(K, V) bool) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if drop(k, e.v) {
				delete(s.m, k)
			}
		}
		s.mu.Unlock()
	}
}

// Len returns the number of stored entries, expired ones included.
func (c *Cache[K, V]) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
