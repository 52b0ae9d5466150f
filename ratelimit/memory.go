package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

const memShards = 64

// MemoryOptions configure NewMemory. nil means defaults.
type MemoryOptions struct {
	// Now is the clock. By default the limiter reads the monotonic clock
	// (wall time at construction plus elapsed monotonic time), which costs
	// half of a time.Now call and never steps back.
	Now func() time.Time
	// MaxBuckets bounds the number of busy buckets kept (1,000,000 by
	// default, about 64 MB at worst). Buckets at rest are dropped first,
	// which changes nothing; only if every bucket is busy is an arbitrary
	// busy one dropped, which errs on the side of allowing.
	MaxBuckets int
}

// Memory is an in-process Limiter. Buckets are spread over 64 shards by a
// hash of the key, each with its own mutex; a multi-bucket call locks its
// shards in ascending order, so calls are atomic and cannot deadlock.
type Memory struct {
	seed     maphash.Seed
	clock    func() time.Time // Options.Now; nil: the monotonic clock below
	base     time.Time        // read once; now = wall + time since base
	wall     int64
	perShard int
	shards   [memShards]memShard
}

// A shard indexes its buckets by the 64-bit hash that also picked the
// shard, so a key is hashed once per call; the bucket keeps its key, and
// the rare second key with the same hash lives in collide.
type memShard struct {
	mu      sync.Mutex
	tats    map[uint64]*bucket
	collide map[string]*bucket // keys whose hash another key holds in tats
	writes  int                // inserts since the last sweep
	_       [24]byte
}

// bucket is one GCRA state. Buckets are held by pointer so that the hot path
// does one map lookup and writes through it.
type bucket struct {
	key  string
	hash uint64
	tat  int64
}

// get returns key's bucket or nil, with the shard locked.
func (sh *memShard) get(h uint64, key string) *bucket {
	b := sh.tats[h]
	if b == nil || b.key == key {
		return b
	}
	return sh.collide[key]
}

// tat returns the stored arrival time of key (0 for no bucket) with the
// shard locked.
func (sh *memShard) tat(h uint64, key string) int64 {
	if b := sh.get(h, key); b != nil {
		return b.tat
	}
	return 0
}

// put adds a new bucket, with the shard locked.
func (sh *memShard) put(b *bucket) {
	if o := sh.tats[b.hash]; o == nil {
		sh.tats[b.hash] = b
	} else {
		if sh.collide == nil {
			sh.collide = make(map[string]*bucket)
		}
		sh.collide[b.key] = b
	}
}

// remove drops a bucket, with the shard locked; a colliding key takes the
// freed slot.
func (sh *memShard) remove(b *bucket) {
	if sh.tats[b.hash] != b {
		delete(sh.collide, b.key)
		return
	}
	delete(sh.tats, b.hash)
	for k, c := range sh.collide {
		if c.hash == b.hash {
			delete(sh.collide, k)
			sh.tats[c.hash] = c
			return
		}
	}
}

func (sh *memShard) len() int { return len(sh.tats) + len(sh.collide) }

var _ Limiter = (*Memory)(nil)

// NewMemory returns an empty in-memory limiter.
func NewMemory(opts *MemoryOptions) *Memory {
	var o MemoryOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxBuckets <= 0 {
		o.MaxBuckets = 1_000_000
	}
	m := &Memory{seed: maphash.MakeSeed(), perShard: max(1, (o.MaxBuckets+memShards-1)/memShards)}
	if o.Now != nil {
		m.clock = o.Now
	} else {
		base := time.Now()
		wall := base.UnixNano()
		m.base, m.wall = base, wall
	}
	for i := range m.shards {
		m.shards[i].tats = make(map[uint64]*bucket)
	}
	return m
}

// hashOf returns key's hash and, from it, its shard.
func (m *Memory) hashOf(key string) (uint64, int) {
	h := maphash.String(m.seed, key)
	return h, int(h % memShards)
}

// lockSet computes the shard of every limited request into sh, then locks
// the distinct shards in ascending order and returns them for unlock.
func (m *Memory) lockSet(reqs []Request, sh *[MaxBuckets]int, hs *[MaxBuckets]uint64, idx *[MaxBuckets]int) []int {
	set := idx[:0]
	for i, r := range reqs {
		if r.Limit.Unlimited() {
			continue
		}
		h, s := m.hashOf(r.Key)
		sh[i], hs[i] = s, h
		j := 0
		for j < len(set) && set[j] < s {
			j++
		}
		if j < len(set) && set[j] == s {
			continue
		}
		set = append(set, 0)
		copy(set[j+1:], set[j:])
		set[j] = s
	}
	for _, s := range set {
		m.shards[s].mu.Lock()
	}
	return set
}

