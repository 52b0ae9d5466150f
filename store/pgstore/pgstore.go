// Package pgstore is the keyledger backend for many instances: PostgreSQL
// through github.com/jackc/pgx/v5 and its connection pool (pgxpool).
// Several processes, each with its own db, share one database: balances,
// holds (a reservation made by one instance counts in all), idempotency
// keys, usage and API keys are all in the database.
//
// # Many instances: revocation
//
// db implements apikey.ChangeNotifier. A transaction that revokes,
// disables, expires, updates or rotates a key sends NOTIFY with the key's
// ID on Options.NotifyChannel ("keyledger_keys"), and one that changes an
// account on the same name + "_accounts"; PostgreSQL delivers them at
// commit. apikey.NewService subscribes, and the db's listener (one
// dedicated connection per db, started by the first subscriber) passes
// each change to every Service on it, which drops the key from its verify
// cache and cancels the contexts bound to it in that process. Delivery
// takes milliseconds; the documented bound is 1 second, which the tests
// assert. If the listener's connection drops, it reconnects with backoff
// (Options.ReconnectMin to ReconnectMax) and then has every Service read
// all its cached keys again, since notifications sent meanwhile are lost;
// while it is down, caches fall back to apikey.Options.RefreshInterval.
//
// # Schema
//
// Migrations are embedded and versioned like sqlitestore's: a
// schema_migrations table records the applied versions, each migration
// runs in its own transaction under a transaction-scoped advisory lock, so
// processes opening one database at once apply each migration exactly once,
// and a database written by a newer keyledger is refused with
// ErrSchemaTooNew. Tables are created in the first schema of the
// connection's search_path, so one database can hold several independent
// keyledger schemas (add search_path=name to the connection string).
//
// Money is NUMERIC (exact decimals, no declared scale), converted to and
// from shopspring/decimal as text and summed in Go; never float. Times are
// bigint unix nanoseconds in UTC, which keep Go's nanosecond times exactly
// (timestamptz keeps microseconds); every business time comes from the Go
// clock the services pass in, never from SQL now().
//
// # Concurrency
//
// Ledger writes lock the ledger account rows they touch with SELECT … FOR
// UPDATE (in account_id order when a batch touches several) before reading
// anything else of those accounts, then run ledger.ApplySpend,
// ledger.ApplyCredit or meter.ApplyMeter on the locked state, so spends
// from any number of pools never overspend. Group commits (credits and
// usage batches) stage each request's writes in memory, drop a failed
// request's writes before anything reaches the server, and send the batch's
// rows in one pipelined round trip of multi-row statements (INSERT … SELECT
// FROM unnest, rollups upserted with ON CONFLICT DO UPDATE), with the
// transaction's BEGIN and COMMIT in the first and last pipeline. Their first
// attempt claims idempotency keys without looking them up: the unique
// indexes check the claims, and a violation (a replay, or a concurrent claim
// in another process) reruns the batch with lookups.
//
// # Failures
//
// Every transaction attempt, group commits included, is bounded by
// Options.TxTimeout, so a stalled or black-holed server fails calls instead
// of holding them (pgx closes a connection whose call timed out, and the
// pool dials a new one); idle connections are checked every
// Options.HealthCheckPeriod and pinged when acquired after a second idle,
// so a server restart or a reset costs the calls that were using the dead
// connections and nothing after. The listener bounds its connect and pings
// an idle connection every Options.ListenerPing.
//
// Errors are classified by SQLSTATE, never by message text: unique (23505)
// and foreign-key (23503) violations become the domains' sentinels, and
// serialization failures (40001) and deadlocks (40P01) retry the
// transaction.
package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

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
	ErrSchemaTooNew = errkind.New(errkind.Internal, "pgstore: database schema is newer than this version of keyledger")
	ErrInvalidDSN   = errkind.New(errkind.Invalid, "pgstore: invalid connection string")
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Options configure Open. nil means defaults.
type Options struct {
	// MaxConns bounds the connection pool (pgxpool's default, the larger of
	// 4 and the number of CPUs, if 0). The change listener uses one more
	// connection of its own.
	MaxConns int32
	// Logger receives migration progress and listener reconnects
	// (slog.Default if nil).
	Logger *slog.Logger
	// NotifyChannel is the LISTEN/NOTIFY channel of key changes
	// ("keyledger_keys" by default). Processes that share a schema must
	// use the same channel; schemas in one database may share it (a
	// notification about a key another schema does not have costs one
	// cache scan).
	NotifyChannel string
	// ReconnectMin and ReconnectMax bound the backoff of the change
	// listener between reconnection attempts (100 ms and 5 s by default).
	ReconnectMin, ReconnectMax time.Duration
	// MaxRetries bounds how often a transaction that failed with a
	// serialization failure or a deadlock is retried (8 by default).
	MaxRetries int
	// TxTimeout bounds each attempt of a transaction (5 s by default),
	// including the group commits that run on no caller's context: a
	// stalled or black-holed connection fails the attempt instead of
	// blocking every later batch, and pgx closes the connection, so the
	// pool replaces it. The listener's liveness ping uses it too.
	TxTimeout time.Duration
	// HealthCheckPeriod is how often the pool checks its idle connections
	// and drops dead ones (5 s by default; pgx's own default is a minute).
	// A connection idle for more than a second is pinged when acquired.
	HealthCheckPeriod time.Duration
	// ListenerPing is how long the change listener waits for a
	// notification before it pings its connection (5 s by default): a
	// connection that no longer answers — a partition, a server that went
	// away without a reset — is replaced instead of waited on forever.
	ListenerPing time.Duration
	// LeasedHolds makes keyledger lease funds instead of writing each hold:
	// for every account and API key it spends for, an instance keeps one
	// stored hold (the lease) and draws its requests' holds from it in
	// memory, so a metered request costs one transaction (its settle, which
	// also takes the charge out of the lease) instead of two. Other
	// instances see leased funds as held, so no instance can spend what
	// another set aside; the price is that up to about twice an instance's
	// holds in flight stay set aside while it is busy, and a dead
	// instance's leases hold funds until they expire (a minute after their
	// last growth). See DESIGN.md, "Leased holds".
	LeasedHolds bool
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	if r.NotifyChannel == "" {
		r.NotifyChannel = "keyledger_keys"
	}
	if r.ReconnectMin <= 0 {
		r.ReconnectMin = 100 * time.Millisecond
	}
	if r.ReconnectMax < r.ReconnectMin {
		r.ReconnectMax = max(5*time.Second, r.ReconnectMin)
	}
	if r.MaxRetries <= 0 {
		r.MaxRetries = 8
	}
	if r.TxTimeout <= 0 {
		r.TxTimeout = 5 * time.Second
	}
	if r.HealthCheckPeriod <= 0 {
		r.HealthCheckPeriod = 5 * time.Second
	}
	if r.ListenerPing <= 0 {
		r.ListenerPing = 5 * time.Second
	}
	return r
}

