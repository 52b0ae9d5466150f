-- Events (issue 21): the transactional outbox, webhook endpoints, alert
-- thresholds, the delivery log and the expiring-key notices. Times are
-- unix nanoseconds from the Go clock. An event row is written in the same
-- transaction as the change that causes it; the dispatcher claims the
-- oldest pending event of each account (state 0), leases it (lease_until,
-- claim) and finishes it as delivered (1) or dead (2).
CREATE TABLE outbox_events (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          text NOT NULL UNIQUE,
    account_id  text COLLATE "C" NOT NULL,
    type        text NOT NULL,
    created_at  bigint NOT NULL,
    data        text NOT NULL,
    state       smallint NOT NULL DEFAULT 0,
    attempts    integer NOT NULL DEFAULT 0,
    next_at     bigint NOT NULL DEFAULT 0,
    lease_until bigint NOT NULL DEFAULT 0,
    claim       text NOT NULL DEFAULT '',
    done        text NOT NULL DEFAULT '',
    finished_at bigint NOT NULL DEFAULT 0
);
CREATE INDEX outbox_events_pending ON outbox_events (account_id, seq) WHERE state = 0;
CREATE INDEX outbox_events_due ON outbox_events (seq) WHERE state = 0;
CREATE INDEX outbox_events_finished ON outbox_events (finished_at) WHERE state <> 0;

CREATE TABLE webhook_endpoints (
    id          text COLLATE "C" PRIMARY KEY,
    account_id  text COLLATE "C" NOT NULL REFERENCES accounts (id),
    url         text NOT NULL,
    secret      text NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at  bigint NOT NULL
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id, created_at);

CREATE TABLE webhook_deliveries (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text NOT NULL,
    account_id  text COLLATE "C" NOT NULL,
    event_type  text NOT NULL,
    endpoint_id text NOT NULL,
    attempt     bigint NOT NULL,
    status_code bigint NOT NULL,
    error       text NOT NULL,
    duration_ns bigint NOT NULL,
    at          bigint NOT NULL
);
CREATE INDEX webhook_deliveries_account ON webhook_deliveries (account_id, seq);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (at);

CREATE TABLE alert_thresholds (
    account_id  text COLLATE "C" PRIMARY KEY REFERENCES accounts (id),
    low_balance text NOT NULL
);

CREATE TABLE key_expiry_notices (
    key_id     text COLLATE "C" PRIMARY KEY,
    expires_at bigint NOT NULL
);
CREATE INDEX api_keys_expiring ON api_keys (expires_at) WHERE expires_at IS NOT NULL AND status = 'active';
