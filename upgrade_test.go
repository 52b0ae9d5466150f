package keyledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"crypto/rand"
	"encoding/hex"

	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/auditlog"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/pgstore"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/usage"
)

// The release-upgrade fixture (testdata/upgrade) is a SQLite database and a
// PostgreSQL dump written by the release at schema 0008 with
// testdata/upgrade/scenario.go, and manifest.json, what they hold. These
// tests open copies with today's code, which runs every newer migration,
// and check that nothing was lost or changed: balances, holds, keys, usage
// sums, sessions, and that new requests work.

type upgradeManifest struct {
	SchemaVersion int             `json:"schema_version"`
	Clock         time.Time       `json:"clock"`
	Password      string          `json:"password"`
	PGSchema      string          `json:"pg_schema"`
	SQLite        upgradeDataset  `json:"sqlite"`
	Postgres      *upgradeDataset `json:"postgres"`
}

type upgradeDataset struct {
	Accounts []struct {
		ID, Email, Plan, Status  string
		Balance, Held, Available string
		UsageRequests            int64
		UsageCost                string
		PromptTokens             int64
		CachedPromptTokens       int64
		ReasoningTokens          int64
		Units                    int64
		Session                  string
		Keys                     []struct{ ID, Name, Raw, Want string }
	}
}

// upgradePrices is the scenario's price book (testdata/upgrade/scenario.go).
func upgradePrices(t testing.TB) *usage.PriceBook {
	cached, reasoning := decimal.NewFromInt(2_500), decimal.NewFromInt(30_000)
	pb, err := usage.NewPriceBook(
		[]usage.ModelPrice{{Model: "fixture-model", PromptPerMillion: decimal.NewFromInt(10_000),
			CompletionPerMillion: decimal.NewFromInt(20_000), CachedPromptPerMillion: &cached,
			ReasoningPerMillion: &reasoning, RequestFee: decimal.RequireFromString("0.05")}},
		[]usage.OperationPrice{{Operation: "/v1/op", PerUnit: decimal.NewFromInt(1)}})
	if err != nil {
		t.Fatal(err)
	}
	return pb
}

func readUpgradeManifest(t *testing.T) upgradeManifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "upgrade", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m upgradeManifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.SchemaVersion > sqlitestore.LatestVersion() {
		t.Fatalf("fixture schema %d is newer than the code's %d", m.SchemaVersion, sqlitestore.LatestVersion())
	}
	return m
}

