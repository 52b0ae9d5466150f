package storetest

import (
	"context"
	"testing"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/store"
)

// Reopen checks that what one Store wrote is there when the same database
// is opened again: it creates an account through open's first Store,
// closes it, and reads the account through a second, which it closes too.
// A persistent backend calls it from its migration tests, then checks its
// schema table.
func Reopen(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	ctx := context.Background()
	st := open(t)
	svc, err := account.NewService(st, &account.Options{Argon2: fastArgon})
	if err != nil {
		t.Fatal(err)
	}
	a, err := svc.Create(ctx, account.CreateParams{Name: "Keep", Email: "keep@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = open(t)
	defer st.Close()
	got, err := st.Account(ctx, a.ID)
	if err != nil || got.Email != "keep@example.com" {
		t.Fatalf("after reopen: %+v %v", got, err)
	}
}
