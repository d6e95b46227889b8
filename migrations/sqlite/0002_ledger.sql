-- The credits ledger: double-entry, integer micro-dollars, append-only transfers.
--
-- The database itself enforces the invariants that must never break, so that no bug in the
-- application (or an operator with the sqlite3 shell) can overdraw an account, resolve a hold
-- twice or rewrite history: the balance bound is a CHECK evaluated in the same UPDATE that
-- moves the money, a hold's resolution is a UNIQUE index, and transfer rows refuse UPDATE and
-- DELETE. `migrations/postgres/0002_ledger.sql` is the same schema in PostgreSQL's dialect.
--
-- SQLite differences, each deliberate:
-- * STRICT tables: without them SQLite would store a REAL or TEXT in an INTEGER column, and an
--   integer overflow in `counter + amount` silently becomes a float. STRICT refuses both.
-- * Booleans are INTEGER 0/1 (SQLite has no BOOLEAN; STRICT allows only its five types).
-- * `seq` is the INTEGER PRIMARY KEY (the rowid, which SQLite assigns) and `id` is UNIQUE NOT
--   NULL: SQLite can only generate a value for its rowid, and `id` keeps every property of a
--   key (unique, not null, the ON CONFLICT target, the foreign-key target).

-- One row per account, carrying four running counters (TigerBeetle's model). Balances are
-- derived from them: posted = credits_posted - debits_posted, held = debits_pending,
-- available = posted - held. Counters only ever grow by transfers, never by direct edits; every
-- counter can be recomputed from `ledger_transfers` (the ledger's `check()` does exactly that).
CREATE TABLE ledger_accounts (
    -- Validated text chosen by the application, e.g. `agent:<id>`, `sys:revenue`,
    -- `sys:inflow:eip155:8453:0x…`: readable in audits, stable across instances. The length
    -- CHECK repeats the application's validation for rows written by any other path.
    id               TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 128),
    -- Agents are customers holding credits; system accounts are the operator's books (revenue,
    -- on-chain inflow, adjustments).
    kind             TEXT NOT NULL CHECK (kind IN ('agent', 'system')),
    -- Who the account belongs to, e.g. a wallet `eip155:8453:0xabc…`. UNIQUE: one wallet must
    -- never map to two balances (a payment would credit whichever was found first).
    owner            TEXT UNIQUE CHECK (owner IS NULL OR length(owner) BETWEEN 1 AND 256),
    -- Source accounts (on-chain inflow, adjustments) go negative by design: money enters the
    -- ledger by debiting them. Every other account is bounded below by zero.
    allow_negative   INTEGER NOT NULL CHECK (allow_negative IN (0, 1)),
    -- The four counters. 64-bit micro-dollars (max ~9.2e12 USD); never negative: money is
    -- released by a new transfer, never by subtracting from a posted counter.
    debits_posted    INTEGER NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_posted   INTEGER NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    debits_pending   INTEGER NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    credits_pending  INTEGER NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    created_at_ms    INTEGER NOT NULL CHECK (created_at_ms >= 0),
    -- An agent's credits must never go below zero, whatever the application believes.
    CONSTRAINT ledger_agent_never_negative CHECK (kind = 'system' OR NOT allow_negative),
    -- THE balance bound: what is posted minus what is held may not go below zero. Checked by
    -- the same UPDATE that adds to a debit counter, so two concurrent spends cannot both pass
    -- a read-then-write check. A violation ("CHECK constraint failed: ledger_balance_bound") is
    -- reported as insufficient funds.
    CONSTRAINT ledger_balance_bound
        CHECK (allow_negative OR credits_posted - debits_posted - debits_pending >= 0)
) STRICT;

