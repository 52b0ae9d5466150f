package main

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"time"

	"github.com/keyledger/keyledger/dashboard"
	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
)

// customerRow is an account's Razorpay customer, its saved recurring token
// and the last auto-recharge failure (cleared by a success).
type customerRow struct {
	AccountID, CustomerID, TokenID string
	RechargeError                  string
	RechargeErrorAt                time.Time
}

// customer returns an account's Razorpay customer, or errNotFound.
func (b *billing) customer(ctx context.Context, accountID string) (customerRow, error) {
	c := customerRow{AccountID: accountID}
	var at int64
	err := b.db.QueryRowContext(ctx, b.q(`SELECT customer_id, token_id, recharge_error, recharge_error_at FROM gw_customers WHERE account_id = ?`), accountID).
		Scan(&c.CustomerID, &c.TokenID, &c.RechargeError, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return c, errNotFound
	}
	if at != 0 {
		c.RechargeErrorAt = time.Unix(0, at).UTC()
	}
	return c, err
}

// saveCustomer records an account's Razorpay customer unless one is
// recorded; it returns the recorded one.
func (b *billing) saveCustomer(ctx context.Context, accountID, customerID string) (customerRow, error) {
	if _, err := b.db.ExecContext(ctx, b.q(`INSERT INTO gw_customers(account_id, customer_id) VALUES(?,?)
ON CONFLICT(account_id) DO UPDATE SET customer_id = excluded.customer_id WHERE gw_customers.customer_id = ''`), accountID, customerID); err != nil {
		return customerRow{}, err
	}
	return b.customer(ctx, accountID)
}

// saveToken records the recurring token a payment of the customer saved.
func (b *billing) saveToken(ctx context.Context, accountID, customerID, tokenID string) error {
	_, err := b.db.ExecContext(ctx, b.q(`UPDATE gw_customers SET token_id = ? WHERE account_id = ? AND customer_id = ?`), tokenID, accountID, customerID)
	return err
}

// setRechargeError records (msg != "") or clears the last auto-recharge
// failure of an account. An account without a Razorpay customer yet gets a
// row with an empty customer id.
func (b *billing) setRechargeError(ctx context.Context, accountID, msg string, at time.Time) error {
	var nanos int64
	if msg != "" {
		nanos = at.UnixNano()
	}
	_, err := b.db.ExecContext(ctx, b.q(`INSERT INTO gw_customers(account_id, customer_id, recharge_error, recharge_error_at) VALUES(?,'',?,?)
ON CONFLICT(account_id) DO UPDATE SET recharge_error = excluded.recharge_error, recharge_error_at = excluded.recharge_error_at`), accountID, msg, nanos)
	return err
}

// paymentFailure is a failed Razorpay payment of an order.
type paymentFailure struct {
	PaymentID, OrderID, AccountID string
	Code, Description             string
	CreatedAt                     time.Time
}

// recordFailure records a failed payment once and marks its order failed
// unless it is paid.
func (b *billing) recordFailure(ctx context.Context, f paymentFailure) error {
	if _, err := b.db.ExecContext(ctx, b.q(`INSERT INTO gw_payment_failures(payment_id, order_id, account_id, code, description, created_at) VALUES(?,?,?,?,?,?) ON CONFLICT(payment_id) DO NOTHING`),
		f.PaymentID, f.OrderID, f.AccountID, f.Code, f.Description, f.CreatedAt.UnixNano()); err != nil {
		return err
	}
	_, err := b.db.ExecContext(ctx, b.q(`UPDATE gw_orders SET status = 'failed' WHERE order_id = ? AND status <> 'paid'`), f.OrderID)
	return err
}

// refundRow is a processed refund and the ledger entry that took its
// credits back.
type refundRow struct {
	RefundID, PaymentID, OrderID, AccountID string
	Amount                                  razorpay.Paise
	EntryID                                 string
	CreatedAt                               time.Time
}

// recordRefund records a refund once.
func (b *billing) recordRefund(ctx context.Context, r refundRow) error {
	_, err := b.db.ExecContext(ctx, b.q(`INSERT INTO gw_refunds(refund_id, payment_id, order_id, account_id, amount_paise, entry_id, created_at) VALUES(?,?,?,?,?,?,?) ON CONFLICT(refund_id) DO NOTHING`),
		r.RefundID, r.PaymentID, r.OrderID, r.AccountID, int64(r.Amount), r.EntryID, r.CreatedAt.UnixNano())
	return err
}

// paymentEvent is one row of an account's payment history: a failure or a
// refund (purchases are in the credits ledger and the invoices).
type paymentEvent struct {
	Type                       string // "payment_failed" or "refund"
	ID, PaymentID, OrderID     string
	Amount                     razorpay.Paise
	Code, Description, EntryID string
	CreatedAt                  time.Time
}

// paymentEvents lists an account's failed payments and refunds, newest
// first, at most limit.
func (b *billing) paymentEvents(ctx context.Context, accountID string, limit int) ([]paymentEvent, error) {
	rows, err := b.db.QueryContext(ctx, b.q(`
SELECT 'payment_failed', f.payment_id, f.payment_id, f.order_id, o.amount_paise, f.code, f.description, '', f.created_at
  FROM gw_payment_failures f JOIN gw_orders o ON o.order_id = f.order_id WHERE f.account_id = ?
UNION ALL
SELECT 'refund', r.refund_id, r.payment_id, r.order_id, r.amount_paise, '', '', r.entry_id, r.created_at
  FROM gw_refunds r WHERE r.account_id = ?
ORDER BY 9 DESC LIMIT ?`), accountID, accountID, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []paymentEvent
	for rows.Next() {
		var e paymentEvent
		var amount, at int64
		if err := rows.Scan(&e.Type, &e.ID, &e.PaymentID, &e.OrderID, &amount, &e.Code, &e.Description, &e.EntryID, &at); err != nil {
			return nil, err
		}
		e.Amount, e.CreatedAt = razorpay.Paise(amount), time.Unix(0, at).UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

// dashSlots is the dashboard's SecretSlots on the billing tables: every
// instance on the same database (the SQLite file, or -postgres) shows a
// new key created on any of them. Rows hold only the dashboard's
// ciphertext and are deleted when taken or, expired, on the next Put.
type dashSlots struct{ b *billing }

func (d dashSlots) Put(ctx context.Context, id string, sealed []byte, expires time.Time) error {
	if _, err := d.b.db.ExecContext(ctx, d.b.q(`DELETE FROM gw_secret_slots WHERE expires_at < ?`), expires.Add(-time.Hour).UnixNano()); err != nil {
		return err
	}
	_, err := d.b.db.ExecContext(ctx, d.b.q(`INSERT INTO gw_secret_slots(slot_id, sealed, expires_at) VALUES(?,?,?)`),
		id, base64.StdEncoding.EncodeToString(sealed), expires.UnixNano())
	return err
}

func (d dashSlots) Take(ctx context.Context, id string, now time.Time) ([]byte, error) {
	var enc string
	var exp int64
	err := d.b.db.QueryRowContext(ctx, d.b.q(`DELETE FROM gw_secret_slots WHERE slot_id = ? RETURNING sealed, expires_at`), id).Scan(&enc, &exp)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && now.UnixNano() >= exp) {
		return nil, dashboard.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(enc)
}
