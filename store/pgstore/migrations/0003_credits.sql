-- Prepaid-credit ledger (package credits).
--
-- Money is NUMERIC without a declared scale: exact decimals of any
-- precision (sub-paisa per-token costs included), written from and read
-- into shopspring/decimal as text, never float. The ledger rules run in Go
-- (credits.ApplySpend, credits.ApplyCredit); the database keeps the
-- results. Times are bigint unix nanoseconds (UTC) from the Go clock.
--
-- An account's running totals live in credit_accounts and change in the
-- same transaction as its entries. Every writer locks the account row with
-- SELECT … FOR UPDATE (several accounts in account_id order) before it
-- reads anything else of the account, and updates the row only at the
-- version it read, so writers in any number of processes serialise per
-- account and no interleaving can overspend.
CREATE TABLE credit_accounts (
    account_id         text COLLATE "C" PRIMARY KEY,
    unit               text NOT NULL,
    balance            numeric NOT NULL,
    held               numeric NOT NULL,
    seq                bigint NOT NULL,
    version            bigint NOT NULL,
    overdraft          numeric NOT NULL,
    monthly_cap        numeric NOT NULL,
    time_zone          text NOT NULL,
    recharge_enabled   boolean NOT NULL,
    recharge_threshold numeric NOT NULL,
    recharge_amount    numeric NOT NULL,
    recharge_armed     boolean NOT NULL,
    recharges          bigint NOT NULL,
    month_start        bigint NOT NULL,
    month_end          bigint NOT NULL,
    month_spent        numeric NOT NULL,
    -- lots counts the live rows of credit_lots; hold_due is a lower bound
    -- of the earliest deadline of an active hold (0: none). They let a
    -- transaction skip those queries for accounts that have none.
    lots               bigint NOT NULL DEFAULT 0,
    hold_due           bigint NOT NULL DEFAULT 0,
    opened_at          bigint NOT NULL,
    updated_at         bigint NOT NULL
) WITH (fillfactor = 50); -- every spend rewrites the row: room for HOT updates

-- Append-only: the trigger refuses any change or removal of an entry.
CREATE TABLE credit_entries (
    account_id    text COLLATE "C" NOT NULL,
    seq           bigint NOT NULL,
    id            text COLLATE "C" NOT NULL,
    type          text NOT NULL, -- grant, purchase, debit, refund, adjustment, expiry
    amount        numeric NOT NULL,
    balance_after numeric NOT NULL,
    reference     text NOT NULL,
    description   text NOT NULL,
    idem_key      text NOT NULL,
    hold_id       text NOT NULL,
    expires_at    bigint,
    created_at    bigint NOT NULL,
    PRIMARY KEY (account_id, seq)
);

CREATE FUNCTION credit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit_entries is append-only';
END
$$;

CREATE TRIGGER credit_entries_no_change BEFORE UPDATE OR DELETE ON credit_entries
FOR EACH ROW EXECUTE FUNCTION credit_entries_append_only();

-- Idempotency keys, scoped per account, with the request's SHA-256
-- fingerprint and a pointer to the first result.
CREATE TABLE credit_ops (
    key         text COLLATE "C" NOT NULL,
    account_id  text COLLATE "C" NOT NULL,
    kind        smallint NOT NULL,
    fingerprint bytea NOT NULL,
    entry_seq   bigint NOT NULL,
    hold_id     text NOT NULL,
    PRIMARY KEY (key, account_id)
);

-- Unspent remainders of expiring grants; a lot is deleted when it is spent
-- or expired (the grant and expiry entries keep the history).
CREATE TABLE credit_lots (
    id         text COLLATE "C" PRIMARY KEY,
    account_id text COLLATE "C" NOT NULL,
    expires_at bigint NOT NULL,
    remaining  numeric NOT NULL
);

CREATE INDEX credit_lots_account ON credit_lots (account_id, expires_at, id);
CREATE INDEX credit_lots_expires ON credit_lots (expires_at);

CREATE TABLE credit_holds (
    id          text COLLATE "C" PRIMARY KEY,
    account_id  text COLLATE "C" NOT NULL,
    amount      numeric NOT NULL,
    state       text NOT NULL, -- active, settled, released, expired
    reference   text NOT NULL,
    idem_key    text NOT NULL,
    created_at  bigint NOT NULL,
    expires_at  bigint NOT NULL,
    resolved_at bigint,
    actual      numeric NOT NULL,
    charged     numeric NOT NULL,
    entry_id    text NOT NULL,
    entry_seq   bigint NOT NULL,
    settle_fp   bytea
);

CREATE INDEX credit_holds_due ON credit_holds (account_id, expires_at) WHERE state = 'active';
CREATE INDEX credit_holds_active ON credit_holds (expires_at) WHERE state = 'active';
