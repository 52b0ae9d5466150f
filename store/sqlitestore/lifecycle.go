package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/keyledger/keyledger/account"
)

// CreateToken implements account.LifecycleStore.
func (s *Store) CreateToken(ctx context.Context, t account.Token) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO account_tokens (token_hash, kind, account_id, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?)`, t.Hash[:], string(t.Kind), t.AccountID, toNanos(t.CreatedAt), toNanos(t.ExpiresAt))
	if isForeignKey(err) {
		return account.ErrNotFound
	}
	return wrap("create token", err)
}

// ConsumeToken implements account.LifecycleStore. The DELETE … RETURNING
// runs on the single writer, so of concurrent consumers one gets the row.
func (s *Store) ConsumeToken(ctx context.Context, kind account.TokenKind, h [32]byte, at time.Time) (account.Token, error) {
	t := account.Token{Hash: h, Kind: kind}
	var created, expires int64
	err := s.w.QueryRowContext(ctx, `DELETE FROM account_tokens WHERE token_hash = ? AND kind = ?
		RETURNING account_id, created_at, expires_at`, h[:], string(kind)).Scan(&t.AccountID, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return account.Token{}, account.ErrTokenInvalid
	}
	if err != nil {
		return account.Token{}, wrap("consume token", err)
	}
	t.CreatedAt, t.ExpiresAt = fromNanos(created), fromNanos(expires)
	if !at.Before(t.ExpiresAt) {
		return account.Token{}, account.ErrTokenInvalid
	}
	return t, nil
}

// CloseAccount implements account.LifecycleStore.
func (s *Store) CloseAccount(ctx context.Context, id string, now time.Time) (account.Account, error) {
	var out account.Account
	err := s.write(ctx, "close account", func(tx *sql.Tx) error {
		a, err := s.accountWhere(ctx, tx, "close account", `id = ?`, id)
		if err != nil {
			return err
		}
		if account.Scrubbed(a) {
			out = a
			return nil
		}
		h := account.EmailHash(a.Email)
		out = account.Scrub(a, now)
		limits, metadata, err := accountArgs(out)
		if err != nil {
			return wrap("close account", err)
		}
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{`INSERT INTO closed_emails (email_hash, closed_at) VALUES (?, ?) ON CONFLICT DO NOTHING`, []any{h[:], toNanos(now)}},
			{`UPDATE accounts SET name = ?, email = ?, limits = ?, status = ?, metadata = ?, password_hash = '',
				updated_at = ? WHERE id = ?`, []any{out.Name, out.Email, limits, out.Status, metadata, toNanos(now), id}},
			{`UPDATE sessions SET revoked_at = ? WHERE account_id = ? AND revoked_at IS NULL`, []any{toNanos(now), id}},
			{`DELETE FROM account_tokens WHERE account_id = ?`, []any{id}},
		} {
			if _, err := tx.ExecContext(ctx, q.sql, q.args...); err != nil {
				return wrap("close account", err)
			}
		}
		return nil
	})
	return out, err
}

// EmailClosed implements account.LifecycleStore.
func (s *Store) EmailClosed(ctx context.Context, h [32]byte) (bool, error) {
	var one int
	err := s.r.QueryRowContext(ctx, `SELECT 1 FROM closed_emails WHERE email_hash = ?`, h[:]).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, wrap("email closed", err)
}
