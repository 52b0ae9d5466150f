// Package sqlaccount is the account, session and lifecycle store of the two
// SQL backends, written once (with the API keys' JSON column codec): the statements (in one dialect, ? for
// placeholders), the row codecs and the logic of account.Store and
// account.LifecycleStore (read-modify-write of an account in one
// transaction, closure with its scrub, token consumption by DELETE …
// RETURNING), and the audit log (audit.go). A backend supplies a DB — its connections, its write
// transaction and its error classification — and embeds the Accounts. It
// imports no driver.
package sqlaccount

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/internal/sqlrow"
)

// Conn runs one statement: a backend's pool or an open transaction.
// Statements use ? placeholders; a backend whose driver wants $n rewrites
// them (Rebind).
type Conn interface {
	// Exec runs a statement and returns the number of rows it affected.
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	// QueryRow runs a query that returns at most one row; its Scan
	// returns an error that DB.NoRows recognises when there is none.
	QueryRow(ctx context.Context, query string, args ...any) sqlrow.Scanner
}

// DB is a backend's driver glue.
type DB interface {
	// Writer runs single writes outside a transaction; Reader runs reads.
	Writer() Conn
	Reader() Conn
	// Query runs a query on the reader and calls fn with its rows, which it
	// closes afterwards.
	Query(ctx context.Context, query string, args []any, fn func(sqlrow.Rows) error) error
	// Write runs fn in one write transaction with the backend's own retry
	// rules. When fn succeeds, the transaction also announces that the
	// account changed (PostgreSQL: a NOTIFY to every process's key cache)
	// before it commits.
	Write(ctx context.Context, op, changedAccount string, fn func(tx Conn) error) error
	// NoRows, Unique and ForeignKey classify driver errors by code.
	NoRows(err error) bool
	Unique(err error) bool
	ForeignKey(err error) bool
	// Wrap wraps a system failure once with the backend's name and op.
	Wrap(op string, err error) error
}

// Dialect holds the few statements fragments that differ between backends.
type Dialect struct {
	// EmailIs matches an account by email, case-insensitively (SQLite:
	// `email = ?` on a NOCASE column; PostgreSQL: `lower(email) = lower(?)`).
	EmailIs string
	// Lock follows the WHERE clause of a read inside a write transaction
	// that is about to update the row (PostgreSQL: ` FOR UPDATE`).
	Lock string
}

// Accounts implements account.Store and account.LifecycleStore over a DB.
// A backend embeds it.
type Accounts struct {
	db DB
	d  Dialect
}

// New returns the account store of db.
func New(db DB, d Dialect) Accounts { return Accounts{db: db, d: d} }

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

// accountArgs encodes the JSON columns of a, NULL when empty.
func accountArgs(a account.Account) (limits, metadata *string, err error) {
	if a.Limits != nil {
		if limits, err = jsonText(a.Limits); err != nil {
			return nil, nil, err
		}
	}
	if len(a.Metadata) > 0 {
		if metadata, err = jsonText(a.Metadata); err != nil {
			return nil, nil, err
		}
	}
	return limits, metadata, nil
}

// KeyRateLimits encodes an API key's rate_limits column: JSON, NULL when
// the key has none of its own.
func KeyRateLimits(k apikey.APIKey) (*string, error) {
	if k.RateLimits == (apikey.RateLimits{}) {
		return nil, nil
	}
	return jsonText(k.RateLimits)
}

// KeyArgs encodes the JSON columns of an API key (models, scopes,
// metadata), each NULL when empty, for both backends' inserts and updates.
func KeyArgs(k apikey.APIKey) (models, scopes, metadata *string, err error) {
	if len(k.Models) > 0 {
		if models, err = jsonText(k.Models); err != nil {
			return nil, nil, nil, err
		}
	}
	if len(k.Scopes) > 0 {
		if scopes, err = jsonText(k.Scopes); err != nil {
			return nil, nil, nil, err
		}
	}
	if len(k.Metadata) > 0 {
		if metadata, err = jsonText(k.Metadata); err != nil {
			return nil, nil, nil, err
		}
	}
	return models, scopes, metadata, nil
}

