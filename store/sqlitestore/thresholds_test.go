package sqlitestore_test

import (
	"context"
	"database/sql"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/store/sqlitestore"
)

// The spend batches keep accounts' alert thresholds with the cached
// account states; a threshold change through this store, or by another
// process on the same file (keyctl, a second gateway), takes effect for
// the next debit: the low-balance event is written against the new
// thresholds, not the cached ones.
func TestThresholdChangesReachCachedBatches(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keyledger.db")
	open := func() *keyledger.KeyLedger {
		st, err := sqlitestore.Open(ctx, path, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		kl, err := keyledger.New(st, &keyledger.Options{Logger: slog.New(slog.DiscardHandler),
			Accounts: &account.Options{Argon2: account.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 16}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kl.Close(ctx) })
		return kl
	}
	kl, other := open(), open()
	a, err := kl.Signup(ctx, account.CreateParams{Name: "T", Email: "thresholds@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kl.Credits.Grant(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.AmountFromInt(100), IdempotencyKey: "g"}); err != nil {
		t.Fatal(err)
	}
	bal := func() decimal.Decimal {
		acc, err := kl.Credits.Account(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		return acc.Balance.Decimal()
	}
	debitTo := func(target int64, key string) {
		t.Helper()
		amt := bal().Sub(decimal.NewFromInt(target))
		if _, err := kl.Credits.Debit(ctx, credits.DebitParams{AccountID: a.ID, Amount: credits.NewAmount(amt), IdempotencyKey: key}); err != nil {
			t.Fatal(err)
		}
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lows := func() int {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM outbox_events WHERE type = 'balance.low' AND account_id = ?`, a.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	thresholds := func(kl *keyledger.KeyLedger, v int64) {
		t.Helper()
		if _, err := kl.Webhooks().SetAlertThresholds(ctx, a.ID, []decimal.Decimal{decimal.NewFromInt(v)}); err != nil {
			t.Fatal(err)
		}
	}
	// No thresholds yet: the batches cache none (the first may not keep
	// what it read: the other store's open changed data_version).
	debitTo(125, "d0a")
	debitTo(120, "d0b")
	if n := lows(); n != 0 {
		t.Fatalf("%d balance.low events without thresholds", n)
	}
	thresholds(kl, 110) // this process
	debitTo(105, "d1")
	if n := lows(); n != 1 {
		t.Fatalf("after a threshold set here: %d balance.low events, want 1", n)
	}
	thresholds(other, 100) // another process on the file
	debitTo(95, "d2")
	if n := lows(); n != 2 {
		t.Fatalf("after a threshold set by another process: %d balance.low events, want 2", n)
	}
}
