package sqlledger

import (
	"errors"
	"strconv"
	"strings"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/sqlrow"
	"github.com/keyledger/keyledger/usage"
)

// Where builds a WHERE clause and its arguments in one database's
// placeholder style: $1, $2, … (PostgreSQL) or ? (SQLite).
type Where struct {
	Dollar bool
	Args   []any
	sql    strings.Builder
}

// Arg adds an argument and returns its placeholder.
func (w *Where) Arg(v any) string {
	w.Args = append(w.Args, v)
	if w.Dollar {
		return "$" + strconv.Itoa(len(w.Args))
	}
	return "?"
}

// And adds a condition: cond followed by the placeholder of v.
func (w *Where) And(cond string, v any) {
	if w.sql.Len() > 0 {
		w.sql.WriteString(" AND ")
	}
	w.sql.WriteString(cond + w.Arg(v))
}

// String returns the clause.
func (w *Where) String() string { return w.sql.String() }

// EntriesQuery returns the SELECT of credits.Store.LedgerEntries and its
// arguments.
func EntriesQuery(accountID string, q *credits.EntryFilter, beforeSeq int64, limit int, dollar bool) (string, []any) {
	w := Where{Dollar: dollar}
	w.And(`account_id = `, accountID)
	if beforeSeq > 0 {
		w.And(`seq < `, beforeSeq)
	}
	if len(q.Types) > 0 {
		ph := make([]string, len(q.Types))
		for i, t := range q.Types {
			ph[i] = w.Arg(string(t))
		}
		w.sql.WriteString(` AND type IN (` + strings.Join(ph, ", ") + `)`)
	}
	if !q.From.IsZero() {
		w.And(`created_at >= `, Nanos(q.From))
	}
	if !q.To.IsZero() {
		w.And(`created_at < `, Nanos(q.To))
	}
	return `SELECT ` + EntryColumns + ` FROM credit_entries WHERE ` + w.String() +
		` ORDER BY seq DESC LIMIT ` + w.Arg(limit), w.Args
}

// RecordsWhere returns the WHERE clause of a record query (the position
// after AfterID included) and its arguments.
func RecordsWhere(q *usage.RecordQuery, dollar bool) *Where {
	w := &Where{Dollar: dollar}
	w.And(`account_id = `, q.AccountID)
	for _, f := range []struct{ col, v string }{{"key_id", q.KeyID}, {"model", q.Model}, {"endpoint", q.Endpoint}} {
		if f.v != "" {
			w.And(f.col+` = `, f.v)
		}
	}
	if !q.From.IsZero() {
		w.And(`created_at >= `, Nanos(q.From))
	}
	if !q.To.IsZero() {
		w.And(`created_at < `, Nanos(q.To))
	}
	if q.AfterID != "" {
		at := w.Arg(Nanos(q.AfterTime))
		w.sql.WriteString(` AND (created_at, id) < (` + at + `, ` + w.Arg(q.AfterID) + `)`)
	}
	return w
}

// RecordsQuery returns the SELECT of usage.Store.UsageRecords and its
// arguments.
func RecordsQuery(q *usage.RecordQuery, dollar bool) (string, []any) {
	w := RecordsWhere(q, dollar)
	return `SELECT ` + RecordColumns + ` FROM usage_records WHERE ` + w.String() +
		` ORDER BY created_at DESC, id DESC LIMIT ` + w.Arg(q.Limit), w.Args
}

// ScanQuery returns the SELECT of usage.Store.ScanUsage (which ignores
// the position) and its arguments.
func ScanQuery(q usage.RecordQuery, dollar bool) (string, []any) {
	q.AfterID = ""
	w := RecordsWhere(&q, dollar)
	return `SELECT ` + RecordColumns + ` FROM usage_records WHERE ` + w.String(), w.Args
}

// EachRecord scans the records of rows and calls fn with each; fn's error
// comes back as it is, any other wrapped by wrap. The caller closes rows.
func EachRecord(rows sqlrow.Rows, fn func(*usage.Record) error, wrap func(op string, err error) error) error {
	var fnErr error
	err := sqlrow.Each(rows, ScanRecord, func(r usage.Record) error {
		fnErr = fn(&r)
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	return wrap("scan usage", err)
}

// BalanceAt is the balance of credits.Store.LedgerBalanceAt: last, the
// balance after the last entry by then ("" if none), less the remainders
// of the lots in expired, which had expired by then without an entry yet.
func BalanceAt(last string, expired sqlrow.Rows) (credits.Amount, error) {
	if last == "" {
		last = "0"
	}
	var p Amounts
	bal := p.Parse(last)
	err := sqlrow.Each(expired, func(r sqlrow.Scanner) (string, error) {
		var s string
		return s, r.Scan(&s)
	}, func(rem string) error {
		bal = bal.Sub(p.Parse(rem))
		return nil
	})
	return bal, errors.Join(err, p.Err)
}

// GroupBy returns, for a grouped rollup query, the selected dimension
// columns (day, model, key_id, endpoint; ” for those not kept) and the
// ones to group by.
func GroupBy(keep usage.Grouping) (sel, group []string) {
	dims := [4]struct {
		keep bool
		col  string
	}{{keep.Day, "day"}, {keep.Model, "model"}, {keep.Key, "key_id"}, {keep.Endpoint, "endpoint"}}
	for _, d := range dims {
		if d.keep {
			sel = append(sel, d.col)
			group = append(group, d.col)
		} else {
			sel = append(sel, `''`)
		}
	}
	return sel, group
}
