package sqlitestore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/sqlitestore"
)

// Example uses one domain, accounts, alone on a SQLite file.
func Example() {
	dir, _ := os.MkdirTemp("", "keyledger")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "keyledger.db"), nil)
	if err != nil {
		panic(err)
	}
	defer st.Close()
	// A domain used alone takes the backend's operations; keyledger.New
	// takes st itself.
	accounts, err := account.NewService(store.Driver(st), nil)
	if err != nil {
		panic(err)
	}
	a, err := accounts.Create(ctx, account.CreateParams{Name: "Asha", Email: "asha@example.com", Password: "correct horse"})
	if err != nil {
		panic(err)
	}
	token, _, _ := accounts.Login(ctx, "asha@example.com", "correct horse")
	sess, err := accounts.VerifySession(ctx, token)
	fmt.Println(a.Plan, sess.AccountID == a.ID, err)
	// Output: free true <nil>
}
