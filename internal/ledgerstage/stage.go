// Package ledgerstage is the in-memory write stage that the SQL backends
// share for a ledger group commit: a batch's entries, idempotency claims
// and hold versions are kept here until one flush writes them with
// multi-row statements, and a request that fails is dropped by truncating
// the stage back to its mark. Nothing here touches a database.
package ledgerstage

import "github.com/keyledger/keyledger/credits"

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
	Rec credits.OpRecord
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
func (s *Stage) ClaimOp(k OpKey, rec credits.OpRecord) {
	s.OpIdx[k] = len(s.Ops)
	s.Ops = append(s.Ops, Op{K: k, Rec: rec})
}

// Op returns the staged claim of k.
func (s *Stage) Op(k OpKey) (credits.OpRecord, bool) {
	i, ok := s.OpIdx[k]
	if !ok {
		return credits.OpRecord{}, false
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
