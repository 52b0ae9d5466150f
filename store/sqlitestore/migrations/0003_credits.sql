-- Prepaid-credit ledger (package credits).
--
-- Money is exact decimal TEXT in plain notation, as credits.Amount.String
-- writes it ("50", "-0.0000125"): never REAL, and never summed in SQL; all
-- arithmetic happens in Go on shopspring/decimal. Times are unix nanoseconds
-- (UTC). An account's running totals live in credit_accounts and change in
-- the same transaction as the entries; every write transaction is BEGIN
-- IMMEDIATE (one writer per file, across processes) and the account row is
-- updated only if its version is the one read in that transaction.
--
-- Value checks (entry types, hold states) live in package credits; CHECK
-- constraints here would cost a few microseconds per insert on the hot
-- path.
CREATE TABLE credit_accounts (
    account_id         TEXT PRIMARY KEY,
    unit               TEXT NOT NULL,
    balance            TEXT NOT NULL,
    held               TEXT NOT NULL,
    seq                INTEGER NOT NULL,
    version            INTEGER NOT NULL,
    overdraft          TEXT NOT NULL,
    monthly_cap        TEXT NOT NULL,
    time_zone          TEXT NOT NULL,
    recharge_enabled   INTEGER NOT NULL,
    recharge_threshold TEXT NOT NULL,
    recharge_amount    TEXT NOT NULL,
    recharge_armed     INTEGER NOT NULL,
    recharges          INTEGER NOT NULL,
    month_start        INTEGER NOT NULL,
    month_end          INTEGER NOT NULL,
    month_spent        TEXT NOT NULL,
    -- lots counts the live rows of credit_lots; hold_due is a lower bound
    -- of the earliest deadline of an active hold (0: none). They let a
    -- transaction skip those queries for accounts that have none.
    lots               INTEGER NOT NULL DEFAULT 0,
    hold_due           INTEGER NOT NULL DEFAULT 0,
    opened_at          INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Append-only: the triggers refuse any change or removal of an entry.
CREATE TABLE credit_entries (
    account_id    TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    id            TEXT NOT NULL,
    type          TEXT NOT NULL, -- grant, purchase, debit, refund, adjustment, expiry
    amount        TEXT NOT NULL,
    balance_after TEXT NOT NULL,
    reference     TEXT NOT NULL,
    description   TEXT NOT NULL,
    idem_key      TEXT NOT NULL,
    hold_id       TEXT NOT NULL,
    expires_at    INTEGER,
    created_at    INTEGER NOT NULL,
    UNIQUE (account_id, seq)
) STRICT;

CREATE TRIGGER credit_entries_no_update BEFORE UPDATE ON credit_entries
BEGIN SELECT RAISE(ABORT, 'credit_entries is append-only'); END;
CREATE TRIGGER credit_entries_no_delete BEFORE DELETE ON credit_entries
BEGIN SELECT RAISE(ABORT, 'credit_entries is append-only'); END;

-- Idempotency keys, scoped per account, with the request's SHA-256
-- fingerprint and a pointer to the first result. The key comes first in
-- the primary key: hosts' keys are usually time-ordered (usage IDs, UUIDv7),
-- so one group commit appends to one page instead of one page per account.
CREATE TABLE credit_ops (
    key         TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    kind        INTEGER NOT NULL,
    fingerprint BLOB NOT NULL,
    entry_seq   INTEGER NOT NULL,
    hold_id     TEXT NOT NULL,
    PRIMARY KEY (key, account_id)
) STRICT, WITHOUT ROWID;

-- Unspent remainders of expiring grants; a lot is deleted when it is spent
-- or expired (the grant and expiry entries keep the history).
CREATE TABLE credit_lots (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    remaining  TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX credit_lots_account ON credit_lots (account_id, expires_at, id);
CREATE INDEX credit_lots_expires ON credit_lots (expires_at);

CREATE TABLE credit_holds (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    amount      TEXT NOT NULL,
    state       TEXT NOT NULL, -- active, settled, released, expired
    reference   TEXT NOT NULL,
    idem_key    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    resolved_at INTEGER,
    actual      TEXT NOT NULL,
    charged     TEXT NOT NULL,
    entry_id    TEXT NOT NULL,
    entry_seq   INTEGER NOT NULL,
    settle_fp   BLOB
) STRICT, WITHOUT ROWID;

CREATE INDEX credit_holds_due ON credit_holds (account_id, expires_at) WHERE state = 'active';
CREATE INDEX credit_holds_active ON credit_holds (expires_at) WHERE state = 'active';
