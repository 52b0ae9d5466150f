-- Per-key spend limits (issue 21). An account's key limits and their
-- period counters live in its ledger row as JSON text (ledger.KeyState, ''
-- when the account has none), so that the transaction that checks the
-- funds reads them under the row lock it already takes. A hold records the
-- key it was reserved for and the period (epoch) whose counters include it.
ALTER TABLE credit_accounts ADD COLUMN key_limits TEXT NOT NULL DEFAULT '';
ALTER TABLE credit_holds ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
ALTER TABLE credit_holds ADD COLUMN key_epoch BIGINT NOT NULL DEFAULT 0;

-- Per-key rate limits below the plan (issue 21): JSON, NULL for none.
ALTER TABLE api_keys ADD COLUMN rate_limits TEXT;
