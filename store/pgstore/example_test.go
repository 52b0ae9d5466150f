package pgstore_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/pgstore"
)

// Example is the scale-out setup: every instance opens the same database
// (here the one named by KEYLEDGER_TEST_POSTGRES) and builds its services
// on the Store. A key revoked by one instance stops verifying in all of
// them as soon as the LISTEN/NOTIFY message arrives.
//
// It has no Output comment because it needs a PostgreSQL server: go test
// compiles it, and TestConformance and the notify tests run the same calls.
func Example() {
	ctx := context.Background()
	st, err := pgstore.Open(ctx, os.Getenv("KEYLEDGER_TEST_POSTGRES"), &pgstore.Options{MaxConns: 8})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	keys, err := apikey.NewService(store.Driver(st), nil) // subscribes to the key changes of other instances
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close(ctx)
	v, err := keys.Verify(ctx, apikey.RawKey(os.Getenv("API_KEY")))
	fmt.Println(v.AccountID, err)
}

// Example_ledger is the credits ledger on PostgreSQL, with the same rules
// as on every backend: a top-up, then a debit retried with its idempotency
// key, charged once. (It runs against KEYLEDGER_TEST_POSTGRES and is
// skipped without it.)
func Example_ledger() {
	ctx := context.Background()
	st, err := pgstore.Open(ctx, exampleDSN, &pgstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	ledger, err := credits.NewService(store.Driver(st), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer ledger.Close(ctx)
	if _, err := ledger.Open(ctx, "acct_1", credits.Policy{}); err != nil {
		log.Fatal(err)
	}
	_, _ = ledger.Purchase(ctx, credits.CreditParams{AccountID: "acct_1", Amount: credits.AmountFromInt(100), IdempotencyKey: "topup-1"})
	for range 2 {
		e, err := ledger.Debit(ctx, credits.DebitParams{AccountID: "acct_1", Amount: credits.AmountFromInt(30), IdempotencyKey: "req-1"})
		fmt.Println(e.Amount, e.BalanceAfter, err)
	}
	bal, _ := ledger.Balance(ctx, "acct_1")
	fmt.Println(bal)
	// Output:
	// -30 70 <nil>
	// -30 70 <nil>
	// 70
}
