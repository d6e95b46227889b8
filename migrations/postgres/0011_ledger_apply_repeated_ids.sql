-- Fix of `ledger_apply` (0010): one id twice in one batch was applied twice.
--
-- Two callers submitting the same transfer id at once (a client's retry, two sweepers voiding
-- the same expired hold) can land in one batch. The INSERT's ON CONFLICT DO NOTHING stores the
-- id once, but 0010 counted the rows *matched* back to the ids, which is two, and so applied
-- both writes' deltas: one row, twice the money moved (found by the concurrency tests in CI).
-- Here the check counts the rows actually *inserted*; a batch with a repeated id falls back to
-- write by write, where the second copy inserts nothing, is not applied, and goes to the
-- transactional path, which answers it as the replay it is. Everything else is unchanged.
CREATE OR REPLACE FUNCTION ledger_apply(
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
    inserted INT;
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
        SELECT (SELECT count(*) FROM ins),
               (SELECT array_agg(ins.seq ORDER BY o.ord)
                FROM ins JOIN unnest(p_ids) WITH ORDINALITY AS o(id, ord) ON o.id = ins.id)
        INTO inserted, seqs;
        -- Rows inserted, not ids matched: an id twice in the batch inserts once but matches
        -- twice, and its deltas would count twice.
        IF inserted <> cardinality(p_ids) OR coalesce(cardinality(seqs), 0) <> inserted THEN
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
            SELECT (SELECT count(*) FROM ins),
                   (SELECT array_agg(ins.seq ORDER BY o.ord)
                    FROM ins JOIN unnest(p_ids[r0:r0 + nr - 1]) WITH ORDINALITY AS o(id, ord)
                        ON o.id = ins.id)
            INTO inserted, seqs;
            IF inserted <> nr OR coalesce(cardinality(seqs), 0) <> nr THEN
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
