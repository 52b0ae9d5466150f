package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/fakeclock"
)

var ctx = context.Background()

func TestUnlimitedAndInvalid(t *testing.T) {
	m := NewMemory(nil)
	d, err := m.Allow(ctx, Request{Key: "e", Limit: Limit{}, Cost: 1_000_000})
	if err != nil || !d.Allowed || m.Len() != 0 {
		t.Fatalf("unlimited: %+v %v", d, err)
	}
	if _, err := m.Allow(ctx, Request{Key: "bad", Limit: Limit{Rate: 10}}); !errors.Is(err, ErrInvalidLimit) {
		t.Fatalf("zero period: %v", err)
	}
	many := make([]Request, MaxBuckets+1)
	if _, err := m.Allow(ctx, many...); !errors.Is(err, ErrTooManyBuckets) {
		t.Fatalf("too many: %v", err)
	}
}

func TestBoundedMemoryEvictsIdleFirst(t *testing.T) {
	clk := fakeclock.New(time.Unix(1_700_000_000, 0))
	m := NewMemory(&MemoryOptions{Now: clk.Now, MaxBuckets: 640})
	for i := range 10_000 {
		m.Allow(ctx, Request{Key: fmt.Sprint("k", i), Limit: PerMinute(10), Cost: 1})
		if i%1000 == 0 {
			clk.Advance(time.Minute) // earlier buckets come to rest
		}
	}
	if n := m.Len(); n > 640 {
		t.Fatalf("holds %d buckets, bound 640", n)
	}
	// A busy bucket survives eviction of idle ones while there is room.
	m2 := NewMemory(&MemoryOptions{Now: clk.Now, MaxBuckets: 64 * 4})
	hot := Request{Key: "hot", Limit: PerMinute(2), Cost: 2}
	m2.Allow(ctx, hot)
	for i := range 1000 {
		clk.Advance(time.Millisecond)
		m2.Allow(ctx, Request{Key: fmt.Sprint("idle", i), Limit: PerMinute(1_000_000), Cost: 1})
	}
	if d, _ := m2.Allow(ctx, Request{Key: "hot", Limit: PerMinute(2), Cost: 1}); d.Allowed {
		t.Fatal("busy bucket was evicted while idle ones could go")
	}
}

// TestShardHashCollision forces two keys onto one 64-bit hash: each keeps
// its own bucket, and removing the indexed one promotes the other.
func TestShardHashCollision(t *testing.T) {
	sh := memShard{tats: make(map[uint64]*bucket)}
	a := &bucket{key: "a", hash: 7, tat: 1}
	b := &bucket{key: "b", hash: 7, tat: 2}
	sh.put(a)
	sh.put(b)
	if sh.len() != 2 || sh.tat(7, "a") != 1 || sh.tat(7, "b") != 2 || sh.tat(7, "c") != 0 {
		t.Fatalf("colliding keys: len %d, a %d, b %d", sh.len(), sh.tat(7, "a"), sh.tat(7, "b"))
	}
	sh.remove(a)
	if sh.len() != 1 || sh.tat(7, "a") != 0 || sh.tat(7, "b") != 2 || sh.tats[7] != b {
		t.Fatalf("after removing the indexed key: len %d, b %d, indexed %v", sh.len(), sh.tat(7, "b"), sh.tats[7])
	}
	sh.put(a)
	sh.remove(a) // now the colliding one
	if sh.len() != 1 || sh.tat(7, "b") != 2 || sh.tat(7, "a") != 0 {
		t.Fatalf("after removing the colliding key: len %d", sh.len())
	}
}
