-- API keys. Only SHA-256 hashes of secrets are stored: hash is the current
-- secret's, prev_hash the previous one of a rotated key, valid until
-- prev_until (both NULL when there is none). Times are unix nanoseconds
-- (UTC), NULL means "not set"; models and scopes are JSON arrays, NULL
-- meaning "all". 'expired' is never stored: it is derived from expires_at.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    name         TEXT NOT NULL,
    type         TEXT NOT NULL,
    environment  TEXT NOT NULL CHECK (environment IN ('live', 'test')),
    prefix       TEXT NOT NULL,
    hint         TEXT NOT NULL,
    hash         BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    prev_hash    BLOB UNIQUE CHECK (length(prev_hash) = 32),
    prev_until   INTEGER,
    models       TEXT,
    scopes       TEXT,
    status       TEXT NOT NULL CHECK (status IN ('active', 'revoked', 'disabled')),
    metadata     TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    rotated_at   INTEGER,
    last_used_at INTEGER,
    expires_at   INTEGER,
    CHECK ((prev_hash IS NULL) = (prev_until IS NULL))
) STRICT;

CREATE INDEX api_keys_account ON api_keys (account_id, id);
