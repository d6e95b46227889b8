-- Top-ups in any DEX-liquid token (issue 9).
--
-- One row per credited top-up, written before its ledger transfer (`topup:<id>`), so the
-- transfer is always rebuilt from the row and lands once: `pay:<payment id>` for a top-up paid
-- through x402, `tx:<network>:<tx hash>:<log index>` for a plain transfer to the treasury.
-- `valuation` is the JSON of what the credit was derived from (route, pools, block, readings).
CREATE TABLE topups (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES ledger_accounts (id),
    network        TEXT NOT NULL,
    token          TEXT NOT NULL CHECK (token = lower(token)),
    amount         TEXT NOT NULL,
    credit_micros  INTEGER NOT NULL CHECK (credit_micros > 0),
    source         TEXT NOT NULL CHECK (source IN ('x402', 'transfer')),
    tx_hash        TEXT NOT NULL,
    payer          TEXT NOT NULL,
    valuation      TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL
);

CREATE INDEX topups_account ON topups (account_id, created_at_ms);

-- A top-up paid through x402 names the account it credits (not the payer's wallet account) and
-- its valuation, so the reconciler books it as a top-up too.
ALTER TABLE payments ADD COLUMN topup TEXT;
