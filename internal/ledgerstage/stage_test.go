package ledgerstage

import (
	"testing"

	"github.com/keyledger/keyledger/credits"
)

// TestRollback stages writes, marks, stages more (including a second
// version of a hold), rolls back, and checks the stage is as at the mark.
func TestRollback(t *testing.T) {
	s := New()
	s.AddEntry(credits.Entry{AccountID: "a", Seq: 1})
	s.ClaimOp(OpKey{Acct: "a", Key: "k1"}, credits.OpRecord{EntrySeq: 1})
	s.PutHold(credits.Hold{ID: "h1", State: credits.HoldActive})
	m := s.Mark()

	s.AddEntry(credits.Entry{AccountID: "a", Seq: 2})
	s.ClaimOp(OpKey{Acct: "a", Key: "k2"}, credits.OpRecord{EntrySeq: 2})
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
