-- Events (issue 21): the transactional outbox, webhook endpoints, alert
-- thresholds, the delivery log and the expiring-key notices. Times are
-- unix nanoseconds from the Go clock. An event row is written in the same
-- transaction as the change that causes it; the dispatcher claims the
-- oldest pending event of each account (state 0), leases it (lease_until,
-- claim) and finishes it as delivered (1) or dead (2).
CREATE TABLE outbox_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    account_id  TEXT NOT NULL,
    type        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    data        TEXT NOT NULL,
    state       INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER NOT NULL DEFAULT 0,
    claim       TEXT NOT NULL DEFAULT '',
    done        TEXT NOT NULL DEFAULT '',
    finished_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_events_pending ON outbox_events (account_id, seq) WHERE state = 0;
CREATE INDEX outbox_events_finished ON outbox_events (finished_at) WHERE state <> 0;

CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id, created_at);

CREATE TABLE webhook_deliveries (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    error       TEXT NOT NULL,
    duration_ns INTEGER NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_account ON webhook_deliveries (account_id, seq);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (at);

CREATE TABLE alert_thresholds (
    account_id  TEXT PRIMARY KEY REFERENCES accounts (id),
    low_balance TEXT NOT NULL
);

CREATE TABLE key_expiry_notices (
    key_id     TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX api_keys_expiring ON api_keys (expires_at) WHERE expires_at IS NOT NULL AND status = 'active';
