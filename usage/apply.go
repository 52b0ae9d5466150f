package usage

import (
	"context"
	"errors"
	"time"

	"github.com/keyledger/keyledger/credits"
)

// ApplyMeter runs one meter request on an open transaction: the single
// implementation of "record usage and charge it" that every backend uses.
//
// It claims the idempotency key (a replay returns the first result and
// writes nothing; the same key with another request is
// ErrIdempotencyConflict), applies the ledger spend with
// credits.ApplySpend, sets the record's Cost to what the spend charged, and
// inserts the record with its rollup. Expected failures are returned in
// MeterOutcome.Err; the backend must then roll back whatever the request
// wrote (the claim). A non-nil error is a system failure, after which the
// backend rolls back the request too.
func ApplyMeter(ctx context.Context, tx Tx, now time.Time, r *MeterRequest) (MeterOutcome, error) {
	rec := &r.Record // Cost is set below to what was charged
	op := MeterOp{Fingerprint: r.Fingerprint, RecordID: rec.ID, CreatedAt: rec.CreatedAt}
	if r.Spend.Kind != 0 {
		op.HoldID = r.Spend.HoldID
	}
	prev, claimed, err := tx.ClaimMeter(ctx, rec.AccountID, r.IdempotencyKey, op)
	if err != nil {
		return MeterOutcome{}, err
	}
	if !claimed {
		return replayMeter(ctx, tx, rec.AccountID, r.IdempotencyKey, prev, r.Fingerprint)
	}
	var out MeterOutcome
	if s := &r.Spend; s.Kind != 0 {
		if s.Kind == credits.SpendSettle || s.Kind == credits.SpendRelease {
			// A hold of another account is not this record's to resolve.
			h, err := tx.Hold(ctx, s.HoldID)
			if errors.Is(err, credits.ErrHoldNotFound) || (err == nil && h.AccountID != rec.AccountID) {
				return MeterOutcome{Err: credits.ErrHoldNotFound}, nil
			}
			if err != nil {
				return MeterOutcome{}, err
			}
		}
		res, err := credits.ApplySpend(ctx, tx, now, *s)
		if err != nil {
			return MeterOutcome{}, err
		}
		if res.Err != nil {
			return MeterOutcome{Err: res.Err}, nil
		}
		out.Spend, out.Entry = res, res.Entry
		switch s.Kind {
		case credits.SpendDebit:
			// A write-off debit may charge less than the cost.
			out.Charged = res.Entry.Amount.Neg()
			out.Shortfall = s.Amount.Sub(out.Charged)
		case credits.SpendSettle:
			out.Charged, out.Shortfall = res.Hold.Charged, res.Hold.Shortfall()
		}
	}
	rec.Cost = out.Charged
	if err := tx.AddUsage(ctx, rec, r.TimeZone, r.Day); err != nil {
		if errors.Is(err, ErrDuplicateRecord) {
			return MeterOutcome{Err: err}, nil
		}
		return MeterOutcome{}, err
	}
	out.Record = *rec
	return out, nil
}

// replayMeter rebuilds the first result of a meter request.
func replayMeter(ctx context.Context, tx Tx, accountID, key string, prev MeterOp, fp credits.Fingerprint) (MeterOutcome, error) {
	if prev.Fingerprint != fp {
		return MeterOutcome{Err: ErrIdempotencyConflict}, nil
	}
	out := MeterOutcome{Replayed: true}
	rec, ok, err := tx.UsageRecord(ctx, accountID, prev.RecordID, prev.CreatedAt)
	if err != nil {
		return MeterOutcome{}, err
	}
	if !ok { // deleted by retention: what the key still knows
		rec = Record{ID: prev.RecordID, AccountID: accountID, CreatedAt: prev.CreatedAt}
	}
	var seq int64
	if prev.HoldID != "" {
		h, err := tx.Hold(ctx, prev.HoldID)
		if err != nil {
			return MeterOutcome{}, err
		}
		seq = h.EntrySeq
		if h.State == credits.HoldSettled {
			out.Charged, out.Shortfall = h.Charged, h.Shortfall()
		}
	} else if !ok || rec.Cost.IsPositive() { // a plain debit under the same key
		op, found, err := tx.Op(ctx, accountID, key)
		if err != nil && !errors.Is(err, credits.ErrUnknownAccount) {
			return MeterOutcome{}, err
		}
		if found && op.Kind == credits.OpDebit {
			seq = op.EntrySeq
		}
	}
	if seq > 0 {
		if out.Entry, err = tx.Entry(ctx, accountID, seq); err != nil {
			return MeterOutcome{}, err
		}
		if prev.HoldID == "" {
			out.Charged = out.Entry.Amount.Neg()
		}
	}
	if !ok {
		rec.Cost = out.Charged
	}
	out.Record = rec
	return out, nil
}
