// Package groupcommit coalesces concurrent store writes into one
// transaction per batch (group commit). It is the shared engine of the
// credits spend batcher and the usage Meter recorder.
//
// Callers queue requests; one loop takes whatever is queued (at most
// MaxBatch, waiting up to MaxWait for more), applies it with one Apply call
// and hands every caller its own result after the commit. While one batch
// commits the next one fills, so batches grow with the load and a lone
// caller pays no wait.
//
// No request is dropped: a request is either refused before it is queued
// (ErrClosed, or its caller's context ended) or it is applied, its After
// hook runs, and its caller receives the result if it still waits. A
// caller whose context ends while waiting gets ctx.Err() and its request
// may still commit; a request whose caller left before its batch formed is
// skipped and its caller has had ctx.Err() already.
package groupcommit

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Stats are the counters of a Committer; the owner may read them at any
// time.
type Stats struct {
	// Batches and Items count Apply calls and the requests they carried;
	// MaxBatch is the largest batch so far.
	Batches, Items, MaxBatch atomic.Int64
}

// Config configures a Committer.
type Config[Req, Res any] struct {
	// Ctx is passed to Apply: store calls run to completion even if
	// callers leave.
	Ctx context.Context
	// Apply writes reqs in one transaction and fills res (len(res) ==
	// len(reqs)). An error fails the whole batch.
	Apply func(ctx context.Context, now time.Time, reqs []Req, res []Res) error
	// After, if set, runs in the loop for every request of a committed batch
	// before its caller is answered, whether or not the caller still waits:
	// the post-commit work of a write must not depend on its caller.
	After func(Req, Res)
	// Failed, if set, runs for every request that was not applied: its
	// batch failed, or it was never queued or was skipped because its
	// caller left first. With After, exactly one of them runs for every
	// Do, whatever the caller saw (a caller whose context ended learns
	// nothing; the hooks learn the outcome).
	Failed func(Req)
	// Now is the clock.
	Now func() time.Time
	// MaxBatch (at least 1) bounds a batch; MaxWait is how long a batch
	// waits for more requests once the queue is empty.
	MaxBatch int
	MaxWait  time.Duration
	// Queue is the queue's capacity (MaxBatch if 0).
	Queue int
	// Stats receives the counters (required).
	Stats *Stats
}

// Committer is a running group commit. Do and Close are safe for
// concurrent use.
type Committer[Req, Res any] struct {
	cfg Config[Req, Res]

	mu     sync.RWMutex // held shared while sending to in; Close takes it exclusively
	closed bool
	in     chan *pending[Req, Res]
	exited chan struct{}
}

type pending[Req, Res any] struct {
	ctx  context.Context
	req  Req
	res  Res
	err  error
	done chan struct{}
}

// New starts a Committer's loop; Close stops it.
func New[Req, Res any](cfg Config[Req, Res]) *Committer[Req, Res] {
	if cfg.Queue <= 0 {
		cfg.Queue = cfg.MaxBatch
	}
	c := &Committer[Req, Res]{cfg: cfg, in: make(chan *pending[Req, Res], cfg.Queue), exited: make(chan struct{})}
	go c.loop()
	return c
}

// Do queues req and waits for its result. It returns closedErr if the
// Committer is closed, and ctx.Err() if ctx ends first (the request may
// still be applied).
func (c *Committer[Req, Res]) Do(ctx context.Context, req Req, closedErr error) (Res, error) {
	var zero Res
	p := &pending[Req, Res]{ctx: ctx, req: req, done: make(chan struct{})}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		c.failed(req)
		return zero, closedErr
	}
	select {
	case c.in <- p:
	case <-ctx.Done():
		c.mu.RUnlock()
		c.failed(req)
		return zero, ctx.Err()
	}
	c.mu.RUnlock()
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// QueueDepth is the number of requests waiting for the next batch.
func (c *Committer[Req, Res]) QueueDepth() int { return len(c.in) }

// Close stops accepting requests, lets the loop apply what is queued (and
// run its After hooks), and waits for it to finish.
func (c *Committer[Req, Res]) Close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.in)
	}
	c.mu.Unlock()
	<-c.exited
}

func (c *Committer[Req, Res]) loop() {
	defer close(c.exited)
	batch := make([]*pending[Req, Res], 0, c.cfg.MaxBatch)
	reqs := make([]Req, 0, c.cfg.MaxBatch)
	res := make([]Res, c.cfg.MaxBatch)
	var timer *time.Timer
	for p := range c.in {
		batch = c.fill(append(batch[:0], p), &timer)
		reqs = reqs[:0]
		live := batch[:0]
		for _, p := range batch {
			if err := p.ctx.Err(); err != nil { // caller gone before the write: skip it
				p.err = err
				c.failed(p.req)
				close(p.done)
				continue
			}
			live = append(live, p)
			reqs = append(reqs, p.req)
		}
		if len(live) == 0 {
			continue
		}
		out := res[:len(reqs)] // zero: cleared after the previous batch
		err := c.cfg.Apply(c.cfg.Ctx, c.cfg.Now(), reqs, out)
		c.cfg.Stats.Batches.Add(1)
		c.cfg.Stats.Items.Add(int64(len(reqs)))
		if n := int64(len(reqs)); n > c.cfg.Stats.MaxBatch.Load() {
			c.cfg.Stats.MaxBatch.Store(n) // only this goroutine writes it
		}
		for i, p := range live {
			if err != nil {
				p.err = err
				c.failed(p.req)
			} else {
				p.res = out[i]
				if c.cfg.After != nil {
					c.cfg.After(p.req, out[i])
				}
			}
			close(p.done)
		}
		clear(reqs) // drop references to the requests' data
		clear(out)
		// The callers just answered are runnable on this P and about to
		// queue their next requests: let them run before the next batch
		// forms. Otherwise the first one back wakes the loop, which
		// commits it alone while the rest queue behind that commit, and
		// under load the batches alternate between one request and all
		// the others.
		runtime.Gosched()
	}
}

// fill adds queued requests to batch without blocking; once the queue is
// empty it waits up to MaxWait (if set) for more, until the batch is full.
func (c *Committer[Req, Res]) fill(batch []*pending[Req, Res], timer **time.Timer) []*pending[Req, Res] {
	var deadline <-chan time.Time // nil until the queue first runs dry
	for len(batch) < c.cfg.MaxBatch {
		var p *pending[Req, Res]
		var ok bool
		select {
		case p, ok = <-c.in:
		default:
			if c.cfg.MaxWait <= 0 {
				return batch
			}
			if deadline == nil {
				if *timer == nil {
					*timer = time.NewTimer(c.cfg.MaxWait)
				} else {
					(*timer).Reset(c.cfg.MaxWait)
				}
				defer (*timer).Stop()
				deadline = (*timer).C
			}
			select {
			case p, ok = <-c.in:
			case <-deadline:
				return batch
			}
		}
		if !ok {
			return batch
		}
		batch = append(batch, p)
	}
	return batch
}

// failed runs the Failed hook, if any, for a request that was not applied.
func (c *Committer[Req, Res]) failed(req Req) {
	if c.cfg.Failed != nil {
		c.cfg.Failed(req)
	}
}
