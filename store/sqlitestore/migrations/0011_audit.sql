-- The audit log (issue 21): one row per management action. seq orders the
-- appends and is the cursor of an account's pages; at is Unix nanoseconds.
CREATE TABLE audit_entries (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    account_id  TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    actor_kind  TEXT    NOT NULL,
    actor_id    TEXT    NOT NULL DEFAULT '',
    action      TEXT    NOT NULL,
    target_type TEXT    NOT NULL DEFAULT '',
    target_id   TEXT    NOT NULL DEFAULT '',
    changes     TEXT,
    client_ip   TEXT    NOT NULL DEFAULT '',
    user_agent  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_entries_account_seq ON audit_entries (account_id, seq);
CREATE INDEX audit_entries_at ON audit_entries (at, seq);
