package sqlitestore

import (
	"context"
	"database/sql"
	"errors"

	"github.com/keyledger/keyledger/internal/sqlaccount"
	"github.com/keyledger/keyledger/internal/sqlrow"
)

// The accounts, sessions and lifecycle operations are internal/sqlaccount's,
// shared with pgstore; this file is their driver glue.

type scanner = sqlrow.Scanner

// querier is what *sql.DB, *sql.Conn and *sql.Tx have in common for reads.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// accountDB is the sqlaccount.DB of a db: single writes on the writer
// connection, reads on the reader pool, write transactions by s.write.
type accountDB struct{ s *db }

type execQuerier interface {
	querier
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

type accountConn struct{ c execQuerier }

func (c accountConn) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := c.c.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (c accountConn) QueryRow(ctx context.Context, query string, args ...any) sqlrow.Scanner {
	return c.c.QueryRowContext(ctx, query, args...)
}

func (d accountDB) Writer() sqlaccount.Conn { return accountConn{d.s.w} }
func (d accountDB) Reader() sqlaccount.Conn { return accountConn{d.s.r} }

func (d accountDB) Query(ctx context.Context, query string, args []any, fn func(sqlrow.Rows) error) error {
	rows, err := d.s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	return errors.Join(fn(rows), rows.Close())
}

// Write runs fn on the single writer; other processes learn of account
// changes by reading the row, so there is nothing to announce.
func (d accountDB) Write(ctx context.Context, op, _ string, fn func(sqlaccount.Conn) error) error {
	return d.s.write(ctx, op, func(tx *sql.Tx) error { return fn(accountConn{tx}) })
}

func (accountDB) NoRows(err error) bool           { return errors.Is(err, sql.ErrNoRows) }
func (accountDB) Unique(err error) bool           { return isUnique(err) }
func (accountDB) ForeignKey(err error) bool       { return isForeignKey(err) }
func (accountDB) Wrap(op string, err error) error { return wrap(op, err) }
