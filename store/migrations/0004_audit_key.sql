-- The audit chain is keyed (HMAC-SHA256 with GARDENBOT_AUDIT_KEY, kept outside this database).
-- Rows written before keying keep chain_version 1 (plain SHA-256) and verify as before; every row
-- written since carries chain_version 2, and the keyed chain starts at the first of them.
ALTER TABLE audit_log ADD COLUMN chain_version smallint NOT NULL DEFAULT 1
    CHECK (chain_version IN (1, 2));
