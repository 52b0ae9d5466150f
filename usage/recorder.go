package usage

import (
	"context"
	"sync"
	"time"
)

// recorder is the group commit of Meter calls. Callers queue requests; one
// loop takes whatever is queued (at most maxBatch, waiting up to maxWait
// for more), applies it with one MeterUsage call — one transaction — and
// hands every caller its own outcome after the commit. While one batch
// commits the next one fills, so batches grow with the load and a lone
// caller pays no wait.
//
// No request is dropped: a request is either refused before it is queued
// (ErrClosed, or its caller's context ended) or it is applied and its
// caller receives the outcome. A caller whose context ends while waiting
// gets ctx.Err() and its request may still commit (the idempotency key
// tells); a request whose caller left before its batch formed is skipped
// and its caller has had ctx.Err() already.
type recorder struct {
	st       Store
	now      func() time.Time
	ctx      context.Context // store calls run to completion even if callers leave
	maxBatch int
	maxWait  time.Duration
	stats    *recorderCounters

	mu     sync.RWMutex // held shared while sending to in; close takes it exclusively
	closed bool
	in     chan *pending
	exited chan struct{}
}

type pending struct {
	ctx  context.Context
	req  MeterRequest
	out  MeterOutcome
	err  error
	done chan struct{}
}

func newRecorder(st Store, now func() time.Time, maxBatch int, maxWait time.Duration, stats *recorderCounters) *recorder {
	r := &recorder{
		st: st, now: now, ctx: context.Background(), maxBatch: maxBatch, maxWait: maxWait, stats: stats,
		in: make(chan *pending, maxBatch*2), exited: make(chan struct{}),
	}
	go r.loop()
	return r
}

// do queues req and waits for its outcome.
func (r *recorder) do(ctx context.Context, req MeterRequest) (MeterOutcome, error) {
	p := &pending{ctx: ctx, req: req, done: make(chan struct{})}
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		return MeterOutcome{}, ErrClosed
	}
	select {
	case r.in <- p:
	case <-ctx.Done():
		r.mu.RUnlock()
		return MeterOutcome{}, ctx.Err()
	}
	r.mu.RUnlock()
	select {
	case <-p.done:
		return p.out, p.err
	case <-ctx.Done():
		return MeterOutcome{}, ctx.Err()
	}
}

// close stops accepting requests, lets the loop apply what is queued, and
// waits for it to finish.
func (r *recorder) close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.in)
	}
	r.mu.Unlock()
	<-r.exited
}

func (r *recorder) loop() {
	defer close(r.exited)
	batch := make([]*pending, 0, r.maxBatch)
	reqs := make([]MeterRequest, 0, r.maxBatch)
	res := make([]MeterOutcome, r.maxBatch)
	var timer *time.Timer
	for p := range r.in {
		batch = r.fill(append(batch[:0], p), &timer)
		reqs = reqs[:0]
		live := batch[:0]
		for _, p := range batch {
			if err := p.ctx.Err(); err != nil { // caller gone before the write: skip it
				p.err = err
				close(p.done)
				continue
			}
			live = append(live, p)
			reqs = append(reqs, p.req)
		}
		if len(live) == 0 {
			continue
		}
		clear(res[:len(reqs)])
		err := r.st.MeterUsage(r.ctx, r.now(), reqs, res[:len(reqs)])
		r.stats.batches.Add(1)
		r.stats.batchedItems.Add(int64(len(reqs)))
		if n := int64(len(reqs)); n > r.stats.maxBatch.Load() {
			r.stats.maxBatch.Store(n) // only this goroutine writes it
		}
		for i, p := range live {
			if err != nil {
				p.err = err
			} else {
				p.out = res[i]
			}
			close(p.done)
		}
		clear(reqs) // drop references to records and metadata
	}
}

// fill adds queued requests to batch without blocking; once the queue is
// empty it waits up to maxWait (if set) for more, until the batch is full.
func (r *recorder) fill(batch []*pending, timer **time.Timer) []*pending {
	var deadline <-chan time.Time
	for len(batch) < r.maxBatch {
		var p *pending
		var ok bool
		select {
		case p, ok = <-r.in:
		default:
			if r.maxWait <= 0 {
				return batch
			}
			if deadline == nil {
				if *timer == nil {
					*timer = time.NewTimer(r.maxWait)
				} else {
					(*timer).Reset(r.maxWait)
				}
				defer (*timer).Stop()
				deadline = (*timer).C
			}
			select {
			case p, ok = <-r.in:
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
