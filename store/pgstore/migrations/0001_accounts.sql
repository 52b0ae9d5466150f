-- Accounts and management sessions. Times are bigint unix nanoseconds
-- (UTC), written from the Go clock the services pass in, never SQL now().
-- JSON columns hold small maps as text and NULL means "not set".
-- Identifiers use the "C" collation: IDs sort and compare byte-wise, which
-- is their creation order, whatever the database's locale.
CREATE TABLE accounts (
    id            text COLLATE "C" PRIMARY KEY,
    name          text NOT NULL,
    email         text NOT NULL,
    plan          text NOT NULL,
    limits        text,
    status        text NOT NULL CHECK (status IN ('active', 'suspended', 'closed')),
    time_zone     text NOT NULL,
    metadata      text,
    password_hash text NOT NULL DEFAULT '',
    created_at    bigint NOT NULL,
    updated_at    bigint NOT NULL
);

CREATE UNIQUE INDEX accounts_email ON accounts (lower(email));

CREATE TABLE sessions (
    token_hash bytea PRIMARY KEY,
    account_id text COLLATE "C" NOT NULL REFERENCES accounts (id),
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    revoked_at bigint
);

CREATE INDEX sessions_account ON sessions (account_id);
CREATE INDEX sessions_expires ON sessions (expires_at);
