-- A usage record ID is unique per account, whatever its creation time (the
-- usage.Tx.AddUsage contract, as memstore enforces it). The primary key
-- (account_id, created_at, id) only made the pair unique, so the same ID
-- could be stored twice at two times. This index makes a second insert of
-- the ID fail with SQLITE_CONSTRAINT_UNIQUE, which AddUsage reports as
-- usage.ErrDuplicateRecord. Creating it fails if a database already holds
-- such duplicates; remove them first.
CREATE UNIQUE INDEX usage_records_id ON usage_records (account_id, id);
