package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/auditlog"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/pgstore"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/usage"
)

// The move from SQLite to PostgreSQL: a generated database with every kind
// of row is copied, interrupted part-way, resumed, verified by the tool and
// then compared row by row here; the copy then serves as the original did.

// tokenMailer keeps the one-time tokens the account service mails.
type tokenMailer struct {
	mu     sync.Mutex
	tokens map[string]account.Secret // account ID → its last token
}

func (m *tokenMailer) SendMail(_ context.Context, msg account.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tokens == nil {
		m.tokens = map[string]account.Secret{}
	}
	m.tokens[msg.AccountID] = msg.Token
	return nil
}

// migrationOptions are the library options of the generated data set.
func migrationOptions(t *testing.T) *keyledger.Options {
	t.Helper()
	pb, err := usage.NewPriceBook(
		[]usage.ModelPrice{{Model: "m-1", PromptPerMillion: decimal.RequireFromString("330.5"), CompletionPerMillion: decimal.RequireFromString("1234.567")}},
		[]usage.OperationPrice{{Operation: "/v1/op", PerUnit: decimal.RequireFromString("0.0125")}})
	if err != nil {
		t.Fatal(err)
	}
	return &keyledger.Options{Prices: pb, Logger: slog.New(slog.DiscardHandler), HoldTTL: 24 * time.Hour,
		Accounts: &account.Options{Argon2: account.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 16}, Mailer: &tokenMailer{}},
		Keys:     &apikey.Options{LastUsedInterval: -1},
		Events:   &keyledger.EventOptions{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}
}

// generated is what the test remembers of the generated data.
type generated struct {
	email, password string
	session         account.Secret
	raw             apikey.RawKey // an active key
	accountID       string
	activeHold      string
	verifyToken     account.Secret // an email verification token not yet used
}

// sqliteBillingDDL is the gateway's SQLite billing schema
// (examples/gateway/billingstore.go).
const sqliteBillingDDL = `
CREATE TABLE IF NOT EXISTS gw_orders (order_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, amount_paise INTEGER NOT NULL,
	currency TEXT NOT NULL, receipt TEXT NOT NULL, status TEXT NOT NULL, payment_id TEXT NOT NULL DEFAULT '',
	entry_id TEXT NOT NULL DEFAULT '', created_at INTEGER NOT NULL, paid_at INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS gw_invoice_seq (fy INTEGER PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS gw_invoices (invoice_id TEXT PRIMARY KEY, number TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL,
	order_id TEXT NOT NULL UNIQUE, payment_id TEXT NOT NULL, amount_paise INTEGER NOT NULL, customer_name TEXT NOT NULL,
	customer_email TEXT NOT NULL, created_at INTEGER NOT NULL);`

