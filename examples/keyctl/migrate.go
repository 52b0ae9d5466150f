package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/store/pgstore"
	"github.com/keyledger/keyledger/store/sqlitestore"
)

// keyctl migrate: the move from one host to many. It copies a SQLite
// database — keyledger's tables (accounts, sessions, one-time tokens,
// closed emails, keys, ledger, usage, the audit log) and the gateway's
// gw_* billing tables — into
// an empty PostgreSQL database (or schema), exactly, at the SQL level:
// every table in primary-key order, in batches, each batch inserted in one
// transaction together with the migration's progress (table, last key
// copied), so that an interrupted run resumes where it stopped. A target
// that holds any other data is refused. Afterwards it compares both sides:
// the row count of every table, each account's balance, held amount and
// sum of entries, and the usage rollup sums, and prints the comparison.
//
// Types: SQLite keeps money as decimal text (rollup costs as whole units
// plus 10⁻¹⁸ units in two integers), PostgreSQL as NUMERIC; both keep times
// as integer unix nanoseconds, hashes as bytes, flags as 0/1 vs boolean.
// Every value is converted exactly: text to NUMERIC through
// shopspring/decimal, units + atto to one decimal.
//
// The source must not change while it runs: stop the servers on it first.

// Errors of keyctl migrate.
var (
	errTargetNotEmpty = errors.New("the target holds data that this migration did not write")
	errSchemaMismatch = errors.New("source and target schema versions differ")
	errVerifyFailed   = errors.New("the copy differs from the source")
)

// colKind is how a column's value is converted.
type colKind uint8

const (
	kText colKind = iota
	kInt
	kMoney // SQLite decimal text → NUMERIC
	kBlob
	kBool  // SQLite 0/1 → boolean
	kInt32 // integer
)

type column struct {
	name string
	kind colKind
}

// table is one table to copy: its columns (in the SQLite names; the
// PostgreSQL columns are the same except where read/write differ) and its
// primary key.
type table struct {
	name     string
	cols     []column
	key      []string // primary key columns, the copy order
	optional bool     // the gateway's billing tables: copied if present
	// dstCols overrides the PostgreSQL column list.
	dstCols []column
	// ddl creates it in the target if missing (optional tables only).
	ddl string
	// after runs on the target once the table is copied (and again on a
	// resumed run): tables with an identity column (audit_entries,
	// outbox_events, webhook_deliveries) move it past the copied seqs.
	after string
}

func cols(spec string) []column {
	var out []column
	for _, f := range strings.Fields(spec) {
		name, k, _ := strings.Cut(f, ":")
		kind := kText
		switch k {
		case "i":
			kind = kInt
		case "m":
			kind = kMoney
		case "b":
			kind = kBlob
		case "bool":
			kind = kBool
		case "i32":
			kind = kInt32
		}
		out = append(out, column{name, kind})
	}
	return out
}

// gwPGSchema mirrors the PostgreSQL billing schema of examples/gateway
// (billingstore.go, pgSchema), for a target the gateway has not opened yet.
const (
	gwOrdersDDL = `CREATE TABLE IF NOT EXISTS gw_orders (
	order_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, amount_paise BIGINT NOT NULL, currency TEXT NOT NULL,
	receipt TEXT NOT NULL, status TEXT NOT NULL, payment_id TEXT NOT NULL DEFAULT '', entry_id TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL, paid_at BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS gw_orders_receipt ON gw_orders(account_id, receipt)`
	gwSeqDDL      = `CREATE TABLE IF NOT EXISTS gw_invoice_seq (fy BIGINT PRIMARY KEY, last BIGINT NOT NULL)`
	gwInvoicesDDL = `CREATE TABLE IF NOT EXISTS gw_invoices (
	invoice_id TEXT PRIMARY KEY, number TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL, order_id TEXT NOT NULL UNIQUE,
	payment_id TEXT NOT NULL, amount_paise BIGINT NOT NULL, customer_name TEXT NOT NULL, customer_email TEXT NOT NULL,
	created_at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS gw_invoices_account ON gw_invoices(account_id, created_at)`
)