func jsonText(v any) (*string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	s := string(b)
	return &s, nil
}

func toNanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// ToNullNanos is t as unix nanoseconds, nil for the zero time (a NULL
// column); FromNullNanos is its inverse. Both SQL backends store times so.
func ToNullNanos(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := t.UnixNano()
	return &n
}

// FromNullNanos is the time of a nullable unix-nanosecond column.
func FromNullNanos(n *int64) time.Time {
	if n == nil {
		return time.Time{}
	}
	return fromNanos(*n)
}

// CreateAccount implements account.AccountStore.
func (e *Accounts) CreateAccount(ctx context.Context, a account.Account, hash string) error {
	limits, metadata, err := accountArgs(a)
	if err != nil {
		return e.db.Wrap("create account", err)
	}
	_, err = e.db.Writer().Exec(ctx, `INSERT INTO accounts (`+accountColumns+`, password_hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.Name, a.Email, a.Plan, limits, string(a.Status), a.TimeZone, metadata,
		toNanos(a.CreatedAt), toNanos(a.UpdatedAt), hash)
	if e.db.Unique(err) {
		return account.ErrEmailTaken
	}
	return e.db.Wrap("create account", err)
}

// Account implements account.AccountStore.
func (e *Accounts) Account(ctx context.Context, id string) (account.Account, error) {
	return e.accountWhere(ctx, e.db.Reader(), "account", `id = ?`, id)
}

// AccountByEmail implements account.AccountStore.
func (e *Accounts) AccountByEmail(ctx context.Context, email string) (account.Account, error) {
	return e.accountWhere(ctx, e.db.Reader(), "account by email", e.d.EmailIs, email)
}

func (e *Accounts) accountWhere(ctx context.Context, c Conn, op, where string, arg any) (account.Account, error) {
	a, err := scanAccount(c.QueryRow(ctx, `SELECT `+accountColumns+` FROM accounts WHERE `+where, arg))
	if e.db.NoRows(err) {
		return account.Account{}, account.ErrNotFound
	}
	return a, e.db.Wrap(op, err)
}

// lockAccount reads the account in a write transaction, locking its row
// where the backend needs that.
func (e *Accounts) lockAccount(ctx context.Context, tx Conn, op, id string) (account.Account, error) {
	return e.accountWhere(ctx, tx, op, `id = ?`+e.d.Lock, id)
}

// UpdateAccount implements account.AccountStore: the update is applied to
// the row read in the same write transaction (locked on PostgreSQL), so
// concurrent updates of different fields never lose each other, and the
// change is announced to the key caches of every process.
func (e *Accounts) UpdateAccount(ctx context.Context, id string, u account.Update, now time.Time) (account.Account, error) {
	var out account.Account
	err := e.db.Write(ctx, "update account", id, func(tx Conn) error {
		a, err := e.lockAccount(ctx, tx, "update account", id)
		if err != nil {
			return err
		}
		out = u.Apply(a, now)
		limits, metadata, err := accountArgs(out)
		if err != nil {
			return e.db.Wrap("update account", err)
		}
		_, err = tx.Exec(ctx, `UPDATE accounts SET name = ?, plan = ?, limits = ?, status = ?, time_zone = ?,
			metadata = ?, updated_at = ? WHERE id = ?`,
			out.Name, out.Plan, limits, string(out.Status), out.TimeZone, metadata, toNanos(now), id)
		return e.db.Wrap("update account", err)
	})
	return out, err
}

// ListAccounts implements account.AccountStore.
func (e *Accounts) ListAccounts(ctx context.Context, afterID string, limit int) ([]account.Account, error) {
	var out []account.Account
	err := e.db.Query(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id > ? ORDER BY id LIMIT ?`, []any{afterID, limit},
		func(rows sqlrow.Rows) (err error) {
			out, err = sqlrow.Collect(rows, scanAccount)
			return err
		})
	return out, e.db.Wrap("list accounts", err)
}

