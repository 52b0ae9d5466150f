// Package subscription renews plan credits each billing period: an
// account on a plan with a monthly grant receives it at the start of every
// calendar month of its time zone, expiring at the month's end.
//
// There is no reset job that could fail silently. The grant of the current
// period is ensured idempotently, under the ledger idempotency key
// "sub:<account>:<yyyy-mm>", whenever the account is used (Ensure,
// EnsureID: the servers call it before authorizing and before reading a
// balance) and by a bounded sweep over all accounts (Sweep). Any number of
// callers, in any number of processes, write one grant per period. A month
// boundary crossed while no server ran is granted on the next use or sweep,
// for the current period only: the grants of missed periods would have
// expired already.
//
// Plan changes. An upgrade within a period adds the difference at once:
// plans form a ladder ordered by their grant, and each step above the plan
// first granted in the period is granted under its own key
// ("sub:<account>:<yyyy-mm>:<plan>") and with a fixed amount, so the
// period's total is the highest plan's grant whatever the path (free →
// starter → professional grants 100 + 4,900 + 20,000, as does free →
// professional), and downgrading and upgrading again grants nothing more. A
// downgrade keeps the credits already granted until the period ends (the
// lower plan's monthly limit applies at once, as it is the ledger's
// policy); the next period is granted at the lower plan.
//
// Suspended and closed accounts get no grants; an account reactivated
// within a period gets that period's grant on its next use. An account
// signed up with the email of a closed account gets no grant for the month
// it signed up in (as keyledger gives it no signup grant: a close and a new
// sign-up must not refill the month), and is granted from the next month.
//
// A process remembers which period it granted until the period ends; an
// account whose time zone changes within a period keeps that period's
// grant and expiry, and its next period follows the new zone.
package subscription

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/cache"
)

// Period is one billing period: a calendar month in the account's zone.
type Period struct {
	Label      string // "2026-12"
	Start, End time.Time
}

// PeriodAt returns the month of loc that contains t.
func PeriodAt(t time.Time, loc *time.Location) Period {
	l := t.In(loc)
	start := time.Date(l.Year(), l.Month(), 1, 0, 0, 0, 0, loc)
	return Period{Label: start.Format("2006-01"), Start: start, End: start.AddDate(0, 1, 0)}
}

// Key is the ledger idempotency key of an account's grant for a period.
func Key(accountID, label string) string { return "sub:" + accountID + ":" + label }

// level is one rung of the plan ladder: plans ordered by grant, each rung
// worth the difference to the rung below.
type level struct {
	plan, name  string
	grant, step credits.Amount
}

// ensured is what this process knows it granted: the account's period
// and plan, until the period ends.
type ensured struct{ label, plan string }

// Renewer ensures the subscription grants of accounts. A nil *Renewer does
// nothing (profiles without monthly grants).
type Renewer struct {
	kl     *keyledger.KeyLedger
	now    func() time.Time
	ladder []level
	grants map[string]credits.Amount
	done   *cache.Cache[string, ensured]
	seed   maphash.Seed
	locks  [64]sync.Mutex // per account (hashed): one grant writer per process

	zmu   sync.Mutex
	zones map[string]*time.Location
}

// New returns a Renewer for the plans' monthly grants (plan ID → credits),
// or nil if grants is empty. now is the clock (time.Now if nil); use the
// KeyLedger's, since the ledger checks that expiries are in its future.
func New(kl *keyledger.KeyLedger, grants map[string]decimal.Decimal, now func() time.Time) (*Renewer, error) {
	if len(grants) == 0 {
		return nil, nil
	}
	if now == nil {
		now = time.Now
	}
	r := &Renewer{kl: kl, now: now, grants: map[string]credits.Amount{}, done: cache.New[string, ensured](100_000, now),
		seed: maphash.MakeSeed(), zones: map[string]*time.Location{}}
	for id, g := range grants {
		p, ok := kl.Catalog.Plan(id)
		if !ok || g.IsNegative() {
			return nil, fmt.Errorf("subscription: plan %q: unknown or negative grant", id)
		}
		a := credits.NewAmount(g)
		r.grants[id] = a
		r.ladder = append(r.ladder, level{plan: id, name: p.Name, grant: a})
	}
	slices.SortFunc(r.ladder, func(a, b level) int { return cmp.Or(a.grant.Cmp(b.grant), strings.Compare(a.plan, b.plan)) })
	prev := credits.Amount{}
	for i := range r.ladder {
		r.ladder[i].step = r.ladder[i].grant.Sub(prev)
		prev = r.ladder[i].grant
	}
	return r, nil
}

