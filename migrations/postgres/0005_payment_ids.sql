-- Answers kept for the x402 `payment-identifier` extension: a buyer that lost the answer to a
-- paid request retries with the same payment id and the same payment, and gets this answer
-- instead of paying again. The key is scoped by route; `fingerprint` binds the id to the request
-- and the payment it first came with (the same id with another payment is refused).
CREATE TABLE payment_ids (
    key            TEXT PRIMARY KEY,
    fingerprint    TEXT NOT NULL,
    -- `pending` while the first request is being served; `done` once its answer is stored.
    state          TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    status         BIGINT,
    headers        TEXT,
    body           BYTEA,
    created_at_ms  BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    CHECK (state = 'pending' OR (status IS NOT NULL AND headers IS NOT NULL AND body IS NOT NULL))
);

CREATE INDEX payment_ids_expiry ON payment_ids (expires_at_ms);
