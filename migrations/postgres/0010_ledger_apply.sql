-- One round trip for many ledger writes on PostgreSQL (issue 11: the credits path).
--
-- `ledger_apply` applies a batch of independent writes (a transfer, a linked group, a hold, a
-- post or void with its release) in one statement: the application's group commit gathers the
-- writes that arrive while the previous batch is in flight. It replaces a transaction of 8–10
-- statements per write, and it locks the account rows (every request credits `sys:revenue`)
-- for two short UPDATEs per batch, never across network round trips.
--
-- The common case, every write applies: one INSERT of all rows in id order, then the touched
-- accounts locked in id order (the order the transactional path uses, so the two never
-- deadlock each other) and updated with the batch's summed deltas in two steps: first every
-- change that lowers a balance (debits, new pending debits), then every change that raises one
-- (credits, released holds). The schema's CHECKs run on each step, so the batch applies only
-- if its debits fit before any of its credits land — then every serial order of its writes
-- would have fit too, and the result is one such order's. (Summing alone would accept A→B
-- and B→A from empty accounts, which no serial order allows.)
--
-- Anything else (a refusal, a replay, an unknown account, an overflow) rolls the attempt back
-- and the batch is applied write by write, each in its own subtransaction (BEGIN … EXCEPTION):
-- one that fails is rolled back alone and its seqs come back NULL; the caller then sends that
-- write to the transactional path, which decides replays, conflicts and refusals exactly as
-- before. The application caps a batch at 32 writes so the subtransactions stay within
-- PostgreSQL's per-backend subxid cache (64).
--
-- Rows and deltas are flattened; p_row_counts[w] and p_delta_counts[w] say how many belong to
-- write w. Returns the assigned seqs in p_ids order, NULL for the rows of writes not applied.
CREATE FUNCTION ledger_apply(
    p_row_counts INT[],
    p_ids TEXT[], p_kinds TEXT[], p_debits TEXT[], p_credits TEXT[], p_amounts BIGINT[],
    p_quote_ids TEXT[], p_request_hashes TEXT[], p_chain_txs TEXT[], p_payers TEXT[],
    p_nonces TEXT[], p_reasons TEXT[], p_group_ids TEXT[], p_pending_ids TEXT[],
    p_expires_at_ms BIGINT[], p_created_at_ms BIGINT[],
    -- Every account any write touches, once each, sorted by id (byte order): the lock order.
    p_lock_accounts TEXT[],
    p_delta_counts INT[],
    p_accounts TEXT[], p_debits_posted BIGINT[], p_credits_posted BIGINT[],
    p_debits_pending BIGINT[], p_credits_pending BIGINT[]
) RETURNS BIGINT[] LANGUAGE plpgsql AS $$
DECLARE
    account TEXT;
    out BIGINT[] := '{}';
    seqs BIGINT[];
    r0 INT := 1;
    d0 INT := 1;
    nr INT;
    nd INT;
    updated INT;
