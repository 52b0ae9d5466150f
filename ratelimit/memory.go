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
	now      func() int64 // unix nanoseconds
	perShard int
	shards   [memShards]memShard
}

type memShard struct {
	mu     sync.Mutex
	tats   map[string]*bucket
	writes int // inserts since the last sweep
	_      [32]byte
}

// bucket is one GCRA state. Buckets are held by pointer so that the hot path
// does one map lookup and writes through it.
type bucket struct{ tat int64 }

// tat returns the stored arrival time of key (0 for no bucket) with the
// shard locked.
func (sh *memShard) tat(key string) int64 {
	if b := sh.tats[key]; b != nil {
		return b.tat
	}
	return 0
}

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
		m.now = func() int64 { return o.Now().UnixNano() }
	} else {
		base := time.Now()
		wall := base.UnixNano()
		m.now = func() int64 { return wall + int64(time.Since(base)) }
	}
	for i := range m.shards {
		m.shards[i].tats = make(map[string]*bucket)
	}
	return m
}

func (m *Memory) shardOf(key string) int {
	return int(maphash.String(m.seed, key) % memShards)
}

// lockSet computes the shard of every limited request into sh, then locks
// the distinct shards in ascending order and returns them for unlock.
func (m *Memory) lockSet(reqs []Request, sh *[MaxBuckets]int, idx *[MaxBuckets]int) []int {
	set := idx[:0]
	for i, r := range reqs {
		if r.Limit.Unlimited() {
			continue
		}
		s := m.shardOf(r.Key)
		sh[i] = s
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
	var d Decision
	if err := validate(reqs); err != nil {
		return d, err
	}
	now := m.now()
	if len(reqs) == 1 && !reqs[0].Limit.Unlimited() { // the common case, without set bookkeeping
		r := reqs[0]
		s := m.shardOf(r.Key)
		sh := &m.shards[s]
		sh.mu.Lock()
		b := sh.tats[r.Key]
		var old int64
		if b != nil {
			old = b.tat
		}
		res, tat := gcra(now, old, r)
		if res.Allowed && r.Cost != 0 {
			if b != nil {
				b.tat = tat
			} else {
				m.store(s, r.Key, tat, now)
			}
		}
		sh.mu.Unlock()
		d.Allowed, d.N, d.Results[0] = res.Allowed, 1, res
		return d, nil
	}
	var (
		idx, sh [MaxBuckets]int
		newTats [MaxBuckets]int64
	)
	set := m.lockSet(reqs, &sh, &idx)
	d.Allowed, d.N = true, len(reqs)
	for i, r := range reqs {
		if r.Limit.Unlimited() {
			d.Results[i] = Result{Allowed: true}
			continue
		}
		tat := m.shards[sh[i]].tat(r.Key)
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
				m.store(sh[i], r.Key, newTats[i], now)
			}
		}
	}
	m.unlock(set)
	return d, nil
}

// Adjust implements Limiter.
func (m *Memory) Adjust(_ context.Context, reqs ...Request) error {
	if err := validate(reqs); err != nil {
		return err
	}
	now := m.now()
	var idx, sh [MaxBuckets]int
	set := m.lockSet(reqs, &sh, &idx)
	for i, r := range reqs {
		if r.Limit.Unlimited() || r.Cost == 0 {
			continue
		}
		m.store(sh[i], r.Key, adjust(now, m.shards[sh[i]].tat(r.Key), r), now)
	}
	m.unlock(set)
	return nil
}

// store writes a bucket's arrival time with the shard locked. Inserting
// into a full shard first drops buckets at rest (arrival time not after
// now), which is lossless because such a bucket equals no bucket.
func (m *Memory) store(s int, key string, tat, now int64) {
	sh := &m.shards[s]
	if b := sh.tats[key]; b != nil {
		b.tat = tat
		return
	}
	if tat <= now {
		return // at rest: nothing to remember
	}
	sh.writes++
	if len(sh.tats) >= m.perShard || sh.writes >= m.perShard {
		sh.writes = 0
		for k, b := range sh.tats {
			if b.tat <= now {
				delete(sh.tats, k)
			}
		}
		for k := range sh.tats { // still full: drop any (allows a little more)
			if len(sh.tats) < m.perShard {
				break
			}
			delete(sh.tats, k)
		}
	}
	sh.tats[key] = &bucket{tat: tat}
}

// Len returns the number of buckets held (busy ones and not yet swept ones).
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		m.shards[i].mu.Lock()
		n += len(m.shards[i].tats)
		m.shards[i].mu.Unlock()
	}
	return n
}
