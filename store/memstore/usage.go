package memstore

import (
	"context"
	"errors"
	"hash/maphash"
	"maps"
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
	seed  maphash.Seed
	mask  uint32 // for the indexes (see strIndex)
}

// usageAcct is one account's usage. Records and meter ops are packed rows
// without pointers (see pack.go).
type usageAcct struct {
	mu      sync.RWMutex
	id      string            // the account
	strs    arena             // record strings; rebuilt by compact
	recLog  chunkLog[precord] // rows of deleted records stay until compact
	recs    []int32           // live recLog rows by (CreatedAt, ID) ascending
	byID    strIndex          // record ID → live recLog row
	meta    map[int32]map[string]string
	dead    int // deleted rows still in recLog
	rollups map[rollupKey]*usage.Rollup
	opStrs  arena          // meter op strings
	ops     strIndex       // idempotency key → opLog row
	opLog   chunkLog[pmop] // the op of a rolled-back claim stays, unindexed
	tx      usageTx        // reused by every meter request under mu
}

// precord is a usage.Record without pointers (its AccountID is the
// account's; metadata, rare, is kept aside in usageAcct.meta).
type precord struct {
	id, key, auth, endpoint, method, model, errType, errMsg sref
	status                                                  int64
	respTime, reqBytes, respBytes                           int64
	prompt, completion, units, cached                       int64
	upstream, cost                                          pamt
	created                                                 int64
}

// pmop is a usage.MeterOp and the key it was claimed under.
type pmop struct {
	key, recordID, holdID sref
	fp                    credits.Fingerprint
	created               int64
}

type (
	recKeys usageAcct
	mopKeys usageAcct
)

func (a *recKeys) keyAt(i int32) string { return a.strs.get(a.recLog.at(int(i)).id) }
func (a *mopKeys) keyAt(i int32) string { return a.opStrs.get(a.opLog.at(int(i)).key) }

func (a *usageAcct) packRecord(r *usage.Record) precord {
	s := &a.strs
	return precord{
		id: s.put(r.ID), key: s.put(r.KeyID), auth: s.put(r.AuthSource), endpoint: s.put(r.Endpoint),
		method: s.put(r.Method), model: s.put(r.Model), errType: s.put(r.ErrorType), errMsg: s.put(r.ErrorMessage),
		status: int64(r.StatusCode), respTime: int64(r.ResponseTime), reqBytes: r.RequestBytes, respBytes: r.ResponseBytes,
		prompt: r.PromptTokens, completion: r.CompletionTokens, units: r.Units, cached: r.CachedUnits,
		upstream: s.putAmount(r.UpstreamCost), cost: s.putAmount(r.Cost), created: packTime(r.CreatedAt),
	}
}

// record unpacks row i; its strings point into the arena and its metadata
// is a copy.
func (a *usageAcct) record(i int32) usage.Record {
	p, s := a.recLog.at(int(i)), &a.strs
	r := usage.Record{
		ID: s.get(p.id), AccountID: a.id, KeyID: s.get(p.key), AuthSource: s.get(p.auth), Endpoint: s.get(p.endpoint),
		Method: s.get(p.method), Model: s.get(p.model), StatusCode: int(p.status), ResponseTime: time.Duration(p.respTime),
		RequestBytes: p.reqBytes, ResponseBytes: p.respBytes, PromptTokens: p.prompt, CompletionTokens: p.completion,
		Units: p.units, CachedUnits: p.cached, UpstreamCost: s.amount(p.upstream), Cost: s.amount(p.cost),
		ErrorType: s.get(p.errType), ErrorMessage: s.get(p.errMsg), CreatedAt: unpackTime(p.created),
	}
	if m := a.meta[i]; m != nil {
		r.Metadata = maps.Clone(m)
	}
	return r
}

// before reports whether row i sorts before (created, id).
func (a *usageAcct) before(i int32, created int64, id string) bool {
	p := a.recLog.at(int(i))
	if p.created != created {
		return p.created < created
	}
	return a.strs.get(p.id) < id
}

// addRecord stores a record that is not stored yet.
func (a *usageAcct) addRecord(r *usage.Record) {
	p := a.packRecord(r)
	row := int32(a.recLog.add(&p))
	if len(r.Metadata) > 0 {
		if a.meta == nil {
			a.meta = make(map[int32]map[string]string)
		}
		a.meta[row] = maps.Clone(r.Metadata)
	}
	a.byID.put((*recKeys)(a), r.ID, row)
	if n := len(a.recs); n == 0 || a.before(a.recs[n-1], p.created, r.ID) {
		a.recs = append(a.recs, row)
		return
	}
	i, _ := slices.BinarySearchFunc(a.recs, row, func(x, _ int32) int {
		if a.before(x, p.created, r.ID) {
			return -1
		}
		return 1
	})
	a.recs = slices.Insert(a.recs, i, row)
}

