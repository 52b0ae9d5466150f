package memstore

import (
	"hash/maphash"
	"math"
	"time"
	"unsafe"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits"
)

// Memory layout. memstore keeps everything a process ever wrote (every
// entry, hold, record and idempotency key), and a garbage collector scans
// every pointer of the live heap on every cycle: stored as Go values full of
// strings, the history would cost more to scan, the longer it grew, than
// the work the store does. So the append-only logs hold packed rows without
// pointers instead: strings are copied into per-account byte arenas and
// referred to by offset (sref), amounts whose coefficient fits an int64 are
// stored inline (pamt), times as unix nanoseconds, and the indexes map
// 32-bit hashes to row numbers (strIndex). The collector skips all of it.
//
// Every byte of a row is kept for good, and each fresh page costs a fault,
// so rows are kept narrow and a string is stored once where it can be:
//   - a row shares a string with a row of the same arena that already has
//     it (reuse): a hold's ID and key are its reserve op's, a settlement's
//     hold ID is the hold's, a settled hold's entry ID is the entry's, and
//     a record's ID is its meter op's (usage.go);
//   - low-cardinality fields (entry types, descriptions, hold states, a
//     record's model, endpoint, key…) remember their last few values per
//     account (putRecent), so a run of equal values is stored once;
//   - records go further: the low-cardinality fields together (pdims) are
//     one row that consecutive records share, and their counts take 32
//     bits unless one does not fit (usage.go).
// What remembers srefs must be reset with the arena it points into: the
// record arena is the one that is ever rebuilt (usageAcct.compact).

// sref is a string stored in an arena, in 64 bits: the chunk (high 32),
// the offset in it (16) and the length (low 16). A string of bigString
// bytes or more has a chunk of its own, exactly its size, and its length
// field reads bigString. The zero sref is "".
type sref uint64

// arena stores strings in chunks that are only ever appended to, so a
// string handed out (pointing into a chunk) never changes.
type arena struct{ chunks [][]byte }

const (
	arenaChunk = 64 << 10 // offsets fit in 16 bits
	bigString  = 1<<16 - 1
)

func (a *arena) put(s string) sref {
	if s == "" {
		return 0
	}
	if len(s) >= bigString {
		c := []byte(s)
		a.chunks = append(a.chunks, c[:len(c):len(c)]) // full: nothing is appended after it
		return sref(len(a.chunks)-1)<<32 | bigString
	}
	if n := len(a.chunks); n == 0 || cap(a.chunks[n-1])-len(a.chunks[n-1]) < len(s) {
		a.chunks = append(a.chunks, make([]byte, 0, arenaChunk))
	}
	i := len(a.chunks) - 1
	c := &a.chunks[i]
	off := len(*c)
	*c = append(*c, s...)
	return sref(i)<<32 | sref(off)<<16 | sref(len(s))
}

// holds reports whether r is s, comparing lengths before bytes.
func (a *arena) holds(r sref, s string) bool {
	if n := int(r & 0xffff); n != len(s) && n != bigString {
		return false
	}
	return a.get(r) == s
}

// reuse returns the first of olds that holds s, else stores s. Rows use it
// to share a string with a row of the same arena that already has it (the
// hold's previous state, the key an op was just claimed under) instead of
// storing it again.
func (a *arena) reuse(s string, olds ...sref) sref {
	if s == "" {
		return 0
	}
	for _, r := range olds {
		if a.holds(r, s) {
			return r
		}
	}
	return a.put(s)
}

// recent is the last few distinct strings of one field of an arena's rows,
// most recently used first. It points into that arena and must be reset
// whenever the arena is replaced.
type recent [4]sref

// putRecent stores s for a field whose recent values r remembers, or
// returns the one of them that holds s: a low-cardinality field (a model,
// an entry type) then costs its bytes once per change of value instead of
// once per row, even when a few values alternate.
func (a *arena) putRecent(r *recent, s string) sref {
	if s == "" {
		return 0
	}
	for i, x := range r {
		if a.holds(x, s) {
			copy(r[1:i+1], r[:i])
			r[0] = x
			return x
		}
	}
	x := a.put(s)
	copy(r[1:], r[:len(r)-1])
	r[0] = x
	return x
}

// get returns the string without copying: it points into the chunk, which
// it keeps alive.
func (a *arena) get(r sref) string {
	n := int(r & 0xffff)
	if n == 0 {
		return ""
	}
	c := a.chunks[r>>32]
	if n == bigString {
		return unsafe.String(unsafe.SliceData(c), len(c))
	}
	return unsafe.String(&c[r>>16&0xffff], n)
}

// pamt is a credits.Amount without pointers: coef × 10^exp, or, for the
// rare amount whose coefficient does not fit an int64, its text in the
// arena, whose sref coef then holds.
type pamt struct {
	coef int64
	exp  int32
	text bool
}

func (a *arena) putAmount(x credits.Amount) pamt {
	if c, e, ok := x.Int64Parts(); ok {
		return pamt{coef: c, exp: e}
	}
	return pamt{coef: int64(a.put(x.String())), text: true}
}

func (a *arena) amount(p pamt) credits.Amount {
	if !p.text {
		return credits.AmountFromMinor(p.coef, -p.exp)
	}
	return credits.NewAmount(decimal.RequireFromString(a.get(sref(p.coef)))) // written by putAmount
}

// zeroTime stands for time.Time{} in a packed row.
const zeroTime = math.MinInt64

func packTime(t time.Time) int64 {
	if t.IsZero() {
		return zeroTime
	}
	return t.UnixNano()
}

// unpackTime returns a stored time in UTC, as the SQL backends do.
func unpackTime(n int64) time.Time {
	if n == zeroTime {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// keyed is a row source for a strIndex: the string row i was indexed by.
type keyed interface{ keyAt(i int32) string }

// strIndex maps strings to row numbers through 32-bit hashes, so that the
// map holds no pointers and takes 8 bytes a slot; the row's own string
// confirms a hit, and a second string with the same hash goes to the
// overflow map. With 32 bits, an index of a million keys has about a hundred
// of them there.
type strIndex struct {
	seed maphash.Seed
	mask uint32 // all ones; tests clear bits to force collisions
	m    map[uint32]int32
	over map[string]int32
}

func newStrIndex(seed maphash.Seed, mask uint32) strIndex {
	return strIndex{seed: seed, mask: mask, m: make(map[uint32]int32)}
}

func (x *strIndex) hash(s string) uint32 { return uint32(maphash.String(x.seed, s)) & x.mask }

func (x *strIndex) get(src keyed, s string) (int32, bool) {
	i, ok := x.m[x.hash(s)]
	if !ok || src.keyAt(i) == s {
		return i, ok
	}
	i, ok = x.over[s]
	return i, ok
}

// put indexes row i under s, which must not be indexed yet.
func (x *strIndex) put(src keyed, s string, i int32) {
	h := x.hash(s)
	if _, taken := x.m[h]; !taken {
		x.m[h] = i
		return
	}
	if x.over == nil {
		x.over = make(map[string]int32)
	}
	x.over[s] = i
}

// del removes s; an overflow string with the same hash takes its slot.
func (x *strIndex) del(src keyed, s string) {
	h := x.hash(s)
	i, ok := x.m[h]
	if !ok {
		return
	}
	if src.keyAt(i) != s {
		delete(x.over, s)
		return
	}
	delete(x.m, h)
	for k, j := range x.over {
		if x.hash(k) == h {
			delete(x.over, k)
			x.m[h] = j
			return
		}
	}
}

func (x *strIndex) len() int { return len(x.m) + len(x.over) }
