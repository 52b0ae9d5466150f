-- Usage metering (package usage).
--
-- usage_records holds the raw request log; usage_rollups its daily totals
-- per account × time zone × local day × model × key × endpoint, maintained
-- in the same transaction as each record (and its ledger charge), so that
-- summaries read a few rows per day whatever the record count. Costs are
-- exact decimal TEXT (credits.Amount.String), summed in Go, never in SQL.
-- Times are unix nanoseconds (UTC). usage_ops keeps the meter idempotency
-- keys; retention deletes records only, so keys and rollups outlive them.
CREATE TABLE usage_records (
    id                TEXT NOT NULL,
    account_id        TEXT NOT NULL,
    key_id            TEXT NOT NULL,
    auth_source       TEXT NOT NULL,
    endpoint          TEXT NOT NULL,
    method            TEXT NOT NULL,
    model             TEXT NOT NULL,
    status_code       INTEGER NOT NULL,
    response_time     INTEGER NOT NULL,
    request_bytes     INTEGER NOT NULL,
    response_bytes    INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    units             INTEGER NOT NULL,
    cached_units      INTEGER NOT NULL,
    upstream_cost     TEXT NOT NULL,
    cost              TEXT NOT NULL,
    error_type        TEXT NOT NULL,
    error_message     TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    metadata          TEXT,
    PRIMARY KEY (account_id, id)
) STRICT;

-- Newest-first listing and range scans per account.
CREATE INDEX usage_records_account_time ON usage_records (account_id, created_at, id);

CREATE TABLE usage_rollups (
    account_id        TEXT NOT NULL,
    tz                TEXT NOT NULL,
    day               TEXT NOT NULL,
    model             TEXT NOT NULL,
    key_id            TEXT NOT NULL,
    endpoint          TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    units             INTEGER NOT NULL,
    cached_units      INTEGER NOT NULL,
    cost              TEXT NOT NULL,
    PRIMARY KEY (account_id, tz, day, model, key_id, endpoint)
) STRICT, WITHOUT ROWID;

CREATE TABLE usage_ops (
    account_id  TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    record_id   TEXT NOT NULL,
    hold_id     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (account_id, key)
) STRICT, WITHOUT ROWID;
