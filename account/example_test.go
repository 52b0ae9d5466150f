package account_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

func Example() {
	ctx := context.Background()
	accounts, err := account.NewService(store.Driver(memstore.New()), nil)
	if err != nil {
		panic(err)
	}
	a, err := accounts.Create(ctx, account.CreateParams{
		Name: "Asha Rao", Email: "Asha@Example.com", Password: "correct horse battery",
		TimeZone: "Asia/Kolkata",
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(a.Email, a.Plan, a.Status)

	token, _, err := accounts.Login(ctx, "asha@example.com", "correct horse battery")
	if err != nil {
		panic(err)
	}
	fmt.Println("token prints as", token)
	sess, err := accounts.VerifySession(ctx, token)
	fmt.Println(sess.AccountID == a.ID, err)

	_, _, err = accounts.Login(ctx, "asha@example.com", "wrong password")
	fmt.Println(errors.Is(err, account.ErrInvalidCredentials))
	// Output:
	// asha@example.com free active
	// token prints as [REDACTED]
	// true <nil>
	// true
}

func ExampleNewCatalog() {
	catalog, err := account.NewCatalog("hobby",
		account.Plan{ID: "hobby", Name: "Hobby", Limits: account.Limits{RequestsPerMinute: 30}},
		account.Plan{ID: "team", Name: "Team", Limits: account.Limits{RequestsPerMinute: 3000}},
	)
	if err != nil {
		panic(err)
	}
	accounts, _ := account.NewService(store.Driver(memstore.New()), &account.Options{Catalog: catalog})
	a, _ := accounts.Create(context.Background(), account.CreateParams{Name: "Dev", Email: "dev@example.com"})
	fmt.Println(a.Plan, catalog.EffectiveLimits(a).RequestsPerMinute)
	// Output: hobby 30
}
