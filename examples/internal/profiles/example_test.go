package profiles_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/store/memstore"
)

func Example() {
	p, err := profiles.Get(profiles.EmailVerify)
	if err != nil {
		panic(err)
	}
	kl, err := keyledger.New(memstore.New(), p.Options(nil, slog.New(slog.DiscardHandler)))
	if err != nil {
		panic(err)
	}
	defer kl.Close(context.Background())
	ctx := context.Background()
	a, _ := kl.Signup(ctx, account.CreateParams{Name: "Ada", Email: "ada@example.com", Plan: "professional"})
	raw, k, _ := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "dev", Type: "test"})
	// Credits come each month (examples/internal/subscription grants
	// them), not at sign-up.
	bal, _ := kl.Credits.Balance(ctx, a.ID)
	fmt.Println(a.ID[:4], k.ID[:4], raw.Reveal()[:8], k.Environment, bal, p.MonthlyGrants[a.Plan], p.Unit.Code)
	// Output: usr_ key_ kw_test_ test 0 25000 credits
}
