-- Reserved: versions 0009 and 0010 belong to other issue-21 branches (spend limits,
-- events). This no-op keeps the migrations numbered 1..n on the audit branch;
-- drop it when theirs are merged.
SELECT 1;
