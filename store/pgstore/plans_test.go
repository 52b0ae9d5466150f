package pgstore_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/store"
)

// A group commit's statements are planned for their arguments. Their
// generic plans were frozen with the statistics of a young database's
// first executions, and a hold lookup by primary key then scanned the
// whole holds table for as long as the connection lived (BENCHMARKS.md).
// A statement trigger records the setting each holds write ran under.
func TestGroupCommitPlansForItsArguments(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st := open(t, dsn, nil)
	pgtest.Exec(t, dsn, `CREATE TABLE plan_seen (mode text NOT NULL)`)
	pgtest.Exec(t, dsn, `CREATE FUNCTION note_plan_mode() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO plan_seen VALUES (current_setting('plan_cache_mode')); RETURN NULL; END $$`)
	pgtest.Exec(t, dsn, `CREATE TRIGGER note_plan_mode AFTER INSERT OR UPDATE ON credit_holds
		FOR EACH STATEMENT EXECUTE FUNCTION note_plan_mode()`)
	svc, err := credits.NewService(store.Driver(st), &credits.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(ctx)
	if _, err := svc.Open(ctx, "a", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Purchase(ctx, credits.CreditParams{AccountID: "a", Amount: credits.AmountFromInt(10), IdempotencyKey: "p"}); err != nil {
		t.Fatal(err)
	}
	h, err := svc.Reserve(ctx, credits.ReserveParams{AccountID: "a", Amount: credits.AmountFromInt(2), TTL: time.Minute, IdempotencyKey: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(1)}); err != nil {
		t.Fatal(err)
	}
	if svc.Stats().Batches == 0 {
		t.Fatal("no group commit ran: the test checks nothing")
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	r, err := conn.Query(ctx, `SELECT mode FROM plan_seen`)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := pgx.CollectRows(r, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 2 {
		t.Fatalf("%d holds writes seen, want the reserve's and the settle's", len(rows))
	}
	for _, mode := range rows {
		if mode != "force_custom_plan" {
			t.Fatalf("a group commit wrote holds under plan_cache_mode %q, want force_custom_plan", mode)
		}
	}
}
