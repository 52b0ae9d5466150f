// Package sqlledger is the ledger and metering engine of the SQL backends
// (store/sqlitestore, store/pgstore), written once. It runs
// ledger.ApplySpend, ledger.ApplyCredit and meter.ApplyMeter on a Tx —
// the in-memory side of one write transaction: the accounts it loaded, the
// idempotency records, holds, meter keys and record IDs it looked up, and
// the stage of its writes (internal/ledgerstage) — and owns the batch
// rules the backends share: the prefetch of what a batch will look up, the
// optimistic first attempt, the rollback of one failed request to its mark,
// the replay check of a failed optimistic meter request, and the fallback
// that applies the requests of a batch one per transaction when one of them
// hit a system failure.
//
// A backend supplies only SQL text and driver glue, behind two small
// interfaces: Conn (reads and the flush of one transaction) and DB (how a
// transaction begins, commits and retries). The engine never sees a
// database handle; nothing here imports a driver.
package sqlledger

import (
	"context"
	"errors"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
	"github.com/keyledger/keyledger/internal/ledgerstage"
	"github.com/keyledger/keyledger/usage"
	"github.com/keyledger/keyledger/usage/meter"
)

// OpKey is an idempotency (or meter) key within its account.
type OpKey = ledgerstage.OpKey

// RecKey is a usage record's ID within its account (unique per account).
type RecKey struct{ Acct, ID string }

// Row is a ledger account row as read: the state without its lots, the
// number of lots the row says it has, and the stored lower bound of its
// active hold deadlines (0: no active hold).
type Row struct {
	St      ledger.AccountState
	Lots    int64
	HoldDue int64
}

// Conn is one database's side of one transaction. Its methods run on that
// transaction and wrap their errors with the operation's name.
type Conn interface {
	// Account reads an account's row — locking it until commit where the
	// database locks rows — or returns credits.ErrUnknownAccount.
	Account(ctx context.Context, id string) (Row, error)
	// Lots reads an account's grant lots, earliest expiry first.
	Lots(ctx context.Context, id string) ([]ledger.Lot, error)
	// DueHolds reads an account's active holds with a deadline at or
	// before now (unix nanoseconds), and the earliest deadline of its
	// other active holds (0 if none).
	DueHolds(ctx context.Context, id string, now int64) ([]credits.Hold, int64, error)
	// Prefetch reads, in as few round trips as the database allows, what
	// f names, and reports it to f's Found methods. It may leave anything
	// out: the Tx reads what it still needs when it needs it.
	Prefetch(ctx context.Context, f *Fetch) error
	// Hold reads a hold or returns credits.ErrHoldNotFound.
	Hold(ctx context.Context, id string) (credits.Hold, error)
	// Op reads an idempotency record.
	Op(ctx context.Context, k OpKey) (ledger.OpRecord, bool, error)
	// Entry reads a ledger entry.
	Entry(ctx context.Context, acct string, seq int64) (credits.Entry, error)
	// Meter reads a meter key.
	Meter(ctx context.Context, k OpKey) (meter.MeterOp, bool, error)
	// Record reads a usage record by account, ID and creation time.
	Record(ctx context.Context, acct, id string, createdAt time.Time) (usage.Record, bool, error)
	// RecordExists reports whether the account has a record with the ID.
	RecordExists(ctx context.Context, k RecKey) (bool, error)
	// Flush writes everything t staged (see Tx's exported fields).
	Flush(ctx context.Context, t *Tx) error
}

// DB is how one database runs the engine's transactions. Each method runs
// fn on a new Tx (NewTx) in one transaction and commits it if fn returns
// nil; fn's errors come back as they are (they are sentinels or already
// wrapped).
type DB interface {
	// Batch runs a group commit, running fn again as the database's rules
	// for a batch say (an optimistic claim of a taken key, a serialization
	// failure); the Tx of the first attempt is Optimistic.
	Batch(ctx context.Context, op string, now time.Time, fn func(*Tx) error) error
	// Write runs one plain write transaction.
	Write(ctx context.Context, op string, now time.Time, fn func(*Tx) error) error
	// Read runs fn in one read-only snapshot, without row locks.
	Read(ctx context.Context, op string, now time.Time, fn func(*Tx) error) error
}

// requestFailure is a system failure while applying one request of a batch:
// the batch is rolled back and its requests run one per transaction.
type requestFailure struct{ err error }

func (f *requestFailure) Error() string { return f.err.Error() }
func (f *requestFailure) Unwrap() error { return f.err }

// RequestFailure marks err as concerning possibly one request of a batch
// only (a constraint no check foresaw), so that the batch is applied again
// one request per transaction. A backend's Flush returns it for a failing
// statement that is not about the whole batch.
func RequestFailure(err error) error {
	if err == nil {
		return nil
	}
	return &requestFailure{err}
}

// oneByOne applies a batch with apply and, if one request hit a system
// failure, applies each request again in its own transaction, so that only
// a request that fails alone fails; fail records that failure as request
// i's outcome. A batch of one returns its failure, unless failOne is set.
func oneByOne(ctx context.Context, n int, failOne bool, apply func(lo, hi int) error, fail func(i int, err error)) error {
	err := apply(0, n)
	var bad *requestFailure
	if err == nil || ctx.Err() != nil || !errors.As(err, &bad) {
		return err // nothing applied; a failed BEGIN, prefetch or COMMIT concerns the whole batch
	}
	if n == 1 {
		if !failOne {
			return err
		}
		fail(0, bad.err)
		return nil
	}
	for i := range n {
		if err := apply(i, i+1); err != nil {
			if errors.As(err, &bad) {
				err = bad.err
			}
			fail(i, err)
		}
	}
	return nil
}