// migrationTables lists every table in copy order (parents first).
var migrationTables = []table{
	{name: "accounts", key: []string{"id"},
		cols: cols("id name email plan limits status time_zone metadata password_hash created_at:i updated_at:i")},
	{name: "sessions", key: []string{"token_hash"},
		cols: cols("token_hash:b account_id created_at:i expires_at:i revoked_at:i")},
	{name: "account_tokens", key: []string{"token_hash"},
		cols: cols("token_hash:b kind account_id created_at:i expires_at:i")},
	{name: "closed_emails", key: []string{"email_hash"},
		cols: cols("email_hash:b closed_at:i")},
	{name: "api_keys", key: []string{"id"},
		cols: cols("id account_id name type environment prefix hint hash:b prev_hash:b prev_until:i models scopes status metadata " +
			"created_at:i updated_at:i rotated_at:i last_used_at:i expires_at:i rate_limits")},
	{name: "credit_accounts", key: []string{"account_id"},
		cols: cols("account_id unit balance:m held:m seq:i version:i overdraft:m monthly_cap:m time_zone recharge_enabled:bool " +
			"recharge_threshold:m recharge_amount:m recharge_armed:bool recharges:i month_start:i month_end:i month_spent:m " +
			"lots:i hold_due:i opened_at:i updated_at:i key_limits")},
	{name: "credit_entries", key: []string{"account_id", "seq"},
		cols: cols("account_id seq:i id type amount:m balance_after:m reference description idem_key hold_id expires_at:i created_at:i")},
	{name: "credit_ops", key: []string{"key", "account_id"},
		cols: cols("key account_id kind:i32 fingerprint:b entry_seq:i hold_id")},
	{name: "credit_lots", key: []string{"id"},
		cols: cols("id account_id expires_at:i remaining:m")},
	{name: "credit_holds", key: []string{"id"},
		cols: cols("id account_id amount:m state reference idem_key created_at:i expires_at:i resolved_at:i actual:m charged:m " +
			"entry_id entry_seq:i settle_fp:b key_id key_epoch:i")},
	{name: "usage_records", key: []string{"account_id", "created_at", "id"},
		cols: cols("account_id created_at:i id key_id auth_source endpoint method model status_code:i32 response_time:i request_bytes:i " +
			"response_bytes:i prompt_tokens:i completion_tokens:i units:i cached_units:i upstream_cost:m cost:m error_type error_message metadata " +
			"cached_prompt_tokens:i cache_write_tokens:i reasoning_tokens:i price_from:i")},
	{name: "usage_rollups", key: []string{"account_id", "tz", "day", "model", "key_id", "endpoint"},
		cols: cols("account_id tz day model key_id endpoint requests:i errors:i prompt_tokens:i completion_tokens:i units:i cached_units:i " +
			"cached_prompt_tokens:i cache_write_tokens:i reasoning_tokens:i cost_units:i cost_atto:i"),
		dstCols: cols("account_id tz day model key_id endpoint requests:i errors:i prompt_tokens:i completion_tokens:i units:i cached_units:i " +
			"cached_prompt_tokens:i cache_write_tokens:i reasoning_tokens:i cost:m")},
	{name: "usage_ops", key: []string{"key", "account_id"},
		cols: cols("key account_id fingerprint:b record_id hold_id created_at:i")},
	{name: "audit_entries", key: []string{"seq"},
		cols:  cols("seq:i id account_id at:i actor_kind actor_id action target_type target_id changes client_ip user_agent"),
		after: `SELECT setval(pg_get_serial_sequence('audit_entries', 'seq'), coalesce(max(seq), 0) + 1, false) FROM audit_entries`},
	{name: "outbox_events", key: []string{"seq"},
		cols:  cols("seq:i id account_id type created_at:i data state:i attempts:i next_at:i lease_until:i claim done finished_at:i"),
		after: `SELECT setval(pg_get_serial_sequence('outbox_events', 'seq'), coalesce(max(seq), 0) + 1, false) FROM outbox_events`},
	{name: "webhook_endpoints", key: []string{"id"},
		cols: cols("id account_id url secret description created_at:i")},
	{name: "webhook_deliveries", key: []string{"seq"},
		cols:  cols("seq:i event_id account_id event_type endpoint_id attempt:i status_code:i error duration_ns:i at:i"),
		after: `SELECT setval(pg_get_serial_sequence('webhook_deliveries', 'seq'), coalesce(max(seq), 0) + 1, false) FROM webhook_deliveries`},
	{name: "alert_thresholds", key: []string{"account_id"},
		cols: cols("account_id low_balance")},
	{name: "key_expiry_notices", key: []string{"key_id"},
		cols: cols("key_id expires_at:i")},
	{name: "gw_orders", key: []string{"order_id"}, optional: true, ddl: gwOrdersDDL,
		cols: cols("order_id account_id amount_paise:i currency receipt status payment_id entry_id created_at:i paid_at:i")},
	{name: "gw_invoice_seq", key: []string{"fy"}, optional: true, ddl: gwSeqDDL,
		cols: cols("fy:i last:i")},
	{name: "gw_invoices", key: []string{"invoice_id"}, optional: true, ddl: gwInvoicesDDL,
		cols: cols("invoice_id number account_id order_id payment_id amount_paise:i customer_name customer_email created_at:i")},
}

