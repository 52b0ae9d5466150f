package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/internal/sqlrow"
)

const accountColumns = `id, name, email, plan, limits, status, time_zone, metadata, created_at, updated_at`

type scanner = sqlrow.Scanner

func scanAccount(row scanner) (account.Account, error) {
	var (
		a                account.Account
		limits, metadata sql.NullString
		created, updated int64
	)
	if err := row.Scan(&a.ID, &a.Name, &a.Email, &a.Plan, &limits, &a.Status, &a.TimeZone, &metadata, &created, &updated); err != nil {
		return a, err
	}
	if limits.Valid {
		a.Limits = new(account.Limits)
		if err := json.Unmarshal([]byte(limits.String), a.Limits); err != nil {
			return a, err
		}
	}
	if metadata.Valid {
		if err := json.Unmarshal([]byte(metadata.String), &a.Metadata); err != nil {
			return a, err
		}
	}
	a.CreatedAt, a.UpdatedAt = fromNanos(created), fromNanos(updated)
	return a, nil
}

func accountArgs(a account.Account) (limits, metadata sql.NullString, err error) {
	if a.Limits != nil {
		b, err := json.Marshal(a.Limits)
		if err != nil {
			return limits, metadata, err
		}
		limits = sql.NullString{String: string(b), Valid: true}
	}
	if len(a.Metadata) > 0 {
		b, err := json.Marshal(a.Metadata)
		if err != nil {
			return limits, metadata, err
		}
		metadata = sql.NullString{String: string(b), Valid: true}
	}
	return limits, metadata, nil
}

// CreateAccount implements account.AccountStore.
func (s *Store) CreateAccount(ctx context.Context, a account.Account, hash string) error {
	limits, metadata, err := accountArgs(a)
	if err != nil {
		return wrap("create account", err)
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO accounts (`+accountColumns+`, password_hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.Name, a.Email, a.Plan, limits, a.Status, a.TimeZone, metadata,
		toNanos(a.CreatedAt), toNanos(a.UpdatedAt), hash)
	if isUnique(err) {
		return account.ErrEmailTaken
	}
	return wrap("create account", err)
}

// Account implements account.AccountStore.
func (s *Store) Account(ctx context.Context, id string) (account.Account, error) {
	return s.accountWhere(ctx, s.r, "account", `id = ?`, id)
}

// AccountByEmail implements account.AccountStore.
func (s *Store) AccountByEmail(ctx context.Context, email string) (account.Account, error) {
	return s.accountWhere(ctx, s.r, "account by email", `email = ?`, email)
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Store) accountWhere(ctx context.Context, q querier, op, where string, arg any) (account.Account, error) {
	a, err := scanAccount(q.QueryRowContext(ctx, `SELECT `+accountColumns+` FROM accounts WHERE `+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return account.Account{}, account.ErrNotFound
	}
	return a, wrap(op, err)
}

// UpdateAccount implements account.AccountStore.
func (s *Store) UpdateAccount(ctx context.Context, id string, u account.Update, now time.Time) (account.Account, error) {
	var out account.Account
	err := s.write(ctx, "update account", func(tx *sql.Tx) error {
		a, err := s.accountWhere(ctx, tx, "update account", `id = ?`, id)
		if err != nil {
			return err
		}
		out = u.Apply(a, now)
		limits, metadata, err := accountArgs(out)
		if err != nil {
			return wrap("update account", err)
		}
		_, err = tx.ExecContext(ctx, `UPDATE accounts SET name = ?, plan = ?, limits = ?, status = ?, time_zone = ?,
			metadata = ?, updated_at = ? WHERE id = ?`,
			out.Name, out.Plan, limits, out.Status, out.TimeZone, metadata, toNanos(now), id)
		return wrap("update account", err)
	})
	return out, err
}

// ListAccounts implements account.AccountStore.
func (s *Store) ListAccounts(ctx context.Context, afterID string, limit int) ([]account.Account, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id > ? ORDER BY id LIMIT ?`, afterID, limit)
	if err != nil {
		return nil, wrap("list accounts", err)
	}
	defer rows.Close()
	out, err := sqlrow.Collect(rows, scanAccount)
	return out, wrap("list accounts", err)
}

// PasswordHash implements account.AccountStore.
func (s *Store) PasswordHash(ctx context.Context, id string) (string, error) {
	var h string
	err := s.r.QueryRowContext(ctx, `SELECT password_hash FROM accounts WHERE id = ?`, id).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", account.ErrNotFound
	}
	return h, wrap("password hash", err)
}

// SetPasswordHash implements account.AccountStore.
func (s *Store) SetPasswordHash(ctx context.Context, id, hash string, now time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE accounts SET password_hash = ?, updated_at = ? WHERE id = ?`, hash, toNanos(now), id)
	return affectedOne(res, err, "set password hash", account.ErrNotFound)
}

// affectedOne turns an UPDATE that matched no row into notFound.
func affectedOne(res sql.Result, err error, op string, notFound error) error {
	if err != nil {
		return wrap(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return wrap(op, err)
	}
	if n == 0 {
		return notFound
	}
	return nil
}

// CreateSession implements account.SessionStore.
func (s *Store) CreateSession(ctx context.Context, sess account.Session) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO sessions (token_hash, account_id, created_at, expires_at, revoked_at)
		VALUES (?, ?, ?, ?, ?)`, sess.TokenHash[:], sess.AccountID, toNanos(sess.CreatedAt), toNanos(sess.ExpiresAt), toNullNanos(sess.RevokedAt))
	if isForeignKey(err) {
		return account.ErrNotFound
	}
	return wrap("create session", err)
}

// Session implements account.SessionStore.
func (s *Store) Session(ctx context.Context, h [32]byte) (account.Session, error) {
	sess := account.Session{TokenHash: h}
	var created, expires int64
	var revoked sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT account_id, created_at, expires_at, revoked_at FROM sessions WHERE token_hash = ?`, h[:]).
		Scan(&sess.AccountID, &created, &expires, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return account.Session{}, account.ErrSessionInvalid
	}
	if err != nil {
		return account.Session{}, wrap("session", err)
	}
	sess.CreatedAt, sess.ExpiresAt, sess.RevokedAt = fromNanos(created), fromNanos(expires), fromNullNanos(revoked)
	return sess, nil
}

// RevokeSession implements account.SessionStore.
func (s *Store) RevokeSession(ctx context.Context, h [32]byte, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE sessions SET revoked_at = coalesce(revoked_at, ?) WHERE token_hash = ?`, toNanos(at), h[:])
	return affectedOne(res, err, "revoke session", account.ErrSessionInvalid)
}

// RevokeSessions implements account.SessionStore.
func (s *Store) RevokeSessions(ctx context.Context, accountID string, at time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, `UPDATE sessions SET revoked_at = ? WHERE account_id = ? AND revoked_at IS NULL`, toNanos(at), accountID)
	return rowsAffected(res, err, "revoke sessions")
}

// DeleteExpiredSessions implements account.SessionStore.
func (s *Store) DeleteExpiredSessions(ctx context.Context, before time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at < ?`, toNanos(before))
	return rowsAffected(res, err, "delete expired sessions")
}

func rowsAffected(res sql.Result, err error, op string) (int, error) {
	if err != nil {
		return 0, wrap(op, err)
	}
	n, err := res.RowsAffected()
	return int(n), wrap(op, err)
}