// db is the store.Store on a PostgreSQL connection pool behind a Store.
type db struct {
	*sqlledger.Engine // the ledger and metering rules (credits.go, usage.go)
	// the accounts, sessions and lifecycle operations (account.go)
	sqlaccount.Accounts
	sqlevents.Events // the event outbox, endpoints, thresholds (internal/sqlevents)
	sqlaccount.AuditLog

	pool *pgxpool.Pool
	cfg  *pgxpool.Config // for the listener's own connection
	opt  Options
	log  *slog.Logger

	mu     sync.Mutex
	closed bool
	lis    *listener // started by the first WatchKeyChanges
}

// Store is an open PostgreSQL database, to pass to keyledger.New. It is
// safe for concurrent use; several Stores (in one process or many) may
// share a database. Its operations — the store.Store contract, reached by
// keyledger's services (store.Driver opens them for tests and tools) — are
// not methods of Store: they do not enforce the domain rules.
type Store struct {
	handle // store.Wrap of the *db: Close and the operations
	db     *db
}

// LeasedHolds reports Options.LeasedHolds: keyledger then leases funds for
// the holds of each account and key (see credits.Service).
func (s *Store) LeasedHolds() bool { return s.db.opt.LeasedHolds }

// LeasedHolds is the driver's side of Store.LeasedHolds.
func (s *db) LeasedHolds() bool { return s.opt.LeasedHolds }

