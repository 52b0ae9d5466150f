package sqlledger

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
	"github.com/keyledger/keyledger/usage"
	"github.com/keyledger/keyledger/usage/meter"
)

// Engine implements the ledger and metering methods of credits.Store and
// usage.Store that are the same on every SQL database, on a DB. A backend
// embeds it and adds the methods that are only SQL (queries, OpenLedger).
type Engine struct{ db DB }

// New returns an Engine on db.
func New(db DB) *Engine { return &Engine{db: db} }

var (
	_ interface{ GroupCommit() bool }      = (*Engine)(nil)
	_ interface{ UsageGroupCommit() bool } = (*Engine)(nil)
)

// GroupCommit is the group-commit capability of credits.Store: a commit (a WAL write or
// flush, and round trips) dominates a spend, so the Service batches them.
func (e *Engine) GroupCommit() bool { return true }

// UsageGroupCommit is the group-commit capability of usage.Store, for the same reason.
func (e *Engine) UsageGroupCommit() bool { return true }

// ApplySpends implements credits.Store: many callers' spends in one
// transaction. The ledger rules check before they write, so a request that
// fails leaves nothing staged and its batch mates commit; a request's
// system failure (which may abort the transaction) runs the requests again
// one per transaction, so that one bad request cannot fail the others.
func (e *Engine) ApplySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	return oneByOne(ctx, len(reqs), false, func(lo, hi int) error {
		return e.applySpends(ctx, now, reqs[lo:hi], res[lo:hi])
	}, func(i int, err error) { res[i] = credits.SpendResult{Err: err} })
}

func (e *Engine) applySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	return e.batch(ctx, "apply spends", now, reqs, res, nil, nil)
}

// MeterUsage implements usage.Store: a batch of meter requests in one
// transaction. It first loads the ledger accounts the batch charges and
// looks up what the requests will check; each request then runs
// meter.ApplyMeter on the Tx, whose writes are staged in memory: the stage
// is the savepoint of each request. A request that fails (an expected
// failure such as insufficient funds) is rolled back to its mark before
// anything reaches the database, so its batch mates commit unaffected.
func (e *Engine) MeterUsage(ctx context.Context, now time.Time, reqs []usage.MeterRequest, res []usage.MeterOutcome) error {
	return oneByOne(ctx, len(reqs), true, func(lo, hi int) error {
		return e.meterUsage(ctx, now, reqs[lo:hi], res[lo:hi])
	}, func(i int, err error) { res[i] = usage.MeterOutcome{Err: err} })
}

func (e *Engine) meterUsage(ctx context.Context, now time.Time, reqs []usage.MeterRequest, res []usage.MeterOutcome) error {
	return e.batch(ctx, "meter usage", now, nil, nil, reqs, res)
}

// batch applies spends and meter requests in one transaction: the
// accounts, holds and keys they name are fetched together, the spends run
// first, then the meters (each rolled back to its mark if it fails), and
// everything is flushed with one commit. A request's system failure is a
// requestFailure, for oneByOne.
func (e *Engine) batch(ctx context.Context, op string, now time.Time,
	sreqs []credits.SpendRequest, sres []credits.SpendResult, mreqs []usage.MeterRequest, mres []usage.MeterOutcome) error {
	return e.db.Batch(ctx, op, now, func(t *Tx) error {
		var f Fetch
		spends := sreqs
		if len(mreqs) > 0 {
			f.Meters, f.Records = make([]OpKey, 0, len(mreqs)), make([]RecKey, 0, len(mreqs))
			spends = append(make([]credits.SpendRequest, 0, len(sreqs)+len(mreqs)), sreqs...)
		}
		for i := range mreqs {
			r := &mreqs[i]
			if r.Spend.Kind != 0 {
				spends = append(spends, r.Spend)
			}
			f.Meters = append(f.Meters, OpKey{Acct: r.Record.AccountID, Key: r.IdempotencyKey})
			f.Records = append(f.Records, RecKey{r.Record.AccountID, r.Record.ID})
		}
		f.spendTargets(spends)
		if err := t.prefetch(ctx, &f); err != nil {
			return err
		}
		for i := range sreqs {
			r, err := ledger.ApplySpend(ctx, t, now, sreqs[i])
			if err != nil {
				return &requestFailure{err}
			}
			sres[i] = r
		}
		for i := range mreqs {
			out, err := t.apply(ctx, now, &mreqs[i])
			if err != nil {
				return &requestFailure{err}
			}
			mres[i] = out
		}
		return t.conn.Flush(ctx, t)
	})
}

// apply runs one meter request, rolling it back to its mark if it fails. In
// an optimistic transaction the request claimed its key without looking, so
// a failure may be the wrong answer to a replay (a settled hold settles
// only once): the key is looked up then, and if it exists the request runs
// again as the replay it is.
func (t *Tx) apply(ctx context.Context, now time.Time, r *usage.MeterRequest) (usage.MeterOutcome, error) {
	m := t.mark(r.Record.AccountID)
	out, err := meter.ApplyMeter(ctx, t, now, r)
	if err != nil || out.Err == nil {
		return out, err
	}
	t.rollback(m)
	k := OpKey{Acct: r.Record.AccountID, Key: r.IdempotencyKey}
	if _, seen := t.meterSeen[k]; !t.Optimistic || seen {
		return out, nil
	}
	if s, err := t.lookMeter(ctx, k); err != nil || !s.found {
		return out, err
	}
	out, err = meter.ApplyMeter(ctx, t, now, r)
	if err == nil && out.Err != nil {
		t.rollback(m)
	}
	return out, err
}

