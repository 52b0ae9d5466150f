-- Reserved: version 9 belongs to another branch of issue 21 (audit or spend
-- limits); this no-op keeps the migrations numbered 1..n. Drop it at merge.
SELECT 1;
