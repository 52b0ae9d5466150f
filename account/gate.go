package account

import (
	"context"
	"time"
)

// BusyRetryAfter is how long a caller refused with ErrBusy should wait
// before trying again: a queued hash takes tens of milliseconds, so one
// second is ample for the queue to drain.
const BusyRetryAfter = time.Second

// hashGate bounds the argon2id computations a Service runs at once. An
// argon2id hash allocates its whole memory cost (19 MiB by default) for the
// length of the computation, so without a bound a flood of logins costs
// memory in proportion to the flood. The gate admits at most `running`
// computations and `queued` waiters; anyone beyond that gets ErrBusy at
// once, before any work. Waiters hold no hash memory.
type hashGate struct {
	slots chan struct{} // one token per running computation
	admit chan struct{} // one token per running or queued caller
}

func newHashGate(running, queued int) *hashGate {
	if running <= 0 {
		return nil // unbounded (Options.MaxConcurrentHashes < 0)
	}
	return &hashGate{slots: make(chan struct{}, running), admit: make(chan struct{}, running+queued)}
}

// acquire takes a computation slot, waiting in the queue while there is
// room in it. It returns ErrBusy when the queue is full and the context's
// error if it ends while waiting. A nil gate admits everyone.
func (g *hashGate) acquire(ctx context.Context) error {
	if g == nil {
		return nil
	}
	select {
	case g.admit <- struct{}{}:
	default:
		return ErrBusy
	}
	select {
	case g.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case g.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		<-g.admit
		return ctx.Err()
	}
}

// release frees the slot acquire took.
func (g *hashGate) release() {
	if g == nil {
		return
	}
	<-g.slots
	<-g.admit
}

// hash computes a password hash through the gate.
func (s *Service) hash(ctx context.Context, password Secret) (string, error) {
	if err := s.gate.acquire(ctx); err != nil {
		return "", err
	}
	defer s.gate.release()
	return hashPassword(s.opt.Argon2, password.Reveal()), nil
}

// HashMemoryBound is the most memory the Service's password hashing holds
// at once: MaxConcurrentHashes × the argon2 memory cost (2 × 19 MiB = 38 MiB
// on two cores with the defaults). Zero means unbounded
// (MaxConcurrentHashes < 0). The Go heap may hold up to about twice this
// before the collector reclaims finished hashes (GOGC=100).
func (s *Service) HashMemoryBound() int64 {
	if s.gate == nil {
		return 0
	}
	return int64(cap(s.gate.slots)) * int64(s.opt.Argon2.MemoryKiB) * 1024
}
