package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/pgtest"
)

// TestBadTextIsA400OnPostgres: a NUL byte or invalid UTF-8 in an audit
// filter or a webhook description — text PostgreSQL refuses with an
// error — is a 400 with a JSON body (or cleaned), never a 500.
func TestBadTextIsA400OnPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	g := startGatewayAt(t, time.Now, filepath.Join(t.TempDir(), "unused.db"), "-postgres", dsn, "-webhook-allow", "127.0.0.1")
	u := g.signup("Bytes")
	base := "/v1/accounts/" + u.id
	for _, q := range []string{"action=a%00b", "action=%ff", "action=%ff.*", "actor=session:%00", "actor=key:%ff"} {
		st, _, b := g.do("GET", base+"/audit?"+q, u.token, nil)
		if st != 400 || !strings.Contains(string(b), `"error"`) {
			t.Errorf("audit ?%s: %d %s, want 400", q, st, b)
		}
	}
	for _, desc := range []string{"a\x00b", strings.Repeat("a", 199) + "€"} {
		st, _, b := g.do("POST", base+"/webhooks", u.token, map[string]string{"url": "http://127.0.0.1:1/hook", "description": desc})
		if st >= 500 {
			t.Errorf("webhook description %q: %d %s", desc, st, b)
		}
	}
	g.must(200, "GET", base+"/webhooks", u.token, nil)
}
