// Package sqlitestore is the default keyledger backend: an embedded SQLite
// database (modernc.org/sqlite, pure Go, no cgo) in one file.
//
// The database runs in WAL mode with synchronous=NORMAL, a busy timeout and
// foreign keys on. All writes go through one writer connection that opens
// its transactions with BEGIN IMMEDIATE, so writers queue in Go rather than
// failing with SQLITE_BUSY; reads use a separate pool of read-only
// connections that proceed concurrently with the writer.
//
// Migrations are embedded and versioned: a schema_migrations table records
// the applied versions, re-opening a file applies only new ones, each in its
// own transaction, and a file written by a newer keyledger is refused with
// ErrSchemaTooNew.
//
// Times are stored as INTEGER unix nanoseconds in UTC. Money (package
// credits) is stored as exact decimal TEXT and summed in Go, never as REAL
// (see credits.go).
package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keyledger/keyledger/errkind"
	"github.com/keyledger/keyledger/internal/migrations"
	"github.com/keyledger/keyledger/internal/sqlaccount"
	"github.com/keyledger/keyledger/internal/sqlevents"
	"github.com/keyledger/keyledger/internal/sqlledger"
	"github.com/keyledger/keyledger/store"
)

var _ store.Store = (*db)(nil)

// Errors returned by Open.
var (
	ErrSchemaTooNew = errkind.New(errkind.Internal, "sqlitestore: database schema is newer than this version of keyledger")
	ErrInvalidPath  = errkind.New(errkind.Invalid, "sqlitestore: invalid database path")
	// ErrSpendLocked: another process keeps its holds in memory
	// (Options.ProcessHolds) on this file, so this one may not spend from
	// it — or, at Open with ProcessHolds, another process already does.
	ErrSpendLocked = errkind.New(errkind.Unavailable, "sqlitestore: another process spends from this database with process holds")
	// ErrProcessHoldsUnsupported: Options.ProcessHolds needs advisory file
	// locks (flock), which this platform lacks.
	ErrProcessHoldsUnsupported = errkind.New(errkind.Invalid, "sqlitestore: process holds need flock, which this platform lacks")
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Options configure Open. nil means defaults.
type Options struct {
	// BusyTimeout is how long a connection waits for a lock held by another
	// process (5 seconds by default).
	BusyTimeout time.Duration
	// Readers is the size of the read-only connection pool (GOMAXPROCS,
	// at least 2, by default).
	Readers int
	// Logger receives migration progress (slog.Default if nil).
	Logger *slog.Logger
	// CacheSizeKiB is SQLite's page cache per connection (64 MiB by
	// default; the pages are allocated as they are used). Negative leaves
	// SQLite's own default (2 MiB).
	CacheSizeKiB int
	// CheckpointInterval moves WAL checkpoints off the writer. SQLite's
	// own scheme checkpoints inside the commit that takes the WAL past
	// 1,000 pages, so that one commit — and every caller waiting for it —
	// pays for copying the WAL into the database and two fsyncs; under a
	// steady write load that is every few group commits. By default (0) a
	// background connection runs a PASSIVE checkpoint every 20ms (cheap
	// when there is nothing to copy), which never blocks the writer or
	// readers, and the writer checkpoints itself only when the WAL passes
	// WALRestartPages, with little left to copy by then: a PASSIVE
	// checkpoint alone cannot restart a WAL that a busy writer keeps
	// appending to, while the writer's own checkpoint completes and lets
	// the next transaction write the WAL from its start again, which keeps
	// the WAL bounded. A positive interval sets the background period; a
	// negative one turns the background checkpointer off (SQLite's own
	// scheme). Other processes sharing the file keep their own setting.
	CheckpointInterval time.Duration
	// WALRestartPages is the WAL size, in pages, at which the writer
	// checkpoints itself when the background checkpointer runs (8,000 by
	// default, 32 MiB of 4 KiB pages).
	WALRestartPages int
	// ProcessHolds makes this process the only one that spends from the
	// file, and lets the credits Service keep its holds in memory: a
	// reserve, an extend and a release then write nothing, and a metered
	// request costs one write transaction instead of two. Open takes the
	// file's spend lock ("<path>-spend.lock") exclusively, waiting up to
	// BusyTimeout, or fails with ErrSpendLocked; while it is held, other
	// processes may read and credit, but their debits, reserves, metering
	// and negative adjustments fail with ErrSpendLocked — so that nobody
	// spends funds this process holds. A crashed process's holds vanish with its
	// requests (the kernel drops the lock). See DESIGN.md, "Process holds".
	ProcessHolds bool
}

// db is the store.Store on one SQLite file behind a Store.
type db struct {
	w     *sql.DB // exactly one connection: every write transaction
	r     *sql.DB // read-only pool
	log   *slog.Logger
	rstmt stmts // prepared statements on r

	*sqlledger.Engine // the ledger and metering rules (credits.go, usage.go)
	// the accounts, sessions and lifecycle operations (account.go)
	sqlaccount.Accounts
	sqlevents.Events // the event outbox, endpoints, thresholds (internal/sqlevents)
	sqlaccount.AuditLog

	lw, lr *ledgerStmts // prepared ledger and usage statements on w and r (credits.go)
	mw     *multiStmts  // multi-row statements on w (multirow.go)
	accts  acctCache    // committed ledger account states (acctcache.go)

	spend        *spendLock // the file's spend lock (spendlock_unix.go)
	processHolds bool       // spend is held exclusively (Options.ProcessHolds)
	sharedMu     sync.Mutex
	shared       map[any]any // Shared

	ckpt     *sql.DB       // background checkpointer (CheckpointInterval), or nil
	stopCkpt chan struct{} // closed by Close, once
	stopOnce sync.Once
	ckptDone chan struct{}
}

// Store is an open SQLite database, to pass to keyledger.New. Its
// operations — the store.Store contract, reached by keyledger's services
// (store.Driver opens them for tests and tools) — are not methods of Store:
// they do not enforce the domain rules.
type Store struct {
	handle // store.Wrap of the *db: Close and the operations
	db     *db
}

type handle = store.Backend

var _ store.Backend = (*Store)(nil)

// Open opens (creating if needed) the database at path and applies pending
// migrations. path is a file name; it must not contain '?'.
func Open(ctx context.Context, path string, opts *Options) (*Store, error) {
	s, err := open(ctx, path, opts)
	if err != nil {
		return nil, err
	}
	return &Store{handle: store.Wrap(s), db: s}, nil
}

// Close closes the database. Calls after Close fail.
func (s *Store) Close() error { return s.db.Close() }

// ProcessHolds reports whether this process is the only one spending from
// the file (Options.ProcessHolds): keyledger then keeps its holds in
// memory.
func (s *Store) ProcessHolds() bool { return s.db.processHolds }

func open(ctx context.Context, path string, opts *Options) (*db, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = 5 * time.Second
	}
	if o.Readers <= 0 {
		o.Readers = max(2, runtime.GOMAXPROCS(0))
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.CacheSizeKiB == 0 {
		o.CacheSizeKiB = 64 << 10
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = 20 * time.Millisecond
	}
	if o.WALRestartPages <= 0 {
		o.WALRestartPages = 8000
	}
	if path == "" || strings.ContainsAny(path, "?#") || path == ":memory:" {
		return nil, fmt.Errorf("%w: %q (a file name without '?' or '#')", ErrInvalidPath, path)
	}
	if o.ProcessHolds && !processHoldsSupported {
		return nil, ErrProcessHoldsUnsupported
	}
	lock, err := openSpendLock(path, o.ProcessHolds, o.BusyTimeout)
	if err != nil {
		return nil, err
	}
	base := "file:" + path + "?_pragma=busy_timeout(" + strconv.FormatInt(o.BusyTimeout.Milliseconds(), 10) + ")" +
		"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"
	if o.CacheSizeKiB > 0 {
		base += "&_pragma=cache_size(-" + strconv.Itoa(o.CacheSizeKiB) + ")"
	}
	wdsn := base + "&_txlock=immediate"
	if o.CheckpointInterval > 0 {
		wdsn += "&_pragma=wal_autocheckpoint(" + strconv.Itoa(o.WALRestartPages) + ")"
	}
	w, err := sql.Open("sqlite", wdsn)
	if err != nil {
		lock.close()
		return nil, fmt.Errorf("sqlitestore: open: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &db{w: w, log: o.Logger, mw: newMultiStmts(), spend: lock, processHolds: o.ProcessHolds}
	s.Engine = sqlledger.New(ledgerDB{s})
	s.Accounts = sqlaccount.New(accountDB{s}, sqlaccount.Dialect{EmailIs: `email = ?`})
	s.Events = sqlevents.New(accountDB{s}, sqlevents.Dialect{})
	s.AuditLog = sqlaccount.NewAuditLog(accountDB{s})
	if err := s.migrateRetrying(ctx, o.BusyTimeout); err != nil {
		w.Close()
		lock.close()
		return nil, err
	}
	r, err := sql.Open("sqlite", base+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		lock.close()
		return nil, fmt.Errorf("sqlitestore: open readers: %w", err)
	}
	r.SetMaxOpenConns(o.Readers)
	r.SetMaxIdleConns(o.Readers)
	r.SetConnMaxIdleTime(0)
	s.r = r
	if err := s.prepareLedger(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.mw.prepare(ctx, s.w); err != nil {
		s.Close()
		return nil, err
	}
	if o.CheckpointInterval > 0 {
		if err := s.startCheckpointer(base, o.CheckpointInterval); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// startCheckpointer runs PASSIVE WAL checkpoints on a connection of its own.
func (s *db) startCheckpointer(dsn string, every time.Duration) error {
	c, err := sql.Open("sqlite", dsn)
	if err != nil {
		return fmt.Errorf("sqlitestore: open checkpointer: %w", err)
	}
	c.SetMaxOpenConns(1)
	c.SetMaxIdleConns(1)
	c.SetConnMaxIdleTime(0)
	s.ckpt, s.stopCkpt, s.ckptDone = c, make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.ckptDone)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stopCkpt:
				return
			case <-t.C:
				if _, err := c.Exec(`PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
					s.log.Warn("sqlitestore: background checkpoint failed", "error", err)
				}
			}
		}
	}()
	return nil
}

// Close closes both connection pools (and stops the checkpointer).
func (s *db) Close() error {
	var ck error
	if s.ckpt != nil {
		s.stopOnce.Do(func() {
			close(s.stopCkpt)
			<-s.ckptDone
			ck = s.ckpt.Close()
		})
	}
	return errors.Join(s.rstmt.close(), s.closeLedger(), s.mw.close(), ck, s.r.Close(), s.w.Close(), s.spend.close())
}

// Shared returns the value kept under key for the domain services on this
// store, created by mk on first use: the credits Services of one process
// share their process holds through it.
func (s *db) Shared(key any, mk func() any) any {
	s.sharedMu.Lock()
	defer s.sharedMu.Unlock()
	if v, ok := s.shared[key]; ok {
		return v
	}
	if s.shared == nil {
		s.shared = make(map[any]any)
	}
	v := mk()
	s.shared[key] = v
	return v
}

// ProcessHolds reports whether this process is the only one spending from
// the file (Options.ProcessHolds): the credits Service then keeps its
// holds in memory.
func (s *db) ProcessHolds() bool { return s.processHolds }

type migration = migrations.Migration

// LatestVersion is the schema version this package writes.
func LatestVersion() int { return migrations.Latest(migrationFS, "migrations") }

func (s *db) migrate(ctx context.Context) error {
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`); err != nil {
		return fmt.Errorf("sqlitestore: migrate: %w", err)
	}
	return migrations.Apply(ctx, migrationFS, "migrations", "sqlitestore", s.applyMigration)
}

// migrateRetrying runs migrate, retrying for up to timeout when SQLite
// reports the file busy. Several processes opening a new file at once can
// meet SQLITE_BUSY where SQLite does not call the busy handler (while one of
// them switches the file to WAL or recovers the WAL); each migration is
// idempotent, so trying again is safe.
func (s *db) migrateRetrying(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		err := s.migrate(ctx)
		if err == nil || sqliteCode(err)&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// applyMigration applies m in its own transaction unless it is already
// recorded. Under BEGIN IMMEDIATE the check and the change are atomic, so two
// processes opening one file at once apply each migration exactly once.
func (s *db) applyMigration(ctx context.Context, m migration, latest int) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: migrate: %w", err)
	}
	defer tx.Rollback()
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("sqlitestore: migrate: %w", err)
	}
	if current > latest {
		return fmt.Errorf("%w: file has version %d, this build knows %d", ErrSchemaTooNew, current, latest)
	}
	if current >= m.Version {
		return nil
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return fmt.Errorf("sqlitestore: migration %s: %w", m.Name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		m.Version, m.Name, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("sqlitestore: migration %s: %w", m.Name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: migration %s: %w", m.Name, err)
	}
	s.log.Info("sqlitestore: applied migration", "version", m.Version, "name", m.Name)
	return nil
}

// write runs fn in one write transaction (BEGIN IMMEDIATE on the single
// writer connection). Errors from fn are returned as they are: fn returns
// domain sentinels or errors it has already wrapped.
func (s *db) write(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: %s: %w", op, err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: %s: %w", op, err)
	}
	return nil
}

// sqliteCode returns the extended SQLite result code of err, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

func isUnique(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func isForeignKey(err error) bool {
	return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// Time conversion: unix nanoseconds, NULL for the zero time.

func toNanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func toNullNanos(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}
}

func fromNullNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromNanos(n.Int64)
}

func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("sqlitestore: %s: %w", op, err)
}
