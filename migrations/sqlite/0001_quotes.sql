-- Every quote Tariff issued. Redis forgets a quote when it expires; the operator's dashboard
-- (quotes issued, conversion to paid requests) and any later audit of "what was this buyer
-- asked to pay, and by which rule" need the history, so it is kept here.
CREATE TABLE quotes (
    -- The id the buyer echoes back (q_ + 32 hex). Primary key: a quote is logged once, and a
    -- retried batch write must not duplicate it (inserts use ON CONFLICT DO NOTHING).
    id                TEXT PRIMARY KEY,
    -- Keyed blake3 of the canonical request (hex). Not unique: the same request is quoted
    -- again after its previous quote expired.
    request_hash      TEXT NOT NULL CHECK (length(request_hash) = 64),
    route             TEXT NOT NULL,
    rule              TEXT NOT NULL,
    method            TEXT NOT NULL,
    path              TEXT NOT NULL,
    -- Micro-dollars, an integer. A zero price is never quoted (zero means free), hence > 0.
    price_usd_micros  INTEGER NOT NULL CHECK (price_usd_micros > 0),
    -- JSON array of the offers (network, asset, amount in base units, payTo): what the 402
    -- offered, exactly.
    offers            TEXT NOT NULL,
    created_at_ms     INTEGER NOT NULL,
    expires_at_ms     INTEGER NOT NULL CHECK (expires_at_ms > created_at_ms)
);

-- The dashboard reads quotes by time window.
CREATE INDEX quotes_created_at ON quotes (created_at_ms);
-- Payments arriving by v1 are matched by request hash; history lookups use it too.
CREATE INDEX quotes_request_hash ON quotes (request_hash);
