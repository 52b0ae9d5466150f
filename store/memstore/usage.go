package memstore

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

// usageData is the usage part of the Store, kept per account. A meter
// request locks its usage account and then (if it charges) its ledger
// account — always in that order — so the record, its rollup and its
// charge change together: no reader sees one without the others.
type usageData struct {
	mu    sync.RWMutex
	accts map[string]*usageAcct
}

type usageAcct struct {
	mu      sync.RWMutex
	recs    []*usage.Record // by (CreatedAt, ID) ascending
	byID    map[string]*usage.Record
	rollups map[rollupKey]*usage.Rollup
	// ops maps an idempotency key to its op in opLog (small map slots;
	// the op of a rolled-back claim stays in the log, unreferenced).
	ops   map[string]int
	opLog chunkLog[usage.MeterOp]
	// slab is where new records are stored: one allocation per
	// recordSlab records instead of one per record. Records are about
	// chronological, so retention frees whole slabs.
	slab []usage.Record
	tx   usageTx // reused by every meter request under mu
}

const recordSlab = 256

// newRecord returns a zero record in the account's slab.
func (a *usageAcct) newRecord() *usage.Record {
	if len(a.slab) == cap(a.slab) {
		a.slab = make([]usage.Record, 0, recordSlab)
	}
	a.slab = a.slab[:len(a.slab)+1]
	return &a.slab[len(a.slab)-1]
}

type rollupKey struct{ tz, day, model, key, endpoint string }

func newUsageData() *usageData { return &usageData{accts: make(map[string]*usageAcct)} }

