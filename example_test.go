package keyledger_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/usage"
)

func Example() {
	ctx := context.Background()
	prices, _ := usage.NewPriceBook([]usage.ModelPrice{{
		Model: "forii/deepseek-v3", PromptPerMillion: decimal.NewFromInt(25), CompletionPerMillion: decimal.NewFromInt(100),
	}}, nil)
	kl, err := keyledger.New(memstore.New(), &keyledger.Options{Prices: prices})
	if err != nil {
		panic(err)
	}
	defer kl.Close(ctx)

	a, _ := kl.Signup(ctx, account.CreateParams{Name: "Asha", Email: "asha@example.com"}) // free plan: ₹50
	raw, _, _ := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "prod"})

	g, err := kl.Authorize(ctx, raw, keyledger.Request{Model: "forii/deepseek-v3", PromptTokens: 2000, MaxCompletionTokens: 1000})
	if err != nil {
		panic(err)
	}
	res, _ := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 2000, CompletionTokens: 400})
	bal, _ := kl.Credits.Balance(ctx, a.ID)
	fmt.Println("charged", res.Charged, "balance", credits.INR().Format(bal))

	_, err = kl.Authorize(ctx, raw, keyledger.Request{Model: "gpt-4o"})
	fmt.Println(errors.Is(err, usage.ErrUnknownModel))
	// Output:
	// charged 0.09 balance 49.91
	// true
}
