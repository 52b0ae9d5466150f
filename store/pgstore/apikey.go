package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/outbox"
	"github.com/keyledger/keyledger/internal/sqlaccount"
	"github.com/keyledger/keyledger/internal/sqlevents"
	"github.com/keyledger/keyledger/internal/sqlrow"
)

const keyColumns = `k.id, k.account_id, k.name, k.type, k.environment, k.prefix, k.hint, k.models, k.scopes,
	k.status, k.metadata, k.prev_until, k.created_at, k.updated_at, k.rotated_at, k.last_used_at, k.expires_at, k.rate_limits`

// scanKey scans keyColumns followed by extra destinations.
func scanKey(row pgx.Row, extra ...any) (apikey.APIKey, error) {
	var (
		k                        apikey.APIKey
		models, scopes, metadata *string
		rateLimits               *string
		created, updated         int64
		grace, rotated, used     *int64
		expires                  *int64
	)
	dest := append([]any{&k.ID, &k.AccountID, &k.Name, &k.Type, &k.Environment, &k.Prefix, &k.Hint, &models, &scopes,
		&k.Status, &metadata, &grace, &created, &updated, &rotated, &used, &expires, &rateLimits}, extra...)
	if err := row.Scan(dest...); err != nil {
		return k, err
	}
	for _, c := range []struct {
		src *string
		dst any
	}{{models, &k.Models}, {scopes, &k.Scopes}, {metadata, &k.Metadata}, {rateLimits, &k.RateLimits}} {
		if c.src != nil {
			if err := json.Unmarshal([]byte(*c.src), c.dst); err != nil {
				return k, err
			}
		}
	}
	k.CreatedAt, k.UpdatedAt = fromNanos(created), fromNanos(updated)
	k.GraceUntil, k.RotatedAt = sqlaccount.FromNullNanos(grace), sqlaccount.FromNullNanos(rotated)
	k.LastUsedAt, k.ExpiresAt = sqlaccount.FromNullNanos(used), sqlaccount.FromNullNanos(expires)
	return k, nil
}

// CreateAPIKey implements apikey.Store.
func (s *db) CreateAPIKey(ctx context.Context, k apikey.APIKey, hash [32]byte) error {
	models, scopes, metadata, err := sqlaccount.KeyArgs(k)
	if err != nil {
		return wrap("create api key", err)
	}
	return s.write(ctx, "create api key", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO api_keys (id, account_id, name, type, environment, prefix, hint, hash,
			models, scopes, status, metadata, created_at, updated_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
			k.ID, k.AccountID, k.Name, k.Type, string(k.Environment), k.Prefix, k.Hint, hash[:],
			models, scopes, string(k.Status), metadata, toNanos(k.CreatedAt), toNanos(k.UpdatedAt), sqlaccount.ToNullNanos(k.ExpiresAt))
		if isForeignKey(err) {
			return apikey.ErrAccountNotFound
		}
		if err == nil { // the event commits with the key (transactional outbox)
			err = sqlevents.KeyEvent(ctx, &s.Events, accountConn{tx}, events.KeyCreated, k, k.CreatedAt)
		}
		return wrap("create api key", err)
	})
}

// APIKey implements apikey.Store.
func (s *db) APIKey(ctx context.Context, accountID, keyID string) (apikey.APIKey, error) {
	return apiKey(ctx, s.pool, "api key", accountID, keyID, "")
}

func apiKey(ctx context.Context, q querier, op, accountID, keyID, lock string) (apikey.APIKey, error) {
	k, err := scanKey(q.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys k WHERE k.id = $1 AND k.account_id = $2`+lock, keyID, accountID))
	if errors.Is(err, pgx.ErrNoRows) {
		return apikey.APIKey{}, apikey.ErrNotFound
	}
	return k, wrap(op, err)
}

// ListAPIKeys implements apikey.Store.
func (s *db) ListAPIKeys(ctx context.Context, accountID, afterID string, limit int) ([]apikey.APIKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys k
		WHERE k.account_id = $1 AND k.id > $2 ORDER BY k.id LIMIT $3`, accountID, afterID, limit)
	if err != nil {
		return nil, wrap("list api keys", err)
	}
	defer rows.Close()
	out, err := sqlrow.Collect(rows, func(r sqlrow.Scanner) (apikey.APIKey, error) { return scanKey(r) })
	return out, wrap("list api keys", err)
}

// keyByHashQuery reads a key by either secret with its account's plan and
// status: two unique-index probes and a primary-key join, one round trip
// (pgx prepares it once per connection).
const keyByHashQuery = `SELECT ` + keyColumns + `, k.hash = $1, a.plan, a.status
	FROM api_keys k JOIN accounts a ON a.id = k.account_id
	WHERE k.hash = $1 OR k.prev_hash = $1`

