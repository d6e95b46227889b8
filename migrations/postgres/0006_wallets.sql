-- Wallets as accounts (x402 `sign-in-with-x`).
--
-- A wallet proven by a signed sign-in message spends from its own account
-- (`agent:wallet:<address>`, where its on-chain payments are credited) unless it was linked to
-- another agent account: then both its sign-ins and its on-chain payments land there.
CREATE TABLE wallet_links (
    wallet         TEXT PRIMARY KEY CHECK (wallet = lower(wallet) AND length(wallet) = 42),
    account_id     TEXT NOT NULL REFERENCES ledger_accounts (id),
    linked_at_ms   BIGINT NOT NULL
);

-- Sign-in nonces already used: each signed message is accepted once, on every instance. Rows
-- older than the longest a message can stay acceptable are purged.
CREATE TABLE siwx_nonces (
    nonce          TEXT PRIMARY KEY,
    wallet         TEXT NOT NULL,
    used_at_ms     BIGINT NOT NULL
);

CREATE INDEX siwx_nonces_age ON siwx_nonces (used_at_ms);