type handle = store.Backend

var _ store.Backend = (*Store)(nil)

// Open connects to the database at dsn (a libpq URL or key=value string,
// e.g. "postgres://user@host:5432/db?sslmode=disable&search_path=keyledger"),
// checks that it is reachable and applies pending migrations.
func Open(ctx context.Context, dsn string, opts *Options) (*Store, error) {
	s, err := open(ctx, dsn, opts)
	if err != nil {
		return nil, err
	}
	return &Store{handle: store.Wrap(s), db: s}, nil
}

// Close stops the change listener and closes the pool. Calls after Close
// fail.
func (s *Store) Close() error { return s.db.Close() }

func open(ctx context.Context, dsn string, opts *Options) (*db, error) {
	o := opts.withDefaults()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidDSN, err)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	cfg.HealthCheckPeriod = o.HealthCheckPeriod
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: open: %w", err)
	}
	s := &db{pool: pool, cfg: cfg, opt: o, log: o.Logger}
	s.Engine = sqlledger.New(ledgerDB{s})
	s.Accounts = sqlaccount.New(accountDB{s}, sqlaccount.Dialect{EmailIs: `lower(email) = lower(?)`, Lock: ` FOR UPDATE`})
	s.Events = sqlevents.New(accountDB{s}, sqlevents.Dialect{SkipLocked: ` FOR UPDATE SKIP LOCKED`, Lock: ` FOR UPDATE`})
	s.AuditLog = sqlaccount.NewAuditLog(accountDB{s})
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: connect: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close stops the change listener and closes the pool. Calls after Close
// fail.
func (s *db) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	lis := s.lis
	s.mu.Unlock()
	if lis != nil {
		lis.stop()
	}
	s.pool.Close()
	return nil
}

type migration = migrations.Migration

// LatestVersion is the schema version this package writes.
func LatestVersion() int { return migrations.Latest(migrationFS, "migrations") }

func (s *db) migrate(ctx context.Context) error {
	return migrations.Apply(ctx, migrationFS, "migrations", "pgstore", s.applyMigration)
}

// migrationLock is the first key of the advisory lock that serialises
// migrations; the second is a hash of the schema, so that schemas of one
// database migrate independently.
const migrationLock = 0x6b6c6467 // "kldg"

