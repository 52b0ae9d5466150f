package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" (for -postgres)
	_ "modernc.org/sqlite"             // database/sql driver "sqlite" (sqlitestore uses it too)

	"github.com/keyledger/keyledger/examples/gateway/internal/invoice"
	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
)

// billing keeps the gateway's own tables — Razorpay orders and GST invoices
// with their per-financial-year counters — in the same database as the
// keyledger store (the SQLite file, or the PostgreSQL database of
// -postgres, which several gateway instances then share), but apart from
// its migrations: they belong to this
// program, not to the library, so they are created here with CREATE TABLE
// IF NOT EXISTS (tables prefixed gw_). The money itself is only in the
// keyledger ledger; these tables say which order bought which purchase
// entry and which invoice documents it.
type billing struct {
	db       *sql.DB
	pg       bool // PostgreSQL: $n placeholders instead of ?
	numberer invoice.Numberer
}

// sqliteSchema and pgSchema are the same tables; PostgreSQL needs BIGINT
// for the unix-nanosecond times and amounts.
const sqliteSchema = `
CREATE TABLE IF NOT EXISTS gw_orders (
	order_id     TEXT PRIMARY KEY,
	account_id   TEXT NOT NULL,
	amount_paise INTEGER NOT NULL,
	currency     TEXT NOT NULL,
	receipt      TEXT NOT NULL,
	status       TEXT NOT NULL,
	payment_id   TEXT NOT NULL DEFAULT '',
	entry_id     TEXT NOT NULL DEFAULT '',
	created_at   INTEGER NOT NULL,
	paid_at      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS gw_orders_receipt ON gw_orders(account_id, receipt);
CREATE TABLE IF NOT EXISTS gw_invoice_seq (
	fy   INTEGER PRIMARY KEY,
	last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gw_invoices (
	invoice_id     TEXT PRIMARY KEY,
	number         TEXT NOT NULL UNIQUE,
	account_id     TEXT NOT NULL,
	order_id       TEXT NOT NULL UNIQUE,
	payment_id     TEXT NOT NULL,
	amount_paise   INTEGER NOT NULL,
	customer_name  TEXT NOT NULL,
	customer_email TEXT NOT NULL,
	created_at     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS gw_invoices_account ON gw_invoices(account_id, created_at);
CREATE TABLE IF NOT EXISTS gw_customers (
	account_id        TEXT PRIMARY KEY,
	customer_id       TEXT NOT NULL,
	token_id          TEXT NOT NULL DEFAULT '',
	recharge_error    TEXT NOT NULL DEFAULT '',
	recharge_error_at INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS gw_payment_failures (
	payment_id  TEXT PRIMARY KEY,
	order_id    TEXT NOT NULL,
	account_id  TEXT NOT NULL,
	code        TEXT NOT NULL,
	description TEXT NOT NULL,
	created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS gw_payment_failures_account ON gw_payment_failures(account_id, created_at);
CREATE TABLE IF NOT EXISTS gw_refunds (
	refund_id    TEXT PRIMARY KEY,
	payment_id   TEXT NOT NULL,
	order_id     TEXT NOT NULL,
	account_id   TEXT NOT NULL,
	amount_paise INTEGER NOT NULL,
	entry_id     TEXT NOT NULL,
	created_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS gw_refunds_account ON gw_refunds(account_id, created_at);
CREATE TABLE IF NOT EXISTS gw_secret_slots (
	slot_id    TEXT PRIMARY KEY,
	sealed     TEXT NOT NULL,
	expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gw_billing_details (
	account_id  TEXT PRIMARY KEY,
	legal_name  TEXT NOT NULL,
	gstin       TEXT NOT NULL,
	address     TEXT NOT NULL,
	state_code  TEXT NOT NULL,
	updated_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gw_invoice_buyers (
	invoice_id  TEXT PRIMARY KEY,
	legal_name  TEXT NOT NULL,
	gstin       TEXT NOT NULL,
	address     TEXT NOT NULL,
	state_code  TEXT NOT NULL
);
`

