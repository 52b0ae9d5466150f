package memstore_test

import (
	"context"
	"fmt"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// memstore is a complete backend for tests and single-process hosts: the
// domain services run on it directly, with the same rules as on SQLite or
// PostgreSQL, and nothing survives the process.
func Example() {
	ctx := context.Background()
	st := memstore.New()
	defer st.Close()

	accounts, _ := account.NewService(store.Driver(st), nil)
	a, _ := accounts.Create(ctx, account.CreateParams{Name: "Asha", Email: "asha@example.com"})
	keys, _ := apikey.NewService(store.Driver(st), nil)
	defer keys.Close(ctx)
	raw, k, _ := keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "ci"})
	v, err := keys.Verify(ctx, raw)
	fmt.Println(k.ID != "" && v.KeyID == k.ID, err)

	ledger, _ := credits.NewService(store.Driver(st), nil)
	defer ledger.Close(ctx)
	_, _ = ledger.Open(ctx, a.ID, credits.Policy{})
	_, _ = ledger.Purchase(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.AmountFromInt(100), IdempotencyKey: "topup-1"})
	for range 2 { // a retry with the same key charges once
		_, _ = ledger.Debit(ctx, credits.DebitParams{AccountID: a.ID, Amount: credits.AmountFromInt(30), IdempotencyKey: "req-1"})
	}
	bal, _ := ledger.Balance(ctx, a.ID)
	fmt.Println(bal)
	// Output:
	// true <nil>
	// 70
}
