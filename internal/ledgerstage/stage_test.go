package ledgerstage

import (
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/credits/ledger"
)

// TestRollback stages writes, marks, stages more (including a second
// version of a hold), rolls back, and checks the stage is as at the mark.
func TestRollback(t *testing.T) {
	s := New()
	s.AddEntry(credits.Entry{AccountID: "a", Seq: 1})
	s.ClaimOp(OpKey{Acct: "a", Key: "k1"}, ledger.OpRecord{EntrySeq: 1})
	s.PutHold(credits.Hold{ID: "h1", State: credits.HoldActive})
	m := s.Mark()

	s.AddEntry(credits.Entry{AccountID: "a", Seq: 2})
	s.ClaimOp(OpKey{Acct: "a", Key: "k2"}, ledger.OpRecord{EntrySeq: 2})
	s.PutHold(credits.Hold{ID: "h1", State: credits.HoldSettled})
	s.PutHold(credits.Hold{ID: "h2", State: credits.HoldActive})
	s.Expire = append(s.Expire, "h0")
	if h, _ := s.Hold("h1"); h.State != credits.HoldSettled {
		t.Fatalf("latest version of h1: %s", h.State)
	}

	s.Rollback(m)
	if _, ok := s.Entry("a", 2); ok || len(s.Entries) != 1 {
		t.Fatal("entry 2 survived the rollback")
	}
	if _, ok := s.Entry("a", 1); !ok {
		t.Fatal("entry 1 was rolled back")
	}
	if _, ok := s.Op(OpKey{Acct: "a", Key: "k2"}); ok {
		t.Fatal("claim k2 survived the rollback")
	}
	if rec, ok := s.Op(OpKey{Acct: "a", Key: "k1"}); !ok || rec.EntrySeq != 1 {
		t.Fatal("claim k1 was rolled back")
	}
	if h, ok := s.Hold("h1"); !ok || h.State != credits.HoldActive {
		t.Fatalf("h1 after rollback: %+v, %v", h, ok)
	}
	if _, ok := s.Hold("h2"); ok || len(s.Holds) != 1 || len(s.Expire) != 0 {
		t.Fatal("h2 or the expiry survived the rollback")
	}
}

// TestLedgerRollbackRestoresAccounts: a request that changed one loaded
// account and loaded another is undone entirely by RollbackTo.
func TestLedgerRollbackRestoresAccounts(t *testing.T) {
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	l := NewLedger(now)
	l.Install(ledger.AccountState{ID: "a", Version: 1, Balance: credits.AmountFromInt(5)}, nil, 0, 0)
	m := l.MarkAccount("a")
	v0 := l.Accts["a"].St.Version // Install advanced it to now

	st := l.Accts["a"]
	st.St.Balance, st.St.Version = credits.AmountFromInt(4), v0+1
	l.StageHold(credits.Hold{ID: "h", AccountID: "a", State: credits.HoldActive, ExpiresAt: now.Add(time.Minute)})
	l.Install(ledger.AccountState{ID: "b", Version: 1}, nil, 0, 0)
	if st.HoldDue != now.Add(time.Minute).UnixNano() {
		t.Fatalf("account a not marked changed: %+v", st)
	}

	l.RollbackTo(m)
	a := l.Accts["a"]
	if a.St.Version != v0 || !a.St.Balance.Equal(credits.AmountFromInt(5)) || a.HoldDue != 0 {
		t.Fatalf("account a after rollback: %+v", a)
	}
	if _, ok := l.Accts["b"]; ok || len(l.Order) != 1 {
		t.Fatal("account b, loaded by the request, survived the rollback")
	}
	if _, ok := l.Hold("h"); ok {
		t.Fatal("the hold survived the rollback")
	}
}

func TestLotChanges(t *testing.T) {
	a := Account{
		St:   ledger.AccountState{Lots: []ledger.Lot{{ID: "keep", Remaining: credits.AmountFromInt(1)}, {ID: "spent", Remaining: credits.AmountFromMinor(5, 1)}, {ID: "new", Remaining: credits.AmountFromInt(2)}}},
		Lots: map[string]credits.Amount{"keep": credits.AmountFromMinor(10, 1), "spent": credits.AmountFromInt(1), "gone": credits.AmountFromInt(3)},
	}
	added, changed, gone := a.LotChanges()
	if len(added) != 1 || added[0].ID != "new" || len(changed) != 1 || changed[0].ID != "spent" || len(gone) != 1 || gone[0] != "gone" {
		t.Fatalf("added %v, changed %v, gone %v", added, changed, gone)
	}
}
