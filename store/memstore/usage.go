package memstore

import (
	"context"
	"errors"
	"hash/maphash"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
	"github.com/keyledger/keyledger/usage"
	"github.com/keyledger/keyledger/usage/meter"
)

// usageData is the usage part of the db, kept per account. A meter
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
//
// A record's ID is kept in opStrs, not strs: the meter op that claimed the
// record holds the same ID for good (a replay after retention still needs
// it), so the record shares that copy, and compact keeps it.
type usageAcct struct {
	mu      sync.RWMutex
	id      string            // the account
	strs    recStrs           // what record rows refer to, but IDs; replaced by compact
	recLog  chunkLog[precord] // rows of deleted records stay until compact
	recs    []int32           // live recLog rows by (CreatedAt, ID) ascending
	byID    strIndex          // record ID → live recLog row
	meta    map[int32]map[string]string
	wide    map[int32]counts // rows whose counts do not fit precord's
	dead    int              // deleted rows still in recLog
	rollups map[rollupKey]*usage.Rollup
	opStrs  arena          // meter op strings and record IDs; never rebuilt
	ops     strIndex       // idempotency key → opLog row
	opLog   chunkLog[pmop] // the op of a rolled-back claim stays, unindexed
	tx      usageTx        // reused by every meter request under mu
}

// recStrs is what record rows refer to besides their IDs: the arena of
// their strings, their dims, and what is remembered for reuse. compact
// replaces it whole, so nothing remembered outlives what it points into.
type recStrs struct {
	arena
	dims       chunkLog[pdims]
	recentDims [8]int32 // dims rows + 1, most recently used first; 0 is none
	// Recent values of each field, so that a new dims row or an error
	// message shares the strings of earlier ones.
	key, auth, endpoint, method, model, errType, errMsg recent
}

// pdims is the low-cardinality part of a record: who called what, how
// and with which outcome. Consecutive records mostly share it, so a record
// row holds only its number.
// The status code and priceFrom (the record's PriceFrom, packed: one per
// model price version) change as rarely, so they live here too.
type pdims struct {
	key, auth, endpoint, method, model, errType sref
	priceFrom                                   int64
	status                                      int32
}

// precord is a usage.Record without pointers (its AccountID is the
// account's; metadata, rare, is kept aside in usageAcct.meta). id is in
// usageAcct.opStrs, the other strings in usageAcct.strs. The counts take
// 32 bits each but the status code, which is the dims row's; a record with
// one that does not fit (a 5 GB response) has them all in usageAcct.wide
// instead, and zero here.
type precord struct {
	id, errMsg        sref
	created, respTime int64
	upstream, cost    pamt
	dims              int32 // row in strs.dims
	small             [nCounts - 1]uint32
}

// counts are a record's integer fields other than its response time, in
// the order of the consts below.
type counts [nCounts]int64

const (
	cStatus = iota
	cReqBytes
	cRespBytes
	cPrompt
	cCompletion
	cUnits
	cCached
	cCachedPrompt
	cCacheWrite
	cReasoning
	nCounts
)

func countsOf(r *usage.Record) counts {
	return counts{int64(r.StatusCode), r.RequestBytes, r.ResponseBytes, r.PromptTokens, r.CompletionTokens, r.Units, r.CachedUnits,
		r.CachedPromptTokens, r.CacheWriteTokens, r.ReasoningTokens}
}

// pmop is a meter.MeterOp and the key it was claimed under.
type pmop struct {
	key, recordID, holdID sref
	fp                    [32]byte
	created               int64
}

type (
	recKeys usageAcct
	mopKeys usageAcct
)

func (a *recKeys) keyAt(i int32) string { return a.opStrs.get(a.recLog.at(int(i)).id) }
func (a *mopKeys) keyAt(i int32) string { return a.opStrs.get(a.opLog.at(int(i)).key) }