// Grant returns the monthly grant of a plan (zero if it has none).
func (r *Renewer) Grant(plan string) credits.Amount {
	if r == nil {
		return credits.Amount{}
	}
	return r.grants[plan]
}

func (r *Renewer) location(tz string) (*time.Location, error) {
	r.zmu.Lock()
	defer r.zmu.Unlock()
	if l, ok := r.zones[tz]; ok {
		return l, nil
	}
	l, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("subscription: time zone %q: %w", tz, err)
	}
	if len(r.zones) < 1000 {
		r.zones[tz] = l
	}
	return l, nil
}

func (r *Renewer) lock(accountID string) *sync.Mutex {
	return &r.locks[maphash.String(r.seed, accountID)%uint64(len(r.locks))]
}

// EnsureID ensures the current period's grant of the account whose key
// says it is on plan: without any read when this process granted it
// already, else reading the account (its plan, zone and status) first.
func (r *Renewer) EnsureID(ctx context.Context, accountID, plan string) error {
	if r == nil {
		return nil
	}
	if e, ok := r.done.Get(accountID); ok && e.plan == plan {
		return nil
	}
	a, err := r.kl.Accounts.Get(ctx, accountID)
	if err != nil {
		return fmt.Errorf("subscription: %w", err)
	}
	return r.Ensure(ctx, a)
}

// Ensure grants the account's credits for the current period if they were
// not granted yet (and the upgrade steps of a plan changed within it). It
// is safe to call concurrently, from any number of processes.
func (r *Renewer) Ensure(ctx context.Context, a account.Account) error {
	if r == nil || a.Status != account.StatusActive || !r.grants[a.Plan].IsPositive() {
		return nil
	}
	loc, err := r.location(a.TimeZone)
	if err != nil {
		return err
	}
	now := r.now()
	p := PeriodAt(now, loc)
	want := ensured{label: p.Label, plan: a.Plan}
	if e, ok := r.done.Get(a.ID); ok && e == want {
		return nil
	}
	mu := r.lock(a.ID)
	mu.Lock()
	defer mu.Unlock()
	if e, ok := r.done.Get(a.ID); ok && e == want {
		return nil
	}
	skip := false
	if !a.CreatedAt.Before(p.Start) { // its first month: was the email a closed account's?
		if skip, err = r.kl.Accounts.EmailClosed(ctx, a.Email); err != nil {
			return fmt.Errorf("subscription: %w", err)
		}
	}
	if !skip {
		if err := r.grant(ctx, a, p); err != nil {
			return err
		}
	}
	r.done.Set(a.ID, want, p.End.Sub(now))
	return nil
}

