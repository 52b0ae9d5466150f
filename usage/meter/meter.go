// Package meter is the metering engine the usage backends run inside their
// transactions: ApplyMeter records one metered request and charges it with
// the credits ledger engine (credits/ledger) in the same transaction, on a
// backend's Tx. It is a driver package: stores under store/ and the SQL
// engine in internal/ import it, hosts never do (internal/archtest guards
// that). Hosts use usage.Service.
package meter

import (
	"context"
	"errors"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
	"github.com/keyledger/keyledger/usage"
)

// MeterOp is what a store keeps under a meter idempotency key.
type MeterOp struct {
	Fingerprint [32]byte
	RecordID    string
	HoldID      string // the settled or released hold, if any
	CreatedAt   time.Time
}

// Tx is the view of one open backend transaction that ApplyMeter runs on:
// the ledger's transaction (ledger.Tx, for the spend) plus the usage
// tables. Backends implement it; hosts never see it. Methods return errors
// only for system failures.
type Tx interface {
	ledger.Tx
	// ClaimMeter stores op under (accountID, key) unless a record exists;
	// it returns the existing one and false in that case.
	ClaimMeter(ctx context.Context, accountID, key string, op MeterOp) (MeterOp, bool, error)
	// UsageRecord returns the account's record with the given ID and
	// creation time, and false if there is none (never written, or deleted
	// by retention).
	UsageRecord(ctx context.Context, accountID, id string, createdAt time.Time) (usage.Record, bool, error)
	// AddUsage inserts the record and adds it to its rollup row (tz, day).
	// It returns ErrDuplicateRecord if the account has a record with that
	// ID, whatever its creation time: a record ID is unique per account.
	AddUsage(ctx context.Context, r *usage.Record, tz, day string) error
}

// ApplyMeter runs one meter request on an open transaction: the single
// implementation of "record usage and charge it" that every backend uses.
//
// It claims the idempotency key (a replay returns the first result and
// writes nothing; the same key with another request is
// usage.ErrIdempotencyConflict), applies the ledger spend with
// ledger.ApplySpend, sets the record's Cost to what the spend charged, and
// inserts the record with its rollup. Expected failures are returned in
// usage.MeterOutcome.Err; the backend must then roll back whatever the request
// wrote (the claim). A non-nil error is a system failure, after which the
// backend rolls back the request too.
func ApplyMeter(ctx context.Context, tx Tx, now time.Time, r *usage.MeterRequest) (usage.MeterOutcome, error) {
	rec := &r.Record // Cost is set below to what was charged
	op := MeterOp{Fingerprint: r.Fingerprint, RecordID: rec.ID, CreatedAt: rec.CreatedAt}
	if r.Spend.Kind != 0 {
		op.HoldID = r.Spend.HoldID
	}
	prev, claimed, err := tx.ClaimMeter(ctx, rec.AccountID, r.IdempotencyKey, op)
	if err != nil {
		return usage.MeterOutcome{}, err
	}
	if !claimed {
		return replayMeter(ctx, tx, rec.AccountID, r.IdempotencyKey, prev, r.Fingerprint)
	}
	var out usage.MeterOutcome
	if s := &r.Spend; s.Kind != 0 {
		if s.Held != nil && s.Held.AccountID != rec.AccountID {
			return usage.MeterOutcome{Err: credits.ErrHoldNotFound}, nil
		}
		if s.Held == nil && (s.Kind == credits.SpendSettle || s.Kind == credits.SpendRelease) {
			// A hold of another account is not this record's to resolve.
			h, err := tx.Hold(ctx, s.HoldID)
			if errors.Is(err, credits.ErrHoldNotFound) || (err == nil && h.AccountID != rec.AccountID) {
				return usage.MeterOutcome{Err: credits.ErrHoldNotFound}, nil
			}
			if err != nil {
				return usage.MeterOutcome{}, err
			}
		}
		res, err := ledger.ApplySpend(ctx, tx, now, *s)
		if err != nil {
			return usage.MeterOutcome{}, err
		}
		if res.Err != nil {
			return usage.MeterOutcome{Err: res.Err}, nil
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
		if errors.Is(err, usage.ErrDuplicateRecord) {
			return usage.MeterOutcome{Err: err}, nil
		}
		return usage.MeterOutcome{}, err
	}
	out.Record = *rec
	return out, nil
}

// replayMeter rebuilds the first result of a meter request.
func replayMeter(ctx context.Context, tx Tx, accountID, key string, prev MeterOp, fp [32]byte) (usage.MeterOutcome, error) {
	if prev.Fingerprint != fp {
		return usage.MeterOutcome{Err: usage.ErrIdempotencyConflict}, nil
	}
	out := usage.MeterOutcome{Replayed: true}
	rec, ok, err := tx.UsageRecord(ctx, accountID, prev.RecordID, prev.CreatedAt)
	if err != nil {
		return usage.MeterOutcome{}, err
	}
	if !ok { // deleted by retention: what the key still knows
		rec = usage.Record{ID: prev.RecordID, AccountID: accountID, CreatedAt: prev.CreatedAt}
	}
	var seq int64
	if prev.HoldID != "" {
		h, err := tx.Hold(ctx, prev.HoldID)
		if err != nil {
			return usage.MeterOutcome{}, err
		}
		seq = h.EntrySeq
		out.Spend.Hold = h
		if h.State == credits.HoldSettled {
			out.Charged, out.Shortfall = h.Charged, h.Shortfall()
		}
	} else if !ok || rec.Cost.IsPositive() { // a plain debit under the same key
		op, found, err := tx.Op(ctx, accountID, key)
		if err != nil && !errors.Is(err, credits.ErrUnknownAccount) {
			return usage.MeterOutcome{}, err
		}
		if found && op.Kind == ledger.OpDebit {
			seq = op.EntrySeq
		}
	}
	if seq > 0 {
		if out.Entry, err = tx.Entry(ctx, accountID, seq); err != nil {
			return usage.MeterOutcome{}, err
		}
		if prev.HoldID == "" {
			out.Charged = out.Entry.Amount.Neg()
		}
		out.Spend.Entry = out.Entry
	}
	if !ok {
		rec.Cost = out.Charged
	}
	out.Record = rec
	return out, nil
}