// putDims returns the dims row of r: one of the recently used ones if it
// matches, else a new row.
func (s *recStrs) putDims(r *usage.Record) int32 {
	from := packTime(r.PriceFrom)
	for i, n := range s.recentDims {
		if n == 0 {
			break
		}
		d := s.dims.at(int(n - 1))
		if s.holds(d.key, r.KeyID) && s.holds(d.auth, r.AuthSource) && s.holds(d.endpoint, r.Endpoint) &&
			s.holds(d.method, r.Method) && s.holds(d.model, r.Model) && s.holds(d.errType, r.ErrorType) && d.priceFrom == from &&
			d.status == int32(r.StatusCode) {
			copy(s.recentDims[1:i+1], s.recentDims[:i])
			s.recentDims[0] = n
			return n - 1
		}
	}
	d := pdims{
		key: s.putRecent(&s.key, r.KeyID), auth: s.putRecent(&s.auth, r.AuthSource),
		endpoint: s.putRecent(&s.endpoint, r.Endpoint), method: s.putRecent(&s.method, r.Method),
		model: s.putRecent(&s.model, r.Model), errType: s.putRecent(&s.errType, r.ErrorType), priceFrom: from,
		status: int32(r.StatusCode), // 0-999 (usage validates it)
	}
	row := int32(s.dims.add(&d))
	copy(s.recentDims[1:], s.recentDims[:len(s.recentDims)-1])
	s.recentDims[0] = row + 1
	return row
}

// packRecord packs r, whose ID is already stored at id in opStrs; wide
// reports whether its counts must be kept aside.
func (a *usageAcct) packRecord(r *usage.Record, id sref) (p precord, wide bool) {
	s := &a.strs
	p = precord{
		id: id, errMsg: s.putRecent(&s.errMsg, r.ErrorMessage), created: packTime(r.CreatedAt),
		respTime: int64(r.ResponseTime), upstream: s.putAmount(r.UpstreamCost), cost: s.putAmount(r.Cost),
		dims: s.putDims(r),
	}
	c := countsOf(r)
	for i, n := range c[cStatus+1:] {
		if n < 0 || n > math.MaxUint32 {
			p.small = [nCounts - 1]uint32{}
			return p, true
		}
		p.small[i] = uint32(n)
	}
	return p, false
}

