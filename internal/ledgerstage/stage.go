// Package ledgerstage is the in-memory side of a ledger write transaction
// that the SQL backends share: the accounts a batch loaded (Ledger,
// Account) and the stage of its writes (Stage) — entries, idempotency
// claims and hold versions kept until one flush writes them with multi-row
// statements. A request that fails is dropped by rolling the ledger back to
// its mark. Nothing here touches a database.
package ledgerstage

import (
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
)

// OpKey is an idempotency key within its account.
type OpKey struct{ Acct, Key string }

// EntryKey is a ledger entry's place: its account and sequence number.
type EntryKey struct {
	Acct string
	Seq  int64
}

// Op is a staged idempotency claim.
type Op struct {
	K   OpKey
	Rec ledger.OpRecord
}

// Hold is a staged version of a hold.
type Hold struct {
	H    credits.Hold
	Prev int // index of the hold's previous staged version, -1 if none
}

// Stage holds the writes of a transaction until flush. Its slices only
// grow between marks, so a request's writes are dropped by truncating.
type Stage struct {
	Entries  []credits.Entry
	EntryIdx map[EntryKey]int
	Ops      []Op
	OpIdx    map[OpKey]int
	Holds    []Hold
	HoldIdx  map[string]int // latest version of each hold
	Expire   []string       // active holds past their deadline
}

// New returns an empty Stage.
func New() Stage {
	return Stage{EntryIdx: make(map[EntryKey]int), OpIdx: make(map[OpKey]int), HoldIdx: make(map[string]int)}
}

// AddEntry stages e.
func (s *Stage) AddEntry(e credits.Entry) {
	s.EntryIdx[EntryKey{e.AccountID, e.Seq}] = len(s.Entries)
	s.Entries = append(s.Entries, e)
}

// Entry returns a staged entry.
func (s *Stage) Entry(acct string, seq int64) (credits.Entry, bool) {
	i, ok := s.EntryIdx[EntryKey{acct, seq}]
	if !ok {
		return credits.Entry{}, false
	}
	return s.Entries[i], true
}

// ClaimOp stages the claim of k, which must not be staged yet.
func (s *Stage) ClaimOp(k OpKey, rec ledger.OpRecord) {
	s.OpIdx[k] = len(s.Ops)
	s.Ops = append(s.Ops, Op{K: k, Rec: rec})
}

// Op returns the staged claim of k.
func (s *Stage) Op(k OpKey) (ledger.OpRecord, bool) {
	i, ok := s.OpIdx[k]
	if !ok {
		return ledger.OpRecord{}, false
	}
	return s.Ops[i].Rec, true
}

// PutHold stages a new version of h.
func (s *Stage) PutHold(h credits.Hold) {
	prev, ok := s.HoldIdx[h.ID]
	if !ok {
		prev = -1
	}
	s.HoldIdx[h.ID] = len(s.Holds)
	s.Holds = append(s.Holds, Hold{H: h, Prev: prev})
}

// Hold returns the latest staged version of a hold.
func (s *Stage) Hold(id string) (credits.Hold, bool) {
	i, ok := s.HoldIdx[id]
	if !ok {
		return credits.Hold{}, false
	}
	return s.Holds[i].H, true
}

// Mark is the size of a Stage at one point.
type Mark struct{ entries, ops, holds, expire int }

// Mark returns the stage's current size.
func (s *Stage) Mark() Mark {
	return Mark{entries: len(s.Entries), ops: len(s.Ops), holds: len(s.Holds), expire: len(s.Expire)}
}

// Rollback drops everything staged since m.
func (s *Stage) Rollback(m Mark) {
	for i := len(s.Entries) - 1; i >= m.entries; i-- {
		e := s.Entries[i]
		delete(s.EntryIdx, EntryKey{e.AccountID, e.Seq})
	}
	s.Entries = s.Entries[:m.entries]
	for i := len(s.Ops) - 1; i >= m.ops; i-- {
		delete(s.OpIdx, s.Ops[i].K)
	}
	s.Ops = s.Ops[:m.ops]
	for i := len(s.Holds) - 1; i >= m.holds; i-- {
		if p := s.Holds[i].Prev; p >= 0 {
			s.HoldIdx[s.Holds[i].H.ID] = p
		} else {
			delete(s.HoldIdx, s.Holds[i].H.ID)
		}
	}
	s.Holds = s.Holds[:m.holds]
	s.Expire = s.Expire[:m.expire]
}

