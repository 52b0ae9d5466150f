// Package storeotel wraps a store.Store with OpenTelemetry instrumentation:
// every store operation is timed into a latency histogram by operation and
// backend, traced as a span (a child of the caller's span), and the ledger
// writes it carries are counted by entry type and amount.
//
// keyledger.New wraps its store with this package when the host passes a
// MeterProvider or TracerProvider in keyledger.Options; a host that uses the
// domain services without the facade wraps the store itself:
//
//	st = storeotel.New(st, &storeotel.Options{MeterProvider: mp, TracerProvider: tp})
//
// Metrics (OpenTelemetry names; the Prometheus exporter writes them with
// underscores and unit suffixes, e.g. keyledger_store_operation_duration_seconds):
//
//	keyledger.store.operation.duration  histogram, s         operation, backend, result
//	keyledger.store.batch.size          histogram, {request} operation, backend
//	keyledger.credits.entries           counter, {entry}     type, backend
//	keyledger.credits.entry.amount      counter, {credit}    type, unit, backend (absolute amounts)
//
// result is ok, not_found, rejected (a domain answer such as an idempotency
// conflict or insufficient funds), canceled (the context ended) or error
// (a system failure). Spans are named "store.<Operation>" and carry the
// account, key and hold IDs the call names — never a secret, a password
// hash or a key hash. Attributes are bounded: no metric has a per-account or
// per-key label.
//
// The wrapper forwards the optional capabilities the services look for
// (credits and usage group commit, apikey.ChangeNotifier), so the services
// take the same paths as over the wrapped store. Batched writes (group
// commits) run on the services' own goroutines without a caller's span: they
// are measured but traced only when Options.RootSpans is set.
package storeotel

import (
	"context"
	"errors"
	"math"
	"reflect"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/storewrap"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/usage"
)

var (
	_ store.Store                          = (*Store)(nil)
	_ interface{ GroupCommit() bool }      = (*Store)(nil)
	_ interface{ UsageGroupCommit() bool } = (*Store)(nil)
	_ apikey.ChangeNotifier                = (*Store)(nil)
)

// ScopeName is the instrumentation scope of the wrapper's meter and tracer.
const ScopeName = "github.com/keyledger/keyledger/store/storeotel"

// Options configure New. nil means defaults.
type Options struct {
	// MeterProvider receives the metrics; nil records none.
	MeterProvider metric.MeterProvider
	// TracerProvider receives the spans; nil records none.
	TracerProvider trace.TracerProvider
	// Backend names the backend in attributes ("memory", "sqlite",
	// "postgres", …); by default it is derived from the wrapped store's
	// package.
	Backend string
	// RootSpans also traces calls that have no span in their context (the
	// services' background work: group commits, last-used flushes, expiry
	// sweeps). Off by default: such spans would each start a trace of
	// their own.
	RootSpans bool
}

// Store is an instrumented store.Store. It is safe for concurrent use.
type Store struct {
	// the wrapped store (Inner; methods this package does not instrument,
	// Close, pass straight through) and the capabilities it has (group
	// commit, apikey.ChangeNotifier)
	storewrap.Base

	backend   string
	tracer    trace.Tracer // nil: no spans
	rootSpans bool

	// metrics; nil when no MeterProvider
	dur     metric.Float64Histogram
	batch   metric.Int64Histogram
	entries metric.Int64Counter
	amount  metric.Float64Counter

	// precomputed attribute sets
	// precomputed option slices: a variadic argument built at each call
	// would escape to the heap through the instrument's interface.
	opAttrs    [numOps][numResults][]metric.RecordOption
	batchAttrs [numOps][]metric.RecordOption
	backendKV  attribute.KeyValue
	entryCache sync.Map // entryKey → *entryAttrs
}

// New wraps st. opts may be nil (then the wrapper only forwards calls).
// It returns an error only if the MeterProvider refuses an instrument.
func New(st store.Store, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Backend == "" {
		o.Backend = BackendName(st)
	}
	s := &Store{Base: storewrap.Base{Store: st}, backend: o.Backend, rootSpans: o.RootSpans, backendKV: attribute.String("backend", o.Backend)}
	if o.TracerProvider != nil {
		s.tracer = o.TracerProvider.Tracer(ScopeName)
	}
	if o.MeterProvider != nil {
		m := o.MeterProvider.Meter(ScopeName)
		var err error
		if s.dur, err = m.Float64Histogram("keyledger.store.operation.duration", metric.WithUnit("s"),
			metric.WithDescription("Duration of keyledger store operations."),
			metric.WithExplicitBucketBoundaries(DurationBuckets...)); err != nil {
			return nil, err
		}
		if s.batch, err = m.Int64Histogram("keyledger.store.batch.size", metric.WithUnit("{request}"),
			metric.WithDescription("Requests per batched store write (group commit)."),
			metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)); err != nil {
			return nil, err
		}
		if s.entries, err = m.Int64Counter("keyledger.credits.entries", metric.WithUnit("{entry}"),
			metric.WithDescription("Ledger entries written, by type.")); err != nil {
			return nil, err
		}
		if s.amount, err = m.Float64Counter("keyledger.credits.entry.amount", metric.WithUnit("{credit}"),
			metric.WithDescription("Absolute amounts of the ledger entries written, by type and unit.")); err != nil {
			return nil, err
		}
		for op := range numOps {
			for r := range numResults {
				s.opAttrs[op][r] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(
					attribute.String("operation", opNames[op]), s.backendKV, attribute.String("result", resultNames[r])))}
			}
			s.batchAttrs[op] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("operation", opNames[op]), s.backendKV))}
		}
	}
	return s, nil
}

