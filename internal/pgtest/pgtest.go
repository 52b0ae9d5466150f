// Package pgtest gives tests a PostgreSQL schema of their own on the server
// named by KEYLEDGER_TEST_POSTGRES: tests skip when the variable is unset
// and fail when it is set but the server cannot be reached.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Env is the variable that names the test server, e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const Env = "KEYLEDGER_TEST_POSTGRES"

// BaseDSN returns the server's connection string, or skips the test when
// Env is unset.
func BaseDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv(Env)
	if dsn == "" {
		tb.Skip(Env + " is not set; skipping the PostgreSQL tests (set it to e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	return dsn
}

// DSN creates an empty schema kltest_<random>, drops it (with everything
// in it) when the test ends, and returns a connection string whose
// connections use it as their search_path. It skips the test when Env is
// unset and fails it when the server cannot be reached.
func DSN(tb testing.TB) string {
	tb.Helper()
	dsn, drop, err := Schema(BaseDSN(tb))
	if err != nil {
		tb.Fatalf("%s is set but a test schema cannot be made: %v", Env, err)
	}
	tb.Cleanup(func() {
		if err := drop(); err != nil {
			tb.Error(err)
		}
	})
	return dsn
}

// Schema creates an empty schema kltest_<random> on the server at base and
// returns a connection string that uses it, and the function that drops it
// with everything in it. It is DSN for code without a testing.TB (a
// TestMain that prepares a database for examples).
func Schema(base string) (dsn string, drop func() error, err error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "kltest_" + hex.EncodeToString(b[:])
	if dsn, err = withSearchPath(base, schema); err != nil {
		return "", nil, err
	}
	if err := run(base, `CREATE SCHEMA `+schema); err != nil {
		return "", nil, err
	}
	return dsn, func() error { return run(base, `DROP SCHEMA `+schema+` CASCADE`) }, nil
}

// WithSearchPath returns dsn with its search_path set to schema.
func WithSearchPath(tb testing.TB, dsn, schema string) string {
	tb.Helper()
	out, err := withSearchPath(dsn, schema)
	if err != nil {
		tb.Fatalf("%s: %v", Env, err)
	}
	return out
}

func withSearchPath(dsn, schema string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", err
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return dsn + " search_path=" + schema, nil
}

// Via returns dsn (a postgres:// URL) with its host and port replaced by
// addr, so that its connections go through a proxy at addr, and the
// address they would have gone to.
func Via(tb testing.TB, dsn, addr string) (proxied, target string) {
	tb.Helper()
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		tb.Fatalf("%s: a postgres:// URL is needed to route it through a proxy", Env)
	}
	target = u.Host
	if u.Port() == "" {
		target = u.Hostname() + ":5432"
	}
	u.Host = addr
	return u.String(), target
}

// Target returns the host:port of dsn (a postgres:// URL).
func Target(tb testing.TB, dsn string) string {
	tb.Helper()
	_, target := Via(tb, dsn, "127.0.0.1:1")
	return target
}

// Exec runs one statement on a connection of its own.
func Exec(tb testing.TB, dsn, sql string, args ...any) {
	tb.Helper()
	exec(tb, dsn, sql, args...)
}

func exec(tb testing.TB, dsn, sql string, args ...any) {
	tb.Helper()
	if err := run(dsn, sql, args...); err != nil {
		tb.Fatalf("%s is set, but: %v", Env, err)
	}
}

// run runs one statement on a connection of its own.
func run(dsn, sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("the server cannot be reached: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}
