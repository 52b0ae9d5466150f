package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/store/sqlitestore"
)

// ctl runs keyctl and returns its exit code, stdout and stderr.
func ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// ok runs keyctl, requires success and decodes its JSON output.
func ok(t *testing.T, args ...string) map[string]any {
	t.Helper()
	code, out, errs := ctl(t, args...)
	if code != 0 {
		t.Fatalf("keyctl %v: exit %d: %s", args, code, errs)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("keyctl %v: output %q: %v", args, out, err)
	}
	return m
}

func TestProfiles(t *testing.T) {
	for _, c := range []struct {
		profile, acctPrefix, keyPrefix, keyIDPrefix, grant, keyType, tz string
	}{
		{"gateway", "acct_", "forii_sk_", "key_", "50", "", "Asia/Kolkata"},
		{"toolapi", "acct_", "or_", "cred_", "500", "", "UTC"},
		{"emailverify", "usr_", "kw_test_", "key_", "25000", "test", "UTC"},
	} {
		t.Run(c.profile, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "k.db")
			g := []string{"-db", db, "-profile", c.profile}
			args := append(append([]string{}, g...), "account", "create", "-name", "Ada", "-email", "ada@example.com", "-password", "correct horse")
			if c.profile == "emailverify" {
				args = append(args, "-plan", "professional")
			}
			a := ok(t, args...)
			id := a["id"].(string)
			if !strings.HasPrefix(id, c.acctPrefix) || a["email"] != "ada@example.com" || a["balance"] != mustFloat(c.grant) {
				t.Fatalf("account %v", a)
			}
			if tz, _ := a["time_zone"].(string); tz != c.tz && !(c.tz == "UTC" && tz == "") {
				t.Fatalf("account time zone %q, want %s (the profile's sign-ups): %v", tz, c.tz, a)
			}
			if got := ok(t, append(g, "account", "get", id)...); got["id"] != id || got["balance"] != a["balance"] {
				t.Fatalf("get %v", got)
			}
			kargs := append(append([]string{}, g...), "key", "create", "-account", id, "-name", "ci", "-models", "m1, m2")
			if c.keyType != "" {
				kargs = append(kargs, "-type", c.keyType)
			}
			k := ok(t, kargs...)
			raw := k["key"].(string)
			ak := k["api_key"].(map[string]any)
			if !strings.HasPrefix(raw, c.keyPrefix) || !strings.HasPrefix(ak["id"].(string), c.keyIDPrefix) || len(ak["models"].([]any)) != 2 {
				t.Fatalf("key %v", k)
			}
			// The key verifies under the same profile (what the server uses).
			srv := open(t, db, c.profile, 0)
			if _, err := srv.Keys.Verify(context.Background(), apikey.RawKey(raw)); err != nil {
				t.Fatalf("server rejects keyctl's key: %v", err)
			}
			if l := ok(t, append(g, "key", "list", "-account", id)...); len(l["data"].([]any)) != 1 || strings.Contains(toJSON(l), raw) {
				t.Fatalf("list %v", l)
			}
			// Revoke: flags after the key ID work too.
			if r := ok(t, append(g, "key", "revoke", ak["id"].(string), "-account", id)...); r["status"] != "revoked" {
				t.Fatalf("revoke %v", r)
			}
			if _, err := srv.Keys.Verify(context.Background(), apikey.RawKey(raw)); err == nil {
				t.Fatal("revoked key still verifies in another process")
			}
			amt := "10"
			if c.profile == "emailverify" {
				amt = "2.5"
			}
			e := ok(t, append(g, "credits", "grant", "-account", id, "-amount", amt, "-reason", "promo", "-idempotency-key", "promo-1")...)
			if e["type"] != "grant" || e["description"] != "promo" {
				t.Fatalf("grant %v", e)
			}
			ok(t, append(g, "credits", "grant", "-account", id, "-amount", amt, "-reason", "promo", "-idempotency-key", "promo-1")...) // replay: once
			ok(t, append(g, "credits", "adjust", "-account", id, "-amount", "-"+amt, "-reason", "correction")...)
			if b := ok(t, append(g, "balance", "-account", id)...); b["balance"] != mustFloat(c.grant) || b["unit"] == "" {
				t.Fatalf("balance %v", b)
			}
		})
	}
}

