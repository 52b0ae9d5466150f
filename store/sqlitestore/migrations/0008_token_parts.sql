-- Cached, cache-write and reasoning tokens, and the price applied (issue 23).
--
-- cached_prompt_tokens (cache reads) and cache_write_tokens are parts of
-- prompt_tokens, reasoning_tokens a part of completion_tokens; the rollups
-- sum them like the other counts. price_from is the EffectiveFrom of the
-- model price version that priced the record (unix nanoseconds), NULL for
-- the undated version, operations and unpriced records. Existing rows read
-- as zero and NULL: they were priced with plain prompt and completion prices.
ALTER TABLE usage_records ADD COLUMN cached_prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN price_from INTEGER;
ALTER TABLE usage_rollups ADD COLUMN cached_prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_rollups ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_rollups ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