// migrateOptions configure migrate.
type migrateOptions struct {
	Batch    int
	Progress func(table string, done, total int64) // after every batch
}

// migrateReport is the verification printed at the end.
type migrateReport struct {
	Source   string        `json:"source"`
	Resumed  bool          `json:"resumed"`
	Tables   []tableCheck  `json:"tables"`
	Accounts []balanceChk  `json:"accounts"`
	Rollups  []rollupCheck `json:"rollups"`
	OK       bool          `json:"ok"`
}

type tableCheck struct {
	Table  string `json:"table"`
	Source int64  `json:"source_rows"`
	Target int64  `json:"target_rows"`
	OK     bool   `json:"ok"`
}

type balanceChk struct {
	Account       string `json:"account"`
	SourceBalance string `json:"source_balance"`
	TargetBalance string `json:"target_balance"`
	SourceHeld    string `json:"source_held"`
	TargetHeld    string `json:"target_held"`
	SourceEntries string `json:"source_entries_sum"`
	TargetEntries string `json:"target_entries_sum"`
	OK            bool   `json:"ok"`
}

type rollupCheck struct {
	Account        string `json:"account"`
	SourceRequests int64  `json:"source_requests"`
	TargetRequests int64  `json:"target_requests"`
	SourceCost     string `json:"source_cost"`
	TargetCost     string `json:"target_cost"`
	OK             bool   `json:"ok"`
}

// runMigrate is `keyctl migrate -from-db FILE -to-postgres DSN`.
func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyctl migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from-db", "", "SQLite database file to copy (stop its servers first)")
	to := fs.String("to-postgres", "", "PostgreSQL DSN of an empty database or schema (search_path=…)")
	batch := fs.Int("batch", 1000, "rows per batch (each batch is one transaction)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *from == "" || *to == "" || fs.NArg() > 0 || *batch < 1 {
		fmt.Fprintln(stderr, "usage: keyctl migrate -from-db FILE -to-postgres DSN [-batch N]")
		return exitUsage
	}
	progress := func(table string, done, total int64) {
		fmt.Fprintf(stderr, "keyctl migrate: %s %d/%d\n", table, done, total)
	}
	rep, err := migrate(ctx, *from, *to, &migrateOptions{Batch: *batch, Progress: progress})
	if rep != nil {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	}
	if err != nil {
		fmt.Fprintln(stderr, "keyctl migrate:", err)
		return exitError
	}
	return exitOK
}

