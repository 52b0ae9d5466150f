package account

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
)

// waitFor polls cond, yielding between tries; it never sleeps on a timer,
// so the test asserts order, not time.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		runtime.Gosched()
	}
}

func TestHashGateBoundsRunningAndQueued(t *testing.T) {
	g := newHashGate(2, 1)
	ctx := context.Background()
	for range 2 {
		if err := g.acquire(ctx); err != nil {
			t.Fatalf("slot: %v", err)
		}
	}
	queued := make(chan error, 1)
	go func() { queued <- g.acquire(ctx) }()
	waitFor(t, func() bool { return len(g.admit) == 3 })
	if err := g.acquire(ctx); !errors.Is(err, ErrBusy) {
		t.Fatalf("beyond running+queued: %v, want ErrBusy", err)
	}
	g.release() // the queued caller takes the freed slot
	if err := <-queued; err != nil {
		t.Fatalf("queued caller: %v", err)
	}
	if len(g.slots) != 2 || len(g.admit) != 2 {
		t.Fatalf("slots %d admitted %d, want 2 and 2", len(g.slots), len(g.admit))
	}

	// A waiter whose context ends leaves the queue.
	cctx, cancel := context.WithCancel(ctx)
	gone := make(chan error, 1)
	go func() { gone <- g.acquire(cctx) }()
	waitFor(t, func() bool { return len(g.admit) == 3 })
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	if len(g.admit) != 2 {
		t.Fatalf("cancelled waiter kept its queue place: %d admitted", len(g.admit))
	}
	g.release()
	g.release()
	if len(g.slots) != 0 || len(g.admit) != 0 {
		t.Fatal("release did not free everything")
	}
}

func TestLoginIsRefusedWhenHashingIsFull(t *testing.T) {
	s, err := NewService(nopStore{}, &Options{Argon2: testArgon, MaxConcurrentHashes: 1, HashQueue: -1})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.HashMemoryBound(); got != 64*1024 {
		t.Fatalf("HashMemoryBound = %d, want one 64 KiB hash", got)
	}
	ctx := context.Background()
	if err := s.gate.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Login(ctx, "ghost@example.com", "whatever1"); !errors.Is(err, ErrBusy) {
		t.Fatalf("login with hashing full: %v, want ErrBusy", err)
	}
	if _, err := s.Create(ctx, CreateParams{Name: "A", Email: "a@example.com", Password: "long enough"}); !errors.Is(err, ErrBusy) {
		t.Fatalf("create with hashing full: %v, want ErrBusy", err)
	}
	if s.dummyHash != "" {
		t.Fatal("a refused login did hash work")
	}
	s.gate.release()
	if _, _, err := s.Login(ctx, "ghost@example.com", "whatever1"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("login after release: %v", err)
	}
}

func TestDefaultGateIsGOMAXPROCS(t *testing.T) {
	s, err := NewService(nopStore{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := runtime.GOMAXPROCS(0)
	if cap(s.gate.slots) != n || cap(s.gate.admit) != 3*n {
		t.Fatalf("gate %d running / %d admitted, want %d / %d", cap(s.gate.slots), cap(s.gate.admit), n, 3*n)
	}
	if s.HashMemoryBound() != int64(n)*19<<20 {
		t.Fatalf("HashMemoryBound = %d", s.HashMemoryBound())
	}
	u, _ := NewService(nopStore{}, &Options{MaxConcurrentHashes: -1})
	if u.gate != nil || u.HashMemoryBound() != 0 {
		t.Fatal("negative MaxConcurrentHashes should leave hashing unbounded")
	}
	// Many concurrent logins through a small gate all finish.
	s2, _ := NewService(nopStore{}, &Options{Argon2: testArgon, MaxConcurrentHashes: 1, HashQueue: 64})
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if _, _, err := s2.Login(context.Background(), "x@example.com", "whatever1"); !errors.Is(err, ErrInvalidCredentials) {
				t.Errorf("login: %v", err)
			}
		})
	}
	wg.Wait()
}
