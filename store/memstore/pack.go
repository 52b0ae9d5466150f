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
// 64-bit hashes to row numbers (strIndex). The collector skips all of it.

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

// reuse returns old if it already holds s, else stores s. Rows use it to
// share a string with an earlier row of the same arena (the previous
// row's model, the key an op was just claimed under) instead of storing
// it again.
func (a *arena) reuse(old sref, s string) sref {
	if a.get(old) == s {
		return old
	}
	return a.put(s)
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
