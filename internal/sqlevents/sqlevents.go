// Package sqlevents is the event outbox of the two SQL backends, written
// once over internal/sqlaccount's DB (statements with ? placeholders):
// events.Store (webhook endpoints, alert thresholds, the delivery log,
// appended events) and outbox.Store (claim, finish, prune, the
// expiring-key scan), plus the statements the backends run inside their
// own transactions to write an event with the change that causes it. A
// backend embeds Events. It imports no driver.
package sqlevents

import (
	"context"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/id"
	"github.com/keyledger/keyledger/internal/outbox"
	"github.com/keyledger/keyledger/internal/sqlaccount"
	"github.com/keyledger/keyledger/internal/sqlrow"
)

// Dialect holds the fragments that differ between backends.
type Dialect struct {
	// SkipLocked follows the claim's inner SELECT (PostgreSQL:
	// " FOR UPDATE SKIP LOCKED", so that instances claim different
	// events without waiting; SQLite has one writer and needs nothing).
	SkipLocked string
	// Lock follows the read of the account row that serializes the
	// account's endpoint creates (PostgreSQL: " FOR UPDATE"; SQLite's one
	// writer serializes them already).
	Lock string
}

// Events implements events.Store and outbox.Store over a DB.
type Events struct {
	db  sqlaccount.DB
	d   Dialect
	ids *id.Generator
}

// New returns the outbox of db.
func New(db sqlaccount.DB, d Dialect) Events {
	return Events{db: db, d: d, ids: id.NewGenerator(nil)}
}

// InsertEvent is the statement that writes one event (id, account_id,
// type, created_at, data); backends run it in their own transactions.
const InsertEvent = `INSERT INTO outbox_events (id, account_id, type, created_at, data) VALUES (?, ?, ?, ?, ?)`

// EventArgs returns InsertEvent's arguments for e.
func EventArgs(e *events.Event) []any {
	return []any{e.ID, e.AccountID, string(e.Type), e.Time.UnixNano(), string(e.Data)}
}

// ThresholdsQuery reads an account's low-balance thresholds (one row, or
// none).
const ThresholdsQuery = `SELECT low_balance FROM alert_thresholds WHERE account_id = ?`

// Insert writes evs on c (an open transaction).
func Insert(ctx context.Context, c sqlaccount.Conn, evs ...events.Event) error {
	for i := range evs {
		if _, err := c.Exec(ctx, InsertEvent, EventArgs(&evs[i])...); err != nil {
			return err
		}
	}
	return nil
}

