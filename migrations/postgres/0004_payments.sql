-- On-chain payments: one row per authorization Tariff accepted for settlement.
--
-- The row is written (status `claimed`) before anything is broadcast, so a crash at any later
-- point leaves a record the reconciler resolves against the chain. The UNIQUE key is the money
-- itself, (network, asset, payer, nonce): two requests, on one instance or many, can never both
-- claim the same authorization.
CREATE TABLE payments (
    id             TEXT PRIMARY KEY,
    network        TEXT NOT NULL,
    asset          TEXT NOT NULL CHECK (asset = lower(asset) AND length(asset) = 42),
    payer          TEXT NOT NULL CHECK (payer = lower(payer) AND length(payer) = 42),
    nonce          TEXT NOT NULL CHECK (nonce = lower(nonce) AND length(nonce) = 66),
    pay_to         TEXT NOT NULL,
    -- Base units of `asset`, as a decimal string (up to uint256).
    amount         TEXT NOT NULL,
    -- The quote's price in the ledger's unit (micro-dollars).
    price_micros   BIGINT NOT NULL CHECK (price_micros > 0),
    quote_id       TEXT NOT NULL,
    request_hash   TEXT NOT NULL,
    x402_version   INTEGER NOT NULL CHECK (x402_version IN (1, 2)),
    mode           TEXT NOT NULL CHECK (mode IN ('local', 'facilitator')),
    -- The signed authorization (and the requirements it was verified against), as JSON: all
    -- the reconciler needs to find it on chain.
    signed_auth    TEXT NOT NULL,
    valid_before   BIGINT NOT NULL,
    -- Chain head when claimed: where the reconciler starts searching logs.
    from_block     BIGINT,
    status         TEXT NOT NULL CHECK (status IN ('claimed', 'submitted', 'settled', 'credited', 'failed')),
    tx_hash        TEXT,
    error          TEXT,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    UNIQUE (network, asset, payer, nonce),
    -- Money that moved always names its transaction.
    CHECK (status NOT IN ('settled', 'credited') OR tx_hash IS NOT NULL)
);

-- The reconciler's work list: payments whose outcome is not final.
CREATE INDEX payments_open ON payments (updated_at_ms) WHERE status IN ('claimed', 'submitted', 'settled');
CREATE INDEX payments_by_quote ON payments (quote_id);
