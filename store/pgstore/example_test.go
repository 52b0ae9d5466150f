package pgstore_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/keyledger/keyledger/apikey"
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
	keys, err := apikey.NewService(st, nil) // subscribes to the key changes of other instances
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close(ctx)
	v, err := keys.Verify(ctx, apikey.RawKey(os.Getenv("API_KEY")))
	fmt.Println(v.AccountID, err)
}