func (m *Memory) unlock(set []int) {
	for _, s := range set {
		m.shards[s].mu.Unlock()
	}
}

// Allow implements Limiter.
func (m *Memory) Allow(_ context.Context, reqs ...Request) (Decision, error) {
	if len(reqs) == 1 && reqs[0].Limit.Rate > 0 && reqs[0].Limit.valid() {
		// The common case, without set bookkeeping, writing the result
		// in place.
		res := m.allowOne(&reqs[0])
		return Decision{Allowed: res.Allowed, N: 1, Results: [MaxBuckets]Result{res}}, nil
	}
	var d Decision
	if err := validate(reqs); err != nil {
		return d, err
	}
	now := m.now()
	var (
		idx, sh [MaxBuckets]int
		hs      [MaxBuckets]uint64
		newTats [MaxBuckets]int64
	)
	set := m.lockSet(reqs, &sh, &hs, &idx)
	d.Allowed, d.N = true, len(reqs)
	for i, r := range reqs {
		if r.Limit.Unlimited() {
			d.Results[i] = Result{Allowed: true}
			continue
		}
		tat := m.shards[sh[i]].tat(hs[i], r.Key)
		// A bucket named twice in one call sees the first charge.
		for j := range i {
			if reqs[j].Key == r.Key && !reqs[j].Limit.Unlimited() {
				tat = newTats[j]
			}
		}
		d.Results[i], newTats[i] = gcra(now, tat, r)
		d.Allowed = d.Allowed && d.Results[i].Allowed
	}
	if d.Allowed {
		for i, r := range reqs {
			if !r.Limit.Unlimited() && r.Cost != 0 {
				m.store(sh[i], hs[i], r.Key, newTats[i], now)
			}
		}
	}
	m.unlock(set)
	return d, nil
}

// now returns the time in unix nanoseconds: from the monotonic clock (no
// wall-clock read per call) unless Options.Now was given.
func (m *Memory) now() int64 {
	if m.clock != nil {
		return m.clock().UnixNano()
	}
	return m.wall + int64(time.Since(m.base))
}

// allowOne is Allow of one limited bucket.
func (m *Memory) allowOne(r *Request) Result {
	now := m.now()
	h, s := m.hashOf(r.Key)
	sh := &m.shards[s]
	sh.mu.Lock()
	b := sh.get(h, r.Key)
	var old int64
	if b != nil {
		old = b.tat
	}
	res, tat := gcra(now, old, *r)
	if res.Allowed && r.Cost != 0 {
		if b != nil {
			b.tat = tat
		} else {
			m.store(s, h, r.Key, tat, now)
		}
	}
	sh.mu.Unlock()
	return res
}

// Adjust implements Limiter.
func (m *Memory) Adjust(_ context.Context, reqs ...Request) error {
	if err := validate(reqs); err != nil {
		return err
	}
	now := m.now()
	var (
		idx, sh [MaxBuckets]int
		hs      [MaxBuckets]uint64
	)
	set := m.lockSet(reqs, &sh, &hs, &idx)
	for i, r := range reqs {
		if r.Limit.Unlimited() || r.Cost == 0 {
			continue
		}
		m.store(sh[i], hs[i], r.Key, adjust(now, m.shards[sh[i]].tat(hs[i], r.Key), r), now)
	}
	m.unlock(set)
	return nil
}

// store writes a bucket's arrival time with the shard locked. Inserting
// into a full shard first drops buckets at rest (arrival time not after
// now), which is lossless because such a bucket equals no bucket.
func (m *Memory) store(s int, h uint64, key string, tat, now int64) {
	sh := &m.shards[s]
	if b := sh.get(h, key); b != nil {
		b.tat = tat
		return
	}
	if tat <= now {
		return // at rest: nothing to remember
	}
	sh.writes++
	if sh.len() >= m.perShard || sh.writes >= m.perShard {
		sh.writes = 0
		var drop []*bucket
		sh.each(func(b *bucket) {
			if b.tat <= now {
				drop = append(drop, b)
			}
		})
		sh.each(func(b *bucket) { // still full: drop any (allows a little more)
			if sh.len()-len(drop) >= m.perShard && b.tat > now {
				drop = append(drop, b)
			}
		})
		for _, b := range drop {
			sh.remove(b)
		}
	}
	sh.put(&bucket{key: key, hash: h, tat: tat})
}

// each calls fn for every bucket, with the shard locked.
func (sh *memShard) each(fn func(*bucket)) {
	for _, b := range sh.tats {
		fn(b)
	}
	for _, b := range sh.collide {
		fn(b)
	}
}

// Len returns the number of buckets held (busy ones and not yet swept ones).
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		m.shards[i].mu.Lock()
		n += m.shards[i].len()
		m.shards[i].mu.Unlock()
	}
	return n
}
