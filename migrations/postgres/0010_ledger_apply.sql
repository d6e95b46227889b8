-- One round trip for a ledger write on PostgreSQL (issue 11: the credits path).
--
-- `ledger_apply` does what the application's transaction did in 8–10 statements: lock the
-- touched accounts in id order (the same order the transactional path uses, so the two never
-- deadlock each other), insert the transfers in id order, add the counter deltas. It runs as
-- one statement in autocommit, so the account rows are locked for the function's duration
-- only, not across network round trips; that is what lets concurrent spends that share an
-- account (every request credits `sys:revenue`) pass one another quickly.
--
-- It is a fast path only for writes that succeed. It returns the assigned seqs in input order,
-- or NULL when it wrote nothing (an unknown account, or every id already stored: a replay). If
-- some ids of a group are stored and others not, it raises (SQLSTATE TL001) so nothing of the
-- group is kept. Any NULL or error sends the caller to the transactional path, which decides
-- replays, conflicts and refusals exactly as before; the schema's CHECKs (the balance bound,
-- overflow) and unique indexes (a hold is resolved once) still guard every row written here.
CREATE FUNCTION ledger_apply(
    p_ids TEXT[], p_kinds TEXT[], p_debits TEXT[], p_credits TEXT[], p_amounts BIGINT[],
    p_quote_ids TEXT[], p_request_hashes TEXT[], p_chain_txs TEXT[], p_payers TEXT[],
    p_nonces TEXT[], p_reasons TEXT[], p_group_ids TEXT[], p_pending_ids TEXT[],
    p_expires_at_ms BIGINT[], p_created_at_ms BIGINT[],
    -- The deltas per account, accounts sorted by id (the caller's BTreeMap order).
    p_accounts TEXT[], p_debits_posted BIGINT[], p_credits_posted BIGINT[],
    p_debits_pending BIGINT[], p_credits_pending BIGINT[]
) RETURNS BIGINT[] LANGUAGE plpgsql AS $$
DECLARE
    account TEXT;
    seqs BIGINT[];
BEGIN
    FOREACH account IN ARRAY p_accounts LOOP
        PERFORM 1 FROM ledger_accounts a WHERE a.id = account FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    END LOOP;

    WITH ins AS (
        INSERT INTO ledger_transfers (id, kind, debit_account, credit_account, amount, quote_id,
            request_hash, chain_tx, payer, nonce, reason, group_id, pending_id, expires_at_ms,
            created_at_ms)
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

    IF seqs IS NULL THEN
        RETURN NULL;
    END IF;
    IF cardinality(seqs) <> cardinality(p_ids) THEN
        RAISE EXCEPTION 'ledger_apply: part of group % is already stored', p_ids[1]
            USING ERRCODE = 'TL001';
    END IF;

    UPDATE ledger_accounts a
    SET debits_posted = a.debits_posted + d.dp,
        credits_posted = a.credits_posted + d.cp,
        debits_pending = a.debits_pending + d.dq,
        credits_pending = a.credits_pending + d.cq
    FROM unnest(p_accounts, p_debits_posted, p_credits_posted, p_debits_pending,
                p_credits_pending) AS d(id, dp, cp, dq, cq)
    WHERE a.id = d.id;
    RETURN seqs;
END
$$;
