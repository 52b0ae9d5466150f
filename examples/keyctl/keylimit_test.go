package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyLimit(t *testing.T) {
	db := filepath.Join(t.TempDir(), "k.db")
	g := []string{"-db", db, "-profile", "gateway"}
	a := ok(t, append(g, "account", "create", "-name", "Ada", "-email", "ada@example.com")...)
	id := a["id"].(string)
	k := ok(t, append(g, "key", "create", "-account", id, "-name", "ci")...)
	keyID := k["api_key"].(map[string]any)["id"].(string)

	ks := ok(t, append(g, "key", "limit", "-account", id, "-amount", "5", "-period", "day", keyID)...)
	if ks["key_id"] != keyID || ks["period"] != "day" || ks["limit"] != mustFloat("5") || ks["resets_at"] == nil {
		t.Fatalf("key limit: %v", ks)
	}
	if got := ok(t, append(g, "key", "limit", "-account", id, "-clear", keyID)...); got["spend_limit"] != nil {
		t.Fatalf("clear: %v", got)
	}
	for _, bad := range [][]string{
		{"key", "limit", "-account", id, keyID},
		{"key", "limit", "-account", id, "-amount", "5", "-period", "year", keyID},
		{"key", "limit", "-account", id, "-amount", "5", "-period", "day", "-clear", keyID},
		{"key", "limit", "-amount", "5", "-period", "day", keyID},
	} {
		if code, _, _ := ctl(t, append(g, bad...)...); code != exitUsage {
			t.Fatalf("%v: exit %d, want %d", bad, code, exitUsage)
		}
	}
	if code, _, errs := ctl(t, append(g, "key", "limit", "-account", id, "-amount", "0", "-period", "day", keyID)...); code != exitError || !strings.Contains(errs, "key spend limit") {
		t.Fatalf("zero limit: exit %d: %s", code, errs)
	}
	// Another account's key: not found.
	b := ok(t, append(g, "account", "create", "-name", "Bo", "-email", "bo@example.com")...)
	if code, _, _ := ctl(t, append(g, "key", "limit", "-account", b["id"].(string), "-clear", keyID)...); code != exitError {
		t.Fatalf("another account's key: exit %d", code)
	}
}
