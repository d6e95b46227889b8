-- What each pricing rule earned, per minute: requests charged and the amount, by how they were
-- paid (on chain, or from credits). Next to `quote_stats` (quotes issued per rule) it gives
-- the operator's conversion and revenue per rule without scanning the ledger. Counted in memory
-- and added in batches, like `quote_stats`; bounded by the rule set and by time.
CREATE TABLE rule_revenue (
    bucket_start_ms  INTEGER NOT NULL CHECK (bucket_start_ms >= 0 AND bucket_start_ms % 60000 = 0),
    route            TEXT NOT NULL,
    rule             TEXT NOT NULL,
    source           TEXT NOT NULL CHECK (source IN ('onchain', 'credits')),
    requests         INTEGER NOT NULL CHECK (requests > 0),
    usd_micros       INTEGER NOT NULL CHECK (usd_micros >= 0),
    PRIMARY KEY (bucket_start_ms, route, rule, source)
);
