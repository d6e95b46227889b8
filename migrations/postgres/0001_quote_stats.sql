-- How many quotes each pricing rule issued, per minute, and what they added up to.
--
-- Unpaid 402s are deliberately NOT stored one row per quote: anyone can send distinct requests,
-- and a durable row per unauthenticated request would let them grow the database without bound
-- (and put a database write on the hottest path). Counting per (minute, route, rule) keeps the
-- table bounded by the rule set and by time, and is what the operator's conversion view needs:
-- quotes issued per rule, against payments received per rule. Open quotes themselves live in
-- the quote store (Redis or memory) until they expire; paid ones are recorded with their payment.
CREATE TABLE quote_stats (
    -- Start of the minute, in Unix milliseconds.
    bucket_start_ms    BIGINT NOT NULL CHECK (bucket_start_ms >= 0 AND bucket_start_ms % 60000 = 0),
    route              TEXT NOT NULL,
    rule               TEXT NOT NULL,
    -- Quotes created (an open quote handed out again is not counted twice).
    quotes             BIGINT NOT NULL CHECK (quotes > 0),
    -- Sum of their prices in micro-dollars: "revenue asked for" next to revenue received.
    quoted_usd_micros  BIGINT NOT NULL CHECK (quoted_usd_micros >= 0),
    -- One row per minute and rule; instances add to it with INSERT … ON CONFLICT DO UPDATE.
    PRIMARY KEY (bucket_start_ms, route, rule)
);
