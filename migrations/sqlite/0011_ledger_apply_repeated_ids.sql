-- PostgreSQL only: the fix of `ledger_apply` for an id repeated within one batch (see the
-- postgres dialect's file of the same name). The file keeps both dialects' numbers in step.
SELECT 1;
