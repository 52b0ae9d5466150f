package usage

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/groupcommit"
	"github.com/keyledger/keyledger/internal/id"
	"github.com/keyledger/keyledger/internal/norm"
)

// Options configure a Service. nil and the zero value give the defaults.
type Options struct {
	// Now is the clock (time.Now by default).
	Now func() time.Time
	// IDPrefix starts record IDs ("log_" by default, as OpenRush shows).
	IDPrefix string
	// Credits charges metered records: Meter builds each debit, settle or
	// release through it (credits.Service.PrepareDebit and friends) and
	// the store applies it in the record's transaction. Without it, Meter
	// records only what charges nothing and returns ErrNoLedger otherwise.
	// It must run over the same store as the usage Service.
	Credits *credits.Service
	// MaxBatch bounds the requests of one group commit (512 by default); 1
	// disables group commit. It applies only to stores that group-commit
	// (see Store).
	MaxBatch int
	// MaxWait is how long a group commit waits for more requests once the
	// queue is empty (0 by default: commit as soon as the writer is free;
	// batches still form from the requests that arrive during a commit).
	MaxWait time.Duration
	// Logger receives failures that have no caller to return to
	// (slog.Default if nil).
	Logger *slog.Logger
}

const (
	defaultMaxBatch = 512
	maxIDLen        = 128
	maxKeyLen       = 255
	maxFieldLen     = 255
	maxMessageLen   = 4096
	maxDayRange     = 3660 // days a Summary may span
	// DefaultListLimit is the page size a host should pass when its client
	// gave none (OpenRush's default of 50); List itself clamps to 1..500.
	DefaultListLimit = norm.DefaultPageLimit
	// MaxListLimit is the largest page List returns.
	MaxListLimit = norm.MaxPageLimit
)

func (o *Options) withDefaults() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.IDPrefix == "" {
		r.IDPrefix = "log_"
	}
	if r.MaxBatch == 0 {
		r.MaxBatch = defaultMaxBatch
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	if r.MaxBatch < 0 || r.MaxWait < 0 {
		return r, fmt.Errorf("%w: negative batch size or wait", ErrInvalidOptions)
	}
	if len(r.IDPrefix) > 32 || !utf8.ValidString(r.IDPrefix) {
		return r, fmt.Errorf("%w: ID prefix %q", ErrInvalidOptions, r.IDPrefix)
	}
	return r, nil
}

// Service meters usage: it records requests, charges them on the credits
// ledger in the same transaction, and answers usage queries. It is safe for
// concurrent use. Call Close when done.
type Service struct {
	store  Store
	opt    Options
	ids    *id.Generator
	rec    *groupcommit.Committer[MeterRequest, MeterOutcome] // nil: requests go straight to the store
	closed atomic.Bool
	stats  recorderCounters
	zones  sync.Map // time zone name → *time.Location
	ones   sync.Pool
	day    atomic.Pointer[dayCache] // the last day computed, to reuse its string
}

// dayCache is one local day: [from, to) in Unix nanoseconds in loc.
type dayCache struct {
	loc      *time.Location
	from, to int64
	day      string
}

// dayOf is Day(t, loc), reusing the string of the last day asked for: most
// records of a process fall on the same local day.
func (s *Service) dayOf(t time.Time, loc *time.Location) string {
	n := t.UnixNano()
	if c := s.day.Load(); c != nil && c.loc == loc && n >= c.from && n < c.to {
		return c.day
	}
	day := Day(t, loc)
	y, m, d := t.In(loc).Date()
	from := time.Date(y, m, d, 0, 0, 0, 0, loc)
	to := time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	// Cache only a day whose bounds are unambiguous (a zone may skip or
	// repeat its midnight on a transition day).
	if Day(from, loc) == day && Day(to.Add(-1), loc) == day && Day(to, loc) != day && from.UnixNano() <= n && n < to.UnixNano() {
		s.day.Store(&dayCache{loc: loc, from: from.UnixNano(), to: to.UnixNano(), day: day})
	}
	return day
}

type oneMeter struct {
	req [1]MeterRequest
	res [1]MeterOutcome
}

