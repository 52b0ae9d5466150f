-- API keys. Only SHA-256 hashes of secrets are stored: hash is the current
-- secret's, prev_hash the previous one of a rotated key, valid until
-- prev_until (both NULL when there is none). Times are unix nanoseconds
-- (UTC), NULL means "not set"; models and scopes are JSON arrays as text,
-- NULL meaning "all". 'expired' is never stored: it is derived from
-- expires_at.
CREATE TABLE api_keys (
    id           text COLLATE "C" PRIMARY KEY,
    account_id   text COLLATE "C" NOT NULL REFERENCES accounts (id),
    name         text NOT NULL,
    type         text NOT NULL,
    environment  text NOT NULL CHECK (environment IN ('live', 'test')),
    prefix       text NOT NULL,
    hint         text NOT NULL,
    hash         bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    prev_hash    bytea UNIQUE CHECK (length(prev_hash) = 32),
    prev_until   bigint,
    models       text,
    scopes       text,
    status       text NOT NULL CHECK (status IN ('active', 'revoked', 'disabled')),
    metadata     text,
    created_at   bigint NOT NULL,
    updated_at   bigint NOT NULL,
    rotated_at   bigint,
    last_used_at bigint,
    expires_at   bigint,
    CHECK ((prev_hash IS NULL) = (prev_until IS NULL))
) WITH (fillfactor = 80); -- last_used_at is rewritten once a minute per used key

CREATE INDEX api_keys_account ON api_keys (account_id, id);
