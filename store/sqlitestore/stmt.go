package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// stmts caches prepared statements of the read pool by query text, so hot
// reads (the API-key lookup of a verify cache miss) skip SQLite's parser:
// preparing that lookup costs more than running it. database/sql prepares a
// Stmt lazily on each pooled connection and keeps it there.
type stmts struct {
	m      sync.Map // query -> *sql.Stmt; read without locking
	mu     sync.Mutex
	closed bool
}

// get returns the prepared statement for query on db, preparing it once.
func (c *stmts) get(ctx context.Context, db *sql.DB, query string) (*sql.Stmt, error) {
	if st, ok := c.m.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	if c.closed {
		return nil, errors.New("sqlitestore: store is closed")
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.m.Store(query, st)
	return st, nil
}

func (c *stmts) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	c.m.Range(func(q, st any) bool {
		errs = append(errs, st.(*sql.Stmt).Close())
		c.m.Delete(q)
		return true
	})
	return errors.Join(errs...)
}
