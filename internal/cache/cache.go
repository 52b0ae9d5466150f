// Package cache is a bounded, sharded, time-limited in-memory map used by the
// verify paths (sessions, API keys). It never grows past its capacity: when a
// shard is full an arbitrary entry of that shard is evicted, which keeps the
// hot path free of list bookkeeping while bounding memory.
//
// A cache in front of a store has a classic race: a reader loads a value from
// the store, a writer changes the store and deletes the cached copy, and then
// the reader caches the value it loaded before the change. Version and
// SetIfUnchanged close it: read Version before loading from the store, store
// the loaded value with SetIfUnchanged, and delete after writing the store.
// Every Delete and DeleteFunc advances the version, so a value loaded before
// a deletion can never be cached after it.
package cache

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

const shardCount = 64

// Cache maps K to V for at most a TTL per entry. It is safe for concurrent use.
type Cache[K comparable, V any] struct {
	seed     maphash.Seed
	hash     func(K) uint64 // nil: maphash
	now      func() time.Time
	perShard int
	version  atomic.Uint64
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
	return NewHashed[K, V](capacity, now, nil)
}

// NewHashed is New with a caller-supplied shard hash. Keys that are already
// uniformly random, such as SHA-256 digests, can shard on a few of their own
// bytes instead of paying for maphash on every access. hash == nil means
// maphash.
func NewHashed[K comparable, V any](capacity int, now func() time.Time, hash func(K) uint64) *Cache[K, V] {
	if now == nil {
		now = time.Now
	}
	per := (capacity + shardCount - 1) / shardCount
	if per < 1 {
		per = 1
	}
	c := &Cache[K, V]{seed: maphash.MakeSeed(), hash: hash, now: now, perShard: per}
	for i := range c.shards {
		c.shards[i].m = make(map[K]entry[V])
	}
	return c
}

func (c *Cache[K, V]) shard(k K) *shard[K, V] {
	if c.hash != nil {
		return &c.shards[c.hash(k)%shardCount]
	}
	return &c.shards[maphash.Comparable(c.seed, k)%shardCount]
}

// Get returns the value stored for k if it has not expired.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	return c.GetAt(k, c.now().UnixNano())
}

// GetAt is Get at a time the caller has already read (unix nanoseconds), for
// hot paths that need the clock anyway and should read it once.
func (c *Cache[K, V]) GetAt(k K, now int64) (V, bool) {
	s := c.shard(k)
	s.mu.RLock()
	e, ok := s.m[k]
	s.mu.RUnlock()
	if !ok || now >= e.exp {
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
	s := c.shard(k)
	s.mu.Lock()
	s.put(k, v, c.now().Add(ttl).UnixNano(), c.perShard)
	s.mu.Unlock()
}

func (s *shard[K, V]) put(k K, v V, exp int64, limit int) {
	if _, ok := s.m[k]; !ok && len(s.m) >= limit {
		for old := range s.m {
			delete(s.m, old)
			break
		}
	}
	s.m[k] = entry[V]{v: v, exp: exp}
}

// Version returns the deletion counter. Read it before loading a value from
// the backing store and pass it to SetIfUnchanged.
func (c *Cache[K, V]) Version() uint64 { return c.version.Load() }

// SetIfUnchanged is Set unless a Delete or DeleteFunc has started since
// Version returned version; it reports whether it stored v. The check and
// the store happen under the shard lock, so a deletion that follows a store
// write can never be undone by a value loaded before that write.
func (c *Cache[K, V]) SetIfUnchanged(k K, v V, ttl time.Duration, version uint64) bool {
	if ttl <= 0 {
		return false
	}
	exp := c.now().Add(ttl).UnixNano()
	s := c.shard(k)
	s.mu.Lock()
	ok := c.version.Load() == version
	if ok {
		s.put(k, v, exp, c.perShard)
	}
	s.mu.Unlock()
	return ok
}

// Delete removes k.
func (c *Cache[K, V]) Delete(k K) {
	c.version.Add(1)
	s := c.shard(k)
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

// DeleteFunc removes every entry for which drop returns true.
func (c *Cache[K, V]) DeleteFunc(drop func(K, V) bool) {
	c.version.Add(1)
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
