package credits

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/keyledger/keyledger/internal/groupcommit"
	"github.com/keyledger/keyledger/internal/id"
)

// Options configure a Service. The zero value and nil give the defaults.
type Options struct {
	// Now is the clock (time.Now by default).
	Now func() time.Time
	// Unit is the ledger's unit (INR by default).
	Unit Unit
	// EntryIDPrefix starts entry IDs ("txn_" by default); HoldIDPrefix hold
	// IDs ("hold_").
	EntryIDPrefix, HoldIDPrefix string
	// MaxHoldTTL bounds Reserve's TTL (24 hours by default).
	MaxHoldTTL time.Duration
	// Recharger buys credit on auto-recharge; nil disables the calls (the
	// crossings are still recorded and counted as skipped).
	Recharger Recharger
	// RechargeTimeout bounds one Recharger call and the purchase written
	// after it (30 seconds by default).
	RechargeTimeout time.Duration
	// OnRechargeError is called, in the recharge's goroutine, when a
	// recharge fails. Optional.
	OnRechargeError func(RechargeRequest, error)
	// MaxBatch bounds the spends of one group commit (256 by default);
	// 1 disables group commit. It applies only to stores that group-commit
	// (see Store).
	MaxBatch int
	// MaxWait is how long a group commit waits for more spends once the
	// queue is empty (0 by default: commit as soon as the writer is free;
	// batches still form from the spends that arrive during a commit).
	MaxWait time.Duration
	// Logger receives failures that have no caller to return to, such as
	// auto-recharge errors (slog.Default if nil).
	Logger *slog.Logger
}

const (
	maxIDLen          = 128
	maxKeyLen         = 255
	maxReferenceLen   = 255
	maxDescriptionLen = 1024
	defaultPageLimit  = 50
	maxPageLimit      = 500
	sweepAccounts     = 100
)

func (o *Options) withDefaults() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Unit == (Unit{}) {
		r.Unit = INR()
	}
	if err := r.Unit.validate(); err != nil {
		return r, err
	}
	if r.EntryIDPrefix == "" {
		r.EntryIDPrefix = "txn_"
	}
	if r.HoldIDPrefix == "" {
		r.HoldIDPrefix = "hold_"
	}
	if r.MaxHoldTTL == 0 {
		r.MaxHoldTTL = 24 * time.Hour
	}
	if r.RechargeTimeout == 0 {
		r.RechargeTimeout = 30 * time.Second
	}
	if r.MaxBatch == 0 {
		r.MaxBatch = 256
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	if r.MaxHoldTTL < 0 || r.RechargeTimeout < 0 || r.MaxBatch < 0 || r.MaxWait < 0 {
		return r, fmt.Errorf("%w: negative duration or batch size", ErrInvalidOptions)
	}
	if r.EntryIDPrefix == "exp_" {
		return r, fmt.Errorf("%w: entry ID prefix exp_ is reserved for expiries", ErrInvalidOptions)
	}
	return r, nil
}

type counters struct {
	batch                                                                   groupcommit.Stats
	rechargesStarted, rechargesSucceeded, rechargesFailed, rechargesSkipped atomic.Int64
}

// Service is the credit ledger. It is safe for concurrent use. Call Close
// when done: it flushes queued spends and waits for running recharges.
type Service struct {
	store  Store
	opt    Options
	ids    *id.Generator
	batch  *groupcommit.Committer[SpendRequest, SpendResult] // nil: spends go straight to the store
	life   context.Context
	cancel context.CancelFunc
	closed atomic.Bool
	stats  counters

	// rmu guards recharges.Add against Close's Wait: once rclosed is set,
	// no recharge (nor background account read, local.go) starts.
	rmu       sync.Mutex
	rclosed   bool
	recharges sync.WaitGroup
	ones      sync.Pool // *oneSpend, for spends without group commit
	local     *book     // process holds (local.go) or leased holds (lease.go), if the store asks for them
}

