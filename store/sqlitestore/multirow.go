package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/keyledger/keyledger/internal/sqlledger"
)

// A group commit writes its rows with multi-row statements: one statement
// carries up to maxChunk rows in its VALUES list, so a batch of 64 meter
// requests costs a handful of statement executions instead of one per row
// and table. Each statement is prepared on the writer at Open, once per chunk size
// (1, 2, 4, …, maxChunk rows) and a batch is cut into chunks of those sizes,
// so SQLite parses nothing on the hot path. The same shape serves lookups:
// `… WHERE (a, b) IN (VALUES (?, ?), …)` searches the primary key once per
// row.
//
// The writing statements say OR ROLLBACK: a multi-row statement that may
// fail halfway with the default ABORT needs a statement journal (a copy of
// every page it changes, to undo just that statement); with ROLLBACK a
// failure ends the whole transaction instead, which is what a failed flush
// does anyway (the requests then run one per transaction).

const (
	chunkSizes = 7 // 1 << 0 … 1 << 6
	maxChunk   = 1 << (chunkSizes - 1)
)

// multiRow is one statement whose VALUES list repeats a row of cols
// parameters, between head and tail.
type multiRow struct {
	head, tail string
	cols       int

	mu       sync.Mutex
	closed   bool
	prepared [chunkSizes]*sql.Stmt
}

func newMultiRow(head string, cols int, tail string) *multiRow {
	return &multiRow{head: head, cols: cols, tail: tail}
}

// sql returns the statement text for n rows.
func (m *multiRow) sql(n int) string {
	row := "(?" + strings.Repeat(", ?", m.cols-1) + ")"
	var b strings.Builder
	b.Grow(len(m.head) + n*(len(row)+2) + len(m.tail))
	b.WriteString(m.head)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	b.WriteString(m.tail)
	return b.String()
}

// prepare prepares the statement for every chunk size on db.
func (m *multiRow) prepare(ctx context.Context, db *sql.DB) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.prepared {
		if m.prepared[k] != nil {
			continue
		}
		st, err := db.PrepareContext(ctx, m.sql(1<<k))
		if err != nil {
			return err
		}
		m.prepared[k] = st
	}
	return nil
}

// stmt returns the statement for 1<<k rows.
func (m *multiRow) stmt(k int) (*sql.Stmt, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.prepared[k] == nil {
		return nil, errors.New("sqlitestore: store is closed")
	}
	return m.prepared[k], nil
}

func (m *multiRow) close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	var errs []error
	for i, st := range m.prepared {
		if st != nil {
			errs = append(errs, st.Close())
			m.prepared[i] = nil
		}
	}
	return errors.Join(errs...)
}

// chunk returns the exponent of the largest chunk size not above n (> 0).
func chunk(n int) int {
	k := 0
	for k+1 < chunkSizes && 1<<(k+1) <= n {
		k++
	}
	return k
}

// multiStmts are the writer's multi-row statements.
type multiStmts struct {
	entries, ops, opsFind, accounts, holdsFind *multiRow // credits.go
	meters, metersFind, records, recordsFind   *multiRow // usage.go
	rollups                                    *multiRow
}

func (ms *multiStmts) all() []*multiRow {
	return []*multiRow{ms.entries, ms.ops, ms.opsFind, ms.accounts, ms.holdsFind, ms.meters, ms.metersFind, ms.records, ms.recordsFind, ms.rollups}
}

