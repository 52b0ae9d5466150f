// Package keyledger wires accounts, API keys, credits, usage and rate limits
// into the one call chain a paid API needs on every request:
//
//	grant, err := kl.Authorize(ctx, rawKey, keyledger.Request{Model: "forii/deepseek-v3", PromptTokens: 1200, MaxCompletionTokens: 256})
//	if err != nil { /* 401, 402, 403, 404 or 429: nothing was charged */ }
//	defer grant.Complete(ctx, keyledger.Outcome{...}) // meters and settles exactly once
//
// Authorize verifies the key (format, cache, status, expiry, account), checks
// the key's model and scope restrictions, takes the plan's request and token
// budgets per key and per account (all or nothing), and reserves the
// estimated cost on the account's ledger. Complete records the usage and
// settles the hold with the actual cost in one transaction, returns unused
// token reservations to the rate limiter, and releases the request's binding
// to the key. Cancel gives everything back instead.
//
// The domains stay usable alone; KeyLedger only composes them. New builds
// them over one store.Store with shared options (clock, logger, catalog).
package keyledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/auditlog"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/cache"
	"github.com/keyledger/keyledger/internal/id"
	"github.com/keyledger/keyledger/ratelimit"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/usage"
)

// Errors of the facade. Domain errors (apikey.ErrRevoked,
// credits.ErrInsufficientFunds, usage.ErrUnknownModel, …) pass through
// unwrapped so that callers match them with errors.Is.
var (
	// ErrRateLimited is matched by the *LimitError Authorize returns when a
	// budget refuses the request.
	ErrRateLimited = errkind.New(errkind.RateLimited, "keyledger: rate limit exceeded")
	// ErrInvalidRequest reports a Request with negative counts.
	ErrInvalidRequest = errkind.New(errkind.Invalid, "keyledger: invalid request")
	// ErrDuplicateRequest reports a Request.ID that an earlier request
	// already used; IDs must be unique per request.
	ErrDuplicateRequest = errkind.New(errkind.Conflict, "keyledger: request ID already used")
	// ErrInvalidOptions reports unusable Options.
	ErrInvalidOptions = errkind.New(errkind.Invalid, "keyledger: invalid options")
	// ErrRequestTooLarge is matched by the *TooLargeError Authorize returns
	// for a request that reserves more than a whole minute's budget of its
	// plan: it can never be admitted, so it is not a rate limit.
	ErrRequestTooLarge = errkind.New(errkind.Invalid, "keyledger: request larger than the plan's budget per minute")
	// ErrBudgetExhausted is returned by Grant.Progress, and is the cause of
	// the grant's cancelled Context, when the balance cannot fund more of a
	// running request: its handler ends the response with what it has
	// delivered, which Complete charges.
	ErrBudgetExhausted = errkind.New(errkind.PaymentRequired, "keyledger: the balance cannot fund more of this request")
	// ErrUnavailable is wrapped around a store or rate-limiter failure
	// (unreachable, stalled past Options.StoreTimeout, a connection reset)
	// that kept Authorize from deciding, or Complete from recording, a
	// request: not an answer about the request, so the caller may retry it
	// later (httpapi: 503 with Retry-After). Nothing was served, so nothing
	// is owed.
	ErrUnavailable = errkind.New(errkind.Unavailable, "keyledger: store or rate limiter unavailable")
	// ErrKeyRateLimitAbovePlan refuses a key rate limit above its
	// account's plan (SetKeyRateLimits); the error names the limit.
	ErrKeyRateLimitAbovePlan = errkind.New(errkind.Invalid, "keyledger: a key's rate limit must be below its plan's")
)

// LimitError is returned by Authorize when a rate limit refuses a request.
type LimitError struct {
	Decision ratelimit.Decision
	Budget   Budget // the tighter of key and account per budget
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("keyledger: rate limit exceeded, retry after %s", e.Decision.RetryAfter().Round(time.Millisecond))
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *LimitError) Is(target error) bool { return target == ErrRateLimited }

// Kind is errkind.RateLimited.
func (e *LimitError) Kind() errkind.Kind { return errkind.RateLimited }

// RetryAfter is how long the caller should wait. TooLarge requests (an
// estimate above a whole minute's budget) report zero.
func (e *LimitError) RetryAfter() time.Duration { return e.Decision.RetryAfter() }