const pgSchema = `
CREATE TABLE IF NOT EXISTS gw_orders (
	order_id     TEXT PRIMARY KEY,
	account_id   TEXT NOT NULL,
	amount_paise BIGINT NOT NULL,
	currency     TEXT NOT NULL,
	receipt      TEXT NOT NULL,
	status       TEXT NOT NULL,
	payment_id   TEXT NOT NULL DEFAULT '',
	entry_id     TEXT NOT NULL DEFAULT '',
	created_at   BIGINT NOT NULL,
	paid_at      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS gw_orders_receipt ON gw_orders(account_id, receipt);
CREATE TABLE IF NOT EXISTS gw_invoice_seq (
	fy   BIGINT PRIMARY KEY,
	last BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS gw_invoices (
	invoice_id     TEXT PRIMARY KEY,
	number         TEXT NOT NULL UNIQUE,
	account_id     TEXT NOT NULL,
	order_id       TEXT NOT NULL UNIQUE,
	payment_id     TEXT NOT NULL,
	amount_paise   BIGINT NOT NULL,
	customer_name  TEXT NOT NULL,
	customer_email TEXT NOT NULL,
	created_at     BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS gw_invoices_account ON gw_invoices(account_id, created_at);
CREATE TABLE IF NOT EXISTS gw_customers (
	account_id        TEXT PRIMARY KEY,
	customer_id       TEXT NOT NULL,
	token_id          TEXT NOT NULL DEFAULT '',
	recharge_error    TEXT NOT NULL DEFAULT '',
	recharge_error_at BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS gw_payment_failures (
	payment_id  TEXT PRIMARY KEY,
	order_id    TEXT NOT NULL,
	account_id  TEXT NOT NULL,
	code        TEXT NOT NULL,
	description TEXT NOT NULL,
	created_at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS gw_payment_failures_account ON gw_payment_failures(account_id, created_at);
CREATE TABLE IF NOT EXISTS gw_refunds (
	refund_id    TEXT PRIMARY KEY,
	payment_id   TEXT NOT NULL,
	order_id     TEXT NOT NULL,
	account_id   TEXT NOT NULL,
	amount_paise BIGINT NOT NULL,
	entry_id     TEXT NOT NULL,
	created_at   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS gw_refunds_account ON gw_refunds(account_id, created_at);
CREATE TABLE IF NOT EXISTS gw_secret_slots (
	slot_id    TEXT PRIMARY KEY,
	sealed     TEXT NOT NULL,
	expires_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS gw_billing_details (
	account_id  TEXT PRIMARY KEY,
	legal_name  TEXT NOT NULL,
	gstin       TEXT NOT NULL,
	address     TEXT NOT NULL,
	state_code  TEXT NOT NULL,
	updated_at  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS gw_invoice_buyers (
	invoice_id  TEXT PRIMARY KEY,
	legal_name  TEXT NOT NULL,
	gstin       TEXT NOT NULL,
	address     TEXT NOT NULL,
	state_code  TEXT NOT NULL
);
`

// openBilling opens the billing tables in the SQLite file at path (which
// sqlitestore.Open has already put in WAL mode). One connection with
// BEGIN IMMEDIATE serialises this program's billing writes; the busy
// timeout waits for the keyledger store's writer.
func openBilling(ctx context.Context, path string) (*billing, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("billing tables: %w", err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, sqliteSchema); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("billing tables: %w", err)
	}
	return &billing{db: db, numberer: invoice.DefaultNumberer()}, nil
}

// openBillingPG opens the billing tables in the PostgreSQL database of dsn
// (the one pgstore uses), creating them if they are missing. Concurrent
// gateways share them: the invoice counter is a row-locked upsert inside
// the invoice's transaction.
func openBillingPG(ctx context.Context, dsn string) (*billing, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("billing tables: %w", err)
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(4)
	for stmt := range strings.SplitSeq(pgSchema, ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("billing tables: %w", err)
		}
	}
	return &billing{db: db, pg: true, numberer: invoice.DefaultNumberer()}, nil
}

