-- Usage metering (package usage).
--
-- usage_records holds the raw request log; usage_rollups its daily totals
-- per account × time zone × local day × model × key × endpoint, maintained
-- in the same transaction as each record (and its ledger charge), so that
-- summaries read a few rows per day whatever the record count. Record costs
-- are exact decimal TEXT (credits.Amount.String). A rollup's cost is exact
-- too, as whole units plus attounits (10^-18): spent amounts carry at most
-- 18 decimals, so one UPSERT adds a batch's cost with integer arithmetic
-- and a carry, without reading the row first; readers sum in Go. Times are
-- unix nanoseconds (UTC). usage_ops keeps the meter idempotency keys;
-- retention deletes records only, so keys and rollups outlive them.
--
-- Records are clustered by (account, created_at, id): the newest-first list
-- and range scans of one account read one contiguous range, and an insert
-- touches one B-tree.
CREATE TABLE usage_records (
    account_id        TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    id                TEXT NOT NULL,
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
    metadata          TEXT,
    PRIMARY KEY (account_id, created_at, id)
) STRICT, WITHOUT ROWID;

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
    cost_units        INTEGER NOT NULL,
    cost_atto         INTEGER NOT NULL,
    PRIMARY KEY (account_id, tz, day, model, key_id, endpoint)
) STRICT, WITHOUT ROWID;

-- Keyed like credit_ops, by key first: keys that are issued in order (a
-- request counter, UUIDv7) land on the same few pages.
CREATE TABLE usage_ops (
    key         TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    record_id   TEXT NOT NULL,
    hold_id     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (key, account_id)
) STRICT, WITHOUT ROWID;