// PasswordHash implements account.AccountStore.
func (e *Accounts) PasswordHash(ctx context.Context, id string) (string, error) {
	var h string
	err := e.db.Reader().QueryRow(ctx, `SELECT password_hash FROM accounts WHERE id = ?`, id).Scan(&h)
	if e.db.NoRows(err) {
		return "", account.ErrNotFound
	}
	return h, e.db.Wrap("password hash", err)
}

// SetPasswordHash implements account.AccountStore.
func (e *Accounts) SetPasswordHash(ctx context.Context, id, hash string, now time.Time) error {
	n, err := e.db.Writer().Exec(ctx, `UPDATE accounts SET password_hash = ?, updated_at = ? WHERE id = ?`, hash, toNanos(now), id)
	return e.affectedOne(n, err, "set password hash", account.ErrNotFound)
}

// affectedOne turns a statement that matched no row into notFound.
func (e *Accounts) affectedOne(n int64, err error, op string, notFound error) error {
	if err != nil {
		return e.db.Wrap(op, err)
	}
	if n == 0 {
		return notFound
	}
	return nil
}

// CreateSession implements account.SessionStore.
func (e *Accounts) CreateSession(ctx context.Context, sess account.Session) error {
	_, err := e.db.Writer().Exec(ctx, `INSERT INTO sessions (token_hash, account_id, created_at, expires_at, revoked_at)
		VALUES (?, ?, ?, ?, ?)`, sess.TokenHash[:], sess.AccountID, toNanos(sess.CreatedAt), toNanos(sess.ExpiresAt),
		ToNullNanos(sess.RevokedAt))
	if e.db.ForeignKey(err) {
		return account.ErrNotFound
	}
	return e.db.Wrap("create session", err)
}

// Session implements account.SessionStore.
func (e *Accounts) Session(ctx context.Context, h [32]byte) (account.Session, error) {
	sess := account.Session{TokenHash: h}
	var created, expires int64
	var revoked *int64
	err := e.db.Reader().QueryRow(ctx, `SELECT account_id, created_at, expires_at, revoked_at FROM sessions WHERE token_hash = ?`, h[:]).
		Scan(&sess.AccountID, &created, &expires, &revoked)
	if e.db.NoRows(err) {
		return account.Session{}, account.ErrSessionInvalid
	}
	if err != nil {
		return account.Session{}, e.db.Wrap("session", err)
	}
	sess.CreatedAt, sess.ExpiresAt, sess.RevokedAt = fromNanos(created), fromNanos(expires), FromNullNanos(revoked)
	return sess, nil
}

// RevokeSession implements account.SessionStore.
func (e *Accounts) RevokeSession(ctx context.Context, h [32]byte, at time.Time) error {
	n, err := e.db.Writer().Exec(ctx, `UPDATE sessions SET revoked_at = coalesce(revoked_at, ?) WHERE token_hash = ?`, toNanos(at), h[:])
	return e.affectedOne(n, err, "revoke session", account.ErrSessionInvalid)
}

// RevokeSessions implements account.SessionStore.
func (e *Accounts) RevokeSessions(ctx context.Context, accountID string, at time.Time) (int, error) {
	n, err := e.db.Writer().Exec(ctx, `UPDATE sessions SET revoked_at = ? WHERE account_id = ? AND revoked_at IS NULL`, toNanos(at), accountID)
	return int(n), e.db.Wrap("revoke sessions", err)
}

// DeleteExpiredSessions implements account.SessionStore.
func (e *Accounts) DeleteExpiredSessions(ctx context.Context, before time.Time) (int, error) {
	n, err := e.db.Writer().Exec(ctx, `DELETE FROM sessions WHERE expires_at < ?`, toNanos(before))
	return int(n), e.db.Wrap("delete expired sessions", err)
}

