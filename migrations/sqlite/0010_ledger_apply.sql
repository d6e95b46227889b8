-- PostgreSQL only: `ledger_apply`, the one-round-trip ledger write (see the postgres dialect's
-- file of the same name). SQLite runs in-process, where round trips cost nothing and a write
-- transaction already excludes every other writer, so it keeps the transactional path. The
-- file exists so both dialects keep the same migration numbers.
SELECT 1;