// oneSpend carries a single spend to ApplySpends without allocating.
type oneSpend struct {
	req [1]SpendRequest
	res [1]SpendResult
}

// NewService returns a Service over st. opts may be nil. It returns
// ErrInvalidOptions or ErrInvalidUnit for a bad configuration.
func NewService(st Store, opts *Options) (*Service, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Service{store: st, opt: o, ids: id.NewGenerator(o.Now)}
	if ph, ok := st.(processHolds); ok && ph.ProcessHolds() {
		s.local = ph.Shared(bookKey{}, func() any { return newBook() }).(*book)
	} else if lh, ok := st.(leasedHolds); ok && lh.LeasedHolds() {
		// Each Service leases for itself, like an instance of its own.
		s.local = newBook()
		s.local.lease = true
		s.local.leases, s.local.retired = make(map[leaseKey]*lease), make(map[*lease]struct{})
		s.local.release, s.local.freed = s.releaseLease, s.leaseFreed
	}
	s.ones.New = func() any { return new(oneSpend) }
	s.life, s.cancel = context.WithCancel(context.Background())
	if gc, ok := st.(interface{ GroupCommit() bool }); ok && gc.GroupCommit() && o.MaxBatch > 1 {
		// The loop starts each committed spend's auto-recharge itself, so a
		// crossing is never lost to a caller that stopped waiting.
		s.batch = groupcommit.New(groupcommit.Config[SpendRequest, SpendResult]{
			Ctx: s.life, Apply: st.ApplySpends, After: s.AfterSpend, Failed: s.AbortSpend, Now: o.Now,
			MaxBatch: o.MaxBatch, MaxWait: o.MaxWait, Stats: &s.stats.batch,
		})
	}
	return s, nil
}

// Unit returns the ledger's unit.
func (s *Service) Unit() Unit { return s.opt.Unit }

// Close stops accepting mutations (they return ErrClosed), applies the
// spends already queued, and waits for running auto-recharges (and, with
// process holds, background reads of accounts; with leased holds, lease
// writes) until ctx ends (then it cancels them and returns ctx.Err()).
// With leased holds it then releases every lease, even once ctx has ended
// (for at most 10 s; a lease it cannot release expires at its deadline).
// It does not close the store.
func (s *Service) Close(ctx context.Context) error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	if s.batch != nil {
		s.batch.Close() // applies the queued spends and starts their recharges
	}
	s.rmu.Lock()
	s.rclosed = true
	s.rmu.Unlock()
	done := make(chan struct{})
	go func() {
		s.recharges.Wait()
		close(done)
	}()
	defer s.cancel()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel()
		<-done
		err = ctx.Err()
	}
	if s.local != nil && s.local.lease {
		// Even past ctx: a lease not released holds funds until its
		// deadline, up to a minute.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaseTimeout)
		s.releaseLeases(rctx)
		cancel()
	}
	return err
}

// Stats returns the Service's counters.
func (s *Service) Stats() Stats {
	return Stats{
		Batches: s.stats.batch.Batches.Load(), BatchedSpends: s.stats.batch.Items.Load(), MaxBatch: s.stats.batch.MaxBatch.Load(),
		RechargesStarted: s.stats.rechargesStarted.Load(), RechargesSucceeded: s.stats.rechargesSucceeded.Load(),
		RechargesFailed: s.stats.rechargesFailed.Load(), RechargesSkipped: s.stats.rechargesSkipped.Load(),
	}
}

// Open opens the ledger account accountID (usually an account.Account ID)
// with policy p and a zero balance. It returns ErrInvalidAccountID,
// ErrInvalidPolicy or ErrAlreadyOpen (use SetPolicy to change an open
// account), writing nothing on error.
func (s *Service) Open(ctx context.Context, accountID string, p Policy) (Account, error) {
	if !validID(accountID) {
		return Account{}, ErrInvalidAccountID
	}
	p, err := s.normalizePolicy(p)
	if err != nil {
		return Account{}, err
	}
	return s.store.OpenLedger(ctx, accountID, s.opt.Unit.Code, p, s.opt.Now())
}

