package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" (for -postgres)
	_ "modernc.org/sqlite"             // database/sql driver "sqlite" (sqlitestore uses it too)

	"github.com/keyledger/keyledger/credits"
)

// jobStore keeps batch jobs in the example's own table, ev_jobs, in the
// same database as the keyledger store (the SQLite file of -db, or the
// PostgreSQL database of -postgres, which several instances then share).
// The table belongs to this program, not to the library: it is created
// here with CREATE TABLE IF NOT EXISTS, like the gateway's gw_* tables.
//
// Times are unix nanoseconds; 0 means unset. expires_at is set when a job
// finishes (finished_at + jobTTL); lease_until is how long the instance
// named by owner may keep processing a running job without renewing it.
// Emails, hold IDs, results and per-result costs are JSON arrays; costs
// and charged are decimal text (credits.Amount), never floats.
//
// The same store keeps the verification cache, ev_results (see
// resultstore.go).
type jobStore struct {
	db *sql.DB
	pg bool // PostgreSQL: $n placeholders instead of ?
	// maxResults bounds ev_results (maxCachedResults; tests lower it).
	maxResults int
}

// migrations are the example's tables, created in order at open; each is
// idempotent (CREATE … IF NOT EXISTS) and ends with a semicolon.
func migrations() []string { return []string{jobsSchema, resultsSchema} }

const jobsSchema = `
CREATE TABLE IF NOT EXISTS ev_jobs (
	job_id      TEXT PRIMARY KEY,
	account_id  TEXT NOT NULL,
	key_id      TEXT NOT NULL,
	time_zone   TEXT NOT NULL,
	test        INTEGER NOT NULL,
	status      TEXT NOT NULL,
	emails      TEXT NOT NULL,
	holds       TEXT NOT NULL DEFAULT '[]',
	results     TEXT NOT NULL DEFAULT '[]',
	costs       TEXT NOT NULL DEFAULT '[]',
	charged     TEXT NOT NULL DEFAULT '0',
	created_at  BIGINT NOT NULL,
	finished_at BIGINT NOT NULL DEFAULT 0,
	expires_at  BIGINT NOT NULL DEFAULT 0,
	lease_until BIGINT NOT NULL DEFAULT 0,
	owner       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS ev_jobs_account ON ev_jobs(account_id, expires_at);
CREATE INDEX IF NOT EXISTS ev_jobs_expires ON ev_jobs(expires_at);
CREATE INDEX IF NOT EXISTS ev_jobs_lease ON ev_jobs(status, lease_until);
`

// openJobStore opens ev_jobs in the SQLite file at path (which
// sqlitestore.Open has already put in WAL mode). One connection with
// BEGIN IMMEDIATE serialises this program's job writes, which makes the
// per-account cap atomic; the busy timeout waits for the keyledger
// store's writer.
func openJobStore(ctx context.Context, path string) (*jobStore, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("job table: %w", err)
	}
	db.SetMaxOpenConns(1)
	for _, schema := range migrations() {
		if _, err := db.ExecContext(ctx, schema); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("job table: %w", err)
		}
	}
	return &jobStore{db: db, maxResults: maxCachedResults}, nil
}

// openJobStorePG opens ev_jobs in the PostgreSQL database of dsn (the one
// pgstore uses), creating it if missing. The per-account cap is kept by a
// transaction-scoped advisory lock on the account.
func openJobStorePG(ctx context.Context, dsn string) (*jobStore, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("job table: %w", err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(2)
	for stmt := range strings.SplitSeq(strings.Join(migrations(), ""), ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("job table: %w", err)
		}
	}
	return &jobStore{db: db, pg: true, maxResults: maxCachedResults}, nil
}

func (st *jobStore) Close() error { return st.db.Close() }