-- Every movement of money, immutable once written. Corrections are new transfers (refund,
-- adjustment, void), so any past balance can be rebuilt and audited.
CREATE TABLE ledger_transfers (
    -- Commit-order position, assigned by SQLite (AUTOINCREMENT: never reused): a stable cursor
    -- for paging history newest first (client ids have no order).
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Chosen by the client before submitting, so a retry carries the same id: the unique key
    -- is what makes a submission idempotent (INSERT … ON CONFLICT (id) DO NOTHING). Up to 200:
    -- client ids are at most 128, ids the ledger derives (`<hold id>#expired`) a little longer.
    id               TEXT NOT NULL UNIQUE CHECK (length(id) BETWEEN 1 AND 200),
    -- What the transfer is; holds, posts and voids change the pending counters, the rest move
    -- posted money.
    kind             TEXT NOT NULL CHECK (kind IN ('payment_credit', 'request_debit', 'topup',
                                                   'hold', 'post', 'void', 'refund', 'adjustment')),
    -- Money flows from debit_account to credit_account. Foreign keys: a transfer can never name
    -- an account that does not exist.
    debit_account    TEXT NOT NULL REFERENCES ledger_accounts (id),
    credit_account   TEXT NOT NULL REFERENCES ledger_accounts (id),
    -- Strictly positive: a zero transfer is meaningless, a negative one would reverse the
    -- direction behind the reader's back.
    amount           INTEGER NOT NULL CHECK (amount > 0),
    -- Links back to the business event (x402 quote, request, on-chain settlement, payer and
    -- authorization nonce), so every credit and debit can be reconciled with its source.
    quote_id         TEXT,
    request_hash     TEXT,
    chain_tx         TEXT,
    payer            TEXT,
    nonce            TEXT,
    -- Free text for adjustments and refunds: why an operator moved money.
    reason           TEXT,
    -- Transfers committed together by one linked call share the id of the group's first one.
    group_id         TEXT,
    -- post/void rows name the hold they resolve.
    pending_id       TEXT REFERENCES ledger_transfers (id),
    -- Holds expire at this absolute time (Unix ms); after it they can only be voided.
    expires_at_ms    INTEGER CHECK (expires_at_ms IS NULL OR expires_at_ms >= 0),
    created_at_ms    INTEGER NOT NULL CHECK (created_at_ms >= 0),
    -- Moving money from an account to itself would inflate both counters for nothing.
    CONSTRAINT ledger_transfer_distinct_accounts CHECK (debit_account <> credit_account),
    -- Exactly the holds carry an expiry: an unexpiring hold would lock credits forever.
    CONSTRAINT ledger_hold_has_expiry CHECK ((kind = 'hold') = (expires_at_ms IS NOT NULL)),
    -- Exactly posts and voids name a hold.
    CONSTRAINT ledger_resolution_names_hold
        CHECK ((kind IN ('post', 'void')) = (pending_id IS NOT NULL))
) STRICT;

-- A hold resolves exactly once (posted or voided, by a client or by the expiry sweep): the
-- second resolution fails here even if the application's own check were wrong.
CREATE UNIQUE INDEX ledger_hold_resolved_once ON ledger_transfers (pending_id)
    WHERE pending_id IS NOT NULL;
-- An account's history, newest first, without scanning other accounts' transfers.
CREATE INDEX ledger_transfers_by_debit ON ledger_transfers (debit_account, seq);
CREATE INDEX ledger_transfers_by_credit ON ledger_transfers (credit_account, seq);
-- The expiry sweep looks for holds by expiry time.
CREATE INDEX ledger_holds_by_expiry ON ledger_transfers (expires_at_ms) WHERE kind = 'hold';
-- Replaying a linked group compares the whole stored group.
CREATE INDEX ledger_transfers_by_group ON ledger_transfers (group_id) WHERE group_id IS NOT NULL;

-- Append-only, enforced: history is evidence, and a rewritten transfer would silently break
-- the counters it produced.
CREATE TRIGGER ledger_transfers_no_update BEFORE UPDATE ON ledger_transfers
BEGIN
    SELECT RAISE(ABORT, 'ledger: UPDATE on ledger_transfers is not allowed (append-only)');
END;
CREATE TRIGGER ledger_transfers_no_delete BEFORE DELETE ON ledger_transfers
BEGIN
    SELECT RAISE(ABORT, 'ledger: DELETE on ledger_transfers is not allowed (append-only)');
END;
-- Accounts are never deleted (their transfers reference them) and their identity and bound are
-- fixed at creation: only the counters change.
CREATE TRIGGER ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts
BEGIN
    SELECT RAISE(ABORT, 'ledger: DELETE on ledger_accounts is not allowed');
END;
CREATE TRIGGER ledger_accounts_identity_fixed
    BEFORE UPDATE OF id, kind, owner, allow_negative, created_at_ms ON ledger_accounts
BEGIN
    SELECT RAISE(ABORT, 'ledger: an account''s identity and bound are fixed at creation');
END;