// applyMigration applies m in its own transaction unless it is already
// recorded. The advisory lock makes the check and the change atomic across
// processes, so concurrent opens apply each migration exactly once.
func (s *db) applyMigration(ctx context.Context, m migration, latest int) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))`, migrationLock); err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)`); err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	var current int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	if current > latest {
		return fmt.Errorf("%w: database has version %d, this build knows %d", ErrSchemaTooNew, current, latest)
	}
	if current >= m.Version {
		return nil
	}
	if _, err := tx.Exec(ctx, m.SQL); err != nil {
		return fmt.Errorf("pgstore: migration %s: %w", m.Name, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
		m.Version, m.Name, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("pgstore: migration %s: %w", m.Name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgstore: migration %s: %w", m.Name, err)
	}
	s.log.Info("pgstore: applied migration", "version", m.Version, "name", m.Name)
	return nil
}

// querier is what pgx.Tx, *pgx.Conn and *pgxpool.Pool have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// txOptions select how write runs a transaction.
type txOptions struct {
	iso      pgx.TxIsoLevel
	readOnly bool
}

// write runs fn in one transaction and commits it, retrying the whole
// transaction after a serialization failure or a deadlock. Errors from fn
// are returned as they are: fn returns domain sentinels or errors it has
// already wrapped.
func (s *db) write(ctx context.Context, op string, fn func(pgx.Tx) error) error {
	return s.run(ctx, op, txOptions{}, fn)
}

// read runs fn in one read-only REPEATABLE READ transaction, so that its
// queries see one snapshot.
func (s *db) read(ctx context.Context, op string, fn func(pgx.Tx) error) error {
	return s.run(ctx, op, txOptions{iso: pgx.RepeatableRead, readOnly: true}, fn)
}

func (s *db) run(ctx context.Context, op string, o txOptions, fn func(pgx.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.once(ctx, op, o, fn)
		if err == nil || attempt >= s.opt.MaxRetries || ctx.Err() != nil || !retryable(err, false) {
			return err
		}
		if backoff(ctx, attempt) != nil {
			return err
		}
	}
}

func (s *db) once(ctx context.Context, op string, o txOptions, fn func(pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.opt.TxTimeout)
	defer cancel()
	opts := pgx.TxOptions{IsoLevel: o.iso}
	if o.readOnly {
		opts.AccessMode = pgx.ReadOnly
	}
	tx, err := s.pool.BeginTx(ctx, opts)
	if err != nil {
		return wrap(op, err)
	}
	defer tx.Rollback(ctx)
	if err := fn(tx); err != nil {
		return err
	}
	return wrap(op, tx.Commit(ctx))
}

// txConn is what a ledgerTx runs on: a pgx.Tx, or a bare pooled
// connection on which it sends BEGIN and COMMIT itself.
type txConn interface {
	querier
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// pipelined runs fn on a pooled connection for a transaction whose BEGIN
// and COMMIT fn sends inside its first and last pipelined batches, so that
// a group commit costs two round trips (and the WAL flush) instead of four.
// Like run, it retries serialization failures, deadlocks and unique
// violations: the batch paths claim idempotency keys optimistically, and a
// key claimed by a concurrent transaction is seen (and replayed) on the
// retry. A transaction that fn leaves open — it failed, or its COMMIT never
// ran — is rolled back before the connection returns to the pool.
func (s *db) pipelined(ctx context.Context, op string, fn func(c txConn, attempt int) error) error {
	for attempt := 0; ; attempt++ {
		err := s.pipelinedOnce(ctx, op, func(c txConn) error { return fn(c, attempt) })
		if err == nil || attempt >= s.opt.MaxRetries || ctx.Err() != nil || !retryable(err, true) {
			return err
		}
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
	}
}

func (s *db) pipelinedOnce(ctx context.Context, op string, fn func(txConn) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.opt.TxTimeout)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return wrap(op, err)
	}
	defer conn.Release()
	err = fn(conn)
	if pc := conn.Conn().PgConn(); !pc.IsClosed() && pc.TxStatus() != 'I' {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, rerr := conn.Exec(rctx, `ROLLBACK`); rerr != nil {
			_ = conn.Conn().Close(rctx) // the pool drops a closed connection
		}
		if err == nil {
			err = wrap(op, errors.New("transaction left open"))
		}
	}
	return err
}

// backoff waits a jittered, growing delay before retry attempt+1, so that
// the transactions that collided do not collide again.
func backoff(ctx context.Context, attempt int) error {
	t := time.NewTimer(time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 6))))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// SQLSTATE codes the store acts on.
const (
	codeUnique        = "23505"
	codeForeignKey    = "23503"
	codeSerialization = "40001"
	codeDeadlock      = "40P01"
)

// sqlState returns the SQLSTATE of err, or "".
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func isUnique(err error) bool     { return sqlState(err) == codeUnique }
func isForeignKey(err error) bool { return sqlState(err) == codeForeignKey }

// retryable reports whether a transaction that failed with err may succeed
// when run again.
func retryable(err error, unique bool) bool {
	switch sqlState(err) {
	case codeSerialization, codeDeadlock:
		return true
	case codeUnique:
		return unique
	}
	return false
}

// Time conversion: unix nanoseconds, NULL for the zero time.

func toNanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("pgstore: %s: %w", op, err)
}