// DurationBuckets are the histogram bounds, in seconds, of keyledger's
// latency metrics: 1 µs to 10 s.
var DurationBuckets = []float64{
	0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// BackendName names st's backend for attributes: "memory", "sqlite" and
// "postgres" for keyledger's backends, else the store's package name. A
// wrapper with an Inner() store.Store method (storefault) is named after
// the store it wraps.
func BackendName(st store.Store) string {
	for range 8 {
		w, ok := st.(interface{ Inner() store.Store })
		if !ok {
			break
		}
		st = w.Inner()
	}
	if s, ok := st.(*Store); ok {
		return s.backend
	}
	t := reflect.TypeOf(st)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "unknown"
	}
	pkg := t.PkgPath()
	pkg = pkg[strings.LastIndexByte(pkg, '/')+1:]
	switch pkg {
	case "memstore":
		return "memory"
	case "sqlitestore":
		return "sqlite"
	case "pgstore":
		return "postgres"
	case "":
		return "unknown"
	}
	return pkg
}

// Backend returns the backend name the wrapper reports.
func (s *Store) Backend() string { return s.backend }

// op identifies a store operation.
type op uint8

const (
	opCreateAccount op = iota
	opAccount
	opAccountByEmail
	opUpdateAccount
	opListAccounts
	opPasswordHash
	opSetPasswordHash
	opCreateSession
	opSession
	opRevokeSession
	opRevokeSessions
	opDeleteExpiredSessions
	opCreateAPIKey
	opAPIKey
	opListAPIKeys
	opAPIKeyByHash
	opUpdateAPIKey
	opRotateAPIKey
	opTouchAPIKeys
	opOpenLedger
	opSetLedgerPolicy
	opLedgerAccount
	opLedgerCredit
	opLedgerEntries
	opLedgerBalanceAt
	opApplySpends
	opLedgerHold
	opExpireLedgers
	opSetKeyLimit
	opMeterUsage
	opUsageRecords
	opScanUsage
	opUsageRollups
	opDeleteUsageBefore
	numOps
)

var opNames = [numOps]string{
	"CreateAccount", "Account", "AccountByEmail", "UpdateAccount", "ListAccounts", "PasswordHash",
	"SetPasswordHash", "CreateSession", "Session", "RevokeSession", "RevokeSessions", "DeleteExpiredSessions",
	"CreateAPIKey", "APIKey", "ListAPIKeys", "APIKeyByHash", "UpdateAPIKey", "RotateAPIKey", "TouchAPIKeys",
	"OpenLedger", "SetLedgerPolicy", "LedgerAccount", "LedgerCredit", "LedgerEntries", "LedgerBalanceAt",
	"ApplySpends", "LedgerHold", "ExpireLedgers", "SetKeyLimit",
	"MeterUsage", "UsageRecords", "ScanUsage", "UsageRollups", "DeleteUsageBefore",
}

// spanNames are "store." + the operation, built once.
var spanNames = func() (n [numOps]string) {
	for i, s := range opNames {
		n[i] = "store." + s
	}
	return n
}()

// Operations returns the names of the instrumented store operations (the
// values of the operation attribute).
func Operations() []string { return append([]string(nil), opNames[:]...) }

// result classifies a call's error.
type result uint8

const (
	resultOK result = iota
	resultNotFound
	resultRejected
	resultCanceled
	resultError
	numResults
)

var resultNames = [numResults]string{"ok", "not_found", "rejected", "canceled", "error"}

var notFound = []error{
	account.ErrNotFound, apikey.ErrNotFound, apikey.ErrAccountNotFound, credits.ErrUnknownAccount,
	credits.ErrHoldNotFound, account.ErrSessionInvalid,
}

