-- A usage record ID is unique per account, whatever its creation time (the
-- usage.Tx.AddUsage contract). The primary key (account_id, created_at, id)
-- only made the triple unique. A second insert of an ID now fails with
-- SQLSTATE 23505, which AddUsage reports as usage.ErrDuplicateRecord.
-- Creating the index fails if a database already holds such duplicates.
CREATE UNIQUE INDEX usage_records_id ON usage_records (account_id, id);