func (u *usageData) acct(id string, create bool) *usageAcct {
	u.mu.RLock()
	a := u.accts[id]
	u.mu.RUnlock()
	if a != nil || !create {
		return a
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if a = u.accts[id]; a == nil {
		a = &usageAcct{byID: make(map[string]*usage.Record), rollups: make(map[rollupKey]*usage.Rollup), ops: make(map[string]int)}
		u.accts[id] = a
	}
	return a
}

func (u *usageData) all() []*usageAcct {
	u.mu.RLock()
	defer u.mu.RUnlock()
	out := make([]*usageAcct, 0, len(u.accts))
	for _, a := range u.accts {
		out = append(out, a)
	}
	return out
}

// before reports whether a sorts before (t, id).
func before(a *usage.Record, t time.Time, id string) bool {
	if c := a.CreatedAt.Compare(t); c != 0 {
		return c < 0
	}
	return a.ID < id
}

// usageTx is a usage.Tx over one locked usage account; the ledger account
// of the record is locked on first use.
type usageTx struct {
	s       *Store
	ua      *usageAcct
	acctID  string
	now     time.Time
	ledger  *ledgerAcct
	mt      *memTx
	claimed string // key claimed by this request, for the rollback
	didClm  bool
}

func (t *usageTx) bind() (*memTx, error) {
	if t.mt != nil {
		return t.mt, nil
	}
	a, err := t.s.ledger.acct(t.acctID)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	t.ledger, t.mt = a, a.begin(t.s.ledger, t.now)
	return t.mt, nil
}

func (t *usageTx) unlock() {
	if t.ledger != nil {
		t.ledger.mu.Unlock()
		t.ledger, t.mt = nil, nil
	}
}

func (t *usageTx) State(ctx context.Context, id string) (*credits.AccountState, error) {
	mt, err := t.bind()
	if err != nil {
		return nil, err
	}
	return mt.State(ctx, id)
}

func (t *usageTx) Hold(ctx context.Context, id string) (credits.Hold, error) {
	mt, err := t.bind()
	if err != nil {
		if errors.Is(err, credits.ErrUnknownAccount) {
			return credits.Hold{}, credits.ErrHoldNotFound
		}
		return credits.Hold{}, err
	}
	return mt.Hold(ctx, id)
}

func (t *usageTx) Op(ctx context.Context, acct, key string) (credits.OpRecord, bool, error) {
	mt, err := t.bind()
	if err != nil {
		return credits.OpRecord{}, false, err
	}
	return mt.Op(ctx, acct, key)
}

func (t *usageTx) ClaimOp(ctx context.Context, acct, key string, rec credits.OpRecord) (credits.OpRecord, bool, error) {
	mt, err := t.bind()
	if err != nil {
		return rec, false, err
	}
	return mt.ClaimOp(ctx, acct, key, rec)
}

func (t *usageTx) Entry(ctx context.Context, acct string, seq int64) (credits.Entry, error) {
	mt, err := t.bind()
	if err != nil {
		return credits.Entry{}, err
	}
	return mt.Entry(ctx, acct, seq)
}

func (t *usageTx) AddEntry(ctx context.Context, e credits.Entry) error {
	mt, err := t.bind()
	if err != nil {
		return err
	}
	return mt.AddEntry(ctx, e)
}

func (t *usageTx) PutHold(ctx context.Context, h credits.Hold) error {
	mt, err := t.bind()
	if err != nil {
		return err
	}
	return mt.PutHold(ctx, h)
}

func (t *usageTx) ClaimMeter(_ context.Context, _, key string, op usage.MeterOp) (usage.MeterOp, bool, error) {
	if i, ok := t.ua.ops[key]; ok {
		return *t.ua.opLog.at(i), false, nil
	}
	t.ua.ops[key] = t.ua.opLog.add(&op)
	t.claimed, t.didClm = key, true
	return op, true, nil
}

func (t *usageTx) UsageRecord(_ context.Context, _, id string, createdAt time.Time) (usage.Record, bool, error) {
	r, ok := t.ua.byID[id]
	if !ok || !r.CreatedAt.Equal(createdAt) {
		return usage.Record{}, false, nil
	}
	return r.Clone(), true, nil
}

func (t *usageTx) AddUsage(_ context.Context, r *usage.Record, tz, day string) error {
	a := t.ua
	if _, dup := a.byID[r.ID]; dup {
		return usage.ErrDuplicateRecord
	}
	p := a.newRecord()
	*p = r.Clone()
	a.byID[r.ID] = p
	if n := len(a.recs); n == 0 || before(a.recs[n-1], p.CreatedAt, p.ID) {
		a.recs = append(a.recs, p)
	} else {
		i, _ := slices.BinarySearchFunc(a.recs, p, func(x, y *usage.Record) int {
			if before(x, y.CreatedAt, y.ID) {
				return -1
			}
			return 1
		})
		a.recs = slices.Insert(a.recs, i, p)
	}
	k := rollupKey{tz: tz, day: day, model: r.Model, key: r.KeyID, endpoint: r.Endpoint}
	ro := a.rollups[k]
	if ro == nil {
		v := usage.RollupFor(r, tz, day)
		ro = &v
		a.rollups[k] = ro
	}
	ro.Add(r)
	return nil
}

// MeterUsage implements usage.Store: each request under its account's
// locks, one after the other.
func (s *Store) MeterUsage(ctx context.Context, now time.Time, reqs []usage.MeterRequest, res []usage.MeterOutcome) error {
	for i := range reqs {
		res[i] = s.meterOne(ctx, now, &reqs[i])
	}
	return nil
}

func (s *Store) meterOne(ctx context.Context, now time.Time, r *usage.MeterRequest) usage.MeterOutcome {
	ua := s.usage.acct(r.Record.AccountID, true)
	ua.mu.Lock()
	defer ua.mu.Unlock()
	if _, replay := ua.ops[r.IdempotencyKey]; !replay {
		if _, dup := ua.byID[r.Record.ID]; dup {
			// Checked before ApplyMeter: memory has no rollback for the
			// charge that would precede the failing insert.
			return usage.MeterOutcome{Err: usage.ErrDuplicateRecord}
		}
	}
	t := &ua.tx
	*t = usageTx{s: s, ua: ua, acctID: r.Record.AccountID, now: now}
	defer t.unlock()
	out, err := usage.ApplyMeter(ctx, t, now, r)
	if err != nil {
		out = usage.MeterOutcome{Err: err}
	}
	if out.Err != nil && t.didClm {
		delete(ua.ops, t.claimed) // the only write that precedes a failure
	}
	return out
}

// UsageRecords implements usage.Store.
func (s *Store) UsageRecords(_ context.Context, q usage.RecordQuery) ([]usage.Record, error) {
	a := s.usage.acct(q.AccountID, false)
	if a == nil {
		return nil, nil
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	i := len(a.recs)
	if q.AfterID != "" {
		i, _ = slices.BinarySearchFunc(a.recs, q.AfterTime, func(x *usage.Record, _ time.Time) int {
			if before(x, q.AfterTime, q.AfterID) {
				return -1
			}
			return 1
		})
	}
	var out []usage.Record
	for i--; i >= 0 && len(out) < q.Limit; i-- {
		r := a.recs[i]
		if !q.From.IsZero() && r.CreatedAt.Before(q.From) {
			break
		}
		if matches(r, &q) {
			out = append(out, r.Clone())
		}
	}
	return out, nil
}

func matches(r *usage.Record, q *usage.RecordQuery) bool {
	return (q.KeyID == "" || r.KeyID == q.KeyID) && (q.Model == "" || r.Model == q.Model) &&
		(q.Endpoint == "" || r.Endpoint == q.Endpoint) &&
		(q.From.IsZero() || !r.CreatedAt.Before(q.From)) && (q.To.IsZero() || r.CreatedAt.Before(q.To))
}

// ScanUsage implements usage.Store.
func (s *Store) ScanUsage(_ context.Context, q usage.RecordQuery, fn func(*usage.Record) error) error {
	a := s.usage.acct(q.AccountID, false)
	if a == nil {
		return nil
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, r := range a.recs {
		if matches(r, &q) {
			c := r.Clone()
			if err := fn(&c); err != nil {
				return err
			}
		}
	}
	return nil
}

// UsageRollups implements usage.Store.
func (s *Store) UsageRollups(_ context.Context, q usage.RollupQuery) ([]usage.Rollup, bool, error) {
	a := s.usage.acct(q.AccountID, false)
	if a == nil {
		return nil, false, nil
	}
	lo, hi := dayAround(q.FromDay, -1), dayAround(q.ToDay, 1)
	a.mu.RLock()
	defer a.mu.RUnlock()
	var out []usage.Rollup
	other := false
	for k, ro := range a.rollups {
		if k.tz != q.TimeZone {
			other = other || (k.day >= lo && k.day <= hi)
			continue
		}
		if k.day < q.FromDay || k.day > q.ToDay || (q.KeyID != "" && k.key != q.KeyID) ||
			(q.Model != "" && k.model != q.Model) || (q.Endpoint != "" && k.endpoint != q.Endpoint) {
			continue
		}
		out = append(out, *ro)
	}
	return out, other, nil
}

// dayAround returns the day n days from day ("2006-01-02"), or day itself
// if it does not parse.
func dayAround(day string, n int) string {
	t, err := time.Parse(time.DateOnly, day)
	if err != nil {
		return day
	}
	return t.AddDate(0, 0, n).Format(time.DateOnly)
}

// DeleteUsageBefore implements usage.Store.
func (s *Store) DeleteUsageBefore(_ context.Context, t time.Time) (int, error) {
	n := 0
	for _, a := range s.usage.all() {
		a.mu.Lock()
		keep := a.recs[:0]
		for _, r := range a.recs {
			if r.CreatedAt.Before(t) {
				delete(a.byID, r.ID)
				*r = usage.Record{} // its slab lives on until all its records go
				n++
				continue
			}
			keep = append(keep, r)
		}
		clear(a.recs[len(keep):])
		a.recs = keep
		a.mu.Unlock()
	}
	return n, nil
}