// record unpacks row i; its strings point into the arenas and its metadata
// is a copy.
func (a *usageAcct) record(i int32) usage.Record {
	p, s := a.recLog.at(int(i)), &a.strs
	d := s.dims.at(int(p.dims))
	var c counts
	if w, ok := a.wide[i]; ok {
		c = w
	} else {
		c[cStatus] = int64(d.status)
		for j, n := range p.small {
			c[cStatus+1+j] = int64(n)
		}
	}
	r := usage.Record{
		ID: a.opStrs.get(p.id), AccountID: a.id, KeyID: s.get(d.key), AuthSource: s.get(d.auth), Endpoint: s.get(d.endpoint),
		Method: s.get(d.method), Model: s.get(d.model), StatusCode: int(c[cStatus]), ResponseTime: time.Duration(p.respTime),
		RequestBytes: c[cReqBytes], ResponseBytes: c[cRespBytes], PromptTokens: c[cPrompt], CompletionTokens: c[cCompletion],
		Units: c[cUnits], CachedUnits: c[cCached], UpstreamCost: s.amount(p.upstream), Cost: s.amount(p.cost),
		ErrorType: s.get(d.errType), ErrorMessage: s.get(p.errMsg), CreatedAt: unpackTime(p.created),
		CachedPromptTokens: c[cCachedPrompt], CacheWriteTokens: c[cCacheWrite], ReasoningTokens: c[cReasoning],
		PriceFrom: unpackTime(d.priceFrom),
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
	return a.opStrs.get(p.id) < id
}

// addRecord stores a record that is not stored yet, whose ID is at id in
// opStrs.
func (a *usageAcct) addRecord(r *usage.Record, id sref) {
	p, wide := a.packRecord(r, id)
	row := int32(a.recLog.add(&p))
	if wide {
		if a.wide == nil {
			a.wide = make(map[int32]counts)
		}
		a.wide[row] = countsOf(r)
	}
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
	old := &usageAcct{id: a.id, strs: a.strs, recLog: a.recLog, meta: a.meta, wide: a.wide, opStrs: a.opStrs}
	live := a.recs
	a.strs, a.recLog, a.recs, a.meta, a.wide, a.dead = recStrs{}, chunkLog[precord]{}, make([]int32, 0, len(live)), nil, nil, 0
	a.byID = newStrIndex(a.byID.seed, a.byID.mask)
	for _, i := range live {
		r := old.record(i)
		a.addRecord(&r, old.recLog.at(int(i)).id) // the ID stays where it is
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

// usageTx is a meter.Tx over one locked usage account; the ledger account
// of the record is locked on first use.
type usageTx struct {
	s       *db
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

func (t *usageTx) State(ctx context.Context, id string) (*ledger.AccountState, error) {
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

func (t *usageTx) Op(ctx context.Context, acct, key string) (ledger.OpRecord, bool, error) {
	mt, err := t.bind()
	if err != nil {
		return ledger.OpRecord{}, false, err
	}
	return mt.Op(ctx, acct, key)
}

func (t *usageTx) ClaimOp(ctx context.Context, acct, key string, rec ledger.OpRecord) (ledger.OpRecord, bool, error) {
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

func (t *usageTx) ClaimMeter(_ context.Context, _, key string, op meter.MeterOp) (meter.MeterOp, bool, error) {
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

func (a *usageAcct) meterOp(i int32) meter.MeterOp {
	p, s := a.opLog.at(int(i)), &a.opStrs
	return meter.MeterOp{Fingerprint: p.fp, RecordID: s.get(p.recordID), HoldID: s.get(p.holdID), CreatedAt: unpackTime(p.created)}
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
	var id sref // shared with the meter op that claimed the record
	if c := t.op; c.valid && c.found {
		id = a.opLog.at(int(c.row)).recordID
	}
	a.addRecord(r, a.opStrs.reuse(r.ID, id))
	t.rec = lookup{}
	k := rollupKey{tz: tz, day: day, model: r.Model, key: r.KeyID, endpoint: r.Endpoint}
	ro := a.rollups[k]
	if ro == nil {
		v := r.Rollup(tz, day)
		ro = &v
		a.rollups[k] = ro
	}
	ro.Add(r)
	return nil
}

// MeterUsage implements usage.Store: each request under its account's
// locks, one after the other.
func (s *db) MeterUsage(ctx context.Context, now time.Time, reqs []usage.MeterRequest, res []usage.MeterOutcome) error {
	for i := range reqs {
		res[i] = s.meterOne(ctx, now, &reqs[i])
	}
	return nil
}

func (s *db) meterOne(ctx context.Context, now time.Time, r *usage.MeterRequest) usage.MeterOutcome {
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
	out, err := meter.ApplyMeter(ctx, t, now, r)
	if err != nil {
		out = usage.MeterOutcome{Err: err}
	}
	if out.Err != nil && t.didClm {
		ua.ops.del((*mopKeys)(ua), t.claimed) // the only write that precedes a failure
	}
	return out
}

// UsageRecords implements usage.Store.
func (s *db) UsageRecords(_ context.Context, q usage.RecordQuery) ([]usage.Record, error) {
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
func (s *db) ScanUsage(_ context.Context, q usage.RecordQuery, fn func(*usage.Record) error) error {
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
func (s *db) UsageRollups(_ context.Context, q usage.RollupQuery) ([]usage.Rollup, bool, error) {
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
func (s *db) DeleteUsageBefore(_ context.Context, t time.Time) (int, error) {
	n := 0
	for _, a := range s.usage.all() {
		a.mu.Lock()
		keep := a.recs[:0]
		for _, i := range a.recs {
			if unpackTime(a.recLog.at(int(i)).created).Before(t) {
				a.byID.del((*recKeys)(a), a.opStrs.get(a.recLog.at(int(i)).id))
				delete(a.meta, i)
				delete(a.wide, i)
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
