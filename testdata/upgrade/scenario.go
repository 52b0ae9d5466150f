//go:build ignore

// This program writes the release-upgrade fixture: a SQLite database and a
// PostgreSQL dump made by the release it is run on, and manifest.json, which
// says what they contain and what the current code must read from them.
// upgrade_test.go (at the repository root) opens copies with today's code,
// which runs every newer migration, and checks them.
//
// Run it from the repository root, on the release the fixture stands for:
//
//	KEYLEDGER_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	    go run ./testdata/upgrade/scenario.go
//
// It needs pg_dump on PATH for the PostgreSQL part (skipped without the
// variable). The data is made through the public API only, on a fixed fake
// clock, so every balance is known.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/pgstore"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/usage"
)

// The manifest types are repeated in upgrade_test.go (this file is not part
// of any package).
type Manifest struct {
	About         string   `json:"about"`
	SchemaVersion int      `json:"schema_version"`
	Made          string   `json:"made"`
	Clock         string   `json:"clock"`
	Password      string   `json:"password"`
	PGSchema      string   `json:"pg_schema,omitempty"`
	SQLite        Dataset  `json:"sqlite"`
	Postgres      *Dataset `json:"postgres,omitempty"`
}

type Dataset struct {
	Accounts []AccountFix `json:"accounts"`
}

type AccountFix struct {
	ID, Email, Plan, Status  string
	Balance, Held, Available string
	UsageRequests            int64
	UsageCost                string
	PromptTokens             int64
	CachedPromptTokens       int64
	ReasoningTokens          int64
	Units                    int64
	Session                  string `json:",omitempty"`
	Keys                     []KeyFix
}

type KeyFix struct {
	ID, Name, Raw string
	// Want is what Verify must say at the manifest's clock + 2h (past the
	// rotation grace): "ok", "revoked" or "expired" (a rotated-away secret, valid within the 1 h grace only).
	Want string
}

var T0 = time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC)

const password = "fixture-password-1"

func Prices() *usage.PriceBook {
	cached, reasoning := decimal.NewFromInt(2_500), decimal.NewFromInt(30_000)
	pb, err := usage.NewPriceBook(
		[]usage.ModelPrice{{Model: "fixture-model", PromptPerMillion: decimal.NewFromInt(10_000),
			CompletionPerMillion: decimal.NewFromInt(20_000), CachedPromptPerMillion: &cached,
			ReasoningPerMillion: &reasoning, RequestFee: decimal.RequireFromString("0.05")}},
		[]usage.OperationPrice{{Operation: "/v1/op", PerUnit: decimal.NewFromInt(1)}})
	if err != nil {
		log.Fatal(err)
	}
	return pb
}

