// Package storefault wraps a store.Store and makes chosen calls fail, so
// that a host (and keyledger's own tests) can check what its code does when
// the database misbehaves.
//
// A Rule picks calls by method name, by position (skip the first n, fail
// the next m) and by probability, and says how they fail:
//
//   - Before fails the call without reaching the wrapped store: nothing is
//     written, like a connection refused.
//   - After lets the wrapped store run the call to completion and then
//     returns an error anyway: the write happened but the caller cannot
//     know, like a commit whose acknowledgement was lost. This is the
//     ambiguous failure that idempotency keys exist for.
//   - TimeoutBefore and TimeoutAfter do the same with an error that also
//     matches context.DeadlineExceeded, optionally after blocking for the
//     rule's Delay.
//
// Every injected error matches ErrInjected with errors.Is. The wrapper
// forwards the optional capabilities keyledger looks for (credits and usage
// group commit, apikey.ChangeNotifier), so that the services above it take
// the same paths as over the wrapped store.
package storefault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/outbox"
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

// ErrInjected is matched (errors.Is) by every error the wrapper injects.
var ErrInjected = errkind.New(errkind.Unavailable, "storefault: injected fault")

// Mode says how a chosen call fails.
type Mode uint8

// Failure modes.
const (
	// Before fails the call without calling the wrapped store.
	Before Mode = iota + 1
	// After calls the wrapped store, discards its result and fails.
	After
	// TimeoutBefore is Before with an error that also matches
	// context.DeadlineExceeded.
	TimeoutBefore
	// TimeoutAfter is After with an error that also matches
	// context.DeadlineExceeded.
	TimeoutAfter
)