func TestUpgradeFromRelease(t *testing.T) {
	m := readUpgradeManifest(t)
	t.Run("sqlite", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "upgrade.db")
		copyFile(t, filepath.Join("testdata", "upgrade", "v0008.db"), dst)
		st, err := sqlitestore.Open(context.Background(), dst, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("open the previous release's database: %v", err)
		}
		checkUpgraded(t, m, m.SQLite, store.Driver(st))
	})
	t.Run("postgres", func(t *testing.T) {
		base := pgtest.BaseDSN(t)
		if m.Postgres == nil {
			t.Fatal("the fixture has no PostgreSQL dump")
		}
		dump, err := os.ReadFile(filepath.Join("testdata", "upgrade", "v0008.pg.sql"))
		if err != nil {
			t.Fatal(err)
		}
		var rb [6]byte
		_, _ = rand.Read(rb[:])
		schema := "klupgrade_" + hex.EncodeToString(rb[:])
		var sql strings.Builder
		for line := range strings.Lines(string(dump)) {
			if strings.HasPrefix(line, `\`) { // psql meta-commands (\restrict)
				continue
			}
			sql.WriteString(strings.ReplaceAll(line, m.PGSchema, schema))
		}
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			c, err := pgx.Connect(context.Background(), base)
			if err == nil {
				_, _ = c.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
				_ = c.Close(context.Background())
			}
		})
		if _, err := conn.Exec(ctx, sql.String()); err != nil {
			t.Fatalf("restore the dump: %v", err)
		}
		_ = conn.Close(ctx)
		st, err := pgstore.Open(ctx, pgtest.WithSearchPath(t, base, schema), &pgstore.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("open the previous release's schema: %v", err)
		}
		checkUpgraded(t, m, *m.Postgres, store.Driver(st))
	})
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func checkUpgraded(t *testing.T, m upgradeManifest, ds upgradeDataset, st store.Store) {
	ctx := context.Background()
	clk := fakeclock.New(m.Clock)
	kl, err := keyledger.New(store.Wrap(st), &keyledger.Options{Now: clk.Now, Prices: upgradePrices(t), HoldTTL: time.Hour,
		Logger: slog.New(slog.DiscardHandler), Accounts: &account.Options{Argon2: fastArgon}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kl.Close(context.Background())
		_ = st.Close()
	})
	if len(ds.Accounts) != 3 {
		t.Fatalf("manifest lists %d accounts", len(ds.Accounts))
	}
	for _, fa := range ds.Accounts {
		a, err := kl.Accounts.Get(ctx, fa.ID)
		if err != nil {
			t.Fatalf("account %s: %v", fa.ID, err)
		}
		if a.Plan != fa.Plan || string(a.Status) != fa.Status {
			t.Errorf("account %s: plan %q status %q, want %q %q", fa.ID, a.Plan, a.Status, fa.Plan, fa.Status)
		}
		la, err := kl.Credits.Account(ctx, fa.ID)
		if err != nil {
			t.Fatalf("ledger %s: %v", fa.ID, err)
		}
		for _, c := range []struct {
			name string
			got  credits.Amount
			want string
		}{{"balance", la.Balance, fa.Balance}, {"held", la.Held, fa.Held}, {"available", la.Available, fa.Available}} {
			if c.got.String() != c.want && !c.got.Equal(mustAmount(t, c.want)) {
				t.Errorf("account %s %s = %s, want %s", fa.ID, c.name, c.got, c.want)
			}
		}
		if fa.Status == "active" {
			rows, err := kl.Usage.Summary(ctx, usage.SummaryQuery{AccountID: fa.ID, From: "2026-11-01", To: "2026-11-03", TimeZone: "UTC"})
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 1 {
				t.Fatalf("account %s: %d summary rows", fa.ID, len(rows))
			}
			r := rows[0]
			if r.Requests != fa.UsageRequests || !r.Cost.Equal(mustAmount(t, fa.UsageCost)) || r.PromptTokens != fa.PromptTokens ||
				r.CachedPromptTokens != fa.CachedPromptTokens || r.ReasoningTokens != fa.ReasoningTokens || r.Units != fa.Units {
				t.Errorf("account %s usage %+v, want %+v", fa.ID, r, fa)
			}
			raw, err := kl.Usage.Summary(ctx, usage.SummaryQuery{AccountID: fa.ID, From: "2026-11-01", To: "2026-11-03", TimeZone: "UTC", Raw: true})
			if err != nil || len(raw) != 1 || !raw[0].Cost.Equal(r.Cost) || raw[0].Requests != r.Requests {
				t.Errorf("account %s: raw summary %+v %v disagrees with the rollups %+v", fa.ID, raw, err, r)
			}
		}
		if fa.Session != "" {
			s, err := kl.Accounts.VerifySession(ctx, account.Secret(fa.Session))
			if err != nil || s.AccountID != fa.ID {
				t.Errorf("session of %s: %+v, %v", fa.ID, s, err)
			}
			if _, _, err := kl.Accounts.Login(ctx, fa.Email, account.Secret(m.Password)); err != nil {
				t.Errorf("login %s after the upgrade: %v", fa.Email, err)
			}
		}
	}

	// A new request works on the upgraded store and is charged exactly.
	a1 := ds.Accounts[0]
	before, _ := kl.Credits.Account(ctx, a1.ID)
	g, err := kl.Authorize(ctx, apikey.RawKey(a1.Keys[0].Raw), keyledger.Request{Model: "fixture-model", PromptTokens: 100, MaxCompletionTokens: 50})
	if err != nil {
		t.Fatalf("new request after the upgrade: %v", err)
	}
	res, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 100, CompletionTokens: 20, CachedPromptTokens: 40, ReasoningTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := kl.Credits.Account(ctx, a1.ID)
	if !before.Balance.Sub(res.Charged).Equal(after.Balance) || res.Charged.IsZero() {
		t.Errorf("balance %s → %s, charged %s", before.Balance, after.Balance, res.Charged)
	}
	// A new account and key work too.
	na, err := kl.Signup(ctx, account.CreateParams{Name: "New", Email: "new-after-upgrade@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: na.ID, Name: "k"}); err != nil {
		t.Fatal(err)
	}
	// The audit log, added after the release, records on the upgraded store.
	if p, err := kl.Audit.List(ctx, auditlog.Query{AccountID: na.ID}); err != nil || len(p.Entries) == 0 || p.Entries[0].Action != auditlog.ActionKeyCreate {
		t.Errorf("audit log after the upgrade: %+v %v", p.Entries, err)
	}

	// A rotated-away secret still works within its grace period.
	for _, fa := range ds.Accounts {
		for _, k := range fa.Keys {
			if k.Want == "expired" {
				if _, err := kl.Keys.Verify(ctx, apikey.RawKey(k.Raw)); err != nil {
					t.Errorf("old secret of %s within the grace: %v", k.ID, err)
				}
			}
		}
	}

	// Keys, past the rotation grace (1 h) and the holds' TTL.
	clk.Advance(2 * time.Hour)
	for _, fa := range ds.Accounts {
		for _, k := range fa.Keys {
			v, err := kl.Keys.Verify(ctx, apikey.RawKey(k.Raw))
			switch k.Want {
			case "ok":
				if err != nil || v.KeyID != k.ID {
					t.Errorf("key %s (%s): %v", k.ID, k.Name, err)
				}
			case "revoked":
				if !errors.Is(err, apikey.ErrRevoked) && !errors.Is(err, apikey.ErrAccountInactive) {
					t.Errorf("revoked key %s verifies: %v", k.ID, err)
				}
			case "expired":
				if !errors.Is(err, apikey.ErrExpired) {
					t.Errorf("rotated-away secret of %s: %v, want ErrExpired", k.ID, err)
				}
			}
		}
		la, err := kl.Credits.Account(ctx, fa.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !la.Held.IsZero() {
			t.Errorf("account %s: %s still held after the holds' TTL", fa.ID, la.Held)
		}
	}
}

func mustAmount(t testing.TB, s string) credits.Amount {
	t.Helper()
	a, err := credits.ParseAmount(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
