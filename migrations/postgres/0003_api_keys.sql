-- API keys of agent accounts, for spending credits request by request.
--
-- Only a hash of each key is stored: a leaked table must not hand out spendable credentials.
-- Keys are 256-bit random values, so a fast hash (blake3) is as strong here as a slow password
-- hash; slow hashes exist to protect low-entropy passwords, which these are not.
CREATE TABLE api_keys (
    key_hash       TEXT PRIMARY KEY CHECK (length(key_hash) = 64),
    -- The account the key spends from. A key never moves to another account.
    account_id     TEXT NOT NULL REFERENCES ledger_accounts (id),
    created_at_ms  BIGINT NOT NULL CHECK (created_at_ms >= 0),
    -- Set when the key is revoked: a revoked key authenticates nothing. Kept, not deleted, so
    -- that every transfer it authorised stays attributable.
    revoked_at_ms  BIGINT CHECK (revoked_at_ms IS NULL OR revoked_at_ms >= created_at_ms)
);

-- Listing and revoking the keys of one account.
CREATE INDEX api_keys_by_account ON api_keys (account_id);
