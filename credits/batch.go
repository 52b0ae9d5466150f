package credits

import (
	"context"
	"sync"
	"time"
)

// batcher is the group commit of spends. Callers queue requests; one loop
// takes whatever is queued (at most maxBatch, waiting up to maxWait for
// more), applies it with one ApplySpends call — one transaction — and hands
// every caller its own result after the commit. While one batch commits,
// the next one fills, so batches grow with the load and a lone caller pays
// no wait.
type batcher struct {
	st       Store
	now      func() time.Time
	ctx      context.Context // for the store calls; callers' contexts only govern their waiting
	maxBatch int
	maxWait  time.Duration
	stats    *counters

	mu     sync.RWMutex // held shared while sending to in; Close takes it exclusively
	closed bool
	in     chan *pending
	exited chan struct{}
}

type pending struct {
	ctx  context.Context
	req  SpendRequest
	res  SpendResult
	err  error
	done chan struct{}
}

func newBatcher(ctx context.Context, st Store, now func() time.Time, maxBatch int, maxWait time.Duration, stats *counters) *batcher {
	b := &batcher{
		st: st, now: now, ctx: ctx, maxBatch: maxBatch, maxWait: maxWait, stats: stats,
		in: make(chan *pending, maxBatch), exited: make(chan struct{}),
	}
	go b.loop()
	return b
}

// do queues r and waits for its result. If ctx ends first, do returns
// ctx.Err(); the request may still be applied.
func (b *batcher) do(ctx context.Context, r SpendRequest) (SpendResult, error) {
	p := &pending{ctx: ctx, req: r, done: make(chan struct{})}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return SpendResult{}, ErrClosed
	}
	select {
	case b.in <- p:
	case <-ctx.Done():
		b.mu.RUnlock()
		return SpendResult{}, ctx.Err()
	}
	b.mu.RUnlock()
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
		return SpendResult{}, ctx.Err()
	}
}

// close stops accepting requests, lets the loop apply what is queued, and
// waits for it to finish.
func (b *batcher) close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.in)
	}
	b.mu.Unlock()
	<-b.exited
}

func (b *batcher) loop() {
	defer close(b.exited)
	batch := make([]*pending, 0, b.maxBatch)
	reqs := make([]SpendRequest, 0, b.maxBatch)
	res := make([]SpendResult, b.maxBatch)
	var timer *time.Timer
	for p := range b.in {
		batch = append(batch[:0], p)
		batch = b.fill(batch, &timer)
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
		err := b.st.ApplySpends(b.ctx, b.now(), reqs, res[:len(reqs)])
		b.stats.batches.Add(1)
		b.stats.batchedSpends.Add(int64(len(reqs)))
		if n := int64(len(reqs)); n > b.stats.maxBatch.Load() {
			b.stats.maxBatch.Store(n) // only this goroutine writes it
		}
		for i, p := range live {
			if err != nil {
				p.err = err
			} else {
				p.res = res[i]
			}
			close(p.done)
		}
	}
}

// fill adds queued requests to batch without blocking; once the queue is
// empty it waits up to maxWait (if set) for more, until the batch is full.
func (b *batcher) fill(batch []*pending, timer **time.Timer) []*pending {
	var deadline <-chan time.Time // nil until the queue first runs dry
	for len(batch) < b.maxBatch {
		var p *pending
		var ok bool
		select {
		case p, ok = <-b.in:
		default:
			if b.maxWait <= 0 {
				return batch
			}
			if deadline == nil {
				if *timer == nil {
					*timer = time.NewTimer(b.maxWait)
				} else {
					(*timer).Reset(b.maxWait)
				}
				defer (*timer).Stop()
				deadline = (*timer).C
			}
			select {
			case p, ok = <-b.in:
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