// migrate copies the SQLite database at from into the PostgreSQL database
// at to, or resumes an interrupted copy, then verifies it.
func migrate(ctx context.Context, from, to string, opts *migrateOptions) (*migrateReport, error) {
	o := migrateOptions{Batch: 1000}
	if opts != nil {
		o = *opts
	}
	if o.Batch < 1 {
		o.Batch = 1000
	}
	quiet := slog.New(slog.DiscardHandler)
	// Bring both schemas to this build's version (as the servers would).
	sst, err := sqlitestore.Open(ctx, from, &sqlitestore.Options{Logger: quiet})
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	_ = sst.Close()
	pst, err := pgstore.Open(ctx, to, &pgstore.Options{Logger: quiet})
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	_ = pst.Close()
	if sqlitestore.LatestVersion() != pgstore.LatestVersion() {
		return nil, fmt.Errorf("%w: SQLite %d, PostgreSQL %d", errSchemaMismatch, sqlitestore.LatestVersion(), pgstore.LatestVersion())
	}

	src, err := sql.Open("sqlite", "file:"+from+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	defer src.Close()
	src.SetMaxOpenConns(1)
	dst, err := pgxpool.New(ctx, to)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	defer dst.Close()

	m := &migration{src: src, dst: dst, o: o}
	if err := m.checkSourceSchema(ctx); err != nil {
		return nil, err
	}
	if m.fingerprint, err = m.sourceFingerprint(ctx); err != nil {
		return nil, err
	}
	rep := &migrateReport{Source: m.fingerprint}
	if rep.Resumed, err = m.claimTarget(ctx); err != nil {
		return nil, err
	}
	for i := range migrationTables {
		t := &migrationTables[i]
		present, err := m.srcHas(ctx, t.name)
		if err != nil {
			return nil, err
		}
		if !present {
			continue
		}
		if err := m.copyTable(ctx, t); err != nil {
			return nil, fmt.Errorf("copy %s: %w", t.name, err)
		}
		if t.after != "" {
			if _, err := dst.Exec(ctx, t.after); err != nil {
				return nil, fmt.Errorf("copy %s: target: %w", t.name, err)
			}
		}
	}
	if _, err := dst.Exec(ctx, `UPDATE keyctl_migration SET finished_at = $1 WHERE source = $2`, time.Now().UnixNano(), m.fingerprint); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if err := m.verify(ctx, rep); err != nil {
		return rep, err
	}
	if !rep.OK {
		return rep, errVerifyFailed
	}
	return rep, nil
}

// migration is one run's state.
type migration struct {
	src         *sql.DB
	dst         *pgxpool.Pool
	o           migrateOptions
	fingerprint string
}

// checkSourceSchema refuses a source with a table or a column this copy
// does not know: a newer schema must not be copied in part.
func (m *migration) checkSourceSchema(ctx context.Context) error {
	known := map[string]*table{}
	for i := range migrationTables {
		known[migrationTables[i].name] = &migrationTables[i]
	}
	rows, err := m.src.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table'
		AND name NOT LIKE 'sqlite_%' AND name <> 'schema_migrations' ORDER BY name`)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return fmt.Errorf("source: %w", err)
		}
		names = append(names, n)
	}
	rows.Close()
	for _, n := range names {
		t, ok := known[n]
		if !ok {
			return fmt.Errorf("%w: the source has a table %s this keyctl cannot copy", errSchemaMismatch, n)
		}
		crows, err := m.src.QueryContext(ctx, `SELECT name FROM pragma_table_info(?)`, n)
		if err != nil {
			return fmt.Errorf("source: %w", err)
		}
		for crows.Next() {
			var c string
			if err := crows.Scan(&c); err != nil {
				crows.Close()
				return fmt.Errorf("source: %w", err)
			}
			if !slices.ContainsFunc(t.cols, func(k column) bool { return k.name == c }) {
				crows.Close()
				return fmt.Errorf("%w: the source's %s has a column %s this keyctl cannot copy", errSchemaMismatch, n, c)
			}
		}
		crows.Close()
	}
	return nil
}

// sourceFingerprint names the source database: a hash of its migration
// records, whose times are the nanoseconds it was created and upgraded at.
func (m *migration) sourceFingerprint(ctx context.Context) (string, error) {
	rows, err := m.src.QueryContext(ctx, `SELECT version, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		return "", fmt.Errorf("source: %w", err)
	}
	defer rows.Close()
	h := sha256.New()
	for rows.Next() {
		var v, at int64
		if err := rows.Scan(&v, &at); err != nil {
			return "", fmt.Errorf("source: %w", err)
		}
		fmt.Fprintf(h, "%d:%d;", v, at)
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("source: %w", err)
	}
	return "sqlite:" + hex.EncodeToString(h.Sum(nil)[:12]), nil
}