func newMultiStmts() *multiStmts {
	return &multiStmts{
		entries: newMultiRow(`INSERT OR ROLLBACK INTO credit_entries (`+sqlledger.EntryColumns+`) VALUES `, 12, ``),
		ops:     newMultiRow(`INSERT OR ROLLBACK INTO credit_ops (key, account_id, kind, fingerprint, entry_seq, hold_id) VALUES `, 6, ``),
		opsFind: newMultiRow(`SELECT key, account_id, kind, fingerprint, entry_seq, hold_id FROM credit_ops
			WHERE (key, account_id) IN (VALUES `, 2, `)`),
		holdsFind: newMultiRow(`SELECT `+sqlledger.HoldColumns+` FROM credit_holds WHERE id IN (VALUES `, 1, `)`),
		// The version check guards the read-modify-write: the statement
		// must change exactly one row per account.
		accounts: newMultiRow(`UPDATE OR ROLLBACK credit_accounts SET balance = v.column2, held = v.column3, seq = v.column4,
			version = v.column5, overdraft = v.column6, monthly_cap = v.column7, time_zone = v.column8,
			recharge_enabled = v.column9, recharge_threshold = v.column10, recharge_amount = v.column11,
			recharge_armed = v.column12, recharges = v.column13, month_start = v.column14, month_end = v.column15,
			month_spent = v.column16, updated_at = v.column17, lots = v.column18, hold_due = v.column19,
			key_limits = v.column20
			FROM (VALUES `, 21, `) AS v WHERE credit_accounts.account_id = v.column1 AND credit_accounts.version = v.column21`),
		meters: newMultiRow(`INSERT OR ROLLBACK INTO usage_ops (account_id, key, fingerprint, record_id, hold_id, created_at) VALUES `, 6, ``),
		metersFind: newMultiRow(`SELECT account_id, key, fingerprint, record_id, hold_id, created_at FROM usage_ops
			WHERE (key, account_id) IN (VALUES `, 2, `)`),
		records:     newMultiRow(`INSERT OR ROLLBACK INTO usage_records (`+sqlledger.RecordColumns+`) VALUES `, 25, ``),
		recordsFind: newMultiRow(`SELECT account_id, id FROM usage_records WHERE (account_id, id) IN (VALUES `, 2, `)`),
		rollups: newMultiRow(`INSERT OR ROLLBACK INTO usage_rollups (`+rollupColumns+`) VALUES `, 17, `
			ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, errors = errors + excluded.errors,
			prompt_tokens = prompt_tokens + excluded.prompt_tokens,
			completion_tokens = completion_tokens + excluded.completion_tokens,
			units = units + excluded.units, cached_units = cached_units + excluded.cached_units,
			cached_prompt_tokens = cached_prompt_tokens + excluded.cached_prompt_tokens,
			cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
			reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
			cost_units = cost_units + excluded.cost_units + (cost_atto + excluded.cost_atto) / 1000000000000000000,
			cost_atto = (cost_atto + excluded.cost_atto) % 1000000000000000000`),
	}
}

// prepare prepares every statement on the writer db. It must run outside
// a transaction: the writer has one connection.
func (ms *multiStmts) prepare(ctx context.Context, db *sql.DB) error {
	for _, m := range ms.all() {
		if err := m.prepare(ctx, db); err != nil {
			return fmt.Errorf("sqlitestore: prepare multi-row statement: %w", err)
		}
	}
	return nil
}

func (ms *multiStmts) close() error {
	if ms == nil {
		return nil
	}
	var errs []error
	for _, m := range ms.all() {
		errs = append(errs, m.close())
	}
	return errors.Join(errs...)
}

// execRows runs m over args (m.cols values per row) in chunks on b's
// transaction. check, if set, sees each chunk's result and row count.
func (b *binder) execRows(m *multiRow, args []any, check func(sql.Result, int) error) error {
	return b.eachChunk(m, args, func(st *sql.Stmt, part []any, n int) error {
		res, err := st.ExecContext(b.ctx, part...)
		if err == nil && check != nil {
			err = check(res, n)
		}
		return err
	})
}

// queryRows runs the lookup m over args in chunks on b's transaction and
// calls scan for every row found.
func (b *binder) queryRows(m *multiRow, args []any, scan func(*sql.Rows) error) error {
	return b.eachChunk(m, args, func(st *sql.Stmt, part []any, _ int) error {
		rows, err := st.QueryContext(b.ctx, part...)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				rows.Close()
				return err
			}
		}
		return errors.Join(rows.Err(), rows.Close())
	})
}

func (b *binder) eachChunk(m *multiRow, args []any, fn func(st *sql.Stmt, part []any, n int) error) error {
	if len(args)%m.cols != 0 {
		return fmt.Errorf("sqlitestore: %d values for rows of %d", len(args), m.cols)
	}
	for rows := len(args) / m.cols; rows > 0; {
		k := chunk(rows)
		n := 1 << k
		st, err := m.stmt(k)
		if err != nil {
			return err
		}
		txst := b.tx.StmtContext(b.ctx, st)
		err = fn(txst, args[:n*m.cols], n)
		if cerr := txst.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		args, rows = args[n*m.cols:], rows-n
	}
	return nil
}