BEGIN
    BEGIN
        WITH ins AS (
            INSERT INTO ledger_transfers (id, kind, debit_account, credit_account, amount,
                quote_id, request_hash, chain_tx, payer, nonce, reason, group_id, pending_id,
                expires_at_ms, created_at_ms)
            SELECT * FROM unnest(p_ids, p_kinds, p_debits, p_credits, p_amounts, p_quote_ids,
                p_request_hashes, p_chain_txs, p_payers, p_nonces, p_reasons, p_group_ids,
                p_pending_ids, p_expires_at_ms, p_created_at_ms)
                AS u(id, kind, debit_account, credit_account, amount, quote_id, request_hash,
                     chain_tx, payer, nonce, reason, group_id, pending_id, expires_at_ms,
                     created_at_ms)
            ORDER BY u.id COLLATE "C"
            ON CONFLICT (id) DO NOTHING
            RETURNING ledger_transfers.id, ledger_transfers.seq
        )
        SELECT array_agg(ins.seq ORDER BY o.ord) INTO seqs
        FROM ins JOIN unnest(p_ids) WITH ORDINALITY AS o(id, ord) ON o.id = ins.id;
        IF coalesce(cardinality(seqs), 0) <> cardinality(p_ids) THEN
            RAISE EXCEPTION 'ledger_apply: some ids are stored already' USING ERRCODE = 'TL001';
        END IF;

        FOREACH account IN ARRAY p_lock_accounts LOOP
            PERFORM 1 FROM ledger_accounts a WHERE a.id = account FOR NO KEY UPDATE;
        END LOOP;
        -- Step 1: what lowers balances (the bound CHECK runs here).
        UPDATE ledger_accounts a
        SET debits_posted = a.debits_posted + d.dp,
            debits_pending = a.debits_pending + d.dq,
            credits_pending = a.credits_pending + d.cq
        FROM (SELECT u.id, sum(greatest(u.dp, 0))::BIGINT AS dp,
                     sum(greatest(u.dq, 0))::BIGINT AS dq, sum(greatest(u.cq, 0))::BIGINT AS cq
              FROM unnest(p_accounts, p_debits_posted, p_debits_pending, p_credits_pending)
                   AS u(id, dp, dq, cq)
              GROUP BY u.id) d
        WHERE a.id = d.id;
        GET DIAGNOSTICS updated = ROW_COUNT;
        IF updated <> cardinality(p_lock_accounts) THEN
            RAISE EXCEPTION 'ledger_apply: an account does not exist' USING ERRCODE = 'TL001';
        END IF;
        -- Step 2: what raises them.
        UPDATE ledger_accounts a
        SET debits_posted = a.debits_posted + d.dp,
            credits_posted = a.credits_posted + d.cp,
            debits_pending = a.debits_pending + d.dq,
            credits_pending = a.credits_pending + d.cq
        FROM (SELECT u.id, sum(least(u.dp, 0))::BIGINT AS dp, sum(u.cp)::BIGINT AS cp,
                     sum(least(u.dq, 0))::BIGINT AS dq, sum(least(u.cq, 0))::BIGINT AS cq
              FROM unnest(p_accounts, p_debits_posted, p_credits_posted, p_debits_pending,
                          p_credits_pending) AS u(id, dp, cp, dq, cq)
              GROUP BY u.id) d
        WHERE a.id = d.id;
        RETURN seqs;
    EXCEPTION WHEN OTHERS THEN
        -- Rolled back; the batch goes write by write below.
        NULL;
    END;

    FOREACH account IN ARRAY p_lock_accounts LOOP
        PERFORM 1 FROM ledger_accounts a WHERE a.id = account FOR NO KEY UPDATE;
    END LOOP;

    FOR w IN 1 .. coalesce(cardinality(p_row_counts), 0) LOOP
        nr := p_row_counts[w];
        nd := p_delta_counts[w];
        BEGIN
            WITH ins AS (
                INSERT INTO ledger_transfers (id, kind, debit_account, credit_account, amount,
                    quote_id, request_hash, chain_tx, payer, nonce, reason, group_id,
                    pending_id, expires_at_ms, created_at_ms)
                SELECT * FROM unnest(p_ids[r0:r0 + nr - 1], p_kinds[r0:r0 + nr - 1],
                    p_debits[r0:r0 + nr - 1], p_credits[r0:r0 + nr - 1],
                    p_amounts[r0:r0 + nr - 1], p_quote_ids[r0:r0 + nr - 1],
                    p_request_hashes[r0:r0 + nr - 1], p_chain_txs[r0:r0 + nr - 1],
                    p_payers[r0:r0 + nr - 1], p_nonces[r0:r0 + nr - 1],
                    p_reasons[r0:r0 + nr - 1], p_group_ids[r0:r0 + nr - 1],
                    p_pending_ids[r0:r0 + nr - 1], p_expires_at_ms[r0:r0 + nr - 1],
                    p_created_at_ms[r0:r0 + nr - 1])
                    AS u(id, kind, debit_account, credit_account, amount, quote_id,
                         request_hash, chain_tx, payer, nonce, reason, group_id, pending_id,
                         expires_at_ms, created_at_ms)
                ORDER BY u.id COLLATE "C"
                ON CONFLICT (id) DO NOTHING
                RETURNING ledger_transfers.id, ledger_transfers.seq
            )
            SELECT array_agg(ins.seq ORDER BY o.ord) INTO seqs
            FROM ins JOIN unnest(p_ids[r0:r0 + nr - 1]) WITH ORDINALITY AS o(id, ord)
                ON o.id = ins.id;
            IF coalesce(cardinality(seqs), 0) <> nr THEN
                RAISE EXCEPTION 'ledger_apply: % is (partly) stored already', p_ids[r0]
                    USING ERRCODE = 'TL001';
            END IF;

            UPDATE ledger_accounts a
            SET debits_posted = a.debits_posted + d.dp,
                credits_posted = a.credits_posted + d.cp,
                debits_pending = a.debits_pending + d.dq,
                credits_pending = a.credits_pending + d.cq
            FROM unnest(p_accounts[d0:d0 + nd - 1], p_debits_posted[d0:d0 + nd - 1],
                        p_credits_posted[d0:d0 + nd - 1], p_debits_pending[d0:d0 + nd - 1],
                        p_credits_pending[d0:d0 + nd - 1]) AS d(id, dp, cp, dq, cq)
            WHERE a.id = d.id;
            GET DIAGNOSTICS updated = ROW_COUNT;
            IF updated <> nd THEN
                RAISE EXCEPTION 'ledger_apply: an account of % does not exist', p_ids[r0]
                    USING ERRCODE = 'TL001';
            END IF;
            out := out || seqs;
        EXCEPTION WHEN OTHERS THEN
            out := out || array_fill(NULL::BIGINT, ARRAY[nr]);
        END;
        r0 := r0 + nr;
        d0 := d0 + nd;
    END LOOP;
    RETURN out;
END
$$;
