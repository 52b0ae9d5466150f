package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/internal/sqlrow"
)

const accountColumns = `id, name, email, plan, limits, status, time_zone, metadata, created_at, updated_at`

func scanAccount(row sqlrow.Scanner) (account.Account, error) {
	var (
		a                account.Account
		limits, metadata *string
		created, updated int64
	)
	if err := row.Scan(&a.ID, &a.Name, &a.Email, &a.Plan, &limits, &a.Status, &a.TimeZone, &metadata, &created, &updated); err != nil {
		return a, err
	}
	if limits != nil {
		a.Limits = new(account.Limits)
		if err := json.Unmarshal([]byte(*limits), a.Limits); err != nil {
			return a, err
		}
	}
	if metadata != nil {
		if err := json.Unmarshal([]byte(*metadata), &a.Metadata); err != nil {
			return a, err
		}
	}
	a.CreatedAt, a.UpdatedAt = fromNanos(created), fromNanos(updated)
	return a, nil
}

func accountArgs(a account.Account) (limits, metadata *string, err error) {
	if a.Limits != nil {
		b, err := json.Marshal(a.Limits)
		if err != nil {
			return nil, nil, err
		}
		s := string(b)
		limits = &s
	}
	if len(a.Metadata) > 0 {
		b, err := json.Marshal(a.Metadata)
		if err != nil {
			return nil, nil, err
		}
		s := string(b)
		metadata = &s
	}
	return limits, metadata, nil
}

// CreateAccount implements account.AccountStore.
func (s *Store) CreateAccount(ctx context.Context, a account.Account, hash string) error {
	limits, metadata, err := accountArgs(a)
	if err != nil {
		return wrap("create account", err)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO accounts (`+accountColumns+`, password_hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		a.ID, a.Name, a.Email, a.Plan, limits, string(a.Status), a.TimeZone, metadata,
		toNanos(a.CreatedAt), toNanos(a.UpdatedAt), hash)
	if isUnique(err) {
		return account.ErrEmailTaken
	}
	return wrap("create account", err)
}

// Account implements account.AccountStore.
func (s *Store) Account(ctx context.Context, id string) (account.Account, error) {
	return accountWhere(ctx, s.pool, "account", `id = $1`, id)
}

// AccountByEmail implements account.AccountStore.
func (s *Store) AccountByEmail(ctx context.Context, email string) (account.Account, error) {
	return accountWhere(ctx, s.pool, "account by email", `lower(email) = lower($1)`, email)
}

func accountWhere(ctx context.Context, q querier, op, where string, arg any) (account.Account, error) {
	a, err := scanAccount(q.QueryRow(ctx, `SELECT `+accountColumns+` FROM accounts WHERE `+where, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return account.Account{}, account.ErrNotFound
	}
	return a, wrap(op, err)
}

// UpdateAccount implements account.AccountStore: the row is locked while
// the update is applied, so concurrent updates of different fields (from
// any process) never lose each other, and the change is announced to the
// key caches of every process (see notify.go).
func (s *Store) UpdateAccount(ctx context.Context, id string, u account.Update, now time.Time) (account.Account, error) {
	var out account.Account
	err := s.write(ctx, "update account", func(tx pgx.Tx) error {
		a, err := accountWhere(ctx, tx, "update account", `id = $1 FOR UPDATE`, id)
		if err != nil {
			return err
		}
		out = u.Apply(a, now)
		limits, metadata, err := accountArgs(out)
		if err != nil {
			return wrap("update account", err)
		}
		if _, err = tx.Exec(ctx, `UPDATE accounts SET name = $1, plan = $2, limits = $3, status = $4, time_zone = $5,
			metadata = $6, updated_at = $7 WHERE id = $8`,
			out.Name, out.Plan, limits, string(out.Status), out.TimeZone, metadata, toNanos(now), id); err != nil {
			return wrap("update account", err)
		}
		return s.notifyAccount(ctx, tx, id)
	})
	return out, err
}

// ListAccounts implements account.AccountStore.
func (s *Store) ListAccounts(ctx context.Context, afterID string, limit int) ([]account.Account, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id > $1 ORDER BY id LIMIT $2`, afterID, limit)
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
	err := s.pool.QueryRow(ctx, `SELECT password_hash FROM accounts WHERE id = $1`, id).Scan(&h)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", account.ErrNotFound
	}
	return h, wrap("password hash", err)
}

// SetPasswordHash implements account.AccountStore.
func (s *Store) SetPasswordHash(ctx context.Context, id, hash string, now time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE accounts SET password_hash = $1, updated_at = $2 WHERE id = $3`, hash, toNanos(now), id)
	return affectedOne(tag, err, "set password hash", account.ErrNotFound)
}

// affectedOne turns a statement that matched no row into notFound.
func affectedOne(tag pgconn.CommandTag, err error, op string, notFound error) error {
	if err != nil {
		return wrap(op, err)
	}
	if tag.RowsAffected() == 0 {
		return notFound
	}
	return nil
}

// CreateSession implements account.SessionStore.
func (s *Store) CreateSession(ctx context.Context, sess account.Session) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO sessions (token_hash, account_id, created_at, expires_at, revoked_at)
		VALUES ($1, $2, $3, $4, $5)`, sess.TokenHash[:], sess.AccountID, toNanos(sess.CreatedAt), toNanos(sess.ExpiresAt),
		toNullNanos(sess.RevokedAt))
	if isForeignKey(err) {
		return account.ErrNotFound
	}
	return wrap("create session", err)
}

// Session implements account.SessionStore.
func (s *Store) Session(ctx context.Context, h [32]byte) (account.Session, error) {
	sess := account.Session{TokenHash: h}
	var created, expires int64
	var revoked *int64
	err := s.pool.QueryRow(ctx, `SELECT account_id, created_at, expires_at, revoked_at FROM sessions WHERE token_hash = $1`, h[:]).
		Scan(&sess.AccountID, &created, &expires, &revoked)
	if errors.Is(err, pgx.ErrNoRows) {
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
	tag, err := s.pool.Exec(ctx, `UPDATE sessions SET revoked_at = coalesce(revoked_at, $1) WHERE token_hash = $2`, toNanos(at), h[:])
	return affectedOne(tag, err, "revoke session", account.ErrSessionInvalid)
}

// RevokeSessions implements account.SessionStore.
func (s *Store) RevokeSessions(ctx context.Context, accountID string, at time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE sessions SET revoked_at = $1 WHERE account_id = $2 AND revoked_at IS NULL`, toNanos(at), accountID)
	return int(tag.RowsAffected()), wrap("revoke sessions", err)
}

// DeleteExpiredSessions implements account.SessionStore.
func (s *Store) DeleteExpiredSessions(ctx context.Context, before time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM sessions WHERE expires_at < $1`, toNanos(before))
	return int(tag.RowsAffected()), wrap("delete expired sessions", err)
}