// q returns query in the database's placeholder syntax. The queries here
// have no ? inside literals.
func (st *jobStore) q(query string) string {
	if !st.pg {
		return query
	}
	var sb strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			sb.WriteByte('$')
			sb.WriteString(strconv.Itoa(n))
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// jobRecord is one row of ev_jobs.
type jobRecord struct {
	ID, AccountID, KeyID, TimeZone string
	Test                           bool
	Status                         string
	Emails                         []string
	Holds                          []string // hold IDs, one per email (live jobs)
	Results                        []Result
	Costs                          []credits.Amount // one per result
	Charged                        credits.Amount
	CreatedAt, FinishedAt          time.Time
	ExpiresAt, LeaseUntil          time.Time
	Owner                          string
}

var errJobNotFound = errors.New("job not found")

// errLeaseLost is returned by writes of a job whose lease another instance
// took over: the writer must stop processing it.
var errLeaseLost = errors.New("job lease lost")

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// create inserts r, owned by r.Owner until r.LeaseUntil, unless its
// account already keeps maxJobs unexpired jobs; it first deletes the
// account's expired jobs. When refused it returns how long until the
// account's next job expires (0 if every job is still running). The count
// and the insert are one transaction under the account's lock (SQLite's
// write lock, or a PostgreSQL advisory lock), so concurrent instances
// cannot exceed the cap.
func (st *jobStore) create(ctx context.Context, r jobRecord, now time.Time, maxJobs int) (ok bool, retryAfter time.Duration, err error) {
	emails, err := json.Marshal(r.Emails)
	if err != nil {
		return false, 0, fmt.Errorf("create job: %w", err)
	}
	tx, err := st.db.BeginTx(ctx, nil)
	if err != nil {
		return false, 0, fmt.Errorf("create job: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if st.pg {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('ev_jobs:' || $1))`, r.AccountID); err != nil {
			return false, 0, fmt.Errorf("create job: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, st.q(`DELETE FROM ev_jobs WHERE account_id = ? AND expires_at > 0 AND expires_at <= ?`), r.AccountID, now.UnixNano()); err != nil {
		return false, 0, fmt.Errorf("create job: %w", err)
	}
	var n int
	var next sql.NullInt64
	if err := tx.QueryRowContext(ctx, st.q(`SELECT COUNT(*), MIN(CASE WHEN expires_at > 0 THEN expires_at END) FROM ev_jobs WHERE account_id = ?`), r.AccountID).Scan(&n, &next); err != nil {
		return false, 0, fmt.Errorf("create job: %w", err)
	}
	if n >= maxJobs {
		if next.Valid {
			retryAfter = max(fromNanos(next.Int64).Sub(now), 0)
		}
		return false, retryAfter, nil
	}
	test := 0
	if r.Test {
		test = 1
	}
	if _, err := tx.ExecContext(ctx, st.q(`INSERT INTO ev_jobs(job_id, account_id, key_id, time_zone, test, status, emails, created_at, lease_until, owner) VALUES(?,?,?,?,?,?,?,?,?,?)`),
		r.ID, r.AccountID, r.KeyID, r.TimeZone, test, r.Status, string(emails), nanos(r.CreatedAt), nanos(r.LeaseUntil), r.Owner); err != nil {
		return false, 0, fmt.Errorf("create job: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return false, 0, fmt.Errorf("create job: %w", err)
	}
	return true, 0, nil
}

// drop deletes a job that was admitted but not started.
func (st *jobStore) drop(ctx context.Context, id string) error {
	if _, err := st.db.ExecContext(ctx, st.q(`DELETE FROM ev_jobs WHERE job_id = ?`), id); err != nil {
		return fmt.Errorf("drop job: %w", err)
	}
	return nil
}

// setHolds records a live job's hold IDs (so that another instance can
// resume it) and renews its lease.
func (st *jobStore) setHolds(ctx context.Context, id, owner string, holds []credits.Hold, leaseUntil time.Time) error {
	ids := make([]string, len(holds))
	for i, h := range holds {
		ids[i] = h.ID
	}
	b, err := json.Marshal(ids)
	if err != nil {
		return fmt.Errorf("job holds: %w", err)
	}
	return st.ownedUpdate(ctx, "job holds", `UPDATE ev_jobs SET holds = ?, lease_until = ? WHERE job_id = ? AND owner = ?`,
		string(b), nanos(leaseUntil), id, owner)
}

func (st *jobStore) ownedUpdate(ctx context.Context, what, query string, args ...any) error {
	res, err := st.db.ExecContext(ctx, st.q(query), args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, errLeaseLost)
	}
	return nil
}

func encodeProgress(results []Result, costs []credits.Amount) (string, string, error) {
	rb, err := json.Marshal(results)
	if err != nil {
		return "", "", err
	}
	cs := make([]string, len(costs))
	for i, c := range costs {
		cs[i] = c.String()
	}
	cb, err := json.Marshal(cs)
	if err != nil {
		return "", "", err
	}
	return string(rb), string(cb), nil
}

// progress saves a running job's results so far and renews its lease. It
// returns errLeaseLost if owner no longer holds the job.
func (st *jobStore) progress(ctx context.Context, id, owner string, results []Result, costs []credits.Amount, charged credits.Amount, leaseUntil time.Time) error {
	rs, cs, err := encodeProgress(results, costs)
	if err != nil {
		return fmt.Errorf("job progress: %w", err)
	}
	return st.ownedUpdate(ctx, "job progress", `UPDATE ev_jobs SET results = ?, costs = ?, charged = ?, lease_until = ? WHERE job_id = ? AND owner = ? AND status = ?`,
		rs, cs, charged.String(), nanos(leaseUntil), id, owner, JobProcessing)
}

// finish saves a job's final state; it expires jobTTL after at.
func (st *jobStore) finish(ctx context.Context, id, owner, status string, results []Result, costs []credits.Amount, charged credits.Amount, at time.Time) error {
	rs, cs, err := encodeProgress(results, costs)
	if err != nil {
		return fmt.Errorf("finish job: %w", err)
	}
	return st.ownedUpdate(ctx, "finish job", `UPDATE ev_jobs SET status = ?, results = ?, costs = ?, charged = ?, finished_at = ?, expires_at = ?, lease_until = 0 WHERE job_id = ? AND owner = ? AND status = ?`,
		status, rs, cs, charged.String(), nanos(at), nanos(at.Add(jobTTL)), id, owner, JobProcessing)
}

// unlease gives up owner's lease on a running job (at shutdown), so that
// the next instance to look resumes it at once.
func (st *jobStore) unlease(ctx context.Context, id, owner string) error {
	return st.ownedUpdate(ctx, "unlease job", `UPDATE ev_jobs SET lease_until = 0 WHERE job_id = ? AND owner = ? AND status = ?`, id, owner, JobProcessing)
}

// claim takes over a running job whose lease ended before now: it
// becomes owner's until leaseUntil. ok is false if the job is not running
// or its lease is still held.
func (st *jobStore) claim(ctx context.Context, id, owner string, now, leaseUntil time.Time) (jobRecord, bool, error) {
	res, err := st.db.ExecContext(ctx, st.q(`UPDATE ev_jobs SET owner = ?, lease_until = ? WHERE job_id = ? AND status = ? AND lease_until <= ?`),
		owner, nanos(leaseUntil), id, JobProcessing, now.UnixNano())
	if err != nil {
		return jobRecord{}, false, fmt.Errorf("claim job: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		if err != nil {
			return jobRecord{}, false, fmt.Errorf("claim job: %w", err)
		}
		return jobRecord{}, false, nil
	}
	r, err := st.load(ctx, `job_id = ?`, id)
	if err != nil {
		return jobRecord{}, false, err
	}
	return r, r.Owner == owner, nil
}

// stale lists up to limit running jobs whose lease ended before now.
func (st *jobStore) stale(ctx context.Context, now time.Time, limit int) ([]string, error) {
	rows, err := st.db.QueryContext(ctx, st.q(`SELECT job_id FROM ev_jobs WHERE status = ? AND lease_until <= ? ORDER BY created_at LIMIT ?`), JobProcessing, now.UnixNano(), limit)
	if err != nil {
		return nil, fmt.Errorf("stale jobs: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("stale jobs: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("stale jobs: %w", err)
	}
	return ids, nil
}

// prune deletes up to limit jobs that expired by now and returns how many.
func (st *jobStore) prune(ctx context.Context, now time.Time, limit int) (int, error) {
	res, err := st.db.ExecContext(ctx, st.q(`DELETE FROM ev_jobs WHERE job_id IN (SELECT job_id FROM ev_jobs WHERE expires_at > 0 AND expires_at <= ? ORDER BY expires_at LIMIT ?)`), now.UnixNano(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune jobs: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune jobs: %w", err)
	}
	return int(n), nil
}

// get returns the account's job, or errJobNotFound (also for another
// account's job, and for a job expired by now but not yet pruned).
func (st *jobStore) get(ctx context.Context, accountID, jobID string, now time.Time) (jobRecord, error) {
	r, err := st.load(ctx, `job_id = ? AND account_id = ?`, jobID, accountID)
	if err != nil {
		return r, err
	}
	if !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt) {
		return jobRecord{}, errJobNotFound
	}
	return r, nil
}

const jobCols = `job_id, account_id, key_id, time_zone, test, status, emails, holds, results, costs, charged, created_at, finished_at, expires_at, lease_until, owner`

func (st *jobStore) load(ctx context.Context, where string, args ...any) (jobRecord, error) {
	var r jobRecord
	var test int
	var emails, holds, results, costs, charged string
	var created, finished, expires, lease int64
	err := st.db.QueryRowContext(ctx, st.q(`SELECT `+jobCols+` FROM ev_jobs WHERE `+where), args...).Scan(
		&r.ID, &r.AccountID, &r.KeyID, &r.TimeZone, &test, &r.Status, &emails, &holds, &results, &costs, &charged,
		&created, &finished, &expires, &lease, &r.Owner)
	if errors.Is(err, sql.ErrNoRows) {
		return r, errJobNotFound
	}
	if err != nil {
		return r, fmt.Errorf("load job: %w", err)
	}
	r.Test = test != 0
	r.CreatedAt, r.FinishedAt, r.ExpiresAt, r.LeaseUntil = fromNanos(created), fromNanos(finished), fromNanos(expires), fromNanos(lease)
	var cs []string
	if err := errors.Join(json.Unmarshal([]byte(emails), &r.Emails), json.Unmarshal([]byte(holds), &r.Holds),
		json.Unmarshal([]byte(results), &r.Results), json.Unmarshal([]byte(costs), &cs)); err != nil {
		return r, fmt.Errorf("load job %s: %w", r.ID, err)
	}
	r.Costs = make([]credits.Amount, len(cs))
	for i, c := range cs {
		a, err := credits.ParseAmount(c)
		if err != nil {
			return r, fmt.Errorf("load job %s: cost %d: %w", r.ID, i, err)
		}
		r.Costs[i] = a
	}
	if r.Charged, err = credits.ParseAmount(charged); err != nil {
		return r, fmt.Errorf("load job %s: charged: %w", r.ID, err)
	}
	return r, nil
}
