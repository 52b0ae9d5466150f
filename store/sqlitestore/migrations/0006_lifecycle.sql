-- One-time tokens (email verification, password reset), stored as the
-- SHA-256 of the token, and the email hashes of closed accounts (so that
-- signing up again with a closed account's address earns no second
-- signup grant). Times are unix nanoseconds (UTC).
CREATE TABLE account_tokens (
    token_hash BLOB PRIMARY KEY,
    kind       TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX account_tokens_account ON account_tokens (account_id);

CREATE TABLE closed_emails (
    email_hash BLOB PRIMARY KEY,
    closed_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