func (m Mode) String() string {
	switch m {
	case Before:
		return "before"
	case After:
		return "after"
	case TimeoutBefore:
		return "timeout-before"
	case TimeoutAfter:
		return "timeout-after"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// after reports whether the mode lets the wrapped call run.
func (m Mode) after() bool { return m == After || m == TimeoutAfter }

// Rule chooses calls to fail. A call is checked against the rules in
// order and the first rule that fires fails it.
type Rule struct {
	// Methods names the store.Store methods the rule applies to
	// ("MeterUsage", "ApplySpends", …); empty means every method but
	// Close. WriteMethods lists the mutating ones.
	Methods []string
	// Mode is how the call fails (Before if zero).
	Mode Mode
	// Skip lets the first Skip calls that match Methods through.
	Skip int
	// Count bounds how many calls the rule fails; 0 is no bound.
	Count int
	// Probability is the chance that a call past Skip fails, in (0, 1];
	// 0 means every such call.
	Probability float64
	// Delay, for the timeout modes, is how long the call blocks before it
	// fails (less if its context ends first).
	Delay time.Duration
	// Err, if set, is wrapped into the injected error in addition to
	// ErrInjected, e.g. to simulate a particular driver error.
	Err error
}

// Options configure New. nil means defaults.
type Options struct {
	// Rules are the initial rules (none: every call passes through).
	Rules []Rule
	// Seed seeds the random choices of rules with a Probability, so that a
	// single-goroutine run is reproducible (0 is a valid seed).
	Seed uint64
}

// Error is an injected failure. It matches ErrInjected, Err of its rule,
// and for the timeout modes context.DeadlineExceeded.
type Error struct {
	Method string
	Mode   Mode
	Err    error // the rule's Err, or nil
}

func (e *Error) Error() string {
	s := "storefault: injected " + e.Mode.String() + " fault in " + e.Method
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Kind is the kind of the rule's Err: errkind.Unknown when it has none or
// an unkinded one, so that an injected fault is classified like the driver
// failure it simulates (the facade retries it, or answers 503), not by
// ErrInjected's own kind, which only a bare ErrInjected shows.
func (e *Error) Kind() errkind.Kind { return errkind.Of(e.Err) }

// Unwrap makes errors.Is see ErrInjected, the rule's Err and, for
// timeouts, context.DeadlineExceeded.
func (e *Error) Unwrap() []error {
	errs := []error{ErrInjected}
	if e.Mode == TimeoutBefore || e.Mode == TimeoutAfter {
		errs = append(errs, context.DeadlineExceeded)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// WriteMethods returns the names of the store.Store methods that write.
func WriteMethods() []string {
	return []string{
		"CreateAccount", "UpdateAccount", "SetPasswordHash", "CreateSession", "RevokeSession", "RevokeSessions",
		"DeleteExpiredSessions", "CreateToken", "ConsumeToken", "CloseAccount", "CreateAPIKey", "UpdateAPIKey", "RotateAPIKey", "TouchAPIKeys",
		"OpenLedger", "SetLedgerPolicy", "LedgerCredit", "ApplySpends", "ExpireLedgers", "SetKeyLimit",
		"MeterUsage", "DeleteUsageBefore",
	}
}

// Store is a store.Store that fails the calls its rules choose and passes
// the others to the wrapped store. It is safe for concurrent use; rules
// may be replaced while calls run.
type Store struct {
	// the wrapped store (Inner, never failed: Close) and the capabilities
	// it has (group commit, apikey.ChangeNotifier)
	storewrap.Base

	mu    sync.Mutex
	rules []ruleState
	rng   *rand.Rand

	injected atomic.Int64
}

type ruleState struct {
	Rule
	seen, fired int
}

// New wraps inner. opts may be nil.
func New(inner store.Store, opts *Options) *Store {
	var o Options
	if opts != nil {
		o = *opts
	}
	s := &Store{Base: storewrap.Base{Store: inner}, rng: rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))}
	s.SetRules(o.Rules...)
	return s
}

// SetRules replaces the rules and restarts their counts; no rules lets
// every call through.
func (s *Store) SetRules(rules ...Rule) {
	rs := make([]ruleState, len(rules))
	for i, r := range rules {
		r.Methods = slices.Clone(r.Methods)
		if r.Mode == 0 {
			r.Mode = Before
		}
		rs[i] = ruleState{Rule: r}
	}
	s.mu.Lock()
	s.rules = rs
	s.mu.Unlock()
}

// Injected returns how many failures the wrapper has injected.
func (s *Store) Injected() int64 { return s.injected.Load() }

// pick returns the rule that fails this call of method, or nil.
func (s *Store) pick(method string) *Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.rules {
		r := &s.rules[i]
		if len(r.Methods) > 0 && !slices.Contains(r.Methods, method) {
			continue
		}
		r.seen++
		if r.seen <= r.Skip || (r.Count > 0 && r.fired >= r.Count) {
			continue
		}
		if r.Probability > 0 && r.Probability < 1 && s.rng.Float64() >= r.Probability {
			continue
		}
		r.fired++
		rule := r.Rule
		return &rule
	}
	return nil
}

// fail builds the injected error, blocking first for a timeout's Delay.
func (s *Store) fail(ctx context.Context, method string, r *Rule) error {
	if (r.Mode == TimeoutBefore || r.Mode == TimeoutAfter) && r.Delay > 0 {
		t := time.NewTimer(r.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	s.injected.Add(1)
	return &Error{Method: method, Mode: r.Mode, Err: r.Err}
}

// call runs f unless a rule fails this call of method.
func call[T any](ctx context.Context, s *Store, method string, f func() (T, error)) (T, error) {
	r := s.pick(method)
	if r == nil {
		return f()
	}
	var zero T
	if r.Mode.after() {
		_, _ = f()
	}
	return zero, s.fail(ctx, method, r)
}

// call0 is call for methods that return only an error.
func call0(ctx context.Context, s *Store, method string, f func() error) error {
	_, err := call(ctx, s, method, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

// account.Store

// CreateAccount implements account.Store.
func (s *Store) CreateAccount(ctx context.Context, a account.Account, passwordHash string) error {
	return call0(ctx, s, "CreateAccount", func() error { return s.Store.CreateAccount(ctx, a, passwordHash) })
}

// Account implements account.Store.
func (s *Store) Account(ctx context.Context, id string) (account.Account, error) {
	return call(ctx, s, "Account", func() (account.Account, error) { return s.Store.Account(ctx, id) })
}

// AccountByEmail implements account.Store.
func (s *Store) AccountByEmail(ctx context.Context, email string) (account.Account, error) {
	return call(ctx, s, "AccountByEmail", func() (account.Account, error) { return s.Store.AccountByEmail(ctx, email) })
}

// UpdateAccount implements account.Store.
func (s *Store) UpdateAccount(ctx context.Context, id string, u account.Update, now time.Time) (account.Account, error) {
	return call(ctx, s, "UpdateAccount", func() (account.Account, error) { return s.Store.UpdateAccount(ctx, id, u, now) })
}

// ListAccounts implements account.Store.
func (s *Store) ListAccounts(ctx context.Context, afterID string, limit int) ([]account.Account, error) {
	return call(ctx, s, "ListAccounts", func() ([]account.Account, error) { return s.Store.ListAccounts(ctx, afterID, limit) })
}

// PasswordHash implements account.Store.
func (s *Store) PasswordHash(ctx context.Context, id string) (string, error) {
	return call(ctx, s, "PasswordHash", func() (string, error) { return s.Store.PasswordHash(ctx, id) })
}

// SetPasswordHash implements account.Store.
func (s *Store) SetPasswordHash(ctx context.Context, id, hash string, now time.Time) error {
	return call0(ctx, s, "SetPasswordHash", func() error { return s.Store.SetPasswordHash(ctx, id, hash, now) })
}

// CreateSession implements account.Store.
func (s *Store) CreateSession(ctx context.Context, sess account.Session) error {
	return call0(ctx, s, "CreateSession", func() error { return s.Store.CreateSession(ctx, sess) })
}

// Session implements account.Store.
func (s *Store) Session(ctx context.Context, tokenHash [32]byte) (account.Session, error) {
	return call(ctx, s, "Session", func() (account.Session, error) { return s.Store.Session(ctx, tokenHash) })
}

// RevokeSession implements account.Store.
func (s *Store) RevokeSession(ctx context.Context, tokenHash [32]byte, at time.Time) error {
	return call0(ctx, s, "RevokeSession", func() error { return s.Store.RevokeSession(ctx, tokenHash, at) })
}

// RevokeSessions implements account.Store.
func (s *Store) RevokeSessions(ctx context.Context, accountID string, at time.Time) (int, error) {
	return call(ctx, s, "RevokeSessions", func() (int, error) { return s.Store.RevokeSessions(ctx, accountID, at) })
}

// DeleteExpiredSessions implements account.Store.
func (s *Store) DeleteExpiredSessions(ctx context.Context, before time.Time) (int, error) {
	return call(ctx, s, "DeleteExpiredSessions", func() (int, error) { return s.Store.DeleteExpiredSessions(ctx, before) })
}

// apikey.Store

// CreateAPIKey implements apikey.Store.
func (s *Store) CreateAPIKey(ctx context.Context, k apikey.APIKey, hash [32]byte) error {
	return call0(ctx, s, "CreateAPIKey", func() error { return s.Store.CreateAPIKey(ctx, k, hash) })
}

// APIKey implements apikey.Store.
func (s *Store) APIKey(ctx context.Context, accountID, keyID string) (apikey.APIKey, error) {
	return call(ctx, s, "APIKey", func() (apikey.APIKey, error) { return s.Store.APIKey(ctx, accountID, keyID) })
}

// ListAPIKeys implements apikey.Store.
func (s *Store) ListAPIKeys(ctx context.Context, accountID, afterID string, limit int) ([]apikey.APIKey, error) {
	return call(ctx, s, "ListAPIKeys", func() ([]apikey.APIKey, error) { return s.Store.ListAPIKeys(ctx, accountID, afterID, limit) })
}

// APIKeyByHash implements apikey.Store.
func (s *Store) APIKeyByHash(ctx context.Context, hash [32]byte) (apikey.Match, error) {
	return call(ctx, s, "APIKeyByHash", func() (apikey.Match, error) { return s.Store.APIKeyByHash(ctx, hash) })
}

// UpdateAPIKey implements apikey.Store.
func (s *Store) UpdateAPIKey(ctx context.Context, accountID, keyID string, u apikey.Update, now time.Time) (apikey.APIKey, error) {
	return call(ctx, s, "UpdateAPIKey", func() (apikey.APIKey, error) { return s.Store.UpdateAPIKey(ctx, accountID, keyID, u, now) })
}

// RotateAPIKey implements apikey.Store.
func (s *Store) RotateAPIKey(ctx context.Context, accountID, keyID string, r apikey.Rotation, now time.Time) (apikey.APIKey, error) {
	return call(ctx, s, "RotateAPIKey", func() (apikey.APIKey, error) { return s.Store.RotateAPIKey(ctx, accountID, keyID, r, now) })
}

// TouchAPIKeys implements apikey.Store.
func (s *Store) TouchAPIKeys(ctx context.Context, uses []apikey.Use) error {
	return call0(ctx, s, "TouchAPIKeys", func() error { return s.Store.TouchAPIKeys(ctx, uses) })
}

// credits.Store

// OpenLedger implements credits.Store.
func (s *Store) OpenLedger(ctx context.Context, id, unit string, p credits.Policy, now time.Time) (credits.Account, error) {
	return call(ctx, s, "OpenLedger", func() (credits.Account, error) { return s.Store.OpenLedger(ctx, id, unit, p, now) })
}

// SetLedgerPolicy implements credits.Store.
func (s *Store) SetLedgerPolicy(ctx context.Context, accountID string, p credits.Policy, now time.Time) (credits.Account, error) {
	return call(ctx, s, "SetLedgerPolicy", func() (credits.Account, error) { return s.Store.SetLedgerPolicy(ctx, accountID, p, now) })
}

// SetKeyLimit implements credits.Store.
func (s *Store) SetKeyLimit(ctx context.Context, accountID, keyID string, limit credits.Amount, p credits.Period, now time.Time) (credits.KeySpend, error) {
	return call(ctx, s, "SetKeyLimit", func() (credits.KeySpend, error) { return s.Store.SetKeyLimit(ctx, accountID, keyID, limit, p, now) })
}

// LedgerAccount implements credits.Store.
func (s *Store) LedgerAccount(ctx context.Context, accountID string, now time.Time) (credits.Account, error) {
	return call(ctx, s, "LedgerAccount", func() (credits.Account, error) { return s.Store.LedgerAccount(ctx, accountID, now) })
}

// LedgerCredit implements credits.Store.
func (s *Store) LedgerCredit(ctx context.Context, now time.Time, r credits.CreditRequest) (credits.Entry, error) {
	return call(ctx, s, "LedgerCredit", func() (credits.Entry, error) { return s.Store.LedgerCredit(ctx, now, r) })
}

// LedgerEntries implements credits.Store.
func (s *Store) LedgerEntries(ctx context.Context, accountID string, f credits.EntryFilter, beforeSeq int64, limit int) ([]credits.Entry, error) {
	return call(ctx, s, "LedgerEntries", func() ([]credits.Entry, error) {
		return s.Store.LedgerEntries(ctx, accountID, f, beforeSeq, limit)
	})
}

// LedgerBalanceAt implements credits.Store.
func (s *Store) LedgerBalanceAt(ctx context.Context, accountID string, t time.Time) (credits.Amount, error) {
	return call(ctx, s, "LedgerBalanceAt", func() (credits.Amount, error) { return s.Store.LedgerBalanceAt(ctx, accountID, t) })
}

// ApplySpends implements credits.Store. A failure of the After kind comes
// after the wrapped store applied every request; res is then cleared.
func (s *Store) ApplySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	err := call0(ctx, s, "ApplySpends", func() error { return s.Store.ApplySpends(ctx, now, reqs, res) })
	if err != nil {
		clear(res)
	}
	return err
}

// LedgerHold implements credits.Store.
func (s *Store) LedgerHold(ctx context.Context, holdID string) (credits.Hold, error) {
	return call(ctx, s, "LedgerHold", func() (credits.Hold, error) { return s.Store.LedgerHold(ctx, holdID) })
}

// ExpireLedgers implements credits.Store.
func (s *Store) ExpireLedgers(ctx context.Context, now time.Time, accountID string, limit int) (credits.ExpiryReport, error) {
	return call(ctx, s, "ExpireLedgers", func() (credits.ExpiryReport, error) { return s.Store.ExpireLedgers(ctx, now, accountID, limit) })
}

// usage.Store

// MeterUsage implements usage.Store. A failure of the After kind comes
// after the wrapped store applied every request; res is then cleared.
func (s *Store) MeterUsage(ctx context.Context, now time.Time, reqs []usage.MeterRequest, res []usage.MeterOutcome) error {
	err := call0(ctx, s, "MeterUsage", func() error { return s.Store.MeterUsage(ctx, now, reqs, res) })
	if err != nil {
		clear(res)
	}
	return err
}

// UsageRecords implements usage.Store.
func (s *Store) UsageRecords(ctx context.Context, q usage.RecordQuery) ([]usage.Record, error) {
	return call(ctx, s, "UsageRecords", func() ([]usage.Record, error) { return s.Store.UsageRecords(ctx, q) })
}

// ScanUsage implements usage.Store.
func (s *Store) ScanUsage(ctx context.Context, q usage.RecordQuery, fn func(*usage.Record) error) error {
	return call0(ctx, s, "ScanUsage", func() error { return s.Store.ScanUsage(ctx, q, fn) })
}

// rollups is the result of UsageRollups.
type rollups struct {
	rows       []usage.Rollup
	otherZones bool
}

// UsageRollups implements usage.Store.
func (s *Store) UsageRollups(ctx context.Context, q usage.RollupQuery) ([]usage.Rollup, bool, error) {
	r, err := call(ctx, s, "UsageRollups", func() (rollups, error) {
		rows, other, err := s.Store.UsageRollups(ctx, q)
		return rollups{rows, other}, err
	})
	return r.rows, r.otherZones, err
}

// DeleteUsageBefore implements usage.Store.
func (s *Store) DeleteUsageBefore(ctx context.Context, t time.Time) (int, error) {
	return call(ctx, s, "DeleteUsageBefore", func() (int, error) { return s.Store.DeleteUsageBefore(ctx, t) })
}

// CreateToken implements account.Store.
func (s *Store) CreateToken(ctx context.Context, t account.Token) error {
	return call0(ctx, s, "CreateToken", func() error { return s.Store.CreateToken(ctx, t) })
}

// ConsumeToken implements account.Store.
func (s *Store) ConsumeToken(ctx context.Context, kind account.TokenKind, h [32]byte, at time.Time) (account.Token, error) {
	return call(ctx, s, "ConsumeToken", func() (account.Token, error) { return s.Store.ConsumeToken(ctx, kind, h, at) })
}

// CloseAccount implements account.Store.
func (s *Store) CloseAccount(ctx context.Context, id string, now time.Time) (account.Account, error) {
	return call(ctx, s, "CloseAccount", func() (account.Account, error) { return s.Store.CloseAccount(ctx, id, now) })
}

// EmailClosed implements account.Store.
func (s *Store) EmailClosed(ctx context.Context, h [32]byte) (bool, error) {
	return call(ctx, s, "EmailClosed", func() (bool, error) { return s.Store.EmailClosed(ctx, h) })
}

// The event outbox (internal/outbox.Store): the dispatcher's calls can be
// failed like any other, to show that an event survives a failed claim or
// a failed finish (it is delivered again, never lost).

// ClaimEvents implements the outbox's claim.
func (s *Store) ClaimEvents(ctx context.Context, now, leaseUntil time.Time, claim string, limit int) ([]outbox.Pending, error) {
	return call(ctx, s, "ClaimEvents", func() ([]outbox.Pending, error) {
		return s.Base.ClaimEvents(ctx, now, leaseUntil, claim, limit)
	})
}

// FinishEvent implements the outbox's finish.
func (s *Store) FinishEvent(ctx context.Context, now time.Time, r outbox.Result) error {
	return call0(ctx, s, "FinishEvent", func() error { return s.Base.FinishEvent(ctx, now, r) })
}

// AppendEvents implements events.Store.
func (s *Store) AppendEvents(ctx context.Context, evs []events.Event) error {
	return call0(ctx, s, "AppendEvents", func() error { return s.Store.AppendEvents(ctx, evs) })
}