// Options configure New. nil means defaults.
//
// The nested per-domain options (Accounts, Keys, Credits, Usage) are merged
// with these, never overwritten: a field the host set in a nested option
// wins for that service, and New fills only the fields left zero — Now and
// Logger from the fields here (so a host may give one service a clock or
// logger of its own), Accounts.Catalog from Catalog. The facade itself
// uses one plan catalog, so Accounts.Catalog, if set, is adopted as
// Catalog when that is nil, and is ErrInvalidOptions when both are set and
// differ. Prices are applied in one place, the facade: Authorize reserves
// with Prices and Complete charges with them (usage.PriceBook.Rate).
// Usage.Credits must be nil: the facade meters onto its own credits
// service.
type Options struct {
	// Now is the clock of every domain (time.Now by default).
	Now func() time.Time
	// Logger receives unexpected failures (slog.Default if nil). Secrets
	// never reach it.
	Logger *slog.Logger
	// Catalog is the plan catalog (account.DefaultCatalog: Forii's tiers).
	Catalog *account.Catalog
	// Prices prices models and operations; requests for a model that is
	// not in it are refused with usage.ErrUnknownModel. Operations not in it
	// are free. nil: every request is free.
	Prices *usage.PriceBook
	// Limiter takes the plan's budgets (ratelimit.NewMemory by default;
	// redislimit for many instances).
	Limiter ratelimit.Limiter
	// HoldTTL is how long a request's credit hold lives if the request never
	// completes (5 minutes by default). Grant.Progress renews it for a
	// request that keeps reporting; a host should bound the duration of
	// requests that do not (and if a hold does expire, Complete still
	// charges the delivered work, see Overrun).
	HoldTTL time.Duration
	// Overrun decides what Complete does with delivered work the hold and
	// the balance do not cover (an upstream that ignored its limit, a race
	// at a stream's cut-off, a hold that expired): credits.OverrunDebt (the
	// default) charges all of it, taking the balance below zero by at most
	// that overshoot and refusing the account's further requests with
	// credits.ErrInDebt until a credit pays it; credits.OverrunWriteOff
	// charges what the balance covers and records the rest as Shortfall.
	Overrun credits.Overrun
	// AccountCacheTTL bounds how long the facade serves an account's time
	// zone and limit override from memory (5 seconds by default).
	AccountCacheTTL time.Duration
	// StoreTimeout bounds each store and rate-limiter call of the hot path
	// (not on a store that reports store.InMemory, which cannot stall):
	// the key lookup, account read, rate limit and hold of Authorize, and
	// each attempt of Complete's metering write (2 seconds by default; a
	// negative value disables the bound). An Authorize that hits it fails
	// with ErrUnavailable instead of waiting on a stalled database.
	StoreTimeout time.Duration
	// CompleteTimeout bounds how long Complete keeps retrying a metering
	// write that failed with a store error, under the request's idempotency
	// key and with a growing backoff (30 seconds by default). Past it,
	// Complete returns the error and the hold is left to be released or to
	// expire; see the README's "Failure modes".
	CompleteTimeout time.Duration
	// MeterProvider and TracerProvider, if set, receive keyledger's metrics
	// (instruments named keyledger.*) and spans (Authorize, Complete,
	// Progress, and every store operation: the store is wrapped with
	// store/storeotel unless it already is). nil records nothing and costs
	// nothing on the hot path; keyledger never reads the global providers.
	// DESIGN.md lists the instruments.
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider

	Accounts *account.Options
	Keys     *apikey.Options
	Credits  *credits.Options
	Usage    *usage.Options
	// Events configures webhooks and event delivery (Webhooks, Dispatcher).
	Events *EventOptions
	// Audit configures the audit log (retention, prune batches); its Now
	// and Logger are filled from the fields here like the others'.
	Audit *auditlog.Options
}

