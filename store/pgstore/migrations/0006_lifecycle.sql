-- One-time tokens (email verification, password reset), stored as the
-- SHA-256 of the token, and the email hashes of closed accounts (so that
-- signing up again with a closed account's address earns no second
-- signup grant). Times are bigint unix nanoseconds from the Go clock.
CREATE TABLE account_tokens (
    token_hash bytea PRIMARY KEY,
    kind       text NOT NULL,
    account_id text COLLATE "C" NOT NULL REFERENCES accounts (id),
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);

CREATE INDEX account_tokens_account ON account_tokens (account_id);

CREATE TABLE closed_emails (
    email_hash bytea PRIMARY KEY,
    closed_at  bigint NOT NULL
);