// generate writes a SQLite database with every kind of row: accounts with
// passwords, live and revoked sessions, active, rotated, revoked and
// expiring keys, grants that expire (lots), purchases, adjustments, holds
// active, settled and released, debits, usage records of models and
// operations with their rollups and idempotency records, and the gateway's
// orders, invoice counter and invoices.
func generate(t *testing.T, path string, accounts int) []generated {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, path, &sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	opts := migrationOptions(t)
	mailer := opts.Accounts.Mailer.(*tokenMailer)
	kl, err := keyledger.New(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()
	var out []generated
	for i := range accounts {
		g := generated{email: fmt.Sprintf("mover%d@example.com", i), password: "correct horse battery " + fmt.Sprint(i)}
		a, err := kl.Signup(ctx, account.CreateParams{Name: fmt.Sprintf("Mover %d", i), Email: g.email,
			Password: account.Secret(g.password), TimeZone: "Asia/Kolkata", Metadata: map[string]string{"i": fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		g.accountID = a.ID
		if err := kl.Accounts.SendVerification(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		g.verifyToken = mailer.tokens[a.ID]
		if g.session, _, err = kl.Accounts.Login(ctx, g.email, account.Secret(g.password)); err != nil {
			t.Fatal(err)
		}
		gone, _, err := kl.Accounts.Login(ctx, g.email, account.Secret(g.password))
		if err != nil {
			t.Fatal(err)
		}
		if err := kl.Accounts.Logout(ctx, gone); err != nil {
			t.Fatal(err)
		}
		if g.raw, _, err = kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "prod", Models: []string{"m-1"},
			Metadata: map[string]string{"team": "core"}}); err != nil {
			t.Fatal(err)
		}
		_, rot, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "rotated", ExpiresAt: time.Now().Add(90 * 24 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := kl.Keys.Rotate(ctx, a.ID, rot.ID, time.Hour); err != nil {
			t.Fatal(err)
		}
		_, rev, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "old"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kl.Keys.Revoke(ctx, a.ID, rev.ID); err != nil {
			t.Fatal(err)
		}
		// Events: an endpoint, thresholds, and a key that expires soon
		// (the dispatcher's scan notes it).
		if _, err := kl.Webhooks().CreateEndpoint(ctx, a.ID, receiver.URL+"/hook", "mover"); err != nil {
			t.Fatal(err)
		}
		if _, err := kl.Webhooks().SetAlertThresholds(ctx, a.ID, []decimal.Decimal{decimal.NewFromInt(500), decimal.NewFromInt(50)}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "soon", ExpiresAt: time.Now().Add(72 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if _, err := kl.Credits.Grant(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.NewAmount(decimal.RequireFromString("12.34")),
			ExpiresAt: time.Now().Add(30 * 24 * time.Hour), Reference: "promo", IdempotencyKey: "promo"}); err != nil {
			t.Fatal(err)
		}
		if _, err := kl.Credits.Purchase(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.AmountFromInt(1000), Reference: "pay_1", IdempotencyKey: "pay_1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := kl.Credits.Adjust(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.NewAmount(decimal.RequireFromString("-0.01")), IdempotencyKey: "fix"}); err != nil {
			t.Fatal(err)
		}
		for r := range 7 + i {
			req := keyledger.Request{Model: "m-1", PromptTokens: int64(100 + r), MaxCompletionTokens: 300}
			if r%3 == 2 {
				req = keyledger.Request{Endpoint: "/v1/op", Method: "POST", Units: int64(r)}
			}
			gr, err := kl.Authorize(ctx, g.raw, req)
			if err != nil {
				t.Fatal(err)
			}
			o := keyledger.Outcome{StatusCode: 200, PromptTokens: int64(100 + r), CompletionTokens: int64(17 * r), Units: int64(r),
				Metadata: map[string]string{"r": fmt.Sprint(r)}}
			if r == 4 {
				o = keyledger.Outcome{StatusCode: 502, ErrorType: "upstream_error", ErrorMessage: "bad gateway"}
			}
			if _, err := gr.Complete(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		h, err := kl.Credits.Reserve(ctx, credits.ReserveParams{AccountID: a.ID, Amount: credits.AmountFromInt(3), TTL: 24 * time.Hour, Reference: "open", IdempotencyKey: "open"})
		if err != nil {
			t.Fatal(err)
		}
		g.activeHold = h.ID
		h2, err := kl.Credits.Reserve(ctx, credits.ReserveParams{AccountID: a.ID, Amount: credits.AmountFromInt(2), TTL: time.Hour, Reference: "rel", IdempotencyKey: "rel"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kl.Credits.Release(ctx, h2.ID); err != nil {
			t.Fatal(err)
		}
		out = append(out, g)
	}
	// Deliver what is pending so far; later events stay in the outbox.
	for range 50 {
		if n, err := kl.Dispatcher().RunOnce(ctx); err != nil {
			t.Fatal(err)
		} else if n == 0 {
			break
		}
	}
	if _, err := kl.Credits.Grant(ctx, credits.CreditParams{AccountID: out[0].accountID, Amount: credits.AmountFromInt(1), IdempotencyKey: "late"}); err != nil {
		t.Fatal(err)
	}
	// A closed account leaves a closed email behind.
	gone, err := kl.Signup(ctx, account.CreateParams{Name: "Gone", Email: "gone@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kl.Accounts.Close(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	if err := kl.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st.Close()

	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(sqliteBillingDDL); err != nil {
		t.Fatal(err)
	}
	for i, g := range out {
		status, paid := "paid", int64(1_780_000_000_000_000_000+i)
		if i%2 == 1 {
			status, paid = "created", 0
		}
		if _, err := db.Exec(`INSERT INTO gw_orders VALUES (?, ?, ?, 'INR', ?, ?, ?, ?, ?, ?)`, fmt.Sprintf("order_%03d", i), g.accountID,
			50000+i, fmt.Sprintf("rcpt_%d", i), status, "pay_"+fmt.Sprint(i), "", int64(1_770_000_000_000_000_000+i), paid); err != nil {
			t.Fatal(err)
		}
		if status == "paid" {
			if _, err := db.Exec(`INSERT INTO gw_invoices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, fmt.Sprintf("inv_%03d", i),
				fmt.Sprintf("FOR/2026-27/%04d", i+1), g.accountID, fmt.Sprintf("order_%03d", i), "pay_"+fmt.Sprint(i), 50000+i,
				"Mover ✓", g.email, int64(1_780_000_000_000_000_000+i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := db.Exec(`INSERT INTO gw_invoice_seq VALUES (2026, ?)`, len(out)); err != nil {
		t.Fatal(err)
	}
	return out
}

// dumpSQLite and dumpPG list a table's rows as comparable text, sorted.
func dumpSQLite(t *testing.T, path string, tb table) []string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	names := make([]string, len(tb.cols))
	for i, c := range tb.cols {
		names[i] = c.name
	}
	rows, err := db.Query(`SELECT ` + strings.Join(names, ", ") + ` FROM ` + tb.name)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals := make([]any, len(names))
		ptrs := make([]any, len(names))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		conv, err := convertRow(&tb, vals)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rowText(conv))
	}
	slices.Sort(out)
	return out
}

func dumpPG(t *testing.T, dsn string, tb table) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	dst := tb.dstCols
	if dst == nil {
		dst = tb.cols
	}
	sel := make([]string, len(dst))
	for i, c := range dst {
		sel[i] = c.name
		if c.kind == kMoney {
			sel[i] += "::text"
		}
	}
	rows, err := conn.Query(ctx, `SELECT `+strings.Join(sel, ", ")+` FROM `+tb.name)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range dst {
			if s, ok := vals[i].(string); ok && c.kind == kMoney {
				vals[i] = decimal.RequireFromString(s).String()
			}
		}
		out = append(out, rowText(vals))
	}
	slices.Sort(out)
	return out
}

// rowText prints values with their types' meaning, not their Go types.
func rowText(vals []any) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		switch x := v.(type) {
		case nil:
			parts[i] = "NULL"
		case []byte:
			parts[i] = "x" + hex.EncodeToString(x)
		case int32:
			parts[i] = fmt.Sprint(int64(x))
		default:
			parts[i] = fmt.Sprint(x)
		}
	}
	return strings.Join(parts, "|")
}

func TestMigrateSQLiteToPostgres(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	src := filepath.Join(t.TempDir(), "gateway.db")
	gen := generate(t, src, 6)

	// An interrupted run: cancelled after a few batches of 7 rows.
	cctx, cancel := context.WithCancel(ctx)
	batches := 0
	_, err := migrate(cctx, src, dsn, &migrateOptions{Batch: 7, Progress: func(string, int64, int64) {
		if batches++; batches == 9 {
			cancel()
		}
	}})
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v, want context.Canceled", err)
	}
	// Resumed through the command line.
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"migrate", "-from-db", src, "-to-postgres", dsn, "-batch", "7"}, &out, &errb); code != 0 {
		t.Fatalf("resumed run: exit %d: %s\n%s", code, errb.String(), out.String())
	}
	var rep migrateReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK || !rep.Resumed || len(rep.Accounts) != len(gen)+1 || len(rep.Rollups) != len(gen) { // +1: the closed account
		t.Fatalf("report: ok %v resumed %v, %d accounts, %d rollups:\n%s", rep.OK, rep.Resumed, len(rep.Accounts), len(rep.Rollups), out.String())
	}
	if !strings.Contains(errb.String(), "usage_records") {
		t.Fatalf("no progress printed: %s", errb.String())
	}
	// Every table, row by row, exactly.
	for _, tb := range migrationTables {
		s, d := dumpSQLite(t, src, tb), dumpPG(t, dsn, tb)
		if len(s) == 0 {
			t.Fatalf("%s: the generated data set has no rows", tb.name)
		}
		if !slices.Equal(s, d) {
			t.Fatalf("%s differs:\nsqlite %q\npg     %q", tb.name, s, d)
		}
	}
	// A finished migration run again verifies again and copies nothing.
	if rep2, err := migrate(ctx, src, dsn, nil); err != nil || !rep2.OK {
		t.Fatalf("second run: %v", err)
	}

	// The copy serves as the original did.
	st, err := pgstore.Open(ctx, dsn, &pgstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kl, err := keyledger.New(st, migrationOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close(ctx)
	for _, g := range gen {
		if _, _, err := kl.Accounts.Login(ctx, g.email, account.Secret(g.password)); err != nil {
			t.Fatalf("login on the copy: %v", err)
		}
		if _, err := kl.Accounts.VerifySession(ctx, g.session); err != nil {
			t.Fatalf("session on the copy: %v", err)
		}
		if _, err := kl.Accounts.VerifyEmail(ctx, g.verifyToken); err != nil {
			t.Fatalf("verification token on the copy: %v", err)
		}
		before, err := kl.Credits.Account(ctx, g.accountID)
		if err != nil || !before.Held.Equal(credits.AmountFromInt(3)) {
			t.Fatalf("account on the copy: held %s (%v), want the open hold of 3", before.Held, err)
		}
		gr, err := kl.Authorize(ctx, g.raw, keyledger.Request{Endpoint: "/v1/op", Method: "POST", Units: 4})
		if err != nil {
			t.Fatalf("authorize on the copy: %v", err)
		}
		if _, err := gr.Complete(ctx, keyledger.Outcome{StatusCode: 200, Units: 4}); err != nil {
			t.Fatal(err)
		}
		after, _ := kl.Credits.Account(ctx, g.accountID)
		if !before.Balance.Sub(after.Balance).Equal(credits.NewAmount(decimal.RequireFromString("0.05"))) {
			t.Fatalf("charged %s on the copy, want 0.05", before.Balance.Sub(after.Balance))
		}
		if _, err := kl.Credits.Release(ctx, g.activeHold); err != nil {
			t.Fatalf("the copied hold: %v", err)
		}
		// The copied audit log continues: a new entry (the verification
		// above) is appended after the copied ones, not dropped.
		p, err := kl.Audit.List(ctx, auditlog.Query{AccountID: g.accountID, Limit: 500})
		if err != nil || len(p.Entries) < 2 || p.Entries[0].Action != auditlog.ActionEmailVerify || p.Entries[len(p.Entries)-1].Action != auditlog.ActionAccountCreate {
			t.Fatalf("audit log on the copy: %+v %v", p.Entries, err)
		}
		// The copied outbox continues: a new key's event takes a seq past
		// the copied ones.
		if _, _, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: g.accountID, Name: "after the move"}); err != nil {
			t.Fatalf("a new key on the copy: %v", err)
		}
	}
	if closed, err := kl.Accounts.EmailClosed(ctx, "gone@example.com"); err != nil || !closed {
		t.Fatalf("the closed email on the copy: %v %v", closed, err)
	}
	var _ store.Store = store.Driver(st)
}

// A target holding anything this migration did not write is refused, and
// left as it was.
func TestMigrateRefusesATargetWithOtherData(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	generate(t, a, 1)
	generate(t, b, 1)
	dsn := pgtest.DSN(t)
	if _, err := migrate(ctx, a, dsn, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := migrate(ctx, b, dsn, nil); !errors.Is(err, errTargetNotEmpty) {
		t.Fatalf("a second source into the same target: %v, want errTargetNotEmpty", err)
	}
	// A database a server already wrote to, without any migration.
	other := pgtest.DSN(t)
	st, err := pgstore.Open(ctx, other, &pgstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	accts, err := account.NewService(store.Driver(st), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := accts.Create(ctx, account.CreateParams{Name: "Here", Email: "here@example.com"}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"migrate", "-from-db", a, "-to-postgres", other}, &out, &errb); code != exitError ||
		!strings.Contains(errb.String(), "accounts has 1 rows") {
		t.Fatalf("a target with an account: exit %d: %s", code, errb.String())
	}
}
