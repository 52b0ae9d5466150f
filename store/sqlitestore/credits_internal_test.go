package sqlitestore

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
)

// A system failure of one request in a group commit must not fail the
// others: the batch is retried request by request.
func TestGroupCommitIsolatesAFailingRequest(t *testing.T) {
	ctx := context.Background()
	s, err := open(ctx, filepath.Join(t.TempDir(), "k.db"), &Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	if _, err := s.OpenLedger(ctx, "acct_1", "INR", credits.Policy{TimeZone: "UTC"}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LedgerCredit(ctx, now, credits.CreditRequest{Unit: "INR", AccountID: "acct_1", Type: credits.EntryPurchase,
		Amount: credits.AmountFromInt(10), IdempotencyKey: "p", EntryID: "txn_p"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `CREATE TRIGGER poison BEFORE INSERT ON credit_entries WHEN NEW.reference = 'poison'
		BEGIN SELECT RAISE(ABORT, 'poisoned entry'); END`); err != nil {
		t.Fatal(err)
	}
	reqs := make([]credits.SpendRequest, 3)
	for i := range reqs {
		reqs[i] = credits.SpendRequest{Kind: credits.SpendDebit, Unit: "INR", AccountID: "acct_1", Amount: credits.AmountFromInt(1),
			IdempotencyKey: fmt.Sprint("k", i), EntryID: fmt.Sprint("txn_", i), Reference: "ok"}
	}
	reqs[1].Reference = "poison"
	res := make([]credits.SpendResult, 3)
	if err := s.ApplySpends(ctx, now, reqs, res); err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil || res[2].Err != nil || res[1].Err == nil {
		t.Fatalf("results %+v", res)
	}
	st, err := s.LedgerAccount(ctx, "acct_1", now)
	var seq int64
	if err == nil {
		err = s.r.QueryRowContext(ctx, `SELECT seq FROM credit_accounts WHERE account_id = 'acct_1'`).Scan(&seq)
	}
	if err != nil || !st.Balance.Equal(credits.AmountFromInt(8)) || seq != 3 {
		t.Fatalf("state %+v, seq %d, %v", st, seq, err)
	}
}
