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

func TestConcurrent(t *testing.T) {
	c := New[int, int](1024, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				c.Set(i%300+g, i, time.Minute)
				c.Get(i % 300)
				if i%100 == 0 {
					c.Delete(i % 300)
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkGet(b *testing.B) {
	c := New[[32]byte, int](1024, nil)
	var k [32]byte
	c.Set(k, 1, time.Hour)
	for b.Loop() {
		c.Get(k)
	}
}