// SetLedgerPolicy implements credits.Store.
func (e *Engine) SetLedgerPolicy(ctx context.Context, id string, p credits.Policy, now time.Time) (credits.Account, error) {
	var out credits.Account
	err := e.db.Write(ctx, "set ledger policy", now, func(t *Tx) error {
		st, err := t.State(ctx, id)
		if err != nil {
			return err
		}
		st.SetPolicy(p, now)
		out = st.View()
		return t.conn.Flush(ctx, t)
	})
	return out, err
}

// SetKeyLimit implements credits.Store.
func (e *Engine) SetKeyLimit(ctx context.Context, id, keyID string, limit credits.Amount, p credits.Period, now time.Time) (credits.KeySpend, error) {
	var out credits.KeySpend
	err := e.db.Write(ctx, "set key limit", now, func(t *Tx) error {
		st, err := t.State(ctx, id)
		if err != nil {
			return err
		}
		if out, err = st.SetKeyLimit(keyID, limit, p, now); err != nil {
			return err
		}
		return t.conn.Flush(ctx, t)
	})
	return out, err
}

// LedgerAccount implements credits.Store: one snapshot, no lock.
func (e *Engine) LedgerAccount(ctx context.Context, id string, now time.Time) (credits.Account, error) {
	var st ledger.AccountState
	err := e.db.Read(ctx, "ledger account", now, func(t *Tx) error {
		l, err := t.load(ctx, id)
		if err != nil {
			return err
		}
		st = l.St
		st.Advance(now, l.Due)
		return nil
	})
	if err != nil {
		return credits.Account{}, err
	}
	return st.View(), nil
}

// LedgerCredit implements credits.Store.
func (e *Engine) LedgerCredit(ctx context.Context, now time.Time, r credits.CreditRequest) (credits.Entry, error) {
	var out credits.Entry
	err := e.db.Write(ctx, "ledger credit", now, func(t *Tx) error {
		var err error
		if out, err = ledger.ApplyCredit(ctx, t, now, r); err != nil {
			return err
		}
		return t.conn.Flush(ctx, t)
	})
	return out, err
}

// Expire brings the accounts ids (found due by the backend, without a
// lock) to now: due grant lots expire and due holds are freed.
func (e *Engine) Expire(ctx context.Context, now time.Time, ids []string) (credits.ExpiryReport, error) {
	if len(ids) == 0 {
		return credits.ExpiryReport{}, nil
	}
	var rep credits.ExpiryReport
	err := e.db.Write(ctx, "expire ledgers", now, func(t *Tx) error {
		f := Fetch{Accounts: slices.Clone(ids)}
		if err := t.prefetch(ctx, &f); err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := t.State(ctx, id); err != nil && !errors.Is(err, credits.ErrUnknownAccount) {
				return err
			}
		}
		rep = t.Rep
		return t.conn.Flush(ctx, t)
	})
	return rep, err
}

// Flush writes what t staged (for a backend's own write paths, such as
// a bulk import).
func (t *Tx) Flush(ctx context.Context) error { return t.conn.Flush(ctx, t) }

// Rollups sums the staged records per rollup row, in row key order, so
// that concurrent batches lock rollup rows in one order.
func (t *Tx) Rollups() []usage.Rollup {
	if len(t.Records) == 0 {
		return nil
	}
	sums := make(map[usage.Rollup]int, 16) // key: the row's dimensions only
	out := make([]usage.Rollup, 0, 16)
	for i := range t.Records {
		sr := &t.Records[i]
		k := sr.R.Rollup(sr.TZ, sr.Day)
		j, ok := sums[k]
		if !ok {
			j = len(out)
			sums[k] = j
			out = append(out, k)
		}
		out[j].Add(sr.R)
	}
	slices.SortFunc(out, func(a, b usage.Rollup) int {
		return cmp.Or(strings.Compare(a.AccountID, b.AccountID), strings.Compare(a.TimeZone, b.TimeZone),
			strings.Compare(a.Day, b.Day), strings.Compare(a.Model, b.Model), strings.Compare(a.KeyID, b.KeyID),
			strings.Compare(a.Endpoint, b.Endpoint))
	})
	return out
}

// LedgerReserveKey reads the idempotency record of (accountID, key) in one
// snapshot, for the credits Service's process holds: whether it exists,
// and if it is a reserve's, the reserve's fingerprint and hold.
func (e *Engine) LedgerReserveKey(ctx context.Context, accountID, key string) (fp [32]byte, holdID string, found bool, err error) {
	err = e.db.Read(ctx, "ledger reserve key", time.Time{}, func(t *Tx) error {
		rec, ok, err := t.Op(ctx, accountID, key)
		if ok && rec.Kind == ledger.OpReserve {
			fp, holdID = rec.Fingerprint, rec.HoldID
		}
		found = ok
		return err
	})
	return fp, holdID, found, err
}