// CreateToken implements account.LifecycleStore.
func (e *Accounts) CreateToken(ctx context.Context, t account.Token) error {
	_, err := e.db.Writer().Exec(ctx, `INSERT INTO account_tokens (token_hash, kind, account_id, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?)`, t.Hash[:], string(t.Kind), t.AccountID, toNanos(t.CreatedAt), toNanos(t.ExpiresAt))
	if e.db.ForeignKey(err) {
		return account.ErrNotFound
	}
	return e.db.Wrap("create token", err)
}

// ConsumeToken implements account.LifecycleStore: DELETE … RETURNING hands
// the row to exactly one of concurrent consumers.
func (e *Accounts) ConsumeToken(ctx context.Context, kind account.TokenKind, h [32]byte, at time.Time) (account.Token, error) {
	t := account.Token{Hash: h, Kind: kind}
	var created, expires int64
	err := e.db.Writer().QueryRow(ctx, `DELETE FROM account_tokens WHERE token_hash = ? AND kind = ?
		RETURNING account_id, created_at, expires_at`, h[:], string(kind)).Scan(&t.AccountID, &created, &expires)
	if e.db.NoRows(err) {
		return account.Token{}, account.ErrTokenInvalid
	}
	if err != nil {
		return account.Token{}, e.db.Wrap("consume token", err)
	}
	t.CreatedAt, t.ExpiresAt = fromNanos(created), fromNanos(expires)
	if !at.Before(t.ExpiresAt) {
		return account.Token{}, account.ErrTokenInvalid
	}
	return t, nil
}

// CloseAccount implements account.LifecycleStore: scrub, closed email,
// password, sessions and tokens change in one write transaction, on the
// account row read (and locked on PostgreSQL) in it, and the status change
// reaches every process's key cache.
func (e *Accounts) CloseAccount(ctx context.Context, id string, now time.Time) (account.Account, error) {
	var out account.Account
	err := e.db.Write(ctx, "close account", id, func(tx Conn) error {
		a, err := e.lockAccount(ctx, tx, "close account", id)
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
			return e.db.Wrap("close account", err)
		}
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{`INSERT INTO closed_emails (email_hash, closed_at) VALUES (?, ?) ON CONFLICT DO NOTHING`, []any{h[:], toNanos(now)}},
			{`UPDATE accounts SET name = ?, email = ?, limits = ?, status = ?, metadata = ?, password_hash = '',
				updated_at = ? WHERE id = ?`, []any{out.Name, out.Email, limits, string(out.Status), metadata, toNanos(now), id}},
			{`UPDATE sessions SET revoked_at = ? WHERE account_id = ? AND revoked_at IS NULL`, []any{toNanos(now), id}},
			{`DELETE FROM account_tokens WHERE account_id = ?`, []any{id}},
		} {
			if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
				return e.db.Wrap("close account", err)
			}
		}
		return nil
	})
	return out, err
}

// EmailClosed implements account.LifecycleStore.
func (e *Accounts) EmailClosed(ctx context.Context, h [32]byte) (bool, error) {
	var one int
	err := e.db.Reader().QueryRow(ctx, `SELECT 1 FROM closed_emails WHERE email_hash = ?`, h[:]).Scan(&one)
	if e.db.NoRows(err) {
		return false, nil
	}
	return err == nil, e.db.Wrap("email closed", err)
}

// Rebind rewrites the ? placeholders of query as $1, $2, … for drivers
// that want numbered ones. The statements of this package have no ? in
// their literals.
func Rebind(query string) string {
	b := make([]byte, 0, len(query)+16)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] != '?' {
			b = append(b, query[i])
			continue
		}
		n++
		b = strconv.AppendInt(append(b, '$'), int64(n), 10)
	}
	return string(b)
}