// claimTarget checks that the target is empty, or holds only an earlier run
// of this migration (then resumed: true), and records the run.
func (m *migration) claimTarget(ctx context.Context) (resumed bool, err error) {
	if _, err := m.dst.Exec(ctx, `CREATE TABLE IF NOT EXISTS keyctl_migration (
		source text PRIMARY KEY, started_at bigint NOT NULL, finished_at bigint)`); err != nil {
		return false, fmt.Errorf("target: %w", err)
	}
	if _, err := m.dst.Exec(ctx, `CREATE TABLE IF NOT EXISTS keyctl_migration_progress (
		source text NOT NULL, tbl text NOT NULL, last_key text NOT NULL, rows bigint NOT NULL, PRIMARY KEY (source, tbl))`); err != nil {
		return false, fmt.Errorf("target: %w", err)
	}
	var others, mine int
	if err := m.dst.QueryRow(ctx, `SELECT count(*) FILTER (WHERE source <> $1), count(*) FILTER (WHERE source = $1) FROM keyctl_migration`,
		m.fingerprint).Scan(&others, &mine); err != nil {
		return false, fmt.Errorf("target: %w", err)
	}
	if others > 0 {
		return false, fmt.Errorf("%w: it holds a migration of another source", errTargetNotEmpty)
	}
	if mine > 0 {
		return true, nil
	}
	for _, t := range migrationTables {
		n, err := m.dstCount(ctx, t.name)
		if err != nil {
			return false, err
		}
		if n > 0 {
			return false, fmt.Errorf("%w: %s has %d rows", errTargetNotEmpty, t.name, n)
		}
	}
	if _, err := m.dst.Exec(ctx, `INSERT INTO keyctl_migration (source, started_at) VALUES ($1, $2)`, m.fingerprint, time.Now().UnixNano()); err != nil {
		return false, fmt.Errorf("target: %w", err)
	}
	return false, nil
}

// srcHas reports whether the source has a table.
func (m *migration) srcHas(ctx context.Context, name string) (bool, error) {
	var n int
	if err := m.src.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, name).Scan(&n); err != nil {
		return false, fmt.Errorf("source: %w", err)
	}
	return n > 0, nil
}

// dstCount counts a target table's rows (0 if it does not exist).
func (m *migration) dstCount(ctx context.Context, name string) (int64, error) {
	var reg *string
	if err := m.dst.QueryRow(ctx, `SELECT to_regclass($1)::text`, name).Scan(&reg); err != nil {
		return 0, fmt.Errorf("target: %w", err)
	}
	if reg == nil {
		return 0, nil
	}
	var n int64
	if err := m.dst.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{name}.Sanitize()).Scan(&n); err != nil {
		return 0, fmt.Errorf("target: %w", err)
	}
	return n, nil
}

