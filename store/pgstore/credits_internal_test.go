package pgstore

import (
	"testing"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/ledgerstage"
	"github.com/keyledger/keyledger/internal/sqlledger"
	"github.com/keyledger/keyledger/usage"
)

// TestMovesMoney pins which transactions may commit without waiting for
// the WAL flush: those that write holds only. A ledger entry or a usage
// record (or a meter key) makes the commit synchronous, so no charge is
// ever acknowledged and then lost by a crash of the database server.
func TestMovesMoney(t *testing.T) {
	holdsOnly := &sqlledger.Tx{}
	holdsOnly.Stage = ledgerstage.New()
	holdsOnly.Stage.Holds = append(holdsOnly.Stage.Holds, ledgerstage.Hold{})
	holdsOnly.Stage.Expire = []string{"hold_1"}
	if movesMoney(holdsOnly) {
		t.Error("a transaction of holds only counts as moving money")
	}
	entry := &sqlledger.Tx{}
	entry.Stage = ledgerstage.New()
	entry.Stage.AddEntry(credits.Entry{AccountID: "acct_1", Seq: 1, Type: credits.EntryDebit})
	meter := &sqlledger.Tx{Meters: []sqlledger.Meter{{}}}
	record := &sqlledger.Tx{Records: []sqlledger.Record{{R: &usage.Record{ID: "log_1"}}}}
	for name, tx := range map[string]*sqlledger.Tx{"entry": entry, "meter": meter, "record": record} {
		if !movesMoney(tx) {
			t.Errorf("a transaction with a %s does not count as moving money: it would commit asynchronously", name)
		}
	}
}
