package pgstore_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/internal/pgtest"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/pgstore"
	"github.com/keyledger/keyledger/store/storetest"
)

// query runs one query on a connection of its own and scans its row.
func query(t *testing.T, dsn, sql string, dest ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, sql).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestReopenKeepsDataAndAppliesNothingTwice(t *testing.T) {
	dsn := pgtest.DSN(t)
	storetest.Reopen(t, func(t *testing.T) store.Store { return store.Driver(open(t, dsn, nil)) })
	var n, maxV int
	query(t, dsn, `SELECT count(*), max(version) FROM schema_migrations`, &n, &maxV)
	if n != pgstore.LatestVersion() || maxV != pgstore.LatestVersion() {
		t.Fatalf("schema_migrations has %d rows, max %d; want %d", n, maxV, pgstore.LatestVersion())
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	dsn := pgtest.DSN(t)
	open(t, dsn, nil).Close()
	pgtest.Exec(t, dsn, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'from_the_future.sql', 0)`,
		pgstore.LatestVersion()+1)
	if _, err := pgstore.Open(context.Background(), dsn, &pgstore.Options{Logger: slog.New(slog.DiscardHandler)}); !errors.Is(err, pgstore.ErrSchemaTooNew) {
		t.Fatalf("Open = %v, want ErrSchemaTooNew", err)
	}
}

func TestConcurrentOpenMigratesOnce(t *testing.T) {
	dsn := pgtest.DSN(t)
	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() {
			st, err := pgstore.Open(context.Background(), dsn, &pgstore.Options{MaxConns: 2, Logger: slog.New(slog.DiscardHandler)})
			if err == nil {
				err = st.Close()
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var rows int
	query(t, dsn, `SELECT count(*) FROM schema_migrations`, &rows)
	if rows != pgstore.LatestVersion() {
		t.Fatalf("%d migration rows, want %d", rows, pgstore.LatestVersion())
	}
}

// Schemas of one database are independent: each has its own tables and
// migration history.
func TestSchemasAreIndependent(t *testing.T) {
	ctx := context.Background()
	a, b := open(t, pgtest.DSN(t), nil), open(t, pgtest.DSN(t), nil)
	svc, _ := account.NewService(store.Driver(a), nil)
	if _, err := svc.Create(ctx, account.CreateParams{Name: "A", Email: "a@example.com"}); err != nil {
		t.Fatal(err)
	}
	if got, err := store.Driver(b).ListAccounts(ctx, "", 10); err != nil || len(got) != 0 {
		t.Fatalf("other schema lists %d accounts, %v", len(got), err)
	}
}

func TestInvalidDSN(t *testing.T) {
	if _, err := pgstore.Open(context.Background(), "postgres://%zz", nil); !errors.Is(err, pgstore.ErrInvalidDSN) {
		t.Fatalf("Open = %v, want ErrInvalidDSN", err)
	}
}

// exec runs statements on a connection of its own.
func exec(t *testing.T, dsn string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// A database made by the previous release (schema version 5, before the
// account lifecycle tables) opens and is upgraded in place.
func TestUpgradeFromVersion5(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st := open(t, dsn, nil)
	svc, _ := account.NewService(store.Driver(st), &account.Options{Argon2: account.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 16}})
	a, err := svc.Create(ctx, account.CreateParams{Name: "Old", Email: "old@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	exec(t, dsn, append(storetest.UpgradeTokenPartsSQL, `DROP TABLE account_tokens`, `DROP TABLE closed_emails`, `DELETE FROM schema_migrations WHERE version > 5`)...)

	st = open(t, dsn, nil)
	svc, _ = account.NewService(store.Driver(st), nil)
	c, err := svc.Close(ctx, a.ID)
	if err != nil || c.Status != account.StatusClosed {
		t.Fatalf("close after upgrade: %+v %v", c, err)
	}
	if closed, err := svc.EmailClosed(ctx, "old@example.com"); err != nil || !closed {
		t.Fatalf("EmailClosed after upgrade: %v %v", closed, err)
	}
	var n int
	query(t, dsn, `SELECT count(*) FROM schema_migrations`, &n)
	if n != pgstore.LatestVersion() {
		t.Fatalf("%d migrations recorded, want %d", n, pgstore.LatestVersion())
	}
}

// A database made by schema version 6 (today's main, before migration 0008
// added token parts and the applied price) opens and is upgraded in place:
// its records and rollups read with zero parts, and new records add to them.
func TestUpgradeFromVersion6TokenParts(t *testing.T) {
	dsn := pgtest.DSN(t)
	st := open(t, dsn, nil)
	storetest.SeedUsageBeforeUpgrade(t, store.Driver(st))
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	exec(t, dsn, storetest.UpgradeTokenPartsSQL...)
	st = open(t, dsn, nil)
	defer st.Close()
	storetest.CheckUsageAfterUpgrade(t, store.Driver(st))
	var n int
	query(t, dsn, `SELECT count(*) FROM schema_migrations`, &n)
	if n != pgstore.LatestVersion() {
		t.Fatalf("%d migrations recorded, want %d", n, pgstore.LatestVersion())
	}
}

// A database from before the per-key limits migration opens and is
// upgraded in place (see storetest.CheckKeyLimitsAfterUpgrade).
func TestUpgradeToKeyLimits(t *testing.T) {
	dsn := pgtest.DSN(t)
	st := open(t, dsn, nil)
	storetest.SeedLedgerBeforeKeyLimits(t, store.Driver(st))
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	exec(t, dsn, storetest.UpgradeKeyLimitsSQL...)
	st = open(t, dsn, nil)
	defer st.Close()
	storetest.CheckKeyLimitsAfterUpgrade(t, store.Driver(st))
	var n int
	query(t, dsn, `SELECT count(*) FROM schema_migrations`, &n)
	if n != pgstore.LatestVersion() {
		t.Fatalf("%d migrations recorded, want %d", n, pgstore.LatestVersion())
	}
}