func mustFloat(s string) float64 {
	var f float64
	if err := json.Unmarshal([]byte(s), &f); err != nil {
		panic(err)
	}
	return f
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// open opens db as a server would, with the key cache disabled when
// refresh < 0 so that another process's revocation is seen at once.
func open(t *testing.T, db, profile string, refresh int) *keyledger.KeyLedger {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), db, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := profiles.Get(profile)
	if err != nil {
		t.Fatal(err)
	}
	o := p.Options(nil, slog.New(slog.DiscardHandler))
	o.Keys.RefreshInterval = -1
	kl, err := keyledger.New(st, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl.Close(context.Background()); st.Close() })
	return kl
}

func TestErrors(t *testing.T) {
	db := filepath.Join(t.TempDir(), "k.db")
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, exitUsage, "usage"},
		{[]string{"-db", db, "frobnicate"}, exitUsage, "unknown command"},
		{[]string{"-db", db, "-profile", "nope", "balance", "-account", "a"}, exitUsage, "unknown profile"},
		{[]string{"-db", db, "account", "create", "-name", "x"}, exitUsage, "-email is required"},
		{[]string{"-db", db, "account", "get"}, exitUsage, "one account ID"},
		{[]string{"-db", db, "key", "revoke", "key_1"}, exitUsage, "-account is required"},
		{[]string{"-db", db, "key", "create", "-account", "a", "-name", "n", "-type", "zzz"}, exitUsage, "-type"},
		{[]string{"-db", db, "credits", "grant", "-account", "a", "-amount", "ten", "-reason", "r"}, exitUsage, "-amount"},
		{[]string{"-db", db, "credits", "adjust", "-account", "a", "-amount", "1", "-reason", "r", "-expires", "2030-01-01T00:00:00Z"}, exitUsage, "grants only"},
		{[]string{"-db", db, "balance", "-account", "acct_missing"}, exitError, "unknown ledger account"},
		{[]string{"-db", db, "account", "get", "acct_missing"}, exitError, "not found"},
		{[]string{"-db", db, "key", "list", "-account", "acct_missing"}, exitError, "not found"},
		{[]string{"-db", db, "-postgres", "postgres://x", "balance", "-account", "a"}, exitError, "pgstore"},
		{[]string{"-db", db, "account", "create", "-name", "x", "-email", "not-an-email"}, exitError, "invalid email"},
	} {
		code, out, errs := ctl(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) || out != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want %d and %q", c.args, code, errs, out, c.code, c.msg)
		}
	}
}