func main() {
	ctx := context.Background()
	dir := "testdata/upgrade"
	m := Manifest{
		About: "Release-upgrade fixture written by the released code (schema 0008): " +
			"3 accounts (free with signup grant, pro with a purchase and an expiring grant, a closed starter), " +
			"keys active/revoked/rotated, usage with cached and reasoning token parts and unit operations, " +
			"an active hold of an unfinished request, a manual reserve, and a login session. " +
			"Expected balances are as of the clock; holds have a 1 h TTL.",
		SchemaVersion: sqlitestore.LatestVersion(),
		Made:          time.Now().UTC().Format(time.RFC3339),
		Clock:         T0.Add(10 * time.Minute).Format(time.RFC3339),
		Password:      password,
	}
	path := filepath.Join(dir, "v0008.db")
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-spend.lock"} {
		_ = os.Remove(p)
	}
	quiet := slog.New(slog.DiscardHandler)
	st, err := sqlitestore.Open(ctx, path, &sqlitestore.Options{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	m.SQLite = build(ctx, st)
	if err := st.Close(); err != nil {
		log.Fatal(err)
	}
	for _, p := range []string{path + "-wal", path + "-shm", path + "-spend.lock"} {
		_ = os.Remove(p)
	}

	if base := os.Getenv("KEYLEDGER_TEST_POSTGRES"); base != "" {
		const schema = "klfixture_v0008"
		run(ctx, base, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		run(ctx, base, "CREATE SCHEMA "+schema)
		u, _ := url.Parse(base)
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		pst, err := pgstore.Open(ctx, u.String(), &pgstore.Options{Logger: quiet})
		if err != nil {
			log.Fatal(err)
		}
		ds := build(ctx, pst)
		m.Postgres, m.PGSchema = &ds, schema
		if err := pst.Close(); err != nil {
			log.Fatal(err)
		}
		out, err := exec.Command("pg_dump", "--inserts", "--no-owner", "--no-privileges", "--schema="+schema, base).Output()
		if err != nil {
			log.Fatalf("pg_dump: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "v0008.pg.sql"), out, 0o644); err != nil {
			log.Fatal(err)
		}
		run(ctx, base, "DROP SCHEMA "+schema+" CASCADE")
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), append(b, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Println("wrote", dir)
}

func run(ctx context.Context, dsn, sql string) {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		log.Fatal(err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}

func build(ctx context.Context, st store.Store) Dataset {
	clk := fakeclock.New(T0)
	kl := must(keyledger.New(st, &keyledger.Options{Now: clk.Now, Prices: Prices(), HoldTTL: time.Hour,
		Logger:   slog.New(slog.DiscardHandler),
		Accounts: &account.Options{Argon2: account.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 16}}}))
	var ds Dataset

	// Account 1: free plan, signup grant ₹50, three keys, model usage.
	a1 := must(kl.Signup(ctx, account.CreateParams{Name: "Asha", Email: "asha@example.com", Password: password, Plan: "free", TimeZone: "Asia/Kolkata"}))
	k1raw, k1 := must3(kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a1.ID, Name: "prod"}))
	k2raw, k2 := must3(kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a1.ID, Name: "old"}))
	k3oldRaw, k3 := must3(kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a1.ID, Name: "rotated"}))
	clk.Advance(time.Minute)
	for i := range 5 {
		g := must(kl.Authorize(ctx, k1raw, keyledger.Request{Model: "fixture-model", PromptTokens: 100, MaxCompletionTokens: 50}))
		must(g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 100, CompletionTokens: int64(20 + i),
			CachedPromptTokens: 40, ReasoningTokens: 10}))
	}
	// An error request: recorded, not charged.
	g := must(kl.Authorize(ctx, k2raw, keyledger.Request{Model: "fixture-model", PromptTokens: 10, MaxCompletionTokens: 10}))
	must(g.Complete(ctx, keyledger.Outcome{StatusCode: 502, ErrorType: "upstream_error", ErrorMessage: "bad gateway"}))
	must(kl.Keys.Revoke(ctx, a1.ID, k2.ID))
	k3raw, _ := must3(kl.Keys.Rotate(ctx, a1.ID, k3.ID, time.Hour))
	// An unfinished request: its hold stays active (TTL 1 h).
	must(kl.Authorize(ctx, k1raw, keyledger.Request{Model: "fixture-model", PromptTokens: 100, MaxCompletionTokens: 100, ID: "req_fixture_open"}))
	tok, _ := must3(kl.Accounts.Login(ctx, a1.Email, account.Secret(password)))
	ds.Accounts = append(ds.Accounts, snapshot(ctx, kl, a1.ID, string(tok), []KeyFix{
		{ID: k1.ID, Name: k1.Name, Raw: string(k1raw), Want: "ok"},
		{ID: k2.ID, Name: k2.Name, Raw: string(k2raw), Want: "revoked"},
		{ID: k3.ID, Name: k3.Name, Raw: string(k3oldRaw), Want: "expired"},
		{ID: k3.ID, Name: k3.Name, Raw: string(k3raw), Want: "ok"},
	}))

	// Account 2: pro plan, a purchase and an expiring grant, unit usage and
	// a manual reserve.
	a2 := must(kl.Signup(ctx, account.CreateParams{Name: "Ravi", Email: "ravi@example.com", Plan: "pro"}))
	must(kl.Credits.Purchase(ctx, credits.CreditParams{AccountID: a2.ID, Amount: credits.AmountFromInt(500), Reference: "pay_1", IdempotencyKey: "pay_1"}))
	must(kl.Credits.Grant(ctx, credits.CreditParams{AccountID: a2.ID, Amount: credits.AmountFromInt(20), ExpiresAt: T0.AddDate(1, 0, 0), Reference: "promo", IdempotencyKey: "promo_1"}))
	b1raw, b1 := must3(kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a2.ID, Name: "batch", Scopes: nil}))
	for range 3 {
		g := must(kl.Authorize(ctx, b1raw, keyledger.Request{Endpoint: "/v1/op", Method: "POST", Units: 2}))
		must(g.Complete(ctx, keyledger.Outcome{StatusCode: 200, Units: 2}))
	}
	must(kl.Credits.Reserve(ctx, credits.ReserveParams{AccountID: a2.ID, Amount: credits.AmountFromInt(10), TTL: time.Hour, Reference: "manual", IdempotencyKey: "manual_hold"}))
	ds.Accounts = append(ds.Accounts, snapshot(ctx, kl, a2.ID, "", []KeyFix{{ID: b1.ID, Name: b1.Name, Raw: string(b1raw), Want: "ok"}}))

	// Account 3: starter, closed (its keys revoked).
	a3 := must(kl.Signup(ctx, account.CreateParams{Name: "Closed", Email: "closed@example.com", Plan: "starter"}))
	c1raw, c1 := must3(kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a3.ID, Name: "gone"}))
	must(kl.CloseAccount(ctx, a3.ID))
	ds.Accounts = append(ds.Accounts, snapshot(ctx, kl, a3.ID, "", []KeyFix{{ID: c1.ID, Name: c1.Name, Raw: string(c1raw), Want: "revoked"}}))

	clk.Advance(9 * time.Minute) // to the manifest's clock
	if err := kl.Close(ctx); err != nil {
		log.Fatal(err)
	}
	// Balances as of the manifest's clock.
	return ds
}

func must3[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		log.Fatal(err)
	}
	return a, b
}

func snapshot(ctx context.Context, kl *keyledger.KeyLedger, id, session string, keys []KeyFix) AccountFix {
	a := must(kl.Accounts.Get(ctx, id))
	la := must(kl.Credits.Account(ctx, id))
	rows := must(kl.Usage.Summary(ctx, usage.SummaryQuery{AccountID: id, From: "2026-11-01", To: "2026-11-03", TimeZone: "UTC"}))
	f := AccountFix{ID: id, Email: a.Email, Plan: a.Plan, Status: string(a.Status),
		Balance: la.Balance.String(), Held: la.Held.String(), Available: la.Available.String(),
		UsageCost: "0", Session: session, Keys: keys}
	if len(rows) == 1 {
		r := rows[0]
		f.UsageRequests, f.UsageCost = r.Requests, r.Cost.String()
		f.PromptTokens, f.CachedPromptTokens, f.ReasoningTokens, f.Units = r.PromptTokens, r.CachedPromptTokens, r.ReasoningTokens, r.Units
	}
	if strings.TrimSpace(f.Email) == "" {
		f.Email = "(scrubbed)"
	}
	return f
}