// NewService returns a Service over st. opts may be nil. It returns
// ErrInvalidOptions for a bad configuration.
func NewService(st Store, opts *Options) (*Service, error) {
	if st == nil {
		return nil, fmt.Errorf("%w: nil store", ErrInvalidOptions)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Service{store: st, opt: o, ids: id.NewGenerator(o.Now)}
	s.ones.New = func() any { return new(oneMeter) }
	if gc, ok := st.(interface{ UsageGroupCommit() bool }); ok && gc.UsageGroupCommit() && o.MaxBatch > 1 {
		// The loop runs each committed request's post-commit work (the
		// ledger's auto-recharge) itself, so it is never lost to a caller
		// that stopped waiting.
		s.rec = groupcommit.New(groupcommit.Config[MeterRequest, MeterOutcome]{
			Ctx: context.Background(), Apply: st.MeterUsage, After: s.afterCommit, Failed: s.notApplied, Now: o.Now,
			MaxBatch: o.MaxBatch, MaxWait: o.MaxWait, Queue: o.MaxBatch * 2, Stats: &s.stats.batch,
		})
	}
	return s, nil
}

// RecorderStats are a Service's metering counters since it was created.
type RecorderStats struct {
	// Metered counts successful Meter calls (replays included); Replays
	// the replays among them; Failures the calls that returned an error.
	Metered, Replays, Failures int64
	// Batches and BatchedItems count group commits and the requests they
	// carried; MaxBatch is the largest batch so far. They stay zero on a
	// store without group commit.
	Batches, BatchedItems, MaxBatch int64
	// QueueDepth is the number of requests waiting for the next batch now.
	QueueDepth int64
}

type recorderCounters struct {
	metered, replays, failures atomic.Int64
	batch                      groupcommit.Stats
}

// Stats returns the Service's counters.
func (s *Service) Stats() RecorderStats {
	st := RecorderStats{
		Metered: s.stats.metered.Load(), Replays: s.stats.replays.Load(), Failures: s.stats.failures.Load(),
		Batches: s.stats.batch.Batches.Load(), BatchedItems: s.stats.batch.Items.Load(), MaxBatch: s.stats.batch.MaxBatch.Load(),
	}
	if s.rec != nil {
		st.QueueDepth = int64(s.rec.QueueDepth())
	}
	return st
}

// Close stops accepting Meter calls (they return ErrClosed) and commits
// the ones already queued before it returns; every queued caller gets its
// result. It returns ctx.Err() if ctx ends first (the flush still
// completes in the background). It closes neither the store nor the
// credits Service.
func (s *Service) Close(ctx context.Context) error {
	if !s.closed.CompareAndSwap(false, true) || s.rec == nil {
		return nil
	}
	done := make(chan struct{})
	go func() {
		s.rec.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// MeterParams are the inputs of Meter.
type MeterParams struct {
	// Record is the request to meter. AccountID is required; ID and
	// CreatedAt are filled in when zero. Cost is what to charge, as priced
	// by the caller (PriceBook.Rate: the facade prices every record it
	// meters; a host using the Service alone calls Rate before Meter).
	// Records that are not billable (Record.Billable) are stored with zero
	// cost whatever Cost says.
	Record Record
	// HoldID, if set, is the credits hold this request was reserved under:
	// Meter settles it with the cost (freeing the rest), or releases it for
	// a record that is not billable. "" charges the cost as a plain debit.
	HoldID string
	// IdempotencyKey is required and scoped per account: a replay returns
	// the first result and writes nothing; the same key with a different
	// request is ErrIdempotencyConflict. A plain debit carries the same key
	// in the ledger.
	IdempotencyKey string
	// TimeZone is the account's IANA zone; it decides the record's rollup
	// day ("UTC" if empty). Summary and Counters read rollups of one zone
	// quickly; see Summary.
	TimeZone string
	// Overrun decides what happens to cost that funds (with overdraft) or
	// the monthly cap do not cover, for work already delivered. Settling a
	// hold: OverrunDebt (also zero) charges it all, into debt;
	// OverrunWriteOff charges what funds allow and reports the rest as
	// Shortfall. A plain debit (no HoldID): zero refuses it
	// (credits.ErrInsufficientFunds, ErrMonthlyLimit, nothing written);
	// OverrunDebt and OverrunWriteOff charge it like a settlement would.
	Overrun credits.Overrun
}

// MeterResult is the result of Meter.
type MeterResult struct {
	// Record is the record as stored; its Cost is what was charged.
	Record Record `json:"record"`
	// Entry is the ledger's debit entry (ID "" when nothing was charged).
	Entry credits.Entry `json:"entry"`
	// Charged is what the ledger took; Shortfall is the part of the cost
	// that a write-off (credits.OverrunWriteOff) did not charge.
	Charged   credits.Amount `json:"charged"`
	Shortfall credits.Amount `json:"shortfall"`
	// Replayed reports a replay of an earlier request with the same key.
	Replayed bool `json:"replayed"`
}

// Meter records one request and charges its cost in one backend
// transaction: both or neither. A debit that fails (credits
// ErrInsufficientFunds, ErrMonthlyLimit, ErrUnknownAccount, …) fails Meter
// with that error and writes no record; settling a hold never fails for
// lack of funds (see MeterParams.Overrun). Meter
// returns ErrInvalidRecord, ErrInvalidIdempotencyKey, ErrInvalidTimeZone,
// ErrUnknownModel or ErrUnknownOperation (pricing), ErrNoLedger,
// ErrIdempotencyConflict, ErrDuplicateRecord, ErrClosed, and the credits
// sentinels of the spend, writing nothing on error.
//
// Concurrent calls are group-committed on stores that support it; each
// call returns after its own commit. If ctx ends while the call waits,
// Meter returns ctx.Err() and the request may still be applied (and then
// its auto-recharge still starts): retry with the same idempotency key to
// learn the outcome.
func (s *Service) Meter(ctx context.Context, p MeterParams) (MeterResult, error) {
	out, err := s.meter(ctx, p)
	if err == nil {
		err = out.Err
	}
	if err != nil {
		s.stats.failures.Add(1)
		return MeterResult{}, err
	}
	s.stats.metered.Add(1)
	if out.Replayed {
		s.stats.replays.Add(1)
	}
	return MeterResult{Record: out.Record, Entry: out.Entry, Charged: out.Charged, Shortfall: out.Shortfall, Replayed: out.Replayed}, nil
}

func (s *Service) meter(ctx context.Context, p MeterParams) (MeterOutcome, error) {
	if s.closed.Load() {
		return MeterOutcome{}, ErrClosed
	}
	now := s.opt.Now()
	req, err := s.prepare(p, now)
	if err != nil {
		return MeterOutcome{}, err
	}
	var out MeterOutcome
	if s.rec != nil {
		out, err = s.rec.Do(ctx, req, ErrClosed)
	} else {
		one := s.ones.Get().(*oneMeter)
		one.req[0] = req
		err = s.store.MeterUsage(ctx, now, one.req[:], one.res[:])
		out = one.res[0]
		*one = oneMeter{}
		s.ones.Put(one)
		if err == nil {
			s.afterCommit(req, out)
		} else {
			s.notApplied(req) // the call returned: applied or not, it is over
		}
	}
	return out, err
}

// notApplied reports a request whose transaction failed, or that never
// reached the store, to the ledger (credits.Service.AbortSpend).
func (s *Service) notApplied(req MeterRequest) {
	if s.opt.Credits != nil {
		s.opt.Credits.AbortSpend(req.Spend)
	}
}

// afterCommit reports a request of a committed transaction to the ledger:
// its spend committed (AfterSpend: the auto-recharge of a debit or
// settlement that crossed the threshold, the end of a process hold; a
// replay carries the settled hold and entry, as the first commit may have
// been reported as a failure), or it failed and was rolled back to its
// mark (AbortSpend). The group commit calls it for every request, whether
// or not the caller still waits.
func (s *Service) afterCommit(req MeterRequest, out MeterOutcome) {
	if s.opt.Credits == nil {
		return
	}
	if out.Err != nil {
		s.opt.Credits.AbortSpend(req.Spend)
		return
	}
	s.opt.Credits.AfterSpend(req.Spend, out.Spend)
}

// prepare validates p and builds the store request.
func (s *Service) prepare(p MeterParams, now time.Time) (MeterRequest, error) {
	r := p.Record
	if err := validRecord(&r); err != nil {
		return MeterRequest{}, err
	}
	if p.IdempotencyKey == "" || len(p.IdempotencyKey) > maxKeyLen || !utf8.ValidString(p.IdempotencyKey) {
		return MeterRequest{}, ErrInvalidIdempotencyKey
	}
	if len(p.HoldID) > maxIDLen {
		return MeterRequest{}, credits.ErrHoldNotFound
	}
	tz, loc, err := s.zone(p.TimeZone)
	if err != nil {
		return MeterRequest{}, err
	}
	req := MeterRequest{TimeZone: tz, IdempotencyKey: p.IdempotencyKey, Fingerprint: fingerprint(&r, p.HoldID, tz, p.Overrun)}
	if r.ID == "" {
		r.ID = s.ids.New(s.opt.IDPrefix)
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = now
	}
	r.CreatedAt = r.CreatedAt.UTC()
	if !r.PriceFrom.IsZero() {
		r.PriceFrom = r.PriceFrom.UTC()
	}
	req.Day = s.dayOf(r.CreatedAt, loc)
	if !r.Billable() {
		r.Cost, r.PriceFrom = credits.Amount{}, time.Time{}
	}
	req.Record = r
	spend, err := s.spendFor(&r, p.HoldID, p.IdempotencyKey, p.Overrun)
	if err != nil {
		return MeterRequest{}, err
	}
	req.Spend = spend
	return req, nil
}

// spendFor builds the ledger request of a record through the credits
// Service, or one of Kind 0 when nothing is charged or released.
func (s *Service) spendFor(r *Record, holdID, key string, ov credits.Overrun) (credits.SpendRequest, error) {
	if !r.Billable() && holdID == "" || r.Billable() && holdID == "" && r.Cost.IsZero() {
		return credits.SpendRequest{}, nil
	}
	led := s.opt.Credits
	if led == nil {
		return credits.SpendRequest{}, ErrNoLedger
	}
	if err := led.CheckSpendAmount(r.Cost); err != nil {
		return credits.SpendRequest{}, err
	}
	desc := r.Model
	if desc == "" {
		desc = r.Endpoint
	}
	var (
		sr  credits.SpendRequest
		err error
	)
	switch {
	case !r.Billable():
		sr, err = led.PrepareRelease(holdID)
	case holdID != "":
		sr, err = led.PrepareSettle(credits.SettleParams{HoldID: holdID, Actual: r.Cost, Reference: r.ID, Description: desc, Overrun: ov})
	default:
		sr, err = led.PrepareDebit(credits.DebitParams{AccountID: r.AccountID, KeyID: r.KeyID, Amount: r.Cost, Reference: r.ID, Description: desc, IdempotencyKey: key, Overrun: ov})
	}
	return sr, err
}

// zone returns the canonical name and location of an IANA zone name ("" is
// UTC), cached.
func (s *Service) zone(name string) (string, *time.Location, error) {
	if name == "" {
		name = "UTC"
	}
	if l, ok := s.zones.Load(name); ok {
		return name, l.(*time.Location), nil
	}
	loc, err := LoadZone(name)
	if err != nil {
		return "", nil, err
	}
	s.zones.Store(name, loc)
	return name, loc, nil
}

// LoadZone loads an IANA time zone by name for usage days, refusing
// "Local" and file-system tricks: ErrInvalidTimeZone.
func LoadZone(name string) (*time.Location, error) {
	if name == "" || name == "UTC" {
		return time.UTC, nil
	}
	if len(name) > 64 || strings.EqualFold(name, "local") || strings.Contains(name, "..") || strings.ContainsAny(name, "\\\x00") || strings.HasPrefix(name, "/") {
		return nil, fmt.Errorf("%w: %q", ErrInvalidTimeZone, name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %q", ErrInvalidTimeZone, name)
	}
	return loc, nil
}

// Day returns t's date in loc as "2006-01-02", the key of daily rollups.
func Day(t time.Time, loc *time.Location) string {
	var b [10]byte
	return string(t.In(loc).AppendFormat(b[:0], time.DateOnly))
}

func validRecord(r *Record) error {
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrInvalidRecord, what) }
	if !printable(r.AccountID, maxIDLen) || r.AccountID == "" {
		return bad("account ID must be 1-128 bytes of printable UTF-8")
	}
	if len(r.ID) > maxIDLen || !utf8.ValidString(r.ID) {
		return bad("ID")
	}
	for _, f := range []string{r.KeyID, r.AuthSource, r.Endpoint, r.Method, r.Model, r.ErrorType} {
		if len(f) > maxFieldLen || !utf8.ValidString(f) {
			return bad("text fields must be at most 255 bytes of UTF-8")
		}
	}
	if len(r.ErrorMessage) > maxMessageLen || !utf8.ValidString(r.ErrorMessage) {
		return bad("error message must be at most 4096 bytes of UTF-8")
	}
	if r.StatusCode < 0 || r.StatusCode > 999 || r.ResponseTime < 0 || r.RequestBytes < 0 || r.ResponseBytes < 0 ||
		r.PromptTokens < 0 || r.CompletionTokens < 0 || r.Units < 0 || r.CachedUnits < 0 {
		return bad("counts must not be negative")
	}
	if r.CachedUnits > max(r.Units, 1) {
		return bad("cached units exceed units")
	}
	if r.Units > maxCount {
		return bad("counts out of range")
	}
	if err := validTokens(r); err != nil {
		return err
	}
	if r.Cost.IsNegative() || r.UpstreamCost.IsNegative() {
		return bad("costs must not be negative")
	}
	if !r.PriceFrom.IsZero() && (r.PriceFrom.Year() < 1700 || r.PriceFrom.Year() >= 2200) {
		return bad("price_effective_from must be between 1700 and 2200")
	}
	if !r.CreatedAt.IsZero() && (r.CreatedAt.Year() < 1700 || r.CreatedAt.Year() >= 2200) {
		// Backends keep times as int64 unix nanoseconds (1677-2262).
		return bad("created_at must be between 1700 and 2200")
	}
	if err := norm.Metadata(r.Metadata); err != nil {
		return bad("metadata: " + err.Error())
	}
	r.Metadata = r.Clone().Metadata
	return nil
}

func printable(s string, n int) bool {
	if len(s) > n {
		return false
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f || c == utf8.RuneError {
			return false
		}
	}
	return true
}

// fingerprint is the SHA-256 of a meter request as the caller gave it:
// every record field, length-prefixed, amounts by value, metadata in key
// order, plus the hold, the time zone and the overrun policy (only when
// set, so that fingerprints stored before it existed still match).
func fingerprint(r *Record, holdID, tz string, ov credits.Overrun) [32]byte {
	var arr [512]byte
	b := append(arr[:0], 'u', 'm', 1)
	for _, f := range []string{r.ID, r.AccountID, r.KeyID, r.AuthSource, r.Endpoint, r.Method, r.Model,
		r.ErrorType, r.ErrorMessage, holdID, tz} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	for _, a := range [...]credits.Amount{r.Cost, r.UpstreamCost} {
		var txt [48]byte
		t, _ := a.AppendText(txt[:0])
		b = binary.AppendUvarint(b, uint64(len(t)))
		b = append(b, t...)
	}
	var created int64
	if !r.CreatedAt.IsZero() {
		created = r.CreatedAt.UnixNano()
	}
	for _, n := range []int64{int64(r.StatusCode), int64(r.ResponseTime), r.RequestBytes, r.ResponseBytes,
		r.PromptTokens, r.CompletionTokens, r.Units, r.CachedUnits, created} {
		b = binary.AppendVarint(b, n)
	}
	if len(r.Metadata) > 0 {
		keys := make([]string, 0, len(r.Metadata))
		for k := range r.Metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			b = binary.AppendUvarint(b, uint64(len(k)))
			b = append(b, k...)
			b = binary.AppendUvarint(b, uint64(len(r.Metadata[k])))
			b = append(b, r.Metadata[k]...)
		}
	}
	if ov != 0 {
		b = append(b, 'o', byte(ov))
	}
	if r.CachedPromptTokens != 0 || r.CacheWriteTokens != 0 || r.ReasoningTokens != 0 || !r.PriceFrom.IsZero() {
		var from int64
		if !r.PriceFrom.IsZero() {
			from = r.PriceFrom.UnixNano()
		}
		b = append(b, 't')
		for _, n := range [...]int64{r.CachedPromptTokens, r.CacheWriteTokens, r.ReasoningTokens, from} {
			b = binary.AppendVarint(b, n)
		}
	}
	return sha256.Sum256(b)
}
