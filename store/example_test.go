package store_test

import (
	"context"
	"fmt"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// A domain used alone takes the backend's operations through Driver;
// keyledger.New takes the backend itself.
func ExampleDriver() {
	ctx := context.Background()
	b := memstore.New()
	defer b.Close()
	accounts, _ := account.NewService(store.Driver(b), nil)
	a, _ := accounts.Create(ctx, account.CreateParams{Name: "Asha", Email: "asha@example.com"})
	keys, _ := apikey.NewService(store.Driver(b), nil)
	defer keys.Close(ctx)
	raw, k, err := keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "ci"})
	if err != nil {
		fmt.Println(err)
		return
	}
	v, err := keys.Verify(ctx, raw)
	fmt.Println(v.KeyID == k.ID, err)
	// Output: true <nil>
}

// closeCounter is a store written outside this module: a Store (here a
// memstore's operations) that counts Close.
type closeCounter struct {
	store.Store
	closed *int
}

func (c closeCounter) Close() error { *c.closed++; return c.Store.Close() }

// Wrap hands a Store written elsewhere to keyledger.New; the Backend's
// Close is the Store's, and Driver gives the Store back.
func ExampleWrap() {
	n := 0
	d := closeCounter{Store: store.Driver(memstore.New()), closed: &n}
	b := store.Wrap(d)
	fmt.Println(store.Driver(b) == store.Store(d))
	_ = b.Close()
	fmt.Println(n)
	// Output:
	// true
	// 1
}
