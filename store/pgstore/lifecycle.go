package pgstore

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyledger/keyledger/account"
)

// CreateToken implements account.LifecycleStore.
func (s *Store) CreateToken(ctx context.Context, t account.Token) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO account_tokens (token_hash, kind, account_id, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5)`, t.Hash[:], string(t.Kind), t.AccountID, toNanos(t.CreatedAt), toNanos(t.ExpiresAt))
	if isForeignKey(err) {
		return account.ErrNotFound
	}
	return wrap("create token", err)
}

// ConsumeToken implements account.LifecycleStore: DELETE … RETURNING
// hands the row to exactly one of concurrent consumers.
func (s *Store) ConsumeToken(ctx context.Context, kind account.TokenKind, h [32]byte, at time.Time) (account.Token, error) {
	t := account.Token{Hash: h, Kind: kind}
	var created, expires int64
	err := s.pool.QueryRow(ctx, `DELETE FROM account_tokens WHERE token_hash = $1 AND kind = $2
		RETURNING account_id, created_at, expires_at`, h[:], string(kind)).Scan(&t.AccountID, &created, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
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

// CloseAccount implements account.LifecycleStore. The account row is
// locked for the change, and the status change reaches every process's
// key cache (see notify.go).
func (s *Store) CloseAccount(ctx context.Context, id string, now time.Time) (account.Account, error) {
	var out account.Account
	err := s.write(ctx, "close account", func(tx pgx.Tx) error {
		a, err := accountWhere(ctx, tx, "close account", `id = $1 FOR UPDATE`, id)
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
			{`INSERT INTO closed_emails (email_hash, closed_at) VALUES ($1, $2) ON CONFLICT DO NOTHING`, []any{h[:], toNanos(now)}},
			{`UPDATE accounts SET name = $1, email = $2, limits = $3, status = $4, metadata = $5, password_hash = '',
				updated_at = $6 WHERE id = $7`, []any{out.Name, out.Email, limits, string(out.Status), metadata, toNanos(now), id}},
			{`UPDATE sessions SET revoked_at = $1 WHERE account_id = $2 AND revoked_at IS NULL`, []any{toNanos(now), id}},
			{`DELETE FROM account_tokens WHERE account_id = $1`, []any{id}},
		} {
			if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
				return wrap("close account", err)
			}
		}
		return s.notifyAccount(ctx, tx, id)
	})
	return out, err
}

// EmailClosed implements account.LifecycleStore.
func (s *Store) EmailClosed(ctx context.Context, h [32]byte) (bool, error) {
	var one int
	err := s.pool.QueryRow(ctx, `SELECT 1 FROM closed_emails WHERE email_hash = $1`, h[:]).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, wrap("email closed", err)
}