// grant writes the period's base grant at the account's plan, or finds the
// one written earlier (at the plan of the time), then the ladder steps
// from that plan up to the account's.
func (r *Renewer) grant(ctx context.Context, a account.Account, p Period) error {
	key := Key(a.ID, p.Label)
	basePlan, expires := a.Plan, p.End
	err := r.credit(ctx, a, key, r.grants[a.Plan], p.End, "subscription:"+p.Label+":"+a.Plan,
		fmt.Sprintf("%s plan: %s credits for %s", r.name(a.Plan), r.grants[a.Plan], p.Label))
	if errors.Is(err, credits.ErrIdempotencyConflict) {
		// Granted before at another plan (or zone): find out which.
		e, found, ferr := r.find(ctx, a.ID, p, key)
		if ferr != nil || !found {
			return errors.Join(fmt.Errorf("subscription: grant %s: %w", key, err), ferr)
		}
		_, rest, _ := strings.Cut(strings.TrimPrefix(e.Reference, "subscription:"), ":")
		basePlan, expires = rest, e.ExpiresAt
	} else if err != nil {
		return err
	}
	from, to := r.grants[basePlan], r.grants[a.Plan]
	if to.Cmp(from) <= 0 || !expires.After(r.now()) {
		return nil
	}
	for _, l := range r.ladder {
		if l.grant.Cmp(from) <= 0 || l.grant.Cmp(to) > 0 || !l.step.IsPositive() {
			continue
		}
		k := key + ":" + l.plan
		err := r.credit(ctx, a, k, l.step, expires, "subscription:"+p.Label+":"+l.plan,
			fmt.Sprintf("Upgrade to %s: %s more credits for %s", l.name, l.step, p.Label))
		if errors.Is(err, credits.ErrIdempotencyConflict) {
			if _, found, ferr := r.find(ctx, a.ID, p, k); ferr != nil || !found {
				return errors.Join(fmt.Errorf("subscription: grant %s: %w", k, err), ferr)
			}
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *Renewer) name(plan string) string {
	if p, ok := r.kl.Catalog.Plan(plan); ok && p.Name != "" {
		return p.Name
	}
	return plan
}

// credit grants amount under key, opening the account's ledger first if it
// has none. ErrIdempotencyConflict is returned unwrapped.
func (r *Renewer) credit(ctx context.Context, a account.Account, key string, amount credits.Amount, expires time.Time, ref, desc string) error {
	p := credits.CreditParams{AccountID: a.ID, Amount: amount, ExpiresAt: expires, Reference: ref, Description: desc, IdempotencyKey: key}
	_, err := r.kl.Credits.Grant(ctx, p)
	if errors.Is(err, credits.ErrUnknownAccount) {
		if err := r.kl.EnsureLedger(ctx, a); err != nil {
			return fmt.Errorf("subscription: open ledger: %w", err)
		}
		_, err = r.kl.Credits.Grant(ctx, p)
	}
	switch {
	case errors.Is(err, credits.ErrIdempotencyConflict):
		return err
	case err != nil:
		return fmt.Errorf("subscription: grant %s: %w", key, err)
	}
	return nil
}

// find looks for the grant written under key among the account's grants
// since shortly before the period began (newest first, a bounded read).
func (r *Renewer) find(ctx context.Context, accountID string, p Period, key string) (credits.Entry, bool, error) {
	f := credits.EntryFilter{Types: []credits.EntryType{credits.EntryGrant}, From: p.Start.Add(-48 * time.Hour)}
	cursor := ""
	for range 20 {
		pg, err := r.kl.Credits.Entries(ctx, accountID, f, cursor, 500)
		if err != nil {
			return credits.Entry{}, false, fmt.Errorf("subscription: find %s: %w", key, err)
		}
		for _, e := range pg.Entries {
			if e.IdempotencyKey == key {
				return e, true, nil
			}
		}
		if pg.NextCursor == "" {
			break
		}
		cursor = pg.NextCursor
	}
	return credits.Entry{}, false, nil
}

// Sweep ensures the grants of up to limit accounts from cursor (the
// accounts in creation order; "" starts from the first) and returns the
// cursor to continue from, "" after the last page. It goes on past an
// account that fails and returns the errors with the cursor.
func (r *Renewer) Sweep(ctx context.Context, cursor string, limit int) (string, error) {
	if r == nil {
		return "", nil
	}
	pg, err := r.kl.Accounts.List(ctx, account.ListParams{Cursor: cursor, Limit: limit})
	if err != nil {
		return "", fmt.Errorf("subscription: sweep: %w", err)
	}
	var errs []error
	for _, a := range pg.Accounts {
		if ctx.Err() != nil {
			return cursor, ctx.Err()
		}
		if err := r.Ensure(ctx, a); err != nil {
			errs = append(errs, fmt.Errorf("account %s: %w", a.ID, err))
		}
		cursor = a.ID
	}
	return pg.NextCursor, errors.Join(errs...)
}
