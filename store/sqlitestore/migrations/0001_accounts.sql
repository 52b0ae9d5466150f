-- Accounts and management sessions. Times are unix nanoseconds (UTC);
-- JSON columns hold small maps and NULL means "not set".
CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
    plan          TEXT NOT NULL,
    limits        TEXT,
    status        TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'closed')),
    time_zone     TEXT NOT NULL,
    metadata      TEXT,
    password_hash TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    token_hash BLOB PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT, WITHOUT ROWID;

CREATE INDEX sessions_account ON sessions (account_id);
CREATE INDEX sessions_expires ON sessions (expires_at);
