package memstore

import (
	"hash/maphash"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits"
)

func TestArenaRoundTrip(t *testing.T) {
	var a arena
	// Around bigString: the longest string that shares a chunk, the
	// shortest with a chunk of its own, and strings stored after those.
	str := func(n int, c byte) string { return strings.Repeat(string(c), n) }
	in := []string{"", "a", "txn_01", str(arenaChunk+10, 'x'), "after big", str(bigString-1, 'y'), "z",
		str(bigString, 'w'), "v", str(bigString+1, 'u'), "after bigString"}
	refs := make([]sref, len(in))
	for i, s := range in {
		refs[i] = a.put(s)
	}
	for i := range 10_000 { // fill several chunks
		a.put(strconv.Itoa(i))
	}
	for i, s := range in {
		if got := a.get(refs[i]); got != s {
			t.Fatalf("string %d: got %d bytes, want %d", i, len(got), len(s))
		}
	}
	if r := a.reuse("txn_01", refs[1], refs[2]); r != refs[2] {
		t.Fatalf("reuse stored an unchanged string again")
	}
	if r := a.reuse("txn_02", refs[2]); a.get(r) != "txn_02" {
		t.Fatalf("reuse of a changed string returned %q", a.get(r))
	}
	for _, x := range []credits.Amount{{}, credits.AmountFromMinor(-125, 7), credits.AmountFromInt(50),
		credits.NewAmount(decimal.RequireFromString("123456789012345678901234.000000000000000001"))} {
		if got := a.amount(a.putAmount(x)); !got.Equal(x) {
			t.Fatalf("amount %s came back as %s", x, got)
		}
	}
	now := time.Date(2026, 11, 23, 10, 0, 0, 5, time.FixedZone("IST", 19800))
	if got := unpackTime(packTime(now)); !got.Equal(now) || got.Location() != time.UTC {
		t.Fatalf("time %v came back as %v", now, got)
	}
	if !unpackTime(packTime(time.Time{})).IsZero() {
		t.Fatal("the zero time did not come back zero")
	}
}

// rows is a keyed row source for strIndex tests.
type rows []string

func (r *rows) keyAt(i int32) string { return (*r)[i] }

// TestStrIndexCollisions makes every key collide (mask 0): the index must
// still tell them apart, and deleting the key that holds the hash slot
// must promote an overflow one.
func TestStrIndexCollisions(t *testing.T) {
	for _, mask := range []uint32{^uint32(0), 0} {
		x := newStrIndex(maphash.MakeSeed(), mask)
		r := rows{"a", "b", "c"}
		for i, k := range r {
			x.put(&r, k, int32(i))
		}
		check := func(want map[string]int32) {
			t.Helper()
			for _, k := range []string{"a", "b", "c", "d"} {
				j, ok := x.get(&r, k)
				if w, in := want[k]; ok != in || (in && j != w) {
					t.Fatalf("mask %x: get(%q) = %d, %v; want %d, %v", mask, k, j, ok, w, in)
				}
			}
			if x.len() != len(want) {
				t.Fatalf("mask %x: len %d, want %d", mask, x.len(), len(want))
			}
		}
		check(map[string]int32{"a": 0, "b": 1, "c": 2})
		x.del(&r, "a") // holds the slot when everything collides
		check(map[string]int32{"b": 1, "c": 2})
		x.del(&r, "c")
		check(map[string]int32{"b": 1})
		x.del(&r, "d") // absent: no change
		check(map[string]int32{"b": 1})
	}
}