// APIKeyByHash implements apikey.Store.
func (s *db) APIKeyByHash(ctx context.Context, hash [32]byte) (apikey.Match, error) {
	var (
		m       apikey.Match
		current bool
	)
	k, err := scanKey(s.pool.QueryRow(ctx, keyByHashQuery, hash[:]), &current, &m.AccountPlan, &m.AccountStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return apikey.Match{}, apikey.ErrNotFound
	}
	if err != nil {
		return apikey.Match{}, wrap("api key by hash", err)
	}
	m.Key, m.Previous = k, !current
	return m, nil
}

// UpdateAPIKey implements apikey.Store. The key row is locked while the
// update is applied, and the change is announced on the notify channel in
// the same transaction (delivered to listeners at commit).
func (s *db) UpdateAPIKey(ctx context.Context, accountID, keyID string, u apikey.Update, now time.Time) (apikey.APIKey, error) {
	var out apikey.APIKey
	err := s.write(ctx, "update api key", func(tx pgx.Tx) error {
		k, err := apiKey(ctx, tx, "update api key", accountID, keyID, ` FOR UPDATE`)
		if err != nil {
			return err
		}
		out = u.Apply(k, now)
		models, scopes, metadata, err := sqlaccount.KeyArgs(out)
		if err != nil {
			return wrap("update api key", err)
		}
		rl, err := sqlaccount.KeyRateLimits(out)
		if err != nil {
			return wrap("update api key", err)
		}
		grace := sqlaccount.ToNullNanos(out.GraceUntil)
		if _, err = tx.Exec(ctx, `UPDATE api_keys SET name = $1, models = $2, scopes = $3, status = $4, metadata = $5,
			expires_at = $6, updated_at = $7, prev_until = $8, prev_hash = CASE WHEN $8::bigint IS NULL THEN NULL ELSE prev_hash END,
			rate_limits = $10 WHERE id = $9`,
			out.Name, models, scopes, string(out.Status), metadata, sqlaccount.ToNullNanos(out.ExpiresAt), toNanos(now), grace, keyID, rl); err != nil {
			return wrap("update api key", err)
		}
		if err := sqlevents.KeyEvent(ctx, &s.Events, accountConn{tx}, outbox.UpdateEvent(k, out), out, now); err != nil {
			return wrap("update api key", err)
		}
		return s.notifyKey(ctx, tx, keyID)
	})
	return out, err
}

// RotateAPIKey implements apikey.Store. PostgreSQL evaluates every SET
// expression on the old row, so prev_hash receives the old hash. Like
// UpdateAPIKey it announces the change.
func (s *db) RotateAPIKey(ctx context.Context, accountID, keyID string, r apikey.Rotation, now time.Time) (apikey.APIKey, error) {
	var out apikey.APIKey
	err := s.write(ctx, "rotate api key", func(tx pgx.Tx) error {
		k, err := apiKey(ctx, tx, "rotate api key", accountID, keyID, ` FOR UPDATE`)
		if err != nil {
			return err
		}
		if out, err = r.Apply(k, now); err != nil {
			return err
		}
		grace := sqlaccount.ToNullNanos(r.GraceUntil)
		if _, err = tx.Exec(ctx, `UPDATE api_keys SET prev_hash = CASE WHEN $1::bigint IS NULL THEN NULL ELSE hash END,
			prev_until = $1, hash = $2, hint = $3, rotated_at = $4, updated_at = $4 WHERE id = $5`,
			grace, r.Hash[:], out.Hint, toNanos(now), keyID); err != nil {
			return wrap("rotate api key", err)
		}
		if err := sqlevents.KeyEvent(ctx, &s.Events, accountConn{tx}, events.KeyRotated, out, now); err != nil {
			return wrap("rotate api key", err)
		}
		return s.notifyKey(ctx, tx, keyID)
	})
	return out, err
}

// TouchAPIKeys implements apikey.Store: one statement (one implicit
// transaction) for all keys. The Service sorts uses by key ID, so
// concurrent flushes lock rows in one order.
func (s *db) TouchAPIKeys(ctx context.Context, uses []apikey.Use) error {
	if len(uses) == 0 {
		return nil
	}
	ids := make([]string, len(uses))
	ats := make([]int64, len(uses))
	for i, u := range uses {
		ids[i], ats[i] = u.KeyID, toNanos(u.At)
	}
	_, err := s.pool.Exec(ctx, `UPDATE api_keys k SET last_used_at = u.at
		FROM (SELECT id, max(at) AS at FROM unnest($1::text[], $2::bigint[]) AS t(id, at) GROUP BY id) u
		WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)`, ids, ats)
	return wrap("touch api keys", err)
}