// KeyLedger is the composed library. Its domain services are exported for
// everything beyond the hot path (management APIs, dashboards), and calling
// them directly skips no bookkeeping: an account change made through
// Accounts (Update, Close, VerifyEmail) runs the hook New installed
// (account.Options.Changed), which keeps the key and account caches, the
// ledger policy, the keys of a closed account and the signup grant in step.
type KeyLedger struct {
	Accounts *account.Service
	Keys     *apikey.Service
	Credits  *credits.Service
	Usage    *usage.Service
	// Audit is the audit log. The facade appends an entry after every
	// management change made through Accounts, Keys or Credits (see
	// DESIGN.md, "Audit log"); a host appends its own actions with
	// Audit.Append, reads with Audit.List and calls Audit.Prune
	// periodically.
	Audit   *auditlog.Service
	Limiter ratelimit.Limiter
	Prices  *usage.PriceBook
	Catalog *account.Catalog

	now      func() time.Time
	log      *slog.Logger
	holdTTL  time.Duration
	overrun  credits.Overrun
	ids      *id.Generator
	acctInfo *cache.Cache[string, accountInfo]
	buckets  *cache.Cache[string, *keyBuckets] // key ID → its bucket names
	infoTTL  time.Duration
	tel      *telemetry // nil: not instrumented
	// hostChanged is the host's Accounts.Changed, run after the facade's.
	hostChanged func(context.Context, account.Account, account.Change) error

	storeTimeout    time.Duration // ≤ 0: unbounded
	completeTimeout time.Duration

	webhooks *events.Service // webhooks.go
	dispatch *Dispatcher
}

// accountInfo is what Authorize needs of an account beyond the verified
// key: its time zone (usage rollups) and its limit override.
type accountInfo struct {
	tz     string
	limits *account.Limits
}

// driverOf returns b's operations, or nil for a backend that was never
// opened: a nil pointer or a zero value of a backend's Store (whose
// embedded Backend is nil) panics in store.Driver.
func driverOf(b store.Backend) (st store.Store) {
	defer func() {
		if recover() != nil {
			st = nil
		}
	}()
	return store.Driver(b)
}

