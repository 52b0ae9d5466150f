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
