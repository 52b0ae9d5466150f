-- Usage metering (package usage).
--
-- usage_records holds the raw request log; usage_rollups its daily totals
-- per account × time zone × local day × model × key × endpoint, upserted
-- (INSERT … ON CONFLICT DO UPDATE) in the same transaction as each batch of
-- records and their ledger charges, so that summaries read a few rows per
-- day whatever the record count. Costs are exact NUMERIC. Times are unix
-- nanoseconds (UTC). usage_ops keeps the meter idempotency keys; retention
-- deletes records only, so keys and rollups outlive them. There is no index
-- by time alone: it would cost every insert, and retention is a daily
-- DELETE that may scan.
CREATE TABLE usage_records (
    account_id        text COLLATE "C" NOT NULL,
    created_at        bigint NOT NULL,
    id                text COLLATE "C" NOT NULL,
    key_id            text NOT NULL,
    auth_source       text NOT NULL,
    endpoint          text NOT NULL,
    method            text NOT NULL,
    model             text NOT NULL,
    status_code       integer NOT NULL,
    response_time     bigint NOT NULL,
    request_bytes     bigint NOT NULL,
    response_bytes    bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    units             bigint NOT NULL,
    cached_units      bigint NOT NULL,
    upstream_cost     numeric NOT NULL,
    cost              numeric NOT NULL,
    error_type        text NOT NULL,
    error_message     text NOT NULL,
    metadata          text,
    PRIMARY KEY (account_id, created_at, id)
);

CREATE TABLE usage_rollups (
    account_id        text COLLATE "C" NOT NULL,
    tz                text COLLATE "C" NOT NULL,
    day               text COLLATE "C" NOT NULL,
    model             text COLLATE "C" NOT NULL,
    key_id            text COLLATE "C" NOT NULL,
    endpoint          text COLLATE "C" NOT NULL,
    requests          bigint NOT NULL,
    errors            bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    units             bigint NOT NULL,
    cached_units      bigint NOT NULL,
    cost              numeric NOT NULL,
    PRIMARY KEY (account_id, tz, day, model, key_id, endpoint)
) WITH (fillfactor = 70); -- every batch updates its rows: room for HOT updates

CREATE TABLE usage_ops (
    key         text COLLATE "C" NOT NULL,
    account_id  text COLLATE "C" NOT NULL,
    fingerprint bytea NOT NULL,
    record_id   text NOT NULL,
    hold_id     text NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (key, account_id)
);