// q returns query in the database's placeholder syntax: the ? of SQLite, or
// $1, $2, … for PostgreSQL. The queries here have no ? inside literals.
func (b *billing) q(query string) string {
	if !b.pg {
		return query
	}
	var sb strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			sb.WriteByte('$')
			sb.WriteString(strconv.Itoa(n))
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

func (b *billing) Close() error { return b.db.Close() }

// order is a Razorpay order the gateway created.
type order struct {
	ID, AccountID string
	Amount        razorpay.Paise
	Currency      string
	Receipt       string
	Status        string // "created" or "paid"
	PaymentID     string
	EntryID       string
	CreatedAt     time.Time
	CustomerID    string // not stored: set on a live order just created
}

// razorpay returns the order as Razorpay's entity, for Payment.Matches.
func (o order) razorpay() razorpay.Order {
	return razorpay.Order{ID: o.ID, Entity: "order", Amount: o.Amount, Currency: o.Currency, Receipt: o.Receipt, Status: razorpay.OrderStatus(o.Status)}
}

func (b *billing) createOrder(ctx context.Context, o order) error {
	_, err := b.db.ExecContext(ctx, b.q(`INSERT INTO gw_orders(order_id, account_id, amount_paise, currency, receipt, status, created_at) VALUES(?,?,?,?,?,?,?)`),
		o.ID, o.AccountID, int64(o.Amount), o.Currency, o.Receipt, "created", o.CreatedAt.UnixNano())
	return err
}

const orderCols = `order_id, account_id, amount_paise, currency, receipt, status, payment_id, entry_id, created_at`

func scanOrder(row *sql.Row) (order, error) {
	var o order
	var amount, created int64
	err := row.Scan(&o.ID, &o.AccountID, &amount, &o.Currency, &o.Receipt, &o.Status, &o.PaymentID, &o.EntryID, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return o, errNotFound
	}
	o.Amount, o.CreatedAt = razorpay.Paise(amount), time.Unix(0, created).UTC()
	return o, err
}

// order returns an order by id, or errNotFound.
func (b *billing) order(ctx context.Context, id string) (order, error) {
	return scanOrder(b.db.QueryRowContext(ctx, b.q(`SELECT `+orderCols+` FROM gw_orders WHERE order_id = ?`), id))
}

// orderByReceipt returns an account's order with the given receipt, or
// errNotFound.
func (b *billing) orderByReceipt(ctx context.Context, accountID, receipt string) (order, error) {
	return scanOrder(b.db.QueryRowContext(ctx, b.q(`SELECT `+orderCols+` FROM gw_orders WHERE account_id = ? AND receipt = ? ORDER BY created_at LIMIT 1`), accountID, receipt))
}

// markPaid records the first payment of an order; later calls change
// nothing.
func (b *billing) markPaid(ctx context.Context, orderID, paymentID, entryID string, at time.Time) error {
	_, err := b.db.ExecContext(ctx, b.q(`UPDATE gw_orders SET status = 'paid', payment_id = ?, entry_id = ?, paid_at = ? WHERE order_id = ? AND status <> 'paid'`),
		paymentID, entryID, at.UnixNano(), orderID)
	return err
}

// invoiceRow is a stored invoice: what Render needs besides the supplier.
type invoiceRow struct {
	ID, Number, AccountID, OrderID, PaymentID string
	Amount                                    razorpay.Paise
	CustomerName, CustomerEmail               string
	CreatedAt                                 time.Time
	// Buyer is the customer's billing details as they were when the
	// invoice was issued (zero: none saved, a B2C invoice).
	Buyer billingDetails
}

// ensureInvoice returns the invoice of the row's order, creating it with
// the next number of its financial year if there is none. The counter and
// the invoice are written in one transaction, so numbers are consecutive
// and an order gets exactly one invoice whichever of verify, webhook or
// auto-recharge comes first. On SQLite BEGIN IMMEDIATE serialises these
// transactions; on PostgreSQL the counter's upsert locks its row until
// commit, and of two concurrent calls for one order the second fails on the
// order_id UNIQUE, rolls back its increment and returns the first's invoice.
func (b *billing) ensureInvoice(ctx context.Context, inv invoiceRow) (invoiceRow, error) {
	out, err := b.createInvoice(ctx, inv)
	if err != nil && ctx.Err() == nil {
		if existing, gerr := scanInvoice(b.db.QueryRowContext(ctx, b.q(selectInvoice+` WHERE i.order_id = ?`), inv.OrderID)); gerr == nil {
			return existing, nil
		}
	}
	return out, err
}

// createInvoice is ensureInvoice's transaction.
func (b *billing) createInvoice(ctx context.Context, inv invoiceRow) (invoiceRow, error) {
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return inv, err
	}
	defer func() { _ = tx.Rollback() }()
	existing, err := scanInvoice(tx.QueryRowContext(ctx, b.q(selectInvoice+` WHERE i.order_id = ?`), inv.OrderID))
	if err == nil {
		return existing, nil
	}
	if !errors.Is(err, errNotFound) {
		return inv, err
	}
	fy := invoice.FinancialYearOf(inv.CreatedAt)
	var seq int64
	if err := tx.QueryRowContext(ctx, b.q(`INSERT INTO gw_invoice_seq(fy, last) VALUES(?, 1)
		ON CONFLICT(fy) DO UPDATE SET last = gw_invoice_seq.last + 1 RETURNING last`), int64(fy)).Scan(&seq); err != nil {
		return inv, err
	}
	if inv.Number, err = b.numberer.Format(fy, seq); err != nil {
		return inv, err
	}
	if _, err := tx.ExecContext(ctx, b.q(`INSERT INTO gw_invoices(`+invoiceCols+`) VALUES(?,?,?,?,?,?,?,?,?)`),
		inv.ID, inv.Number, inv.AccountID, inv.OrderID, inv.PaymentID, int64(inv.Amount), inv.CustomerName, inv.CustomerEmail, inv.CreatedAt.UnixNano()); err != nil {
		return inv, err
	}
	if bd := inv.Buyer; bd != (billingDetails{}) {
		if _, err := tx.ExecContext(ctx, b.q(`INSERT INTO gw_invoice_buyers(invoice_id, legal_name, gstin, address, state_code) VALUES(?,?,?,?,?)`),
			inv.ID, bd.LegalName, bd.GSTIN, bd.Address, bd.StateCode); err != nil {
			return inv, err
		}
	}
	return inv, tx.Commit()
}