// TestWhileServerRuns: keyctl grants credits and creates keys on the file
// a "server" (another KeyLedger on the same file) is spending from at the
// same time; every command succeeds and the ledger adds up.
func TestWhileServerRuns(t *testing.T) {
	db := filepath.Join(t.TempDir(), "k.db")
	g := []string{"-db", db, "-profile", "toolapi"}
	id := ok(t, append(g, "account", "create", "-name", "A", "-email", "a@example.com")...)["id"].(string)
	srv := open(t, db, "toolapi", -1)
	ctx := context.Background()
	var wg sync.WaitGroup
	const debits = 200
	wg.Go(func() {
		for i := range debits {
			if _, err := srv.Credits.Debit(ctx, credits.DebitParams{AccountID: id, Amount: credits.AmountFromInt(1), IdempotencyKey: "d" + string(rune('a'+i%26)) + itoa(i)}); err != nil {
				t.Errorf("server debit %d: %v", i, err)
				return
			}
		}
	})
	for i := range 10 {
		ok(t, append(g, "credits", "grant", "-account", id, "-amount", "5", "-reason", "r"+itoa(i))...)
		raw := ok(t, append(g, "key", "create", "-account", id, "-name", "k"+itoa(i))...)["key"].(string)
		if _, err := srv.Keys.Verify(ctx, apikey.RawKey(raw)); err != nil {
			t.Fatalf("server rejects key %d: %v", i, err)
		}
	}
	wg.Wait()
	// 500 signup + 10×5 granted − 200 spent.
	if b := ok(t, append(g, "balance", "-account", id)...); b["balance"] != 350.0 {
		t.Fatalf("balance %v, want 350", b["balance"])
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// An operator changes a plan with keyctl (the new limits apply), and
// closes an account: its keys stop working and its fields are scrubbed.
func TestAccountSetPlanAndClose(t *testing.T) {
	db := filepath.Join(t.TempDir(), "k.db")
	g := []string{"-db", db, "-profile", "gateway"}
	a := ok(t, append(g, "account", "create", "-name", "Ops", "-email", "ops@example.com")...)
	id := a["id"].(string)
	if a["plan"] != "free" {
		t.Fatalf("account %v", a)
	}
	if code, _, errs := ctl(t, append(g, "account", "set-plan", "-plan", "platinum", id)...); code == 0 || !strings.Contains(errs, "plan") {
		t.Fatalf("unknown plan: exit %d %s", code, errs)
	}
	if code, _, _ := ctl(t, append(g, "account", "set-plan", id)...); code == 0 {
		t.Fatal("set-plan without -plan succeeded")
	}
	up := ok(t, append(g, "account", "set-plan", "-plan", "pro", id)...)
	if up["plan"] != "pro" {
		t.Fatalf("set-plan: %v", up)
	}
	if got := ok(t, append(g, "account", "get", id)...); got["plan"] != "pro" {
		t.Fatalf("get after set-plan: %v", got)
	}
	raw := ok(t, append(g, "key", "create", "-account", id, "-name", "k")...)["key"].(string)
	c := ok(t, append(g, "account", "close", id)...)
	if c["status"] != "closed" || c["email"] == "ops@example.com" || c["name"] != "Closed account" || c["balance"] != mustFloat("50") {
		t.Fatalf("close: %v", c)
	}
	srv := open(t, db, "gateway", 0)
	if _, err := srv.Keys.Verify(context.Background(), apikey.RawKey(raw)); err == nil {
		t.Fatal("a closed account's key still verifies")
	}
}

// keyctl's keys carry every scope (manage included) unless -scopes
// narrows them.
func TestKeyScopesFlag(t *testing.T) {
	db := filepath.Join(t.TempDir(), "k.db")
	g := []string{"-db", db, "-profile", "toolapi"}
	id := ok(t, append(g, "account", "create", "-name", "S", "-email", "s@example.com")...)["id"].(string)
	full := ok(t, append(g, "key", "create", "-account", id, "-name", "admin")...)
	narrow := ok(t, append(g, "key", "create", "-account", id, "-name", "tools", "-scopes", "inference, read")...)
	srv := open(t, db, "toolapi", 0)
	ctx := context.Background()
	fv, err := srv.Keys.Verify(ctx, apikey.RawKey(full["key"].(string)))
	if err != nil || fv.CanManage("") != nil {
		t.Fatalf("default key cannot manage: %v %v", err, fv.CanManage(""))
	}
	nv, err := srv.Keys.Verify(ctx, apikey.RawKey(narrow["key"].(string)))
	if err != nil || nv.CanManage("") == nil {
		t.Fatalf("narrowed key can manage: %v %v", err, nv.Scopes)
	}
	if code, _, _ := ctl(t, append(g, "key", "create", "-account", id, "-name", "x", "-scopes", "root")...); code == 0 {
		t.Fatal("unknown scope accepted")
	}
}

// keyctl's changes are in the audit log as admin:cli; keyctl audit lists
// and filters them.
func TestAudit(t *testing.T) {
	db := filepath.Join(t.TempDir(), "k.db")
	g := []string{"-db", db}
	a := ok(t, append(g, "account", "create", "-name", "Ada", "-email", "ada@example.com")...)
	id := a["id"].(string)
	k := ok(t, append(g, "key", "create", "-account", id, "-name", "ci")...)
	ok(t, append(g, "key", "revoke", "-account", id, k["api_key"].(map[string]any)["id"].(string))...)
	ok(t, append(g, "credits", "grant", "-account", id, "-amount", "10", "-reason", "goodwill")...)

	out := ok(t, append(g, "audit", "-account", id)...)
	var actions []string
	for _, e := range out["data"].([]any) {
		m := e.(map[string]any)
		actions = append(actions, m["action"].(string))
		if actor := m["actor"].(map[string]any); actor["kind"] != "admin" || actor["id"] != "cli" {
			t.Errorf("%s by %v, want admin:cli", m["action"], actor)
		}
	}
	// Newest first; the sign-up grant is keyctl's too (it ran the signup).
	if strings.Join(actions, " ") != "credits.grant key.revoke key.create credits.grant account.create" {
		t.Fatalf("actions %v", actions)
	}
	if got := ok(t, append(g, "audit", "-account", id, "-action", "key.*", "-limit", "1")...); len(got["data"].([]any)) != 1 || got["next_cursor"] == nil {
		t.Fatalf("filtered page %v", got)
	}
	for _, bad := range [][]string{{"-limit", "0"}, {"-actor", "root"}, {"-since", "yesterday"}} {
		if code, _, _ := ctl(t, append(append(g, "audit", "-account", id), bad...)...); code != exitUsage {
			t.Errorf("audit %v: exit %d, want %d", bad, code, exitUsage)
		}
	}
}