// copyTable copies one table from where an earlier run stopped.
func (m *migration) copyTable(ctx context.Context, t *table) error {
	if t.ddl != "" {
		for stmt := range strings.SplitSeq(t.ddl, ";") {
			if _, err := m.dst.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("target: %w", err)
			}
		}
	}
	var total int64
	if err := m.src.QueryRowContext(ctx, `SELECT count(*) FROM `+t.name).Scan(&total); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	var lastTxt string
	var done int64
	err := m.dst.QueryRow(ctx, `SELECT last_key, rows FROM keyctl_migration_progress WHERE source = $1 AND tbl = $2`,
		m.fingerprint, t.name).Scan(&lastTxt, &done)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("target: %w", err)
	}
	var last []any
	if lastTxt != "" {
		if last, err = decodeKey(lastTxt); err != nil {
			return fmt.Errorf("progress of %s: %w", t.name, err)
		}
	}
	names := make([]string, len(t.cols))
	for i, c := range t.cols {
		names[i] = c.name
	}
	selectList := strings.Join(names, ", ")
	keyList := strings.Join(t.key, ", ")
	keyIdx := make([]int, len(t.key))
	for i, k := range t.key {
		for j, c := range t.cols {
			if c.name == k {
				keyIdx[i] = j
			}
		}
	}
	dstCols := t.dstCols
	if dstCols == nil {
		dstCols = t.cols
	}
	for {
		q := `SELECT ` + selectList + ` FROM ` + t.name
		var args []any
		if last != nil {
			ph := strings.TrimSuffix(strings.Repeat("?, ", len(last)), ", ")
			q += ` WHERE (` + keyList + `) > (` + ph + `)`
			args = last
		}
		q += ` ORDER BY ` + keyList + ` LIMIT ?`
		args = append(args, m.o.Batch)
		batch, err := m.readBatch(ctx, q, args, len(t.cols))
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			return nil
		}
		rows := make([][]any, len(batch))
		for i, r := range batch {
			if rows[i], err = convertRow(t, r); err != nil {
				return err
			}
		}
		next := make([]any, len(keyIdx))
		for i, j := range keyIdx {
			next[i] = batch[len(batch)-1][j]
		}
		nextTxt, err := encodeKey(next)
		if err != nil {
			return err
		}
		done += int64(len(batch))
		if err := m.writeBatch(ctx, t.name, dstCols, rows, nextTxt, done); err != nil {
			return err
		}
		last = next
		if m.o.Progress != nil {
			m.o.Progress(t.name, done, total)
		}
		if len(batch) < m.o.Batch {
			return nil
		}
	}
}

// readBatch reads one batch of raw SQLite values.
func (m *migration) readBatch(ctx context.Context, q string, args []any, n int) ([][]any, error) {
	rows, err := m.src.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	defer rows.Close()
	var out [][]any
	for rows.Next() {
		vals := make([]any, n)
		ptrs := make([]any, n)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
		out = append(out, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	return out, nil
}

// convertRow converts one row's SQLite values to the target's.
func convertRow(t *table, r []any) ([]any, error) {
	out := make([]any, 0, len(r))
	for i, c := range t.cols {
		v := r[i]
		if v == nil {
			out = append(out, nil)
			continue
		}
		switch c.kind {
		case kText:
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("%s.%s: want text, got %T", t.name, c.name, v)
			}
			out = append(out, s)
		case kInt, kInt32:
			n, ok := v.(int64)
			if !ok {
				return nil, fmt.Errorf("%s.%s: want an integer, got %T", t.name, c.name, v)
			}
			if c.kind == kInt32 {
				out = append(out, int32(n))
			} else {
				out = append(out, n)
			}
		case kMoney:
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("%s.%s: want decimal text, got %T", t.name, c.name, v)
			}
			d, err := decimal.NewFromString(s)
			if err != nil {
				return nil, fmt.Errorf("%s.%s: %q: %w", t.name, c.name, s, err)
			}
			out = append(out, d.String())
		case kBlob:
			b, ok := v.([]byte)
			if !ok {
				return nil, fmt.Errorf("%s.%s: want bytes, got %T", t.name, c.name, v)
			}
			out = append(out, b)
		case kBool:
			n, ok := v.(int64)
			if !ok || (n != 0 && n != 1) {
				return nil, fmt.Errorf("%s.%s: want 0 or 1, got %v", t.name, c.name, v)
			}
			out = append(out, n == 1)
		}
	}
	if t.name == "usage_rollups" { // cost_units + cost_atto → cost
		units, atto := out[len(out)-2].(int64), out[len(out)-1].(int64)
		cost := decimal.NewFromInt(units).Add(decimal.New(atto, -18))
		out = append(out[:len(out)-2], cost.String())
	}
	return out, nil
}

