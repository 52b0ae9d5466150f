package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The verification cache: the last result of each address an account
// verified, served at the cached price (0.5 credits) for resultTTL. It is
// the table ev_results in the store's database, so every instance on the
// database prices a cached result the same way. Its own migration,
// resultsSchema, runs after the jobs table's at open.
//
// Rows are keyed by account and normalised address (another account's
// result is never a cache hit). Each sweep deletes expired rows, then the
// oldest rows beyond maxResults, in statements of pruneBatch rows and at
// most resultPruneRounds statements of each kind, so a sweep's work is
// bounded however far behind it is.
const resultsSchema = `
CREATE TABLE IF NOT EXISTS ev_results (
	account_id  TEXT NOT NULL,
	email       TEXT NOT NULL,
	result      TEXT NOT NULL,
	verified_at BIGINT NOT NULL,
	expires_at  BIGINT NOT NULL,
	PRIMARY KEY (account_id, email)
);
CREATE INDEX IF NOT EXISTS ev_results_expires ON ev_results(expires_at);
`

const (
	// resultTTL is how long a verified address is served from the cache
	// at the cached price (the seed: "cached result (within 24 hours)").
	resultTTL = 24 * time.Hour
	// maxCachedResults bounds the cache's rows; beyond it the rows closest
	// to expiry go first.
	maxCachedResults = 1_000_000
	// resultPruneRounds bounds the delete statements of one sweep.
	resultPruneRounds = 20
)

// cachedResult returns the account's unexpired result for email.
func (st *jobStore) cachedResult(ctx context.Context, accountID, email string, now time.Time) (Result, bool, error) {
	var b string
	err := st.db.QueryRowContext(ctx, st.q(`SELECT result FROM ev_results WHERE account_id = ? AND email = ? AND expires_at > ?`),
		accountID, email, now.UnixNano()).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, false, fmt.Errorf("cached result: %w", err)
	}
	var r Result
	if err := json.Unmarshal([]byte(b), &r); err != nil {
		return Result{}, false, fmt.Errorf("cached result: %w", err)
	}
	return r, true, nil
}

// cacheResult stores the account's result for email, verified at now,
// until now + resultTTL (replacing an earlier one).
func (st *jobStore) cacheResult(ctx context.Context, accountID, email string, r Result, now time.Time) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("cache result: %w", err)
	}
	if _, err := st.db.ExecContext(ctx, st.q(`INSERT INTO ev_results(account_id, email, result, verified_at, expires_at) VALUES(?,?,?,?,?)
		ON CONFLICT(account_id, email) DO UPDATE SET result = excluded.result, verified_at = excluded.verified_at, expires_at = excluded.expires_at`),
		accountID, email, string(b), now.UnixNano(), now.Add(resultTTL).UnixNano()); err != nil {
		return fmt.Errorf("cache result: %w", err)
	}
	return nil
}

// pruneResults deletes up to limit results expired by now.
func (st *jobStore) pruneResults(ctx context.Context, now time.Time, limit int) (int, error) {
	res, err := st.db.ExecContext(ctx, st.q(`DELETE FROM ev_results WHERE (account_id, email) IN
		(SELECT account_id, email FROM ev_results WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)`), now.UnixNano(), limit)
	return affected(res, err, "prune results")
}

// trimResults deletes up to limit of the results closest to expiry while
// the cache holds more than bound.
func (st *jobStore) trimResults(ctx context.Context, bound, limit int) (int, error) {
	var n int
	if err := st.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM ev_results`).Scan(&n); err != nil {
		return 0, fmt.Errorf("trim results: %w", err)
	}
	if n <= bound {
		return 0, nil
	}
	res, err := st.db.ExecContext(ctx, st.q(`DELETE FROM ev_results WHERE (account_id, email) IN
		(SELECT account_id, email FROM ev_results ORDER BY expires_at LIMIT ?)`), min(n-bound, limit))
	return affected(res, err, "trim results")
}

func affected(res sql.Result, err error, what string) (int, error) {
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	return int(n), nil
}

// sweepResults deletes expired results, then the oldest beyond the bound,
// pruneBatch rows a statement and at most resultPruneRounds statements
// each.
func (st *jobStore) sweepResults(ctx context.Context, now time.Time) error {
	for range resultPruneRounds {
		n, err := st.pruneResults(ctx, now, pruneBatch)
		if err != nil {
			return err
		}
		if n < pruneBatch || ctx.Err() != nil {
			break
		}
	}
	for range resultPruneRounds {
		n, err := st.trimResults(ctx, st.maxResults, pruneBatch)
		if err != nil {
			return err
		}
		if n < pruneBatch || ctx.Err() != nil {
			break
		}
	}
	return nil
}
