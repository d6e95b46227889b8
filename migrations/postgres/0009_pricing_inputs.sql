-- Pricing inputs of past requests, for backtests of a candidate rule set. Written only when
-- `[backtest] record = true` (off by default). Each row is what a rule may read of one priced
-- request (method, path, query, the route's declared headers, body size, JSON body), as JSON,
-- size-capped when written. Bounded by a retention window and a row count, both enforced by
-- deleting the oldest rows.
CREATE TABLE pricing_inputs (
    id     BIGSERIAL PRIMARY KEY,
    at_ms  BIGINT NOT NULL CHECK (at_ms >= 0),
    input  TEXT NOT NULL
);
CREATE INDEX pricing_inputs_at ON pricing_inputs (at_ms);
