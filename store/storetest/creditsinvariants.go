package storetest

// The ledger invariant engine. It runs one program — a byte string decoded
// into grants, purchases, debits, negative adjustments, reserves, settles,
// releases, clock advances, expiry sweeps, replays and conflicting key
// reuses — against one or more backends and against a deliberately simple
// model of the ledger written independently of ledger.AccountState, and
// after every step checks:
//
//  1. Σ entries == balance (all pages of Entries), and BalanceAt(now) ==
//     balance;
//  2. balance, held, available and used-this-month equal the model's on
//     every backend (so the backends agree with each other);
//  3. available ≥ −overdraft, except after a grant expired while holds were
//     active (a documented way to go below), and balance ≥ −overdraft
//     except by the overshoot of settlements above their hold that charged
//     delivered work into debt (credits.OverrunDebt): balance ≥ −overdraft −
//     Σ overshoot since the balance was last at or above −overdraft; the
//     account's Debt equals how far the balance is below −overdraft;
//  4. no hold is settled twice: at most one debit entry names each hold,
//     and every hold's state and charge equal the model's;
//  5. replays are no-ops: a replayed request returns its first result
//     (same entry or hold ID) and writes nothing; a conflicting reuse of a
//     key fails with ErrIdempotencyConflict and writes nothing.
//
// It runs as a seeded test in Run (fewer steps under -short) and as the
// Go fuzz target FuzzLedgerInvariants in package credits, which drives
// memstore and sqlitestore side by side.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/internal/id"
)