// SetPolicy replaces an account's policy. It returns ErrUnknownAccount or
// ErrInvalidPolicy, writing nothing on error.
func (s *Service) SetPolicy(ctx context.Context, accountID string, p Policy) (Account, error) {
	if !validID(accountID) {
		return Account{}, ErrUnknownAccount
	}
	p, err := s.normalizePolicy(p)
	if err != nil {
		return Account{}, err
	}
	a, err := s.store.SetLedgerPolicy(ctx, accountID, p, s.opt.Now())
	s.forgetLocal(accountID)
	s.retireLeases(accountID, "")
	if err != nil {
		return Account{}, err
	}
	return s.withLocal(a), nil
}

func (s *Service) normalizePolicy(p Policy) (Policy, error) {
	p.TimeZone = strings.TrimSpace(p.TimeZone)
	if p.TimeZone == "" {
		p.TimeZone = "UTC"
	}
	if strings.EqualFold(p.TimeZone, "local") || strings.Contains(p.TimeZone, "..") || strings.Contains(p.TimeZone, `\`) {
		return p, fmt.Errorf("%w: time zone %q", ErrInvalidPolicy, p.TimeZone)
	}
	if _, err := time.LoadLocation(p.TimeZone); err != nil {
		return p, fmt.Errorf("%w: time zone %q", ErrInvalidPolicy, p.TimeZone)
	}
	ar := p.AutoRecharge
	for _, a := range []Amount{p.Overdraft, p.MonthlyCap, ar.Threshold, ar.Amount} {
		if a.IsNegative() || !a.inBounds() {
			return p, fmt.Errorf("%w: amounts must be non-negative and in range", ErrInvalidPolicy)
		}
	}
	if ar.Enabled && (!ar.Amount.IsPositive() || !ar.Amount.MultipleOf(s.opt.Unit.Increment)) {
		return p, fmt.Errorf("%w: auto-recharge amount must be positive and a multiple of %s", ErrInvalidPolicy, s.opt.Unit.Increment)
	}
	return p, nil
}

// Account returns the account as of now, or ErrUnknownAccount.
func (s *Service) Account(ctx context.Context, accountID string) (Account, error) {
	if !validID(accountID) {
		return Account{}, ErrUnknownAccount
	}
	a, err := s.store.LedgerAccount(ctx, accountID, s.opt.Now())
	if err != nil {
		return Account{}, err
	}
	return s.withLocal(a), nil
}

// Balance returns the account's balance now (expiries due by now
// included), or ErrUnknownAccount.
func (s *Service) Balance(ctx context.Context, accountID string) (Amount, error) {
	a, err := s.Account(ctx, accountID)
	return a.Balance, err
}

// UsedThisMonth returns the account's spend in the current calendar month
// of its policy's time zone, or ErrUnknownAccount.
func (s *Service) UsedThisMonth(ctx context.Context, accountID string) (Amount, error) {
	a, err := s.Account(ctx, accountID)
	return a.UsedThisMonth, err
}

// BalanceAt returns the balance at time t, or ErrUnknownAccount. Before
// the first entry it is 0.
func (s *Service) BalanceAt(ctx context.Context, accountID string, t time.Time) (Amount, error) {
	if !validID(accountID) {
		return Amount{}, ErrUnknownAccount
	}
	return s.store.LedgerBalanceAt(ctx, accountID, t)
}

// EntryFilter narrows Entries. Zero fields do not filter.
type EntryFilter struct {
	Types    []EntryType
	From, To time.Time // CreatedAt in [From, To)
}

// EntryPage is one page of entries, newest first.
type EntryPage struct {
	Entries    []Entry `json:"entries"`
	NextCursor string  `json:"next_cursor,omitempty"` // "" on the last page
}

// Entries returns the account's entries matching f, newest first. cursor
// is the NextCursor of the previous page ("" for the first); limit is 50
// when unset and at most 500. Expiries due by now are written first, so the
// entries always sum to Balance. It returns ErrUnknownAccount,
// ErrInvalidCursor or ErrInvalidOptions (an unknown entry type).
func (s *Service) Entries(ctx context.Context, accountID string, f EntryFilter, cursor string, limit int) (EntryPage, error) {
	if !validID(accountID) {
		return EntryPage{}, ErrUnknownAccount
	}
	for _, t := range f.Types {
		if !t.Valid() {
			return EntryPage{}, fmt.Errorf("%w: entry type %q", ErrInvalidOptions, t)
		}
	}
	var before int64
	if cursor != "" {
		n, err := strconv.ParseInt(cursor, 10, 64)
		if err != nil || n <= 0 {
			return EntryPage{}, ErrInvalidCursor
		}
		before = n
	}
	switch {
	case limit <= 0:
		limit = defaultPageLimit
	case limit > maxPageLimit:
		limit = maxPageLimit
	}
	if err := s.materialise(ctx, accountID); err != nil {
		return EntryPage{}, err
	}
	es, err := s.store.LedgerEntries(ctx, accountID, f, before, limit+1)
	if err != nil {
		return EntryPage{}, err
	}
	var pg EntryPage
	if len(es) > limit {
		es = es[:limit]
		pg.NextCursor = strconv.FormatInt(es[limit-1].Seq, 10)
	}
	pg.Entries = es
	return pg, nil
}

// materialise writes the account's due grant expiries, if it has any.
func (s *Service) materialise(ctx context.Context, accountID string) error {
	_, err := s.store.ExpireLedgers(ctx, s.opt.Now(), accountID, 1)
	return err
}

// ExpireDue writes the expiry entries of every grant that has expired and
// marks every hold past its deadline expired, in batches of accounts. Reads
// do not need it — they ignore expired lots and holds anyway — but running
// it periodically keeps Entries, the stored balances and the hold states
// current for reports and other tools.
func (s *Service) ExpireDue(ctx context.Context) (ExpiryReport, error) {
	var total ExpiryReport
	now := s.opt.Now()
	for {
		r, err := s.store.ExpireLedgers(ctx, now, "", sweepAccounts)
		total.Accounts += r.Accounts
		total.Entries += r.Entries
		total.Holds += r.Holds
		if err != nil || r.Accounts < sweepAccounts {
			return total, err
		}
	}
}

// CreditParams are the inputs of Grant, Purchase, Refund and Adjust.
type CreditParams struct {
	AccountID string
	// Amount must be positive and a multiple of the unit's Increment; an
	// adjustment may also be negative.
	Amount Amount
	// ExpiresAt makes a grant expire (it must be in the future and before
	// 2200); other credits never expire and must leave it zero.
	ExpiresAt time.Time
	// Reference is the host's ID for the cause (payment ID, order ID,
	// refunded usage ID); at most 255 bytes.
	Reference string
	// Description is free text for statements; at most 1024 bytes.
	Description    string
	IdempotencyKey string
}

// Grant credits free credit, optionally expiring (a signup grant, a
// promotion). It returns ErrUnknownAccount, ErrInvalidAmount,
// ErrAmountPrecision, ErrInvalidExpiry, ErrInvalidIdempotencyKey,
// ErrInvalidText or ErrIdempotencyConflict, writing nothing on error. A
// replay returns the first entry.
func (s *Service) Grant(ctx context.Context, p CreditParams) (Entry, error) {
	return s.publicCredit(ctx, EntryGrant, p)
}

// Purchase credits paid credit (a verified payment); errors as for Grant.
func (s *Service) Purchase(ctx context.Context, p CreditParams) (Entry, error) {
	return s.publicCredit(ctx, EntryPurchase, p)
}

// Refund credits money back, e.g. for a failed request; Reference should
// name what is refunded. Errors as for Grant.
func (s *Service) Refund(ctx context.Context, p CreditParams) (Entry, error) {
	return s.publicCredit(ctx, EntryRefund, p)
}

// Adjust corrects the balance by a signed amount (an operator's
// correction). A negative adjustment draws on the balance like a debit but
// is not spend: it fails with ErrInsufficientFunds beyond the overdraft and
// neither counts toward the monthly cap nor triggers auto-recharge. Other
// errors as for Grant.
func (s *Service) Adjust(ctx context.Context, p CreditParams) (Entry, error) {
	return s.publicCredit(ctx, EntryAdjustment, p)
}

func (s *Service) publicCredit(ctx context.Context, t EntryType, p CreditParams) (Entry, error) {
	if s.closed.Load() {
		return Entry{}, ErrClosed
	}
	return s.credit(ctx, t, p, s.opt.Now())
}

// maxExpiryUnix bounds a grant's expiry (2200-01-01 UTC): backends keep
// times as int64 unix nanoseconds, which end in 2262.
const maxExpiryUnix = 7258118400

// credit validates and applies one credit; a zero now means the clock's.
func (s *Service) credit(ctx context.Context, t EntryType, p CreditParams, now time.Time) (Entry, error) {
	if now.IsZero() {
		now = s.opt.Now()
	}
	if !validID(p.AccountID) {
		return Entry{}, ErrUnknownAccount
	}
	if p.Amount.IsZero() || (p.Amount.IsNegative() && t != EntryAdjustment) || !p.Amount.inBounds() {
		return Entry{}, fmt.Errorf("%w: %s must be positive and in range", ErrInvalidAmount, p.Amount)
	}
	if !p.Amount.MultipleOf(s.opt.Unit.Increment) {
		return Entry{}, fmt.Errorf("%w: %s is not a multiple of %s", ErrAmountPrecision, p.Amount, s.opt.Unit.Increment)
	}
	if !p.ExpiresAt.IsZero() && (t != EntryGrant || p.ExpiresAt.Unix() >= maxExpiryUnix) {
		return Entry{}, ErrInvalidExpiry
	}
	if err := validKeyAndText(p.IdempotencyKey, p.Reference, p.Description); err != nil {
		return Entry{}, err
	}
	fp := fingerprint('c', p.AccountID, string(t), p.Amount, 0, p.ExpiresAt, p.Reference, p.Description)
	if s.keyLocal(p.AccountID, p.IdempotencyKey) {
		return Entry{}, ErrIdempotencyConflict // a process reserve has the key
	}
	r := CreditRequest{
		Unit: s.opt.Unit.Code, AccountID: p.AccountID, Type: t, Amount: p.Amount, ExpiresAt: p.ExpiresAt,
		Reference: p.Reference, Description: p.Description, IdempotencyKey: p.IdempotencyKey,
		Fingerprint: fp, EntryID: s.ids.New(s.opt.EntryIDPrefix),
	}
	done := s.adjustLocal(&r) // a negative adjustment counts as pending
	e, err := s.store.LedgerCredit(ctx, now, r)
	done()
	s.forgetLocal(p.AccountID) // the snapshot is read again, whatever the outcome
	return e, err
}

// DebitParams are the inputs of Debit.
type DebitParams struct {
	AccountID string
	// Amount must be positive and a multiple of the unit's SpendIncrement.
	Amount Amount
	// Reference is the host's ID for what was bought (a usage record ID).
	Reference      string
	Description    string
	IdempotencyKey string
	// Overrun is zero for a charge before the work (refused when funds or
	// the cap do not cover it); OverrunDebt or OverrunWriteOff charge
	// delivered work in full or as far as funds go.
	Overrun Overrun
	// KeyID is the API key spending, if any: a debit with Overrun zero is
	// refused beyond the key's spend limit (*KeyBudgetError); every debit
	// counts toward it.
	KeyID string
}

// Debit charges the account. It fails with ErrInsufficientFunds if
// Available would fall below −Overdraft and with ErrMonthlyLimit if spend
// plus holds would pass the monthly cap; it also returns ErrUnknownAccount,
// ErrInvalidAmount, ErrAmountPrecision, ErrInvalidIdempotencyKey,
// ErrInvalidText or ErrIdempotencyConflict. Nothing is written on error. A
// replay returns the first entry.
//
// Concurrent debits may be committed together (group commit); each one is
// still all-or-nothing. If ctx ends while the debit waits, Debit returns
// ctx.Err() and the debit may still be applied (and then its
// auto-recharge still starts): retry with the same idempotency key to learn
// the outcome.
func (s *Service) Debit(ctx context.Context, p DebitParams) (Entry, error) {
	if err := s.checkSpend(p.AccountID, p.Amount, p.IdempotencyKey, p.Reference, p.Description); err != nil {
		return Entry{}, err
	}
	r, err := s.PrepareDebit(p)
	if err != nil {
		return Entry{}, err
	}
	res, err := s.spend(ctx, r)
	return res.Entry, err
}

// ReserveParams are the inputs of Reserve.
type ReserveParams struct {
	AccountID string
	// Amount is the estimate to set aside: positive, a multiple of the
	// unit's SpendIncrement.
	Amount Amount
	// TTL is how long the hold lives unless settled or released: positive
	// and at most Options.MaxHoldTTL.
	TTL            time.Duration
	Reference      string
	IdempotencyKey string
	// KeyID is the API key the hold is for, if any: a reserve beyond the
	// key's spend limit fails with *KeyBudgetError.
	KeyID string
	// FreshKey says that IdempotencyKey was minted for this call and never
	// used before (it holds a newly generated unique ID), so the reserve
	// cannot be a replay. With process holds the service then skips the
	// store read that matches the key against settled reserves — one read
	// per request on the hot path. Leave it false for any key a client
	// chose or a retry may repeat: a replay would then reserve twice.
	FreshKey bool
}

// Reserve sets funds aside before work starts and returns the active hold.
// It fails like Debit (ErrInsufficientFunds, ErrMonthlyLimit, …) and with
// ErrInvalidTTL, writing nothing on error. A replay returns the hold as it
// is now.
func (s *Service) Reserve(ctx context.Context, p ReserveParams) (Hold, error) {
	if p.TTL <= 0 || p.TTL > s.opt.MaxHoldTTL {
		return Hold{}, ErrInvalidTTL
	}
	if err := s.checkSpend(p.AccountID, p.Amount, p.IdempotencyKey, p.Reference, ""); err != nil {
		return Hold{}, err
	}
	fp := fingerprint('r', p.AccountID, "", p.Amount, int64(p.TTL), time.Time{}, p.Reference, "")
	switch {
	case s.local == nil:
	case s.local.lease:
		if p.FreshKey { // a client's key is stored, to meet other instances' reserves
			h, err := s.reserveLocal(ctx, p, fp)
			// A lease may be refused where a hold is not: it must outlive
			// the hold, on funds that last as long as it does, under its
			// key's limit until its period ends. The store decides then.
			if err == nil || (!errors.Is(err, errLeaseCapped) && (systemFailure(err) || ctx.Err() != nil || errors.Is(err, ErrClosed))) {
				return h, err
			}
		}
	case !s.keyLimitedLocal(ctx, p.AccountID, p.KeyID):
		return s.reserveLocal(ctx, p, fp)
	default:
		return s.reserveKeyed(ctx, p, fp)
	}
	res, err := s.spend(ctx, SpendRequest{
		Kind: SpendReserve, Unit: s.opt.Unit.Code, AccountID: p.AccountID, HoldID: s.ids.New(s.opt.HoldIDPrefix),
		Amount: p.Amount, TTL: p.TTL, Reference: p.Reference, IdempotencyKey: p.IdempotencyKey, Fingerprint: fp,
		KeyID: p.KeyID,
	})
	return res.Hold, err
}

// SettleParams are the inputs of Settle.
type SettleParams struct {
	HoldID string
	// Actual is the real cost: zero or positive, a multiple of the unit's
	// SpendIncrement. It may exceed the hold.
	Actual Amount
	// Reference and Description go to the debit entry (Reference defaults
	// to the hold's).
	Reference, Description string
	// Overrun decides the cost above what funds and the cap cover:
	// OverrunDebt (also zero) charges it all, OverrunWriteOff reports it as
	// Shortfall.
	Overrun Overrun
}

// Settle charges the actual cost of held work and frees the hold. Up to
// the hold's amount the charge always succeeds; above it, Settle charges it
// all, into debt if funds do not cover it (OverrunDebt, the default), or as
// much as the balance (with overdraft) and the monthly cap allow, reporting
// the rest as Shortfall (OverrunWriteOff). It returns ErrHoldNotFound,
// ErrHoldReleased, ErrHoldExpired, ErrHoldSettled (settled before with
// another request), ErrInvalidAmount, ErrAmountPrecision or ErrInvalidText,
// writing nothing on error. Settling again with the same request returns
// the first settlement.
func (s *Service) Settle(ctx context.Context, p SettleParams) (Settlement, error) {
	r, err := s.PrepareSettle(p)
	if err != nil {
		return Settlement{}, err
	}
	res, err := s.spend(ctx, r)
	if err != nil {
		return Settlement{}, err
	}
	return Settlement{Hold: res.Hold, Entry: res.Entry, Charged: res.Hold.Charged, Shortfall: res.Hold.Shortfall()}, nil
}

// ExtendParams are the inputs of Extend.
type ExtendParams struct {
	HoldID string
	// Amount is the hold's new total: if it is more than the hold, the
	// difference is set aside like a reserve (a multiple of the unit's
	// SpendIncrement); if not, the amount stays.
	Amount Amount
	// TTL, if positive, moves the deadline to now + TTL when that is later
	// (at most Options.MaxHoldTTL).
	TTL time.Duration
}

// Extend keeps long work funded: it raises an active hold to p.Amount and
// moves its deadline, so that a stream that has used most of its estimate,
// or is still running near its deadline, keeps its funds. The difference is
// checked like a reserve: ErrInsufficientFunds (a *DebtError for an account
// in debt) or ErrMonthlyLimit, writing nothing. It also returns
// ErrHoldNotFound, ErrHoldSettled, ErrHoldReleased, ErrHoldExpired,
// ErrInvalidAmount, ErrAmountPrecision or ErrInvalidTTL. Extending to what
// the hold already has is a no-op, so a repeated call is safe.
func (s *Service) Extend(ctx context.Context, p ExtendParams) (Hold, error) {
	if p.HoldID == "" || len(p.HoldID) > maxIDLen {
		return Hold{}, ErrHoldNotFound
	}
	if s.closed.Load() {
		return Hold{}, ErrClosed
	}
	if p.TTL < 0 || p.TTL > s.opt.MaxHoldTTL {
		return Hold{}, ErrInvalidTTL
	}
	if err := s.checkAmount(p.Amount, true); err != nil {
		return Hold{}, err
	}
	if s.local != nil {
		if h, ok, err := s.extendLocal(ctx, p); ok {
			return h, err
		}
	}
	r := SpendRequest{Kind: SpendExtend, Unit: s.opt.Unit.Code, HoldID: p.HoldID, Amount: p.Amount, TTL: p.TTL}
	if s.local != nil && !s.local.lease {
		return s.extendKeyed(ctx, r)
	}
	res, err := s.spend(ctx, r)
	return res.Hold, err
}

// Release frees a hold without charging. Releasing a released or expired
// hold returns it unchanged; a settled hold returns ErrHoldSettled. It also
// returns ErrHoldNotFound.
func (s *Service) Release(ctx context.Context, holdID string) (Hold, error) {
	if holdID == "" || len(holdID) > maxIDLen {
		return Hold{}, ErrHoldNotFound
	}
	if s.closed.Load() {
		return Hold{}, ErrClosed
	}
	if s.local != nil {
		if h, ok, err := s.releaseLocal(ctx, holdID); ok {
			return h, err
		}
	}
	res, err := s.spend(ctx, SpendRequest{Kind: SpendRelease, Unit: s.opt.Unit.Code, HoldID: holdID})
	return res.Hold, err
}

// Hold returns a hold as of now (an active hold past its deadline reads
// expired), or ErrHoldNotFound.
func (s *Service) Hold(ctx context.Context, holdID string) (Hold, error) {
	if holdID == "" || len(holdID) > maxIDLen {
		return Hold{}, ErrHoldNotFound
	}
	if h, ok := s.localHold(holdID); ok {
		return h.at(s.opt.Now()), nil
	}
	h, err := s.store.LedgerHold(ctx, holdID)
	if err != nil {
		return Hold{}, err
	}
	return h.at(s.opt.Now()), nil
}

func (s *Service) checkSpend(accountID string, amt Amount, key, ref, desc string) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if !validID(accountID) {
		return ErrUnknownAccount
	}
	if err := s.checkAmount(amt, false); err != nil {
		return err
	}
	return validKeyAndText(key, ref, desc)
}

// checkAmount checks a spent amount: positive (or zero if zeroOK), in
// range, a multiple of the unit's SpendIncrement.
func (s *Service) checkAmount(amt Amount, zeroOK bool) error {
	if amt.IsNegative() || (amt.IsZero() && !zeroOK) || !amt.inBounds() {
		return fmt.Errorf("%w: %s must be positive and in range", ErrInvalidAmount, amt)
	}
	if !amt.MultipleOf(s.opt.Unit.SpendIncrement) {
		return fmt.Errorf("%w: %s is not a multiple of %s", ErrAmountPrecision, amt, s.opt.Unit.SpendIncrement)
	}
	return nil
}

// spend applies r through the group commit or straight to the store, and
// starts an auto-recharge if r crossed the threshold (the group commit's
// loop does that itself, whether or not the caller still waits).
func (s *Service) spend(ctx context.Context, r SpendRequest) (SpendResult, error) {
	if s.batch != nil {
		res, err := s.batch.Do(ctx, r, ErrClosed)
		if err != nil {
			return SpendResult{}, err
		}
		return res, res.Err
	}
	one := s.ones.Get().(*oneSpend)
	one.req[0] = r
	err := s.store.ApplySpends(ctx, s.opt.Now(), one.req[:], one.res[:])
	res := one.res[0]
	*one = oneSpend{}
	s.ones.Put(one)
	if err != nil {
		s.AbortSpend(r) // the call returned: applied or not, it is over
		return SpendResult{}, err
	}
	s.AfterSpend(r, res)
	return res, res.Err
}

func validID(s string) bool {
	if s == "" || len(s) > maxIDLen {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return false
		}
	}
	return true
}

func validKeyAndText(key, ref, desc string) error {
	if key == "" || len(key) > maxKeyLen || !utf8.ValidString(key) {
		return ErrInvalidIdempotencyKey
	}
	return validText(ref, desc)
}

func validText(ref, desc string) error {
	if len(ref) > maxReferenceLen || len(desc) > maxDescriptionLen || !utf8.ValidString(ref) || !utf8.ValidString(desc) {
		return ErrInvalidText
	}
	return nil
}
