package credits_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A Forii-style INR ledger: a ₹50 signup grant, two exact sub-paisa
// per-token charges, and the balance shown with 2 decimals.
func Example() {
	ctx := context.Background()
	ledger := must(credits.NewService(store.Driver(memstore.New()), &credits.Options{Unit: credits.INR()}))
	defer ledger.Close(ctx)

	must(ledger.Open(ctx, "acct_asha", credits.Policy{TimeZone: "Asia/Kolkata"}))
	must(ledger.Grant(ctx, credits.CreditParams{
		AccountID: "acct_asha", Amount: credits.AmountFromInt(50),
		Description: "signup grant", IdempotencyKey: "signup",
	}))
	cost := must(credits.ParseAmount("0.0000125"))            // one token at ₹12.50 per 1M
	for _, key := range []string{"log_1", "log_2", "log_2"} { // log_2 is retried
		must(ledger.Debit(ctx, credits.DebitParams{
			AccountID: "acct_asha", Amount: cost, Reference: key, IdempotencyKey: key,
		}))
	}
	_, err := ledger.Debit(ctx, credits.DebitParams{AccountID: "acct_asha", Amount: credits.AmountFromInt(60), IdempotencyKey: "big"})

	bal := must(ledger.Balance(ctx, "acct_asha"))
	out, _ := json.Marshal(map[string]any{"credits_inr": ledger.Unit().Display(bal), "exact": bal})
	fmt.Println(string(out))
	fmt.Println(err)
	// Output:
	// {"credits_inr":50.00,"exact":49.999975}
	// credits: insufficient funds
}

// Holds: reserve an estimate, settle the actual cost, free the rest.
func ExampleService_Reserve() {
	ctx := context.Background()
	ledger := must(credits.NewService(store.Driver(memstore.New()), &credits.Options{Unit: credits.WholeCredits()}))
	defer ledger.Close(ctx)
	must(ledger.Open(ctx, "acct_1", credits.Policy{}))
	must(ledger.Purchase(ctx, credits.CreditParams{AccountID: "acct_1", Amount: credits.AmountFromInt(10), IdempotencyKey: "order_1"}))

	h := must(ledger.Reserve(ctx, credits.ReserveParams{
		AccountID: "acct_1", Amount: credits.AmountFromInt(5), TTL: time.Minute, IdempotencyKey: "req_1",
	}))
	a := must(ledger.Account(ctx, "acct_1"))
	fmt.Println("held", a.Held, "available", a.Available)
	s := must(ledger.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(3)}))
	a = must(ledger.Account(ctx, "acct_1"))
	fmt.Println("charged", s.Charged, "balance", a.Balance, "available", a.Available)
	// Output:
	// held 5 available 5
	// charged 3 balance 7 available 7
}
