package storewrap

import (
	"context"
	"github.com/keyledger/keyledger/errkind"
	"time"

	"github.com/keyledger/keyledger/internal/outbox"
)

// ErrNoOutbox is returned by the outbox methods over a store without one.
var ErrNoOutbox = errkind.New(errkind.Internal, "storewrap: the wrapped store has no event outbox")

func (b Base) outbox() (outbox.Store, error) {
	o, ok := b.Store.(outbox.Store)
	if !ok {
		return nil, ErrNoOutbox
	}
	return o, nil
}

// ClaimEvents forwards outbox.Store's method to the wrapped store.
func (b Base) ClaimEvents(ctx context.Context, now, leaseUntil time.Time, claim string, limit int) ([]outbox.Pending, error) {
	o, err := b.outbox()
	if err != nil {
		return nil, err
	}
	return o.ClaimEvents(ctx, now, leaseUntil, claim, limit)
}

// FinishEvent forwards outbox.Store's method to the wrapped store.
func (b Base) FinishEvent(ctx context.Context, now time.Time, r outbox.Result) error {
	o, err := b.outbox()
	if err != nil {
		return err
	}
	return o.FinishEvent(ctx, now, r)
}

// PruneEvents forwards outbox.Store's method to the wrapped store.
func (b Base) PruneEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	o, err := b.outbox()
	if err != nil {
		return 0, err
	}
	return o.PruneEvents(ctx, before, limit)
}

// NoticeExpiringKeys forwards outbox.Store's method to the wrapped store.
func (b Base) NoticeExpiringKeys(ctx context.Context, now, until time.Time, limit int) (int, error) {
	o, err := b.outbox()
	if err != nil {
		return 0, err
	}
	return o.NoticeExpiringKeys(ctx, now, until, limit)
}