// Account is a ledger account loaded into a transaction: its state as the
// transaction changes it, and what was read, to write back only changes.
type Account struct {
	St      ledger.AccountState
	Version int64                     // as read
	Lots    map[string]credits.Amount // lot ID → remaining, as read
	// HoldDue is the lower bound of active hold deadlines to store;
	// HoldDue0 the stored one.
	HoldDue, HoldDue0 int64
}

// Changed reports whether the account's row must be written.
func (a *Account) Changed() bool { return a.St.Version != a.Version || a.HoldDue != a.HoldDue0 }

// LotChanges returns the lots to insert, the lots whose remainder changed,
// and the IDs of lots that are gone, against what was read.
func (a *Account) LotChanges() (added, changed []ledger.Lot, gone []string) {
	live := make(map[string]bool, len(a.St.Lots))
	for _, l := range a.St.Lots {
		live[l.ID] = true
		old, ok := a.Lots[l.ID]
		switch {
		case !ok:
			added = append(added, l)
		case !old.Equal(l.Remaining):
			changed = append(changed, l)
		}
	}
	for id := range a.Lots {
		if !live[id] {
			gone = append(gone, id)
		}
	}
	return added, changed, gone
}

// Ledger is the in-memory side of one ledger write transaction: the
// accounts it loaded, in load order (for a deterministic flush), the
// expiries it applied, and the stage of its writes.
type Ledger struct {
	Stage
	Now   time.Time
	Accts map[string]*Account
	Order []*Account
	Rep   credits.ExpiryReport
}

// NewLedger returns an empty Ledger for a transaction at now.
func NewLedger(now time.Time) Ledger {
	return Ledger{Stage: New(), Now: now, Accts: make(map[string]*Account, 4)}
}

// Install makes an account as read part of the transaction: it advances it
// to now, expiring due (its active holds past their deadline) and its due
// lots, and stages the expiries. holdDue is the new lower bound of its
// active hold deadlines, holdDue0 the stored one.
func (l *Ledger) Install(st ledger.AccountState, due []credits.Hold, holdDue, holdDue0 int64) *ledger.AccountState {
	a := &Account{St: st, Version: st.Version, HoldDue: holdDue, HoldDue0: holdDue0}
	if len(a.St.Lots) > 0 {
		a.Lots = make(map[string]credits.Amount, len(a.St.Lots))
		for _, lot := range a.St.Lots {
			a.Lots[lot.ID] = lot.Remaining
		}
	}
	expired := a.St.Advance(l.Now, due)
	for _, h := range due {
		l.Expire = append(l.Expire, h.ID)
	}
	for _, e := range expired {
		l.AddEntry(e)
	}
	if len(due) > 0 || len(expired) > 0 {
		l.Rep.Accounts++
		l.Rep.Entries += len(expired)
		l.Rep.Holds += len(due)
	}
	l.Accts[a.St.ID] = a
	l.Order = append(l.Order, a)
	return &a.St
}

// StageHold stages a new version of h and lowers its account's hold-due
// bound for an active hold.
func (l *Ledger) StageHold(h credits.Hold) {
	if a, ok := l.Accts[h.AccountID]; ok && h.State == credits.HoldActive {
		if d := h.ExpiresAt.UnixNano(); a.HoldDue == 0 || d < a.HoldDue {
			a.HoldDue = d
		}
	}
	l.PutHold(h)
}

// LedgerMark is the size of the stage and the state of one account before
// a request, to drop the request's writes.
type LedgerMark struct {
	stage   Mark
	acct    string
	present bool
	a       Account
	order   int
	rep     credits.ExpiryReport
}

// MarkAccount marks the transaction before a request on acct.
func (l *Ledger) MarkAccount(acct string) LedgerMark {
	m := LedgerMark{stage: l.Mark(), acct: acct, order: len(l.Order), rep: l.Rep}
	if a, ok := l.Accts[acct]; ok {
		m.present, m.a = true, *a
		m.a.St = a.St.Clone()
	}
	return m
}

// RollbackTo drops what was staged since m and restores m's account. A
// request changes at most one account loaded before it, the ledger account
// of its own record (a hold of another account is refused before the
// spend), so restoring that one account is enough. Accounts loaded by the
// request are forgotten with the expiries their load staged; the next
// request that needs one loads it again.
func (l *Ledger) RollbackTo(m LedgerMark) {
	l.Rollback(m.stage)
	l.Rep = m.rep
	for _, a := range l.Order[m.order:] {
		delete(l.Accts, a.St.ID)
	}
	l.Order = l.Order[:m.order]
	if m.present {
		*l.Accts[m.acct] = m.a
	}
}
