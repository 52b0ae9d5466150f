package sqlaccount

// The audit-log store of the two SQL backends, over the same DB
// (statements with ? placeholders; the PostgreSQL glue rewrites them).
// Entries live in audit_entries, keyed by a
// store-assigned seq (SQLite: INTEGER PRIMARY KEY AUTOINCREMENT;
// PostgreSQL: an identity column) that List pages by, with an index on
// (account_id, seq) for an account's pages and one on (at) for pruning.

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/keyledger/keyledger/auditlog"
	"github.com/keyledger/keyledger/internal/sqlrow"
)

// AuditLog implements auditlog.Store over a DB; a backend embeds it.
type AuditLog struct{ db DB }

// NewAuditLog returns the audit store of db.
func NewAuditLog(db DB) AuditLog { return AuditLog{db: db} }

// AppendAudit implements auditlog.Store.
func (l AuditLog) AppendAudit(ctx context.Context, e auditlog.Entry) (auditlog.Entry, error) {
	var changes *string
	if len(e.Changes) > 0 {
		b, err := json.Marshal(e.Changes)
		if err != nil {
			return auditlog.Entry{}, l.db.Wrap("AppendAudit", err)
		}
		s := string(b)
		changes = &s
	}
	err := l.db.Writer().QueryRow(ctx, `INSERT INTO audit_entries
		(id, account_id, at, actor_kind, actor_id, action, target_type, target_id, changes, client_ip, user_agent)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`,
		e.ID, e.AccountID, e.Time.UnixNano(), string(e.Actor.Kind), e.Actor.ID, e.Action,
		e.Target.Type, e.Target.ID, changes, e.ClientIP, e.UserAgent).Scan(&e.Seq)
	if err != nil {
		if l.db.Unique(err) {
			// The ID is taken (a replay), or seq is: a sequence that lags
			// the rows, which is a failure, not a duplicate to drop.
			var one int
			if l.db.Reader().QueryRow(ctx, `SELECT 1 FROM audit_entries WHERE id = ?`, e.ID).Scan(&one) == nil {
				return auditlog.Entry{}, auditlog.ErrDuplicateEntry
			}
		}
		return auditlog.Entry{}, l.db.Wrap("AppendAudit", err)
	}
	return e, nil
}

// ListAudit implements auditlog.Store.
func (l AuditLog) ListAudit(ctx context.Context, q auditlog.StoreQuery) ([]auditlog.Entry, error) {
	var where strings.Builder
	args := []any{q.AccountID}
	where.WriteString(`account_id = ?`)
	if q.BeforeSeq > 0 {
		where.WriteString(` AND seq < ?`)
		args = append(args, q.BeforeSeq)
	}
	if q.ActionPrefix {
		where.WriteString(` AND substr(action, 1, ?) = ?`)
		args = append(args, len(q.Action), q.Action)
	} else if q.Action != "" {
		where.WriteString(` AND action = ?`)
		args = append(args, q.Action)
	}
	if q.Actor.Kind != "" {
		where.WriteString(` AND actor_kind = ?`)
		args = append(args, string(q.Actor.Kind))
	}
	if q.Actor.ID != "" {
		where.WriteString(` AND actor_id = ?`)
		args = append(args, q.Actor.ID)
	}
	if !q.Since.IsZero() {
		where.WriteString(` AND at >= ?`)
		args = append(args, q.Since.UnixNano())
	}
	if !q.Until.IsZero() {
		where.WriteString(` AND at < ?`)
		args = append(args, q.Until.UnixNano())
	}
	args = append(args, q.Limit)
	out := []auditlog.Entry{}
	err := l.db.Query(ctx, `SELECT seq, id, account_id, at, actor_kind, actor_id, action, target_type, target_id,
		changes, client_ip, user_agent FROM audit_entries WHERE `+where.String()+` ORDER BY seq DESC LIMIT ?`, args,
		func(rows sqlrow.Rows) error {
			es, err := sqlrow.Collect(rows, scanEntry)
			out = append(out, es...)
			return err
		})
	if err != nil {
		return nil, l.db.Wrap("ListAudit", err)
	}
	return out, nil
}

func scanEntry(row sqlrow.Scanner) (auditlog.Entry, error) {
	var (
		e       auditlog.Entry
		at      int64
		kind    string
		changes *string
	)
	if err := row.Scan(&e.Seq, &e.ID, &e.AccountID, &at, &kind, &e.Actor.ID, &e.Action, &e.Target.Type,
		&e.Target.ID, &changes, &e.ClientIP, &e.UserAgent); err != nil {
		return e, err
	}
	e.Time, e.Actor.Kind = time.Unix(0, at).UTC(), auditlog.ActorKind(kind)
	if changes != nil {
		if err := json.Unmarshal([]byte(*changes), &e.Changes); err != nil {
			return e, err
		}
	}
	return e, nil
}

// PruneAudit implements auditlog.Store: one DELETE of at most limit rows,
// oldest first, found through the (at) index.
func (l AuditLog) PruneAudit(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	n, err := l.db.Writer().Exec(ctx, `DELETE FROM audit_entries WHERE seq IN
		(SELECT seq FROM audit_entries WHERE at < ? ORDER BY at, seq LIMIT ?)`, cutoff.UnixNano(), limit)
	if err != nil {
		return 0, l.db.Wrap("PruneAudit", err)
	}
	return int(n), nil
}
