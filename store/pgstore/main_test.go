package pgstore_test

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/keyledger/keyledger/internal/pgtest"
)

// exampleDSN is the database of the examples with output: a schema of its
// own on the KEYLEDGER_TEST_POSTGRES server, made (and dropped) by
// TestMain.
var exampleDSN string

// TestMain prepares the examples' schema, or, without a server, skips the
// examples that need one (as the tests skip), unless -skip says otherwise.
func TestMain(m *testing.M) {
	flag.Parse()
	base := os.Getenv(pgtest.Env)
	if base == "" {
		if f := flag.Lookup("test.skip"); f != nil && f.Value.String() == "" {
			_ = flag.Set("test.skip", "^Example_ledger$")
		}
		os.Exit(m.Run())
	}
	dsn, drop, err := pgtest.Schema(base)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	exampleDSN = dsn
	code := m.Run()
	if err := drop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}
