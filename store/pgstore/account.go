package pgstore

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/keyledger/keyledger/internal/sqlaccount"
	"github.com/keyledger/keyledger/internal/sqlrow"
)

// The accounts, sessions and lifecycle operations are internal/sqlaccount's,
// shared with sqlitestore; this file is their driver glue.

// accountDB is the sqlaccount.DB of a db: the pool, write transactions
// by s.write, and a NOTIFY of every account change (see notify.go).
type accountDB struct{ s *db }

// accountConn runs sqlaccount's statements, rewritten to $n placeholders.
type accountConn struct{ q querier }

func (c accountConn) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := c.q.Exec(ctx, sqlaccount.Rebind(query), args...)
	return tag.RowsAffected(), err
}

func (c accountConn) QueryRow(ctx context.Context, query string, args ...any) sqlrow.Scanner {
	return c.q.QueryRow(ctx, sqlaccount.Rebind(query), args...)
}

func (d accountDB) Writer() sqlaccount.Conn { return accountConn{d.s.pool} }
func (d accountDB) Reader() sqlaccount.Conn { return accountConn{d.s.pool} }

func (d accountDB) Query(ctx context.Context, query string, args []any, fn func(sqlrow.Rows) error) error {
	rows, err := d.s.pool.Query(ctx, sqlaccount.Rebind(query), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return fn(rows)
}

// Write runs fn in a transaction that also announces the account change
// to the key caches of every process.
func (d accountDB) Write(ctx context.Context, op, changed string, fn func(sqlaccount.Conn) error) error {
	return d.s.write(ctx, op, func(tx pgx.Tx) error {
		if err := fn(accountConn{tx}); err != nil {
			return err
		}
		return d.s.notifyAccount(ctx, tx, changed)
	})
}

func (accountDB) NoRows(err error) bool           { return errors.Is(err, pgx.ErrNoRows) }
func (accountDB) Unique(err error) bool           { return isUnique(err) }
func (accountDB) ForeignKey(err error) bool       { return isForeignKey(err) }
func (accountDB) Wrap(op string, err error) error { return wrap(op, err) }