var rejected = []error{
	account.ErrEmailTaken, account.ErrSessionExpired, account.ErrSessionRevoked,
	apikey.ErrRevoked, apikey.ErrDisabled, apikey.ErrExpired,
	credits.ErrAlreadyOpen, credits.ErrInsufficientFunds, credits.ErrInDebt, credits.ErrMonthlyLimit,
	credits.ErrIdempotencyConflict, credits.ErrUnitMismatch, credits.ErrHoldSettled, credits.ErrHoldReleased,
	credits.ErrHoldExpired, credits.ErrInvalidAmount, credits.ErrAmountPrecision,
	usage.ErrIdempotencyConflict, usage.ErrDuplicateRecord, usage.ErrNoLedger, usage.ErrInvalidRecord,
}

func classify(err error) result {
	if err == nil {
		return resultOK
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return resultCanceled
	}
	for _, e := range notFound {
		if errors.Is(err, e) {
			return resultNotFound
		}
	}
	for _, e := range rejected {
		if errors.Is(err, e) {
			return resultRejected
		}
	}
	return resultError
}

// call is one instrumented store call in progress.
type call struct {
	s     *Store
	op    op
	span  trace.Span      // nil: not traced
	mctx  context.Context // the context measurements are recorded with
	start time.Time
}

// begin starts timing op and, when traced, a span naming the IDs in ids.
// ids does not escape, so an untraced call allocates nothing for it.
func (s *Store) begin(ctx context.Context, o op, ids ...attribute.KeyValue) (context.Context, call) {
	// Measurements take the caller's context only when it can carry a span
	// of ours (exemplars): reading a value from a WithoutCancel context,
	// as Complete's is, allocates on every measurement.
	c := call{s: s, op: o, mctx: context.Background()}
	if s.tracer != nil {
		c.mctx = ctx
	}
	if s.tracer != nil && (s.rootSpans || trace.SpanContextFromContext(ctx).IsValid()) {
		ctx, c.span = s.tracer.Start(ctx, spanNames[o], trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("keyledger.store.operation", opNames[o]),
				attribute.String("keyledger.store.backend", s.backend)))
		for _, kv := range ids {
			if kv.Valid() {
				c.span.SetAttributes(kv)
			}
		}
	}
	if s.dur != nil {
		c.start = time.Now()
	}
	return ctx, c
}

// end records the call's duration and result and ends its span.
func (c call) end(_ context.Context, err error) {
	r := classify(err)
	if c.s.dur != nil {
		c.s.dur.Record(c.mctx, time.Since(c.start).Seconds(), c.s.opAttrs[c.op][r]...)
	}
	if c.span != nil {
		if r != resultOK {
			c.span.SetAttributes(attribute.String("keyledger.store.result", resultNames[r]))
		}
		if r == resultError || r == resultCanceled {
			c.span.RecordError(err)
			c.span.SetStatus(codes.Error, resultNames[r])
		}
		c.span.End()
	}
}

// batched records the size of a batched write.
func (c call) batched(_ context.Context, n int) {
	if c.s.batch != nil {
		c.s.batch.Record(c.mctx, int64(n), c.s.batchAttrs[c.op]...)
	}
	if c.span != nil {
		c.span.SetAttributes(attribute.Int("keyledger.store.batch.size", n))
	}
}

// entry counts one new ledger entry.
func (s *Store) entry(ctx context.Context, e *credits.Entry, unit string) {
	if s.entries == nil || e.ID == "" {
		return
	}
	if s.tracer == nil {
		ctx = context.Background() // see begin
	}
	opts := s.entryOpts(e.Type, unit)
	s.entries.Add(ctx, 1, opts.count...)
	s.amount.Add(ctx, math.Abs(e.Amount.Decimal().InexactFloat64()), opts.amount...)
}

// entryAttrs are the measurement options of one entry type and unit.
type entryAttrs struct{ count, amount []metric.AddOption }

type entryKey struct {
	typ  credits.EntryType
	unit string
}

// entryOpts returns the cached options of an entry type and unit (a
// handful per deployment).
func (s *Store) entryOpts(typ credits.EntryType, unit string) *entryAttrs {
	k := entryKey{typ, unit}
	if v, ok := s.entryCache.Load(k); ok {
		return v.(*entryAttrs)
	}
	t := attribute.String("type", string(typ))
	v, _ := s.entryCache.LoadOrStore(k, &entryAttrs{
		count:  []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(t, s.backendKV))},
		amount: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(t, attribute.String("unit", unit), s.backendKV))},
	})
	return v.(*entryAttrs)
}

func accountAttr(id string) attribute.KeyValue { return attribute.String("keyledger.account.id", id) }
func keyAttr(id string) attribute.KeyValue     { return attribute.String("keyledger.key.id", id) }

// expiryAttrs are the attributes of counted expiry entries.
func (s *Store) expiryAttrs() metric.AddOption {
	return metric.WithAttributes(attribute.String("type", string(credits.EntryExpiry)), s.backendKV)
}
