package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// stmts caches prepared statements of the read pool by query text, so hot
// reads (the API-key lookup of a verify cache miss) skip SQLite's parser:
// preparing the lookup costs more than running it. database/sql prepares a
// Stmt lazily on each pooled connection and keeps it there.
type stmts struct {
	mu     sync.Mutex
	m      map[string]*sql.Stmt
	closed bool
}

// get returns the prepared statement for query on db, preparing it once.
func (c *stmts) get(ctx context.Context, db *sql.DB, query string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st, nil
	}
	if c.closed {
		return nil, errors.New("sqlitestore: store is closed")
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = make(map[string]*sql.Stmt)
	}
	c.m[query] = st
	return st, nil
}

func (c *stmts) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for _, st := range c.m {
		errs = append(errs, st.Close())
	}
	c.m = nil
	return errors.Join(errs...)
}
