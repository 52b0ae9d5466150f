package sqlitestore_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/store/storetest"
)

func TestReopenKeepsDataAndAppliesNothingTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	storetest.Reopen(t, func(t *testing.T) store.Store {
		st, err := sqlitestore.Open(context.Background(), path, nil)
		if err != nil {
			t.Fatal(err)
		}
		return store.Driver(st)
	})

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, maxV int
	if err := db.QueryRow(`SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &maxV); err != nil {
		t.Fatal(err)
	}
	if n != sqlitestore.LatestVersion() || maxV != sqlitestore.LatestVersion() {
		t.Fatalf("schema_migrations has %d rows, max %d; want %d", n, maxV, sqlitestore.LatestVersion())
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "k.db")
	st, err := sqlitestore.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from_the_future.sql', 0)`, sqlitestore.LatestVersion()+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := sqlitestore.Open(ctx, path, nil); !errors.Is(err, sqlitestore.ErrSchemaTooNew) {
		t.Fatalf("Open = %v, want ErrSchemaTooNew", err)
	}
}

func TestInvalidPath(t *testing.T) {
	for _, p := range []string{"", ":memory:", "x.db?mode=ro"} {
		if _, err := sqlitestore.Open(context.Background(), p, nil); !errors.Is(err, sqlitestore.ErrInvalidPath) {
			t.Errorf("Open(%q) = %v", p, err)
		}
	}
}

func TestConcurrentOpenMigratesOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "k.db")
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			st, err := sqlitestore.Open(ctx, path, nil)
			if err == nil {
				err = st.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// A database made by the previous release (schema version 5, before the
// account lifecycle tables) opens and is upgraded in place: its accounts
// stay and the new operations work.
func TestUpgradeFromVersion5(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	st, err := sqlitestore.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, _ := account.NewService(store.Driver(st), &account.Options{Argon2: account.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 16}})
	a, err := svc.Create(ctx, account.CreateParams{Name: "Old", Email: "old@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	// Turn it into a version-5 database.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range append(storetest.UpgradeTokenPartsSQL, `DROP TABLE account_tokens`, `DROP TABLE closed_emails`, `DELETE FROM schema_migrations WHERE version > 5`) {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	st, err = sqlitestore.Open(ctx, path, nil)
	if err != nil {
		t.Fatalf("open a version-5 database: %v", err)
	}
	defer st.Close()
	svc, _ = account.NewService(store.Driver(st), nil)
	c, err := svc.Close(ctx, a.ID)
	if err != nil || c.Status != account.StatusClosed {
		t.Fatalf("close after upgrade: %+v %v", c, err)
	}
	if closed, err := svc.EmailClosed(ctx, "old@example.com"); err != nil || !closed {
		t.Fatalf("EmailClosed after upgrade: %v %v", closed, err)
	}
}

// A database made by schema version 6 (today's main, before migration 0008
// added token parts and the applied price) opens and is upgraded in place:
// its records and rollups read with zero parts, and new records add to them.
func TestUpgradeFromVersion6TokenParts(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v6.db")
	st, err := sqlitestore.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	storetest.SeedUsageBeforeUpgrade(t, store.Driver(st))
	st.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range storetest.UpgradeTokenPartsSQL {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	st, err = sqlitestore.Open(ctx, path, nil)
	if err != nil {
		t.Fatalf("open a version-6 database: %v", err)
	}
	defer st.Close()
	storetest.CheckUsageAfterUpgrade(t, store.Driver(st))
}

// A database from before the per-key limits migration opens and is
// upgraded in place: accounts read without key limits, old holds settle,
// and limits can be set and are enforced.
func TestUpgradeToKeyLimits(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v8.db")
	st, err := sqlitestore.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	storetest.SeedLedgerBeforeKeyLimits(t, store.Driver(st))
	st.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range storetest.UpgradeKeyLimitsSQL {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	st, err = sqlitestore.Open(ctx, path, nil)
	if err != nil {
		t.Fatalf("open a database from before key limits: %v", err)
	}
	defer st.Close()
	storetest.CheckKeyLimitsAfterUpgrade(t, store.Driver(st))
}
