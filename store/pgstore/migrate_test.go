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
	storetest.Reopen(t, func(t *testing.T) store.Store { return open(t, dsn, nil) })
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
	svc, _ := account.NewService(a, nil)
	if _, err := svc.Create(ctx, account.CreateParams{Name: "A", Email: "a@example.com"}); err != nil {
		t.Fatal(err)
	}
	if got, err := b.ListAccounts(ctx, "", 10); err != nil || len(got) != 0 {
		t.Fatalf("other schema lists %d accounts, %v", len(got), err)
	}
}

func TestInvalidDSN(t *testing.T) {
	if _, err := pgstore.Open(context.Background(), "postgres://%zz", nil); !errors.Is(err, pgstore.ErrInvalidDSN) {
		t.Fatalf("Open = %v, want ErrInvalidDSN", err)
	}
}