// KeyEvent writes the event of type t about k on c, with an ID from s;
// "" writes nothing. (A function, not a method, so that the backends that
// embed Events do not export it.)
func KeyEvent(ctx context.Context, s *Events, c sqlaccount.Conn, t events.Type, k apikey.APIKey, now time.Time) error {
	if t == "" {
		return nil
	}
	return Insert(ctx, c, outbox.KeyEvent(s.ids.New("evt_"), t, k, now))
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// CreateWebhookEndpoint implements events.Store.
func (s Events) CreateWebhookEndpoint(ctx context.Context, e events.Endpoint, max int) error {
	const op = "create webhook endpoint"
	return s.db.Write(ctx, op, e.AccountID, func(tx sqlaccount.Conn) error {
		// The account's row lock makes the count and the insert one step:
		// without it, concurrent creates each saw room (READ COMMITTED)
		// and the account went past max.
		var id string
		if err := tx.QueryRow(ctx, `SELECT id FROM accounts WHERE id = ?`+s.d.Lock, e.AccountID).Scan(&id); err != nil {
			if s.db.NoRows(err) {
				return events.ErrAccountNotFound
			}
			return s.db.Wrap(op, err)
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM webhook_endpoints WHERE account_id = ?`, e.AccountID).Scan(&n); err != nil {
			return s.db.Wrap(op, err)
		}
		if n >= max {
			return events.ErrTooManyEndpoints
		}
		_, err := tx.Exec(ctx, `INSERT INTO webhook_endpoints (id, account_id, url, secret, description, created_at)
			VALUES (?, ?, ?, ?, ?, ?)`, e.ID, e.AccountID, e.URL, e.Secret, e.Description, e.CreatedAt.UnixNano())
		if s.db.ForeignKey(err) {
			return events.ErrAccountNotFound
		}
		return s.db.Wrap(op, err)
	})
}

// WebhookEndpoints implements events.Store.
func (s Events) WebhookEndpoints(ctx context.Context, accountID string) ([]events.Endpoint, error) {
	var out []events.Endpoint
	err := s.db.Query(ctx, `SELECT id, account_id, url, secret, description, created_at FROM webhook_endpoints
		WHERE account_id = ? ORDER BY created_at, id`, []any{accountID}, func(rows sqlrow.Rows) error {
		var err error
		out, err = sqlrow.Collect(rows, func(r sqlrow.Scanner) (events.Endpoint, error) {
			var e events.Endpoint
			var at int64
			err := r.Scan(&e.ID, &e.AccountID, &e.URL, &e.Secret, &e.Description, &at)
			e.CreatedAt = fromNanos(at)
			return e, err
		})
		return err
	})
	return out, s.db.Wrap("webhook endpoints", err)
}

// DeleteWebhookEndpoint implements events.Store.
func (s Events) DeleteWebhookEndpoint(ctx context.Context, accountID, id string) error {
	n, err := s.db.Writer().Exec(ctx, `DELETE FROM webhook_endpoints WHERE id = ? AND account_id = ?`, id, accountID)
	if err != nil {
		return s.db.Wrap("delete webhook endpoint", err)
	}
	if n == 0 {
		return events.ErrNotFound
	}
	return nil
}

// SetAlertThresholds implements events.Store.
func (s Events) SetAlertThresholds(ctx context.Context, accountID string, low []decimal.Decimal) error {
	const op = "set alert thresholds"
	return s.db.Write(ctx, op, accountID, func(tx sqlaccount.Conn) error {
		if len(low) == 0 {
			_, err := tx.Exec(ctx, `DELETE FROM alert_thresholds WHERE account_id = ?`, accountID)
			return s.db.Wrap(op, err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO alert_thresholds (account_id, low_balance) VALUES (?, ?)
			ON CONFLICT (account_id) DO UPDATE SET low_balance = excluded.low_balance`, accountID, outbox.FormatThresholds(low))
		if s.db.ForeignKey(err) {
			return events.ErrAccountNotFound
		}
		return s.db.Wrap(op, err)
	})
}

// AlertThresholds implements events.Store.
func (s Events) AlertThresholds(ctx context.Context, accountID string) ([]decimal.Decimal, error) {
	var v string
	err := s.db.Reader().QueryRow(ctx, ThresholdsQuery, accountID).Scan(&v)
	if s.db.NoRows(err) {
		return nil, nil
	}
	if err != nil {
		return nil, s.db.Wrap("alert thresholds", err)
	}
	return outbox.ParseThresholds(v), nil
}

// WebhookDeliveries implements events.Store.
func (s Events) WebhookDeliveries(ctx context.Context, accountID string, limit int) ([]events.Delivery, error) {
	var out []events.Delivery
	err := s.db.Query(ctx, `SELECT event_id, account_id, event_type, endpoint_id, attempt, status_code, error, duration_ns, at
		FROM webhook_deliveries WHERE account_id = ? ORDER BY seq DESC LIMIT ?`, []any{accountID, limit}, func(rows sqlrow.Rows) error {
		var err error
		out, err = sqlrow.Collect(rows, func(r sqlrow.Scanner) (events.Delivery, error) {
			var d events.Delivery
			var typ string
			var dur, at int64
			err := r.Scan(&d.EventID, &d.AccountID, &typ, &d.EndpointID, &d.Attempt, &d.StatusCode, &d.Error, &dur, &at)
			d.EventType, d.Duration, d.At = events.Type(typ), time.Duration(dur), fromNanos(at)
			return d, err
		})
		return err
	})
	return out, s.db.Wrap("webhook deliveries", err)
}

// AppendEvents implements events.Store.
func (s Events) AppendEvents(ctx context.Context, evs []events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	return s.db.Write(ctx, "append events", "", func(tx sqlaccount.Conn) error {
		return s.db.Wrap("append events", Insert(ctx, tx, evs...))
	})
}

// dueHeads lists up to limit due, unleased heads (an account's oldest
// pending event), oldest first. It walks the accounts that have pending
// events through the pending index — a skip scan, one seek per account —
// so that an account with a long backlog behind a failing head costs one
// seek, not a scan of its backlog (which made every claim of every account
// wait: 0.7 s a round on PostgreSQL with 20,000 events queued). The head's
// due test is a scalar subquery so that PostgreSQL looks each head up by
// its key instead of hashing the whole table.
const dueHeads = `WITH RECURSIVE accts(a) AS (
		SELECT min(account_id) FROM outbox_events WHERE state = 0
		UNION ALL
		SELECT (SELECT min(o.account_id) FROM outbox_events o WHERE o.state = 0 AND o.account_id > accts.a)
		FROM accts WHERE accts.a IS NOT NULL),
	heads(seq) AS (SELECT (SELECT min(h.seq) FROM outbox_events h WHERE h.state = 0 AND h.account_id = accts.a)
		FROM accts WHERE accts.a IS NOT NULL)
	SELECT heads.seq FROM heads
	WHERE (SELECT e.next_at <= ? AND e.lease_until <= ? FROM outbox_events e WHERE e.seq = heads.seq)
	ORDER BY heads.seq LIMIT ?`

// ClaimEvents implements outbox.Store: the due heads (dueHeads), then one
// statement per head that leases it if it is still a due, unleased head
// no one else holds (another dispatcher may have taken it meanwhile).
func (s Events) ClaimEvents(ctx context.Context, now, leaseUntil time.Time, claim string, limit int) ([]outbox.Pending, error) {
	var seqs []int64
	err := s.db.Query(ctx, dueHeads, []any{now.UnixNano(), now.UnixNano(), limit}, func(rows sqlrow.Rows) error {
		for rows.Next() {
			var seq int64
			if err := rows.Scan(&seq); err != nil {
				return err
			}
			seqs = append(seqs, seq)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, s.db.Wrap("claim events", err)
	}
	q := `UPDATE outbox_events SET lease_until = ?, claim = ?
		WHERE seq = (SELECT e.seq FROM outbox_events e
			WHERE e.seq = ? AND e.state = 0 AND e.next_at <= ? AND e.lease_until <= ?
			AND NOT EXISTS (SELECT 1 FROM outbox_events p WHERE p.account_id = e.account_id AND p.state = 0 AND p.seq < e.seq)` +
		s.d.SkipLocked + `)
		RETURNING id, account_id, type, created_at, data, attempts, done`
	var out []outbox.Pending
	for _, seq := range seqs {
		var (
			p         outbox.Pending
			typ, data string
			done      string
			created   int64
		)
		err := s.db.Writer().QueryRow(ctx, q, leaseUntil.UnixNano(), claim, seq, now.UnixNano(), now.UnixNano()).
			Scan(&p.ID, &p.AccountID, &typ, &created, &data, &p.Attempts, &done)
		if s.db.NoRows(err) {
			continue // taken or finished meanwhile
		}
		if err != nil {
			return out, s.db.Wrap("claim events", err)
		}
		p.Type, p.Time, p.Data, p.Done, p.Claim = events.Type(typ), fromNanos(created), []byte(data), outbox.ParseDone(done), claim
		out = append(out, p)
	}
	return out, nil
}

// FinishEvent implements outbox.Store.
func (s Events) FinishEvent(ctx context.Context, now time.Time, r outbox.Result) error {
	const op = "finish event"
	return s.db.Write(ctx, op, "", func(tx sqlaccount.Conn) error {
		var fin int64
		if r.State != outbox.StatePending {
			fin = now.UnixNano()
		}
		n, err := tx.Exec(ctx, `UPDATE outbox_events SET state = ?, attempts = ?, next_at = ?, done = ?, lease_until = 0,
			claim = '', finished_at = ? WHERE id = ? AND claim = ?`,
			r.State, r.Attempts, nanos(r.NextAt), outbox.FormatDone(r.Done), fin, r.EventID, r.Claim)
		if err != nil || n == 0 {
			return s.db.Wrap(op, err)
		}
		for _, d := range r.Log {
			if _, err := tx.Exec(ctx, `INSERT INTO webhook_deliveries (event_id, account_id, event_type, endpoint_id, attempt,
				status_code, error, duration_ns, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				d.EventID, d.AccountID, string(d.EventType), d.EndpointID, d.Attempt, d.StatusCode, d.Error,
				int64(d.Duration), d.At.UnixNano()); err != nil {
				return s.db.Wrap(op, err)
			}
		}
		return nil
	})
}

// PruneEvents implements outbox.Store.
func (s Events) PruneEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	b := before.UnixNano()
	n1, err := s.db.Writer().Exec(ctx, `DELETE FROM outbox_events WHERE seq IN (SELECT seq FROM outbox_events
		WHERE state <> 0 AND finished_at < ? ORDER BY finished_at LIMIT ?)`, b, limit)
	if err != nil {
		return 0, s.db.Wrap("prune events", err)
	}
	n2, err := s.db.Writer().Exec(ctx, `DELETE FROM webhook_deliveries WHERE seq IN (SELECT seq FROM webhook_deliveries
		WHERE at < ? ORDER BY at LIMIT ?)`, b, limit)
	if err != nil {
		return int(n1), s.db.Wrap("prune deliveries", err)
	}
	return int(n1 + n2), nil
}

// NoticeExpiringKeys implements outbox.Store. The notice row is claimed
// with an upsert that changes nothing when another process already
// noticed the same expiry, so each expiry is announced once.
func (s Events) NoticeExpiringKeys(ctx context.Context, now, until time.Time, limit int) (int, error) {
	const op = "notice expiring keys"
	n := 0
	err := s.db.Write(ctx, op, "", func(tx sqlaccount.Conn) error {
		for n < limit {
			var (
				k       apikey.APIKey
				env     string
				expires int64
			)
			err := tx.QueryRow(ctx, `SELECT k.id, k.account_id, k.name, k.hint, k.environment, k.expires_at FROM api_keys k
				WHERE k.status = 'active' AND k.expires_at IS NOT NULL AND k.expires_at > ? AND k.expires_at <= ?
				AND NOT EXISTS (SELECT 1 FROM key_expiry_notices n WHERE n.key_id = k.id AND n.expires_at = k.expires_at)
				ORDER BY k.expires_at, k.id LIMIT 1`, now.UnixNano(), until.UnixNano()).
				Scan(&k.ID, &k.AccountID, &k.Name, &k.Hint, &env, &expires)
			if s.db.NoRows(err) {
				return nil
			}
			if err != nil {
				return s.db.Wrap(op, err)
			}
			k.Environment, k.ExpiresAt = apikey.Environment(env), fromNanos(expires)
			c, err := tx.Exec(ctx, `INSERT INTO key_expiry_notices (key_id, expires_at) VALUES (?, ?)
				ON CONFLICT (key_id) DO UPDATE SET expires_at = excluded.expires_at
				WHERE key_expiry_notices.expires_at <> excluded.expires_at`, k.ID, expires)
			if err != nil {
				return s.db.Wrap(op, err)
			}
			if c == 0 {
				return nil // another process noticed it first; it writes the event
			}
			if err := KeyEvent(ctx, &s, tx, events.KeyExpiring, k, now); err != nil {
				return s.db.Wrap(op, err)
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
