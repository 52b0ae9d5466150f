package cache

import (
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/fakeclock"
)

func TestExpiryAndBound(t *testing.T) {
	clk := fakeclock.New(time.Unix(1000, 0))
	c := New[int, string](128, clk.Now)
	c.Set(1, "a", time.Second)
	if v, ok := c.Get(1); !ok || v != "a" {
		t.Fatalf("Get = %q %v", v, ok)
	}
	clk.Advance(time.Second)
	if _, ok := c.Get(1); ok {
		t.Fatal("expired entry returned")
	}
	for i := range 10000 {
		c.Set(i, "x", time.Minute)
	}
	if n := c.Len(); n > 128 {
		t.Fatalf("Len = %d, capacity 128", n)
	}
	c.Set(5, "y", 0)
	if _, ok := c.Get(5); ok {
		t.Fatal("ttl 0 must delete")
	}
	c.DeleteFunc(func(int, string) bool { return true })
	if c.Len() != 0 {
		t.Fatal("DeleteFunc left entries")
	}
}

// TestConcurrent runs Set, Get and Delete from many goroutines on shared
// keys: every hit must be a value some goroutine stored for that key, the
// last writes must all be readable afterwards, and a full cache must stay
// within its capacity. Run with -race, it also checks the shard locking.
func TestConcurrent(t *testing.T) {
	const goroutines, keys = 8, 512
	c := New[int, int](keys*shardCount, nil) // room for every key in any one shard: nothing is evicted
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 4000 {
				k := (i*7 + g) % keys
				c.Set(k, k*100+g, time.Minute)
				j := (k + 1) % keys
				if v, ok := c.Get(j); ok && v/100 != j {
					t.Errorf("Get(%d) = %d, a value stored for key %d", j, v, v/100)
					return
				}
				if i%50 == 0 {
					c.Delete(k)
				}
			}
		}()
	}
	wg.Wait()
	// Each goroutine now writes its own share of the keys last.
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := g; k < keys; k += goroutines {
				c.Set(k, k*100+g, time.Minute)
			}
		}()
	}
	wg.Wait()
	for k := range keys {
		if v, ok := c.Get(k); !ok || v != k*100+k%goroutines {
			t.Fatalf("Get(%d) = %d, %v after the last writes; want %d", k, v, ok, k*100+k%goroutines)
		}
	}
	if n := c.Len(); n != keys {
		t.Fatalf("Len = %d, want %d", n, keys)
	}

	// A small cache under the same load evicts instead of growing.
	small := New[int, int](64, nil)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				small.Set(g*5000+i, i, time.Minute)
			}
		}()
	}
	wg.Wait()
	if n := small.Len(); n > 64 || n == 0 {
		t.Fatalf("Len = %d after 40,000 distinct keys; want 1..64", n)
	}
}

func BenchmarkGet(b *testing.B) {
	c := New[[32]byte, int](1024, nil)
	var k [32]byte
	c.Set(k, 1, time.Hour)
	for b.Loop() {
		c.Get(k)
	}
}

func TestSetIfUnchanged(t *testing.T) {
	clk := fakeclock.New(time.Unix(1000, 0))
	c := New[int, string](128, clk.Now)
	v := c.Version()
	if !c.SetIfUnchanged(1, "a", time.Second, v) {
		t.Fatal("no deletion since Version: must store")
	}
	stale := c.Version()
	c.Delete(2) // any deletion, even of another key, invalidates older loads
	if c.SetIfUnchanged(1, "stale", time.Second, stale) {
		t.Fatal("stored a value loaded before a Delete")
	}
	if got, _ := c.Get(1); got != "a" {
		t.Fatalf("Get = %q", got)
	}
	stale = c.Version()
	c.DeleteFunc(func(int, string) bool { return false })
	if c.SetIfUnchanged(3, "stale", time.Second, stale) {
		t.Fatal("stored a value loaded before a DeleteFunc")
	}
	if c.SetIfUnchanged(4, "x", 0, c.Version()) {
		t.Fatal("ttl 0 must not store")
	}
	// GetAt uses the caller's time instead of the clock.
	if _, ok := c.GetAt(1, clk.Now().Add(time.Second).UnixNano()); ok {
		t.Fatal("GetAt returned an entry expired at the given time")
	}
	if _, ok := c.GetAt(1, clk.Now().UnixNano()); !ok {
		t.Fatal("GetAt lost a live entry")
	}
}

// TestSetIfUnchangedRace is the reader/writer race the version closes: a
// reader loads "old" from a backing map, a writer replaces it and deletes the
// cached copy, and the reader's late SetIfUnchanged must not bring "old" back.
func TestSetIfUnchangedRace(t *testing.T) {
	c := NewHashed[int, int](1024, nil, func(k int) uint64 { return uint64(k) })
	var (
		mu      sync.Mutex
		backing int
		wg      sync.WaitGroup
	)
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 + r {
				if _, ok := c.Get(0); ok {
					continue
				}
				ver := c.Version()
				mu.Lock()
				v := backing
				mu.Unlock()
				c.SetIfUnchanged(0, v, time.Hour, ver)
			}
		}()
	}
	for i := 1; i <= 500; i++ {
		mu.Lock()
		backing = i
		mu.Unlock()
		c.Delete(0)
		if v, ok := c.Get(0); ok && v < i {
			t.Errorf("after write %d the cache holds %d", i, v)
		}
	}
	wg.Wait()
}

func first8(k [32]byte) uint64 {
	return uint64(k[0]) | uint64(k[1])<<8 | uint64(k[2])<<16 | uint64(k[3])<<24 |
		uint64(k[4])<<32 | uint64(k[5])<<40 | uint64(k[6])<<48 | uint64(k[7])<<56
}

// BenchmarkGetAt compares sharding a SHA-256 key on its first 8 bytes with
// maphash, both reading the time once outside the cache.
func BenchmarkGetAt(b *testing.B) {
	for _, c := range []struct {
		name string
		hash func([32]byte) uint64
	}{{"maphash", nil}, {"first8", first8}} {
		b.Run(c.name, func(b *testing.B) {
			cc := NewHashed[[32]byte, int](1024, nil, c.hash)
			var k [32]byte
			k[0] = 7
			cc.Set(k, 1, time.Hour)
			now := time.Now().UnixNano()
			b.ReportAllocs()
			for b.Loop() {
				cc.GetAt(k, now)
			}
		})
	}
}
