package main

import (
	"testing"

	"github.com/keyledger/keyledger/internal/pgtest"
)

// TestPostgres runs keyctl against PostgreSQL: what one invocation writes,
// the next one (another process in real use) reads.
func TestPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := ok(t, "-postgres", dsn, "-profile", "toolapi", "account", "create", "-name", "Pg", "-email", "pg@example.com")
	id, _ := a["id"].(string)
	if id == "" {
		t.Fatalf("account create: %v", a)
	}
	if got := ok(t, "-postgres", dsn, "-profile", "toolapi", "account", "get", id); got["email"] != "pg@example.com" {
		t.Fatalf("account get: %v", got)
	}
	k := ok(t, "-postgres", dsn, "-profile", "toolapi", "key", "create", "-account", id, "-name", "ci")
	if key, _ := k["key"].(string); len(key) < 10 || key[:3] != "or_" {
		t.Fatalf("key create: %v", k)
	}
	if b := ok(t, "-postgres", dsn, "-profile", "toolapi", "balance", "-account", id); b["balance"] == nil {
		t.Fatalf("balance: %v", b)
	}
}
