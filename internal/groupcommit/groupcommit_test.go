package groupcommit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/groupcommit"
)

var errClosed = errors.New("closed")

func Example() {
	var st groupcommit.Stats
	c := groupcommit.New(groupcommit.Config[int, int]{
		Ctx: context.Background(), Now: time.Now, MaxBatch: 8, Stats: &st,
		Apply: func(_ context.Context, _ time.Time, reqs, res []int) error {
			for i, r := range reqs {
				res[i] = r * r
			}
			return nil
		},
	})
	sq, err := c.Do(context.Background(), 7, errClosed)
	fmt.Println(sq, err)
	c.Close()
	_, err = c.Do(context.Background(), 8, errClosed)
	fmt.Println(err)
	// Output:
	// 49 <nil>
	// closed
}

// After runs for a committed request whose caller stopped waiting, and
// Close applies what is queued.
func TestAfterRunsWithoutCaller(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var after []int
	var st groupcommit.Stats
	c := groupcommit.New(groupcommit.Config[int, int]{
		Ctx: context.Background(), Now: time.Now, MaxBatch: 4, Stats: &st,
		Apply: func(_ context.Context, _ time.Time, reqs, res []int) error {
			once.Do(func() { close(entered); <-release })
			copy(res, reqs)
			return nil
		},
		After: func(_, r int) { mu.Lock(); after = append(after, r); mu.Unlock() },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := c.Do(ctx, 1, errClosed)
		done <- err
	}()
	<-entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Do: %v", err)
	}
	close(release)
	c.Close()
	if len(after) != 1 || after[0] != 1 || st.Batches.Load() != 1 {
		t.Fatalf("after %v, batches %d", after, st.Batches.Load())
	}
}

// Exactly one of After and Failed runs for every Do: a committed request
// (After), a failed batch, a request queued after Close, and one whose
// caller left before it was queued or before its batch formed (Failed).
func TestHooksRunOncePerRequest(t *testing.T) {
	var st groupcommit.Stats
	var mu sync.Mutex
	seen := map[int]string{}
	hook := func(name string) func(int) {
		return func(r int) {
			mu.Lock()
			defer mu.Unlock()
			if prev, dup := seen[r]; dup {
				t.Errorf("request %d: %s after %s", r, name, prev)
			}
			seen[r] = name
		}
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	c := groupcommit.New(groupcommit.Config[int, int]{
		Ctx: context.Background(), Now: time.Now, MaxBatch: 1, Queue: 1, Stats: &st,
		Apply: func(_ context.Context, _ time.Time, reqs, res []int) error {
			once.Do(func() { close(entered); <-release })
			if reqs[0] < 0 {
				return errors.New("batch failed")
			}
			copy(res, reqs)
			return nil
		},
		After:  func(r, _ int) { hook("After")(r) },
		Failed: hook("Failed"),
	})
	go c.Do(context.Background(), 1, errClosed) // blocks the loop in Apply
	<-entered
	gone, cancel := context.WithCancel(context.Background())
	go c.Do(gone, 2, errClosed) // queued; its caller leaves before its batch
	for c.QueueDepth() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if _, err := c.Do(gone, 3, errClosed); err == nil { // never queued: the caller left
		t.Fatal("a request of a gone caller was applied")
	}
	close(release)
	if _, err := c.Do(context.Background(), -4, errClosed); err == nil {
		t.Fatal("a failed batch reported no error")
	}
	if r, err := c.Do(context.Background(), 5, errClosed); err != nil || r != 5 {
		t.Fatalf("Do(5) = %d, %v", r, err)
	}
	c.Close()
	if _, err := c.Do(context.Background(), 6, errClosed); err != errClosed {
		t.Fatalf("after Close: %v", err)
	}
	want := map[int]string{1: "After", 2: "Failed", 3: "Failed", -4: "Failed", 5: "After", 6: "Failed"}
	mu.Lock()
	defer mu.Unlock()
	for r, w := range want {
		if seen[r] != w {
			t.Errorf("request %d: %q, want %s", r, seen[r], w)
		}
	}
}