// compact rewrites the records without the deleted rows, once those are
// the majority, so that retention gives memory back.
func (a *usageAcct) compact() {
	if a.dead <= len(a.recs) {
		return
	}
	old := &usageAcct{id: a.id, strs: a.strs, recLog: a.recLog, meta: a.meta}
	live := a.recs
	a.strs, a.recLog, a.recs, a.meta, a.dead = arena{}, chunkLog[precord]{}, make([]int32, 0, len(live)), nil, 0
	a.byID = newStrIndex(a.byID.seed, a.byID.mask)
	for _, i := range live {
		r := old.record(i)
		a.addRecord(&r)
	}
}

type rollupKey struct{ tz, day, model, key, endpoint string }

func newUsageData(seed maphash.Seed) *usageData {
	return &usageData{accts: make(map[string]*usageAcct), seed: seed, mask: ^uint32(0)}
}

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
		a = &usageAcct{id: id, byID: newStrIndex(u.seed, u.mask), ops: newStrIndex(u.seed, u.mask), rollups: make(map[rollupKey]*usage.Rollup)}
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
	op, rec lookup // the last meter op and record looked up (see memTx)
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
	a := t.ua
	if i, ok := t.op.get(&a.ops, (*mopKeys)(a), key); ok {
		return a.meterOp(i), false, nil
	}
	p := pmop{key: a.opStrs.put(key), recordID: a.opStrs.put(op.RecordID), holdID: a.opStrs.put(op.HoldID),
		fp: op.Fingerprint, created: packTime(op.CreatedAt)}
	row := int32(a.opLog.add(&p))
	a.ops.put((*mopKeys)(a), key, row)
	t.op.set(key, row)
	t.claimed, t.didClm = key, true
	return op, true, nil
}

func (a *usageAcct) meterOp(i int32) usage.MeterOp {
	p, s := a.opLog.at(int(i)), &a.opStrs
	return usage.MeterOp{Fingerprint: p.fp, RecordID: s.get(p.recordID), HoldID: s.get(p.holdID), CreatedAt: unpackTime(p.created)}
}

func (t *usageTx) UsageRecord(_ context.Context, _, id string, createdAt time.Time) (usage.Record, bool, error) {
	i, ok := t.rec.get(&t.ua.byID, (*recKeys)(t.ua), id)
	if !ok || t.ua.recLog.at(int(i)).created != packTime(createdAt) {
		return usage.Record{}, false, nil
	}
	return t.ua.record(i), true, nil
}

func (t *usageTx) AddUsage(_ context.Context, r *usage.Record, tz, day string) error {
	a := t.ua
	if _, dup := t.rec.get(&a.byID, (*recKeys)(a), r.ID); dup {
		return usage.ErrDuplicateRecord
	}
	a.addRecord(r)
	t.rec = lookup{}
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
	t := &ua.tx
	*t = usageTx{s: s, ua: ua, acctID: r.Record.AccountID, now: now}
	if _, replay := t.op.get(&ua.ops, (*mopKeys)(ua), r.IdempotencyKey); !replay {
		if _, dup := t.rec.get(&ua.byID, (*recKeys)(ua), r.Record.ID); dup {
			// Checked before ApplyMeter: memory has no rollback for the
			// charge that would precede the failing insert.
			return usage.MeterOutcome{Err: usage.ErrDuplicateRecord}
		}
	}
	defer t.unlock()
	out, err := usage.ApplyMeter(ctx, t, now, r)
	if err != nil {
		out = usage.MeterOutcome{Err: err}
	}
	if out.Err != nil && t.didClm {
		ua.ops.del((*mopKeys)(ua), t.claimed) // the only write that precedes a failure
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
		after := packTime(q.AfterTime)
		i, _ = slices.BinarySearchFunc(a.recs, after, func(x int32, _ int64) int {
			if a.before(x, after, q.AfterID) {
				return -1
			}
			return 1
		})
	}
	var out []usage.Record
	for i--; i >= 0 && len(out) < q.Limit; i-- {
		if !q.From.IsZero() && a.recLog.at(int(a.recs[i])).created < q.From.UnixNano() {
			break
		}
		if r := a.record(a.recs[i]); matches(&r, &q) {
			out = append(out, r)
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
	for _, i := range a.recs {
		if r := a.record(i); matches(&r, &q) {
			if err := fn(&r); err != nil {
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
		for _, i := range a.recs {
			if unpackTime(a.recLog.at(int(i)).created).Before(t) {
				a.byID.del((*recKeys)(a), a.strs.get(a.recLog.at(int(i)).id))
				delete(a.meta, i)
				a.dead++
				n++
				continue
			}
			keep = append(keep, i)
		}
		a.recs = keep
		a.compact()
		a.mu.Unlock()
	}
	return n, nil
}