// New builds a KeyLedger over the backend b (sqlitestore.Open,
// pgstore.Open, memstore.New, or store.Wrap of a Store written elsewhere).
// Close does not close b.
func New(b store.Backend, opts *Options) (*KeyLedger, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: no backend", ErrInvalidOptions)
	}
	st := driverOf(b)
	if st == nil {
		return nil, fmt.Errorf("%w: %T is not an opened backend (nil, a zero value, or store.Wrap(nil))", ErrInvalidOptions, b)
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Limiter == nil {
		var lo *ratelimit.MemoryOptions
		if o.Now != nil { // an injected clock drives the limiter too
			lo = &ratelimit.MemoryOptions{Now: o.Now}
		}
		o.Limiter = ratelimit.NewMemory(lo)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HoldTTL == 0 {
		o.HoldTTL = 5 * time.Minute
	}
	if o.AccountCacheTTL == 0 {
		o.AccountCacheTTL = 5 * time.Second
	}
	if o.StoreTimeout == 0 {
		o.StoreTimeout = 2 * time.Second
	}
	if o.CompleteTimeout == 0 {
		o.CompleteTimeout = 30 * time.Second
	}
	if o.HoldTTL < 0 || o.AccountCacheTTL < 0 || o.CompleteTimeout < 0 {
		return nil, fmt.Errorf("%w: negative duration", ErrInvalidOptions)
	}
	switch o.Overrun {
	case 0:
		o.Overrun = credits.OverrunDebt
	case credits.OverrunDebt, credits.OverrunWriteOff:
	default:
		return nil, fmt.Errorf("%w: unknown overrun policy %d", ErrInvalidOptions, o.Overrun)
	}
	ao, ko, co, uo := derefOr(o.Accounts), derefOr(o.Keys), derefOr(o.Credits), derefOr(o.Usage)
	if err := mergeOptions(&o, &ao, &ko, &co, &uo); err != nil {
		return nil, err
	}
	tel, err := newTelemetry(o.MeterProvider, o.TracerProvider)
	if err != nil {
		return nil, fmt.Errorf("%w: telemetry: %w", ErrInvalidOptions, err)
	}
	if st, err = tel.instrument(st, o.MeterProvider, o.TracerProvider); err != nil {
		return nil, fmt.Errorf("%w: telemetry: %w", ErrInvalidOptions, err)
	}

	kl := &KeyLedger{
		Limiter: o.Limiter, Prices: o.Prices, Catalog: o.Catalog,
		now: o.Now, log: o.Logger, holdTTL: o.HoldTTL, overrun: o.Overrun, ids: id.NewGenerator(o.Now),
		acctInfo: cache.New[string, accountInfo](100_000, o.Now), infoTTL: o.AccountCacheTTL,
		buckets: cache.New[string, *keyBuckets](100_000, o.Now), tel: tel,
		storeTimeout: o.StoreTimeout, completeTimeout: o.CompleteTimeout,
	}
	kl.hostChanged, ao.Changed = ao.Changed, kl.accountChanged
	if m, ok := st.(store.InMemory); ok && m.InMemory() {
		kl.storeTimeout = -1 // nothing to stall: no timer per call
	}
	auo := derefOr(o.Audit)
	fill(&auo.Now, &auo.Logger, &o)
	if kl.Audit, err = auditlog.NewService(st, &auo); err != nil {
		return nil, fmt.Errorf("%w: audit: %w", ErrInvalidOptions, err)
	}
	// The management services write through the audit wrapper; usage
	// (the hot path only) does not.
	ast, keyStore := newAuditStore(st, kl.Audit, o.Logger)
	if kl.Accounts, err = account.NewService(ast, &ao); err != nil {
		return nil, err
	}
	if kl.Keys, err = apikey.NewService(tel.keyStore(keyStore), &ko); err != nil {
		return nil, err
	}
	kl.webhooks, kl.dispatch = newEvents(st, ast, o.Events, o.Now, o.Logger, &co)
	if kl.Credits, err = credits.NewService(ast, &co); err != nil {
		_ = kl.Keys.Close(context.Background())
		return nil, err
	}
	uo.Credits = kl.Credits
	if kl.Usage, err = usage.NewService(st, &uo); err != nil {
		_ = kl.Keys.Close(context.Background())
		_ = kl.Credits.Close(context.Background())
		return nil, err
	}
	if err := tel.observe(o.MeterProvider, kl); err != nil {
		_ = kl.Close(context.Background())
		return nil, fmt.Errorf("%w: telemetry: %w", ErrInvalidOptions, err)
	}
	return kl, nil
}

// mergeOptions fills the zero fields of the nested options from o, and o's
// catalog and price book from the nested ones (see Options). A host-set
// nested field is never overwritten.
func mergeOptions(o *Options, ao *account.Options, ko *apikey.Options, co *credits.Options, uo *usage.Options) error {
	switch {
	case o.Catalog == nil && ao.Catalog != nil:
		o.Catalog = ao.Catalog
	case o.Catalog == nil:
		o.Catalog = account.DefaultCatalog()
	case ao.Catalog != nil && ao.Catalog != o.Catalog:
		return fmt.Errorf("%w: Catalog and Accounts.Catalog differ", ErrInvalidOptions)
	}
	if uo.Credits != nil {
		return fmt.Errorf("%w: Usage.Credits is the facade's own credits service", ErrInvalidOptions)
	}
	ao.Catalog = o.Catalog
	fill(&ao.Now, &ao.Logger, o)
	fill(&ko.Now, &ko.Logger, o)
	fill(&co.Now, &co.Logger, o)
	fill(&uo.Now, &uo.Logger, o)
	return nil
}

// fill sets a nested option's clock and logger from o where the host left
// them nil.
func fill(now *func() time.Time, log **slog.Logger, o *Options) {
	if *now == nil {
		*now = o.Now
	}
	if *log == nil {
		*log = o.Logger
	}
}

func derefOr[T any](p *T) T {
	var v T
	if p != nil {
		v = *p
	}
	return v
}

// Close flushes pending usage, last-used times and ledger work, then stops
// the background work of every service. The store stays open: its owner
// closes it.
func (kl *KeyLedger) Close(ctx context.Context) error {
	return errors.Join(kl.Usage.Close(ctx), kl.Keys.Close(ctx), kl.Credits.Close(ctx), kl.tel.close())
}

// policyFor returns the ledger policy of an account from its plan.
func (kl *KeyLedger) policyFor(a account.Account, base credits.Policy) credits.Policy {
	p, _ := kl.Catalog.Plan(a.Plan)
	base.Overdraft = credits.NewAmount(p.Overdraft)
	base.MonthlyCap = credits.NewAmount(p.MonthlyCap)
	base.TimeZone = a.TimeZone
	return base
}

// Signup creates an account, opens its ledger with its plan's policy and
// credits the plan's signup grant (Forii's free plan: ₹50). If opening the
// ledger or the grant fails after the account was created, the account is
// returned with the error; EnsureLedger completes the work and is safe to
// repeat.
func (kl *KeyLedger) Signup(ctx context.Context, p account.CreateParams) (account.Account, error) {
	a, err := kl.Accounts.Create(ctx, p)
	if err != nil {
		return account.Account{}, err
	}
	return a, kl.EnsureLedger(ctx, a)
}

// EnsureLedger opens the account's ledger if it is not open and credits the
// plan's signup grant once (idempotency key "signup-grant") — unless the
// account's email belonged to a closed account, which already had its
// grant.
func (kl *KeyLedger) EnsureLedger(ctx context.Context, a account.Account) error {
	if _, err := kl.Credits.Open(ctx, a.ID, kl.policyFor(a, credits.Policy{})); err != nil && !errors.Is(err, credits.ErrAlreadyOpen) {
		return err
	}
	plan, _ := kl.Catalog.Plan(a.Plan)
	if !plan.SignupGrant.IsPositive() {
		return nil
	}
	if closed, err := kl.Accounts.EmailClosed(ctx, a.Email); err != nil || closed {
		return err
	}
	_, err := kl.Credits.Grant(ctx, credits.CreditParams{
		AccountID: a.ID, Amount: credits.NewAmount(plan.SignupGrant),
		Reference: "signup", Description: plan.Name + " plan signup grant", IdempotencyKey: "signup-grant",
	})
	return err
}

// UpdateAccount updates an account: kl.Accounts.Update, kept here for
// hosts written against it. Both keep the rest of the library in step (the
// hook New installs, see accountChanged): a plan or time zone change
// updates the ledger policy (overdraft, monthly cap, cap month), and any
// change reaches this process's key cache and account cache at once.
func (kl *KeyLedger) UpdateAccount(ctx context.Context, id string, p account.UpdateParams) (account.Account, error) {
	return kl.Accounts.Update(ctx, id, p)
}

// accountChanged is the account service's Options.Changed, installed by
// New, so that the bookkeeping of an account change runs whether the host
// calls the facade or kl.Accounts: an update or closure drops the account
// from the key and account caches; a plan or time zone change updates the
// ledger policy; a closure revokes every key; a verified email pays the
// signup grant (EnsureLedger). The host's own hook, if any, runs after.
func (kl *KeyLedger) accountChanged(ctx context.Context, a account.Account, c account.Change) error {
	var err error
	if !c.Verified {
		kl.Keys.InvalidateAccount(a.ID)
		kl.acctInfo.Delete(a.ID)
	}
	switch {
	case c.Closed:
		err = kl.revokeKeys(ctx, a.ID)
	case c.Verified:
		if _, aerr := kl.Audit.Append(context.WithoutCancel(ctx), auditlog.Entry{AccountID: a.ID, Action: auditlog.ActionEmailVerify,
			Target: auditlog.Target{Type: "account", ID: a.ID}}); aerr != nil {
			kl.log.ErrorContext(ctx, "keyledger: audit entry not recorded", "action", auditlog.ActionEmailVerify, "account", a.ID, "err", aerr)
		}
		err = kl.EnsureLedger(ctx, a)
	case c.Update.Plan != nil || c.Update.TimeZone != nil:
		err = kl.syncPolicy(ctx, a)
	}
	if kl.hostChanged != nil {
		err = errors.Join(err, kl.hostChanged(ctx, a, c))
	}
	return err
}

// syncPolicy sets the ledger policy of a from its (new) plan and time
// zone, opening the ledger if it has none yet.
func (kl *KeyLedger) syncPolicy(ctx context.Context, a account.Account) error {
	cur, err := kl.Credits.Account(ctx, a.ID)
	if errors.Is(err, credits.ErrUnknownAccount) {
		return kl.EnsureLedger(ctx, a)
	}
	if err != nil {
		return err
	}
	_, err = kl.Credits.SetPolicy(ctx, a.ID, kl.policyFor(a, cur.Policy))
	return err
}

// account returns the cached time zone and limit override of an account.
func (kl *KeyLedger) account(ctx context.Context, accountID string, now int64) (accountInfo, error) {
	if info, ok := kl.acctInfo.GetAt(accountID, now); ok {
		return info, nil
	}
	a, err := kl.Accounts.Get(ctx, accountID)
	if err != nil {
		return accountInfo{}, err
	}
	info := accountInfo{tz: a.TimeZone, limits: a.Limits}
	if kl.infoTTL > 0 {
		kl.acctInfo.Set(accountID, info, kl.infoTTL)
	}
	return info, nil
}