// castOf is the PostgreSQL cast of a parameter of kind k.
func castOf(k colKind) string {
	switch k {
	case kInt:
		return "::bigint"
	case kInt32:
		return "::integer"
	case kMoney:
		return "::numeric"
	case kBlob:
		return "::bytea"
	case kBool:
		return "::boolean"
	}
	return "::text"
}

// writeBatch inserts rows and records the progress in one transaction.
func (m *migration) writeBatch(ctx context.Context, name string, dstCols []column, rows [][]any, lastKey string, done int64) error {
	names := make([]string, len(dstCols))
	for i, c := range dstCols {
		names[i] = pgx.Identifier{c.name}.Sanitize()
	}
	var sb strings.Builder
	sb.WriteString(`INSERT INTO ` + pgx.Identifier{name}.Sanitize() + ` (` + strings.Join(names, ", ") + `) VALUES `)
	args := make([]any, 0, len(rows)*len(dstCols))
	for i, r := range rows {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteByte('(')
		for j, c := range dstCols {
			if j > 0 {
				sb.WriteString(", ")
			}
			args = append(args, r[j])
			fmt.Fprintf(&sb, "$%d%s", len(args), castOf(c.kind))
		}
		sb.WriteByte(')')
	}
	tx, err := m.dst.Begin(ctx)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, sb.String(), args...); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO keyctl_migration_progress (source, tbl, last_key, rows) VALUES ($1, $2, $3, $4)
		ON CONFLICT (source, tbl) DO UPDATE SET last_key = excluded.last_key, rows = excluded.rows`,
		m.fingerprint, name, lastKey, done); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	return nil
}

// encodeKey and decodeKey keep a primary key's values (text, integers,
// bytes) as JSON, bytes in base64.
func encodeKey(vals []any) (string, error) {
	out := make([]map[string]any, len(vals))
	for i, v := range vals {
		switch x := v.(type) {
		case string:
			out[i] = map[string]any{"s": x}
		case int64:
			out[i] = map[string]any{"i": x}
		case []byte:
			out[i] = map[string]any{"b": base64.StdEncoding.EncodeToString(x)}
		default:
			return "", fmt.Errorf("key value of type %T", v)
		}
	}
	b, err := json.Marshal(out)
	return string(b), err
}

func decodeKey(txt string) ([]any, error) {
	var in []struct {
		S *string `json:"s"`
		I *int64  `json:"i"`
		B *string `json:"b"`
	}
	if err := json.Unmarshal([]byte(txt), &in); err != nil {
		return nil, err
	}
	out := make([]any, len(in))
	for i, v := range in {
		switch {
		case v.S != nil:
			out[i] = *v.S
		case v.I != nil:
			out[i] = *v.I
		case v.B != nil:
			b, err := base64.StdEncoding.DecodeString(*v.B)
			if err != nil {
				return nil, err
			}
			out[i] = b
		default:
			return nil, errors.New("empty key value")
		}
	}
	return out, nil
}

// verify compares source and target: row counts, balances and rollups.
func (m *migration) verify(ctx context.Context, rep *migrateReport) error {
	rep.OK = true
	for _, t := range migrationTables {
		present, err := m.srcHas(ctx, t.name)
		if err != nil {
			return err
		}
		if !present {
			continue
		}
		var sn int64
		if err := m.src.QueryRowContext(ctx, `SELECT count(*) FROM `+t.name).Scan(&sn); err != nil {
			return fmt.Errorf("source: %w", err)
		}
		dn, err := m.dstCount(ctx, t.name)
		if err != nil {
			return err
		}
		c := tableCheck{Table: t.name, Source: sn, Target: dn, OK: sn == dn}
		rep.OK = rep.OK && c.OK
		rep.Tables = append(rep.Tables, c)
	}
	// Balances: the stored balance and held amount, and the sum of the
	// entries, per account, summed exactly in Go on the SQLite side.
	srcAcct := map[string][3]decimal.Decimal{}
	rows, err := m.src.QueryContext(ctx, `SELECT account_id, balance, held FROM credit_accounts ORDER BY account_id`)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	var order []string
	for rows.Next() {
		var id, bal, held string
		if err := rows.Scan(&id, &bal, &held); err != nil {
			rows.Close()
			return fmt.Errorf("source: %w", err)
		}
		order = append(order, id)
		srcAcct[id] = [3]decimal.Decimal{decimal.RequireFromString(bal), decimal.RequireFromString(held)}
	}
	rows.Close()
	erows, err := m.src.QueryContext(ctx, `SELECT account_id, amount FROM credit_entries`)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	for erows.Next() {
		var id, amt string
		if err := erows.Scan(&id, &amt); err != nil {
			erows.Close()
			return fmt.Errorf("source: %w", err)
		}
		v := srcAcct[id]
		v[2] = v[2].Add(decimal.RequireFromString(amt))
		srcAcct[id] = v
	}
	erows.Close()
	for _, id := range order {
		var bal, held, sum string
		err := m.dst.QueryRow(ctx, `SELECT a.balance::text, a.held::text,
			(SELECT coalesce(sum(amount), 0)::text FROM credit_entries e WHERE e.account_id = a.account_id)
			FROM credit_accounts a WHERE a.account_id = $1`, id).Scan(&bal, &held, &sum)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("target: %w", err)
		}
		s := srcAcct[id]
		c := balanceChk{Account: id, SourceBalance: s[0].String(), SourceHeld: s[1].String(), SourceEntries: s[2].String(),
			TargetBalance: bal, TargetHeld: held, TargetEntries: sum}
		c.OK = err == nil && decEq(bal, s[0]) && decEq(held, s[1]) && decEq(sum, s[2])
		if c.TargetBalance != "" {
			c.TargetBalance, c.TargetHeld, c.TargetEntries = norm(bal), norm(held), norm(sum)
		}
		rep.OK = rep.OK && c.OK
		rep.Accounts = append(rep.Accounts, c)
	}
	// Rollups: requests and cost per account.
	type roll struct {
		n    int64
		cost decimal.Decimal
	}
	srcRoll := map[string]roll{}
	rrows, err := m.src.QueryContext(ctx, `SELECT account_id, requests, cost_units, cost_atto FROM usage_rollups`)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	for rrows.Next() {
		var id string
		var n, units, atto int64
		if err := rrows.Scan(&id, &n, &units, &atto); err != nil {
			rrows.Close()
			return fmt.Errorf("source: %w", err)
		}
		r := srcRoll[id]
		r.n += n
		r.cost = r.cost.Add(decimal.NewFromInt(units)).Add(decimal.New(atto, -18))
		srcRoll[id] = r
	}
	rrows.Close()
	ids := make([]string, 0, len(srcRoll))
	for id := range srcRoll {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		var n int64
		var cost string
		if err := m.dst.QueryRow(ctx, `SELECT coalesce(sum(requests), 0), coalesce(sum(cost), 0)::text FROM usage_rollups WHERE account_id = $1`,
			id).Scan(&n, &cost); err != nil {
			return fmt.Errorf("target: %w", err)
		}
		s := srcRoll[id]
		c := rollupCheck{Account: id, SourceRequests: s.n, TargetRequests: n, SourceCost: s.cost.String(), TargetCost: norm(cost)}
		c.OK = n == s.n && decEq(cost, s.cost)
		rep.OK = rep.OK && c.OK
		rep.Rollups = append(rep.Rollups, c)
	}
	return nil
}

func decEq(txt string, d decimal.Decimal) bool {
	v, err := decimal.NewFromString(txt)
	return err == nil && v.Equal(d)
}

// norm prints a NUMERIC's text the way shopspring/decimal does.
func norm(txt string) string {
	v, err := decimal.NewFromString(txt)
	if err != nil {
		return txt
	}
	return v.String()
}