const invoiceCols = `invoice_id, number, account_id, order_id, payment_id, amount_paise, customer_name, customer_email, created_at`

// selectInvoice reads an invoice with its buyer's billing details.
const selectInvoice = `SELECT i.invoice_id, i.number, i.account_id, i.order_id, i.payment_id, i.amount_paise, i.customer_name, i.customer_email, i.created_at,
	COALESCE(bb.legal_name, ''), COALESCE(bb.gstin, ''), COALESCE(bb.address, ''), COALESCE(bb.state_code, '')
	FROM gw_invoices i LEFT JOIN gw_invoice_buyers bb ON bb.invoice_id = i.invoice_id`

type scanner interface{ Scan(dest ...any) error }

func scanInvoice(row scanner) (invoiceRow, error) {
	var v invoiceRow
	var amount, created int64
	err := row.Scan(&v.ID, &v.Number, &v.AccountID, &v.OrderID, &v.PaymentID, &amount, &v.CustomerName, &v.CustomerEmail, &created,
		&v.Buyer.LegalName, &v.Buyer.GSTIN, &v.Buyer.Address, &v.Buyer.StateCode)
	if errors.Is(err, sql.ErrNoRows) {
		return v, errNotFound
	}
	v.Amount, v.CreatedAt = razorpay.Paise(amount), time.Unix(0, created).UTC()
	return v, err
}

// invoice returns an account's invoice, or errNotFound (also for another
// account's).
func (b *billing) invoice(ctx context.Context, accountID, id string) (invoiceRow, error) {
	return scanInvoice(b.db.QueryRowContext(ctx, b.q(selectInvoice+` WHERE i.invoice_id = ? AND i.account_id = ?`), id, accountID))
}

// invoices lists an account's invoices, newest first (at most 500).
func (b *billing) invoices(ctx context.Context, accountID string) ([]invoiceRow, error) {
	rows, err := b.db.QueryContext(ctx, b.q(selectInvoice+` WHERE i.account_id = ? ORDER BY i.created_at DESC, i.number DESC LIMIT 500`), accountID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []invoiceRow
	for rows.Next() {
		v, err := scanInvoice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
