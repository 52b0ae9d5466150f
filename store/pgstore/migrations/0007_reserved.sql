-- Reserved: version 7 belongs to the per-key spend limits (another branch).
-- This no-op only keeps the migrations numbered 1..n on the pricing branch;
-- drop this file when the spend-limit migration 0007 is merged.
SELECT 1;
