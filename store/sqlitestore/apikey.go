package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

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
func scanKey(row scanner, extra ...any) (apikey.APIKey, error) {
	var (
		k                        apikey.APIKey
		models, scopes, metadata sql.NullString
		rateLimits               sql.NullString
		created, updated         int64
		grace, rotated, used     sql.NullInt64
		expires                  sql.NullInt64
	)
	dest := append([]any{&k.ID, &k.AccountID, &k.Name, &k.Type, &k.Environment, &k.Prefix, &k.Hint, &models, &scopes,
		&k.Status, &metadata, &grace, &created, &updated, &rotated, &used, &expires, &rateLimits}, extra...)
	if err := row.Scan(dest...); err != nil {
		return k, err
	}
	for _, c := range []struct {
		src sql.NullString
		dst any
	}{{models, &k.Models}, {scopes, &k.Scopes}, {metadata, &k.Metadata}, {rateLimits, &k.RateLimits}} {
		if c.src.Valid {
			if err := json.Unmarshal([]byte(c.src.String), c.dst); err != nil {
				return k, err
			}
		}
	}
	k.CreatedAt, k.UpdatedAt = fromNanos(created), fromNanos(updated)
	k.GraceUntil, k.RotatedAt = fromNullNanos(grace), fromNullNanos(rotated)
	k.LastUsedAt, k.ExpiresAt = fromNullNanos(used), fromNullNanos(expires)
	return k, nil
}

// CreateAPIKey implements apikey.Store.
func (s *db) CreateAPIKey(ctx context.Context, k apikey.APIKey, hash [32]byte) error {
	models, scopes, metadata, err := sqlaccount.KeyArgs(k)
	if err != nil {
		return wrap("create api key", err)
	}
	return s.write(ctx, "create api key", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO api_keys (id, account_id, name, type, environment, prefix, hint, hash,
			models, scopes, status, metadata, created_at, updated_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			k.ID, k.AccountID, k.Name, k.Type, k.Environment, k.Prefix, k.Hint, hash[:],
			models, scopes, k.Status, metadata, toNanos(k.CreatedAt), toNanos(k.UpdatedAt), toNullNanos(k.ExpiresAt))
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
	return s.apiKey(ctx, s.r, "api key", accountID, keyID)
}

func (s *db) apiKey(ctx context.Context, q querier, op, accountID, keyID string) (apikey.APIKey, error) {
	k, err := scanKey(q.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys k WHERE k.id = ? AND k.account_id = ?`, keyID, accountID))
	if errors.Is(err, sql.ErrNoRows) {
		return apikey.APIKey{}, apikey.ErrNotFound
	}
	return k, wrap(op, err)
}

// ListAPIKeys implements apikey.Store.
func (s *db) ListAPIKeys(ctx context.Context, accountID, afterID string, limit int) ([]apikey.APIKey, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys k
		WHERE k.account_id = ? AND k.id > ? ORDER BY k.id LIMIT ?`, accountID, afterID, limit)
	if err != nil {
		return nil, wrap("list api keys", err)
	}
	defer rows.Close()
	out, err := sqlrow.Collect(rows, func(r sqlrow.Scanner) (apikey.APIKey, error) { return scanKey(r) })
	return out, wrap("list api keys", err)
}

const keyByHashQuery = `SELECT ` + keyColumns + `, k.hash = ?1, a.plan, a.status
	FROM api_keys k JOIN accounts a ON a.id = k.account_id
	WHERE k.hash = ?1 OR k.prev_hash = ?1`

// APIKeyByHash implements apikey.Store. One indexed query, prepared once,
// reads the key by either secret and joins its account's plan and status.
func (s *db) APIKeyByHash(ctx context.Context, hash [32]byte) (apikey.Match, error) {
	var (
		m       apikey.Match
		current bool
	)
	st, err := s.rstmt.get(ctx, s.r, keyByHashQuery)
	if err != nil {
		return apikey.Match{}, wrap("api key by hash", err)
	}
	k, err := scanKey(st.QueryRowContext(ctx, hash[:]), &current, &m.AccountPlan, &m.AccountStatus)
	if errors.Is(err, sql.ErrNoRows) {
		return apikey.Match{}, apikey.ErrNotFound
	}
	if err != nil {
		return apikey.Match{}, wrap("api key by hash", err)
	}
	m.Key, m.Previous = k, !current
	return m, nil
}

// UpdateAPIKey implements apikey.Store.
func (s *db) UpdateAPIKey(ctx context.Context, accountID, keyID string, u apikey.Update, now time.Time) (apikey.APIKey, error) {
	var out apikey.APIKey
	err := s.write(ctx, "update api key", func(tx *sql.Tx) error {
		k, err := s.apiKey(ctx, tx, "update api key", accountID, keyID)
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
		grace := toNullNanos(out.GraceUntil)
		_, err = tx.ExecContext(ctx, `UPDATE api_keys SET name = ?, models = ?, scopes = ?, status = ?, metadata = ?,
			expires_at = ?, updated_at = ?, prev_until = ?, prev_hash = CASE WHEN ? IS NULL THEN NULL ELSE prev_hash END,
			rate_limits = ? WHERE id = ?`,
			out.Name, models, scopes, out.Status, metadata, toNullNanos(out.ExpiresAt), toNanos(now), grace, grace, rl, keyID)
		if err == nil {
			err = sqlevents.KeyEvent(ctx, &s.Events, accountConn{tx}, outbox.UpdateEvent(k, out), out, now)
		}
		return wrap("update api key", err)
	})
	return out, err
}

// RotateAPIKey implements apikey.Store. SQLite evaluates every SET
// expression on the old row, so prev_hash receives the old hash.
func (s *db) RotateAPIKey(ctx context.Context, accountID, keyID string, r apikey.Rotation, now time.Time) (apikey.APIKey, error) {
	var out apikey.APIKey
	err := s.write(ctx, "rotate api key", func(tx *sql.Tx) error {
		k, err := s.apiKey(ctx, tx, "rotate api key", accountID, keyID)
		if err != nil {
			return err
		}
		if out, err = r.Apply(k, now); err != nil {
			return err
		}
		grace := toNullNanos(r.GraceUntil)
		_, err = tx.ExecContext(ctx, `UPDATE api_keys SET prev_hash = CASE WHEN ? IS NULL THEN NULL ELSE hash END,
			prev_until = ?, hash = ?, hint = ?, rotated_at = ?, updated_at = ? WHERE id = ?`,
			grace, grace, r.Hash[:], out.Hint, toNanos(now), toNanos(now), keyID)
		if err == nil {
			err = sqlevents.KeyEvent(ctx, &s.Events, accountConn{tx}, events.KeyRotated, out, now)
		}
		return wrap("rotate api key", err)
	})
	return out, err
}

// TouchAPIKeys implements apikey.Store: one transaction, one prepared
// statement for all keys.
func (s *db) TouchAPIKeys(ctx context.Context, uses []apikey.Use) error {
	if len(uses) == 0 {
		return nil
	}
	return s.write(ctx, "touch api keys", func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE api_keys SET last_used_at = ?1
			WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)`)
		if err != nil {
			return wrap("touch api keys", err)
		}
		defer stmt.Close()
		for _, u := range uses {
			if _, err := stmt.ExecContext(ctx, toNanos(u.At), u.KeyID); err != nil {
				return wrap("touch api keys", err)
			}
		}
		return nil
	})
}
