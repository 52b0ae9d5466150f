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
		After: func(r int) { mu.Lock(); after = append(after, r); mu.Unlock() },
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