// RandomLedgerProgram returns a program of n steps for LedgerInvariants.
func RandomLedgerProgram(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := make([]byte, 2+3*n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// MaxLedgerSteps bounds the steps LedgerInvariants decodes from a program.
const MaxLedgerSteps = 400

// LedgerInvariants runs program (at most MaxLedgerSteps steps) against
// every store in stores (each may be shared with other runs: the engine
// uses a fresh account) and fails t if any invariant breaks.
func LedgerInvariants(t testing.TB, program []byte, stores ...credits.Store) {
	t.Helper()
	if len(program) < 2 {
		return
	}
	clk := fakeclock.New(epoch)
	acctID := id.NewGenerator(nil).New("acct_")
	od := []string{"0", "2.5"}[program[0]%2]
	capAmt := []string{"0", "40", "0", "25"}[program[1]%4]
	policy := credits.Policy{Overdraft: amt(t, od), MonthlyCap: amt(t, capAmt), TimeZone: "Asia/Kolkata"}
	loc, err := time.LoadLocation(policy.TimeZone)
	if err != nil {
		t.Fatal(err)
	}
	m := newLedgerModel(dec(od), dec(capAmt), loc, clk.Now())
	runs := make([]*engineRun, len(stores))
	for i, st := range stores {
		svc, err := credits.NewService(st, &credits.Options{Now: clk.Now, Unit: credits.INR(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer svc.Close(context.Background())
		if _, err := svc.Open(ctx(), acctID, policy); err != nil {
			t.Fatal(err)
		}
		runs[i] = &engineRun{svc: svc, st: st, name: fmt.Sprintf("store %d (%T)", i, st), first: map[int]string{}, holdIDs: map[int]string{}}
	}
	e := &engine{t: t, m: m, runs: runs, acct: acctID, clk: clk}
	pos := 2
	for step := 0; step < MaxLedgerSteps && pos+3 <= len(program); step++ {
		op, a, b := program[pos], program[pos+1], program[pos+2]
		pos += 3
		e.touched = -1
		e.step(step, op, a, b)
		e.check(step, step%16 == 15 || pos+3 > len(program))
		if t.Failed() {
			t.Fatalf("program %x failed at step %d", program, step)
		}
	}
}

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

// ---- the model ----

type mLot struct {
	exp time.Time
	rem decimal.Decimal
}

type mHold struct {
	amt, actual, charged decimal.Decimal
	state                credits.HoldState
	deadline             time.Time
	overrun              credits.Overrun
}

type ledgerModel struct {
	bal, held, spent, od, cap decimal.Decimal
	loc                       *time.Location
	monthEnd                  time.Time
	lots                      []mLot
	holds                     []*mHold
	entries                   int
	deficitOK                 bool
	// overshoot is Σ (actual − hold) of settlements charged into debt
	// since the balance was last at or above −overdraft.
	overshoot decimal.Decimal
}

func newLedgerModel(od, cap decimal.Decimal, loc *time.Location, now time.Time) *ledgerModel {
	m := &ledgerModel{od: od, cap: cap, loc: loc}
	m.monthEnd = m.nextMonth(now)
	return m
}

func (m *ledgerModel) nextMonth(now time.Time) time.Time {
	t := now.In(m.loc)
	return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, m.loc)
}

func (m *ledgerModel) advance(now time.Time) {
	for _, h := range m.holds {
		if h.state == credits.HoldActive && !now.Before(h.deadline) {
			h.state = credits.HoldExpired
			m.held = m.held.Sub(h.amt)
		}
	}
	for len(m.lots) > 0 && !now.Before(m.lots[0].exp) {
		m.bal = m.bal.Sub(m.lots[0].rem)
		m.lots = m.lots[1:]
		m.entries++
		if m.held.Sign() > 0 {
			m.deficitOK = true
		}
	}
	if !now.Before(m.monthEnd) {
		m.monthEnd = m.nextMonth(now)
		m.spent = decimal.Zero
	}
	if m.held.Sign() == 0 {
		m.deficitOK = false
	}
}

func (m *ledgerModel) room() decimal.Decimal { return m.bal.Sub(m.held).Add(m.od) }

func (m *ledgerModel) check(x decimal.Decimal) error {
	if m.room().LessThan(x) {
		return credits.ErrInsufficientFunds
	}
	if m.cap.Sign() > 0 && m.spent.Add(m.held).Add(x).GreaterThan(m.cap) {
		return credits.ErrMonthlyLimit
	}
	return nil
}

func (m *ledgerModel) withdraw(x decimal.Decimal) {
	m.bal = m.bal.Sub(x)
	for len(m.lots) > 0 && x.Sign() > 0 {
		if m.lots[0].rem.GreaterThan(x) {
			m.lots[0].rem = m.lots[0].rem.Sub(x)
			return
		}
		x = x.Sub(m.lots[0].rem)
		m.lots = m.lots[1:]
	}
}

func (m *ledgerModel) addLot(l mLot) {
	i := len(m.lots)
	for i > 0 && m.lots[i-1].exp.After(l.exp) {
		i--
	}
	m.lots = append(m.lots[:i], append([]mLot{l}, m.lots[i:]...)...)
}

// ---- the engine ----

type engineRun struct {
	svc     *credits.Service
	st      credits.Store
	name    string
	first   map[int]string // step → ID of its first result (entry or hold)
	holdIDs map[int]string // model hold index → hold ID
}

type keyedOp struct {
	step      int
	kind      byte // 'g' grant, 'p' purchase, 'd' debit, 'a' adjust, 'r' reserve
	amount    decimal.Decimal
	expiresAt time.Time
	ttl       time.Duration
	hold      int // 'r': the model hold it made
}

type engine struct {
	t     testing.TB
	m     *ledgerModel
	runs  []*engineRun
	acct  string
	clk   *fakeclock.Clock
	keyed []keyedOp
	// touched is the model hold the step used (-1: none); check looks at
	// it after every step and at all holds every 16 steps.
	touched int
}

func creditAmount(b byte) decimal.Decimal { return decimal.New(int64(b%32+1)*50, -2) }  // 0.50 … 16.00
func spendAmount(b byte) decimal.Decimal  { return decimal.New(int64(b%64+1)*125, -3) } // 0.125 … 8.000

var advances = []time.Duration{time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour, 9 * 24 * time.Hour}

func (e *engine) key(step int) string { return fmt.Sprintf("k%d", step) }

func (e *engine) step(step int, op, a, b byte) {
	now := e.clk.Now()
	e.m.advance(now)
	switch op % 12 {
	case 0, 1: // grant, half of them expiring
		x := creditAmount(a)
		var exp time.Time
		if b%2 == 0 {
			exp = now.Add(time.Duration(b%8+1) * 12 * time.Hour)
		}
		e.credit(step, keyedOp{step: step, kind: 'g', amount: x, expiresAt: exp})
	case 2:
		e.credit(step, keyedOp{step: step, kind: 'p', amount: creditAmount(a)})
	case 3, 4:
		e.debit(step, keyedOp{step: step, kind: 'd', amount: spendAmount(a)})
	case 5:
		e.credit(step, keyedOp{step: step, kind: 'a', amount: creditAmount(a).Neg()})
	case 6, 7:
		e.reserve(step, keyedOp{step: step, kind: 'r', amount: spendAmount(a), ttl: time.Duration(b%4+1) * 3 * time.Hour})
	case 8:
		e.settle(a, b)
	case 9:
		e.release(a)
	case 10:
		if b%3 == 0 {
			for _, r := range e.runs {
				if _, err := r.svc.ExpireDue(ctx()); err != nil {
					e.t.Errorf("%s: ExpireDue: %v", r.name, err)
				}
			}
		} else {
			e.clk.Advance(advances[a%byte(len(advances))])
		}
	case 11:
		e.reuse(step, a, b)
	}
}

// outcome records one backend's result of a step against the model's.
func (e *engine) outcome(r *engineRun, what string, err, want error) bool {
	if processHolds(r.st) && errors.Is(err, credits.ErrHoldNotFound) &&
		(errors.Is(want, credits.ErrHoldExpired) || errors.Is(want, credits.ErrHoldReleased) ||
			want == nil && (strings.Contains(what, "(expired)") || strings.Contains(what, "(released)"))) {
		return false // a process hold resolved long ago is forgotten
	}
	if !errors.Is(err, want) || (want == nil && err != nil) {
		e.t.Errorf("%s: %s: err = %v, want %v", r.name, what, err, want)
		return false
	}
	return err == nil
}

func (e *engine) credit(step int, k keyedOp) {
	var want error
	if k.kind == 'a' && e.m.room().LessThan(k.amount.Neg()) {
		want = credits.ErrInsufficientFunds
	}
	for _, r := range e.runs {
		en, err := e.doCredit(r, k)
		if e.outcome(r, fmt.Sprintf("credit %c %s", k.kind, k.amount), err, want) {
			r.first[step] = en.ID
		}
	}
	if want != nil {
		return
	}
	if k.amount.Sign() < 0 {
		e.m.withdraw(k.amount.Neg())
	} else {
		debt := decimal.Max(e.m.bal.Add(e.m.od).Neg(), decimal.Zero)
		e.m.bal = e.m.bal.Add(k.amount)
		if rem := k.amount.Sub(decimal.Min(debt, k.amount)); !k.expiresAt.IsZero() && rem.Sign() > 0 {
			e.m.addLot(mLot{exp: k.expiresAt, rem: rem}) // a grant pays a debt first
		}
	}
	e.m.entries++
	e.keyed = append(e.keyed, k)
}

func (e *engine) doCredit(r *engineRun, k keyedOp) (credits.Entry, error) {
	p := credits.CreditParams{AccountID: e.acct, Amount: credits.NewAmount(k.amount), ExpiresAt: k.expiresAt, IdempotencyKey: e.key(k.step)}
	switch k.kind {
	case 'g':
		return r.svc.Grant(ctx(), p)
	case 'p':
		return r.svc.Purchase(ctx(), p)
	}
	return r.svc.Adjust(ctx(), p)
}

func (e *engine) debit(step int, k keyedOp) {
	want := e.m.check(k.amount)
	for _, r := range e.runs {
		en, err := e.doDebit(r, k)
		if e.outcome(r, "debit "+k.amount.String(), err, want) {
			r.first[step] = en.ID
		}
	}
	if want != nil {
		return
	}
	e.m.withdraw(k.amount)
	e.m.spent = e.m.spent.Add(k.amount)
	e.m.entries++
	e.keyed = append(e.keyed, k)
}

func (e *engine) doDebit(r *engineRun, k keyedOp) (credits.Entry, error) {
	return r.svc.Debit(ctx(), credits.DebitParams{AccountID: e.acct, Amount: credits.NewAmount(k.amount), IdempotencyKey: e.key(k.step)})
}

func (e *engine) reserve(step int, k keyedOp) {
	want := e.m.check(k.amount)
	k.hold = len(e.m.holds)
	for _, r := range e.runs {
		h, err := e.doReserve(r, k)
		if e.outcome(r, "reserve "+k.amount.String(), err, want) {
			r.first[step] = h.ID
			r.holdIDs[k.hold] = h.ID
		}
	}
	if want != nil {
		return
	}
	e.m.held = e.m.held.Add(k.amount)
	e.touched = k.hold
	e.m.holds = append(e.m.holds, &mHold{amt: k.amount, state: credits.HoldActive, deadline: e.clk.Now().Add(k.ttl)})
	e.keyed = append(e.keyed, k)
}

func (e *engine) doReserve(r *engineRun, k keyedOp) (credits.Hold, error) {
	return r.svc.Reserve(ctx(), credits.ReserveParams{AccountID: e.acct, Amount: credits.NewAmount(k.amount), TTL: k.ttl, IdempotencyKey: e.key(k.step)})
}

func (e *engine) settle(a, b byte) {
	if len(e.m.holds) == 0 {
		return
	}
	hi := int(a) % len(e.m.holds)
	e.touched = hi
	h := e.m.holds[hi]
	actual := spendAmount(b)
	if b%4 == 0 {
		actual = decimal.Zero
	}
	if h.state == credits.HoldSettled && b%2 == 0 {
		actual = h.actual // a replay
	}
	var want error
	replay := false
	switch h.state {
	case credits.HoldSettled:
		if actual.Equal(h.actual) {
			replay = true
		} else {
			want = credits.ErrHoldSettled
		}
	case credits.HoldReleased:
		want = credits.ErrHoldReleased
	case credits.HoldExpired:
		want = credits.ErrHoldExpired
	}
	ov := credits.OverrunDebt
	switch {
	case h.state == credits.HoldSettled:
		ov = h.overrun // a replay or conflict asks with the same policy
	case b%3 == 0:
		ov = credits.OverrunWriteOff
	}
	var charge decimal.Decimal
	if want == nil && !replay {
		e.m.held = e.m.held.Sub(h.amt)
		charge = actual
		if ov == credits.OverrunWriteOff {
			charge = decimal.Min(actual, e.m.room())
			if e.m.cap.Sign() > 0 {
				charge = decimal.Min(charge, e.m.cap.Sub(e.m.spent).Sub(e.m.held))
			}
			charge = decimal.Max(charge, decimal.Zero)
		} else if over := actual.Sub(h.amt); over.Sign() > 0 {
			e.m.overshoot = e.m.overshoot.Add(over)
		}
	}
	for _, r := range e.runs {
		s, err := r.svc.Settle(ctx(), credits.SettleParams{HoldID: r.holdIDs[hi], Actual: credits.NewAmount(actual), Overrun: ov})
		if !e.outcome(r, fmt.Sprintf("settle hold %d (%s) with %s", hi, h.state, actual), err, want) {
			continue
		}
		wantCharged := charge
		if replay {
			wantCharged = h.charged
		}
		if !s.Charged.Decimal().Equal(wantCharged) || !s.Shortfall.Decimal().Equal(actual.Sub(wantCharged)) || s.Hold.State != credits.HoldSettled {
			e.t.Errorf("%s: settle hold %d: charged %s shortfall %s state %s, want charged %s", r.name, hi, s.Charged, s.Shortfall, s.Hold.State, wantCharged)
		}
	}
	if want != nil || replay {
		return
	}
	h.state, h.actual, h.charged, h.overrun = credits.HoldSettled, actual, charge, ov
	if charge.Sign() > 0 {
		e.m.withdraw(charge)
		e.m.spent = e.m.spent.Add(charge)
		e.m.entries++
	}
}

func (e *engine) release(a byte) {
	if len(e.m.holds) == 0 {
		return
	}
	hi := int(a) % len(e.m.holds)
	e.touched = hi
	h := e.m.holds[hi]
	var want error
	if h.state == credits.HoldSettled {
		want = credits.ErrHoldSettled
	}
	for _, r := range e.runs {
		got, err := r.svc.Release(ctx(), r.holdIDs[hi])
		if e.outcome(r, fmt.Sprintf("release hold %d (%s)", hi, h.state), err, want) {
			wantState := h.state
			if wantState == credits.HoldActive {
				wantState = credits.HoldReleased
			}
			if got.State != wantState {
				e.t.Errorf("%s: release hold %d: state %s, want %s", r.name, hi, got.State, wantState)
			}
		}
	}
	if h.state == credits.HoldActive {
		h.state = credits.HoldReleased
		e.m.held = e.m.held.Sub(h.amt)
	}
}

// reuse replays an earlier successful keyed request (b even) or reuses its
// key with another amount (b odd); neither may write anything.
func (e *engine) reuse(step int, a, b byte) {
	if len(e.keyed) == 0 {
		return
	}
	k := e.keyed[int(a)%len(e.keyed)]
	conflict := b%2 == 1
	if conflict {
		k.amount = k.amount.Add(decimal.New(1, -2))
	}
	var want error
	if conflict {
		want = credits.ErrIdempotencyConflict
	}
	for _, r := range e.runs {
		var gotID string
		var err error
		switch k.kind {
		case 'd':
			var en credits.Entry
			en, err = e.doDebit(r, k)
			gotID = en.ID
		case 'r':
			if _, err := r.svc.Hold(ctx(), r.first[k.step]); processHolds(r.st) && errors.Is(err, credits.ErrHoldNotFound) {
				// A process hold released or expired long ago is forgotten
				// with its key (DESIGN.md, "Process holds").
				continue
			}
			var h credits.Hold
			h, err = e.doReserve(r, k)
			gotID = h.ID
		default:
			var en credits.Entry
			en, err = e.doCredit(r, k)
			gotID = en.ID
		}
		what := fmt.Sprintf("step %d: reuse of step %d's key (%c, conflict %v)", step, k.step, k.kind, conflict)
		if e.outcome(r, what, err, want) && gotID != r.first[k.step] {
			e.t.Errorf("%s: %s returned %s, first result was %s", r.name, what, gotID, r.first[k.step])
		}
	}
}

func (e *engine) check(step int, allHolds bool) {
	if e.m.bal.Sub(e.m.held).Cmp(e.m.od.Neg()) >= 0 {
		// Available is back above −overdraft: the overshoot is paid. (An
		// overshoot may take funds other holds set aside before it takes
		// the balance below −overdraft, so Available decides, not Balance.)
		e.m.overshoot = decimal.Zero
	}
	now := e.clk.Now()
	e.m.advance(now)
	m := e.m
	for _, r := range e.runs {
		acc, err := r.svc.Account(ctx(), e.acct)
		if err != nil {
			e.t.Errorf("%s: Account: %v", r.name, err)
			continue
		}
		if !acc.Balance.Decimal().Equal(m.bal) || !acc.Held.Decimal().Equal(m.held) || !acc.UsedThisMonth.Decimal().Equal(m.spent) {
			e.t.Errorf("%s: step %d: balance %s held %s used %s, model %s %s %s", r.name, step, acc.Balance, acc.Held, acc.UsedThisMonth, m.bal, m.held, m.spent)
		}
		if !acc.Available.Equal(acc.Balance.Sub(acc.Held)) {
			e.t.Errorf("%s: available %s != balance − held", r.name, acc.Available)
		}
		floor := credits.NewAmount(m.od.Neg())
		debtFloor := credits.NewAmount(m.od.Neg().Sub(m.overshoot))
		if acc.Balance.Cmp(debtFloor) < 0 || (acc.Available.Cmp(floor) < 0 && !m.deficitOK && m.overshoot.IsZero()) {
			e.t.Errorf("%s: step %d: balance %s / available %s below −overdraft %s (overshoot %s)", r.name, step, acc.Balance, acc.Available, m.od, m.overshoot)
		}
		if wantDebt := decimal.Max(m.bal.Add(m.od).Neg(), decimal.Zero); !acc.Debt.Decimal().Equal(wantDebt) {
			e.t.Errorf("%s: step %d: debt %s, model %s", r.name, step, acc.Debt, wantDebt)
		}
		at, err := r.svc.BalanceAt(ctx(), e.acct, now)
		if err != nil || !at.Equal(acc.Balance) {
			e.t.Errorf("%s: BalanceAt(now) = %s, %v; balance %s", r.name, at, err, acc.Balance)
		}
		es := allEntries(e.t, r.svc, e.acct)
		var sum credits.Amount
		settled := map[string]int{}
		for _, en := range es {
			sum = sum.Add(en.Amount)
			if en.HoldID != "" {
				settled[en.HoldID]++
			}
		}
		if !sum.Equal(acc.Balance) || len(es) != m.entries {
			e.t.Errorf("%s: step %d: %d entries sum to %s; balance %s, model has %d entries", r.name, step, len(es), sum, acc.Balance, m.entries)
		}
		for _, n := range settled {
			if n > 1 {
				e.t.Errorf("%s: a hold was settled %d times: %v", r.name, n, settled)
			}
		}
		for hi, mh := range m.holds {
			if !allHolds && hi != e.touched {
				continue
			}
			h, err := r.svc.Hold(ctx(), r.holdIDs[hi])
			if errors.Is(err, credits.ErrHoldNotFound) && processHolds(r.st) && mh.state != credits.HoldActive && mh.state != credits.HoldSettled {
				continue // a process hold released or expired long ago leaves no trace
			}
			if err != nil || h.State != mh.state || (mh.state == credits.HoldSettled && !h.Charged.Decimal().Equal(mh.charged)) {
				e.t.Errorf("%s: hold %d = %s charged %s (%v), model %s charged %s", r.name, hi, h.State, h.Charged, err, mh.state, mh.charged)
			}
		}
	}
}

// allEntries pages through every entry of an account.
func allEntries(t testing.TB, svc *credits.Service, acct string) []credits.Entry {
	t.Helper()
	var out []credits.Entry
	cursor := ""
	for {
		pg, err := svc.Entries(ctx(), acct, credits.EntryFilter{}, cursor, 500)
		if err != nil {
			t.Fatalf("Entries: %v", err)
		}
		out = append(out, pg.Entries...)
		if pg.NextCursor == "" {
			return out
		}
		cursor = pg.NextCursor
	}
}

func amt(t testing.TB, s string) credits.Amount {
	t.Helper()
	a, err := credits.ParseAmount(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
