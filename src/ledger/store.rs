//! SQL for the ledger, written once for both backends. Each statement is plain SQL that
//! PostgreSQL and SQLite both accept (`$n` placeholders, `ON CONFLICT`, `RETURNING`); the one
//! exception is row locking, which only PostgreSQL has and only PostgreSQL needs (a SQLite
//! write transaction already excludes every other writer).

use sqlx::{Postgres, Sqlite};

use super::LedgerError;
use super::types::{
    AccountId, AccountKind, Counters, References, Transfer, TransferId, TransferKind,
};
use crate::db::Db;
use crate::money::UsdMicros;
use crate::time::UnixMillis;

/// A write transaction on either backend.
pub(super) enum Tx {
    Pg(sqlx::Transaction<'static, Postgres>),
    Lite(sqlx::Transaction<'static, Sqlite>),
}

/// Runs `$body` with `$c` bound to the transaction's connection, once per backend, so the same
/// query-building code is type-checked against each driver.
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            Tx::Pg(t) => {
                let $c = &mut **t;
                $body
            }
            Tx::Lite(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

/// The same for a statement outside a transaction, on the pool.
macro_rules! on_db {
    ($db:expr, |$p:ident| $body:expr) => {
        match $db {
            Db::Postgres($p) => $body,
            Db::Sqlite($p) => $body,
        }
    };
}

/// The columns of `TransferRow`, for `concat!` into statements (which must be `&'static str`).
macro_rules! transfer_columns {
    () => {
        "seq, id, kind, debit_account, credit_account, amount, quote_id, request_hash, chain_tx, \
         payer, nonce, reason, group_id, pending_id, expires_at_ms, created_at_ms"
    };
}

/// Likewise for `AccountRow`.
macro_rules! account_columns {
    () => {
        "id, kind, owner, allow_negative, debits_posted, credits_posted, debits_pending, \
         credits_pending, created_at_ms"
    };
}

impl Tx {
    /// On SQLite the transaction starts with `BEGIN IMMEDIATE`: it takes the write lock up
    /// front, waiting (busy timeout) for other writers. A deferred transaction would read first
    /// and fail with SQLITE_BUSY when upgrading to a write while another connection writes.
    pub(super) async fn begin(db: &Db) -> Result<Tx, LedgerError> {
        Ok(match db {
            Db::Postgres(p) => Tx::Pg(p.begin().await?),
            Db::Sqlite(p) => Tx::Lite(p.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    pub(super) async fn commit(self) -> Result<(), LedgerError> {
        match self {
            Tx::Pg(t) => t.commit().await?,
            Tx::Lite(t) => t.commit().await?,
        }
        Ok(())
    }

    pub(super) async fn rollback(self) -> Result<(), LedgerError> {
        match self {
            Tx::Pg(t) => t.rollback().await?,
            Tx::Lite(t) => t.rollback().await?,
        }
        Ok(())
    }

    pub(super) async fn transfer(
        &mut self,
        id: &TransferId,
    ) -> Result<Option<Transfer>, LedgerError> {
        let row: Option<TransferRow> = on_tx!(self, |c| sqlx::query_as(SELECT_TRANSFER_BY_ID)
            .bind(id.as_str())
            .fetch_optional(&mut *c)
            .await)?;
        row.map(TransferRow::into_transfer).transpose()
    }

    /// The ids of a stored linked group.
    pub(super) async fn group_members(
        &mut self,
        group: &TransferId,
    ) -> Result<Vec<String>, LedgerError> {
        let rows: Vec<(String,)> = on_tx!(self, |c| sqlx::query_as(
            "SELECT id FROM ledger_transfers WHERE group_id = $1 ORDER BY id"
        )
        .bind(group.as_str())
        .fetch_all(&mut *c)
        .await)?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// The post or void that resolved `hold`, if any.
    pub(super) async fn resolution_of(
        &mut self,
        hold: &TransferId,
    ) -> Result<Option<TransferId>, LedgerError> {
        let row: Option<(String,)> = on_tx!(self, |c| sqlx::query_as(
            "SELECT id FROM ledger_transfers WHERE pending_id = $1"
        )
        .bind(hold.as_str())
        .fetch_optional(&mut *c)
        .await)?;
        Ok(row.map(|(id,)| TransferId::from_db(id)))
    }

    /// Reads an account's counters and, on PostgreSQL, locks its row until the transaction
    /// ends. Callers lock in sorted id order, so two transactions never wait on each other in a
    /// cycle (the hot-account test deadlocks within seconds if the order is not fixed).
    /// `FOR NO KEY UPDATE` is what the counter UPDATE takes anyway: it excludes every other
    /// writer of the account, but unlike `FOR UPDATE` it does not block the `KEY SHARE` locks
    /// that foreign-key checks take, so rows elsewhere that merely reference the account (a
    /// transfer being inserted, future tables) are not serialised behind it.
    pub(super) async fn lock_account(
        &mut self,
        id: &AccountId,
    ) -> Result<Option<AccountRow>, LedgerError> {
        const PG: &str = concat!(
            "SELECT ",
            account_columns!(),
            " FROM ledger_accounts WHERE id = $1 FOR NO KEY UPDATE"
        );
        let row = match self {
            Tx::Pg(t) => {
                sqlx::query_as(PG)
                    .bind(id.as_str())
                    .fetch_optional(&mut **t)
                    .await?
            }
            Tx::Lite(t) => {
                sqlx::query_as(SELECT_ACCOUNT)
                    .bind(id.as_str())
                    .fetch_optional(&mut **t)
                    .await?
            }
        };
        Ok(row)
    }

    /// Inserts a transfer unless its id exists. `Some(seq)` if this call wrote it.
    pub(super) async fn insert_transfer(
        &mut self,
        t: &Transfer,
    ) -> Result<Option<i64>, sqlx::Error> {
        let seq: Option<(i64,)> = on_tx!(self, |c| sqlx::query_as(INSERT_TRANSFER)
            .bind(t.id.as_str())
            .bind(t.kind.as_str())
            .bind(t.debit.as_str())
            .bind(t.credit.as_str())
            .bind(db_amount(t.amount))
            .bind(t.refs.quote_id.as_deref())
            .bind(t.refs.request_hash.as_deref())
            .bind(t.refs.chain_tx.as_deref())
            .bind(t.refs.payer.as_deref())
            .bind(t.refs.nonce.as_deref())
            .bind(t.refs.reason.as_deref())
            .bind(t.group_id.as_ref().map(TransferId::as_str))
            .bind(t.pending_id.as_ref().map(TransferId::as_str))
            .bind(t.expires_at.map(|e| db_i64(e.0)))
            .bind(db_i64(t.created_at.0))
            .fetch_optional(&mut *c)
            .await)?;
        Ok(seq.map(|(seq,)| seq))
    }

    /// Adds signed deltas to an account's counters. The schema's CHECKs are evaluated by this
    /// very statement: the balance bound, and that no counter goes negative.
    pub(super) async fn add_to_counters(
        &mut self,
        id: &AccountId,
        d: [i64; 4],
    ) -> Result<(), sqlx::Error> {
        on_tx!(self, |c| sqlx::query(
            "UPDATE ledger_accounts SET debits_posted = debits_posted + $2, \
             credits_posted = credits_posted + $3, debits_pending = debits_pending + $4, \
             credits_pending = credits_pending + $5 WHERE id = $1"
        )
        .bind(id.as_str())
        .bind(d[0])
        .bind(d[1])
        .bind(d[2])
        .bind(d[3])
        .execute(&mut *c)
        .await
        .map(|_| ()))
    }
}

const SELECT_TRANSFER_BY_ID: &str = concat!(
    "SELECT ",
    transfer_columns!(),
    " FROM ledger_transfers WHERE id = $1"
);

const INSERT_TRANSFER: &str = "INSERT INTO ledger_transfers (id, kind, debit_account, \
     credit_account, amount, quote_id, request_hash, chain_tx, payer, nonce, reason, group_id, \
     pending_id, expires_at_ms, created_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
     ON CONFLICT (id) DO NOTHING RETURNING seq";

const SELECT_ACCOUNT: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM ledger_accounts WHERE id = $1"
);

/// Amounts are validated to fit i64 before they get here.
fn db_amount(a: UsdMicros) -> i64 {
    db_i64(a.0)
}

/// Times and amounts beyond i64 were refused earlier; saturating keeps this total anyway.
pub(super) fn db_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Values read back are non-negative (the schema says so); a negative one would be corruption.
fn from_db_u64(v: i64, what: &str) -> Result<u64, LedgerError> {
    u64::try_from(v).map_err(|_| LedgerError::Database(format!("negative {what} {v} in ledger")))
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct AccountRow {
    pub id: String,
    pub kind: String,
    pub owner: Option<String>,
    pub allow_negative: bool,
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
    pub created_at_ms: i64,
}

impl AccountRow {
    pub fn counters(&self) -> Result<Counters, LedgerError> {
        Ok(Counters {
            debits_posted: from_db_u64(self.debits_posted, "counter")?,
            credits_posted: from_db_u64(self.credits_posted, "counter")?,
            debits_pending: from_db_u64(self.debits_pending, "counter")?,
            credits_pending: from_db_u64(self.credits_pending, "counter")?,
        })
    }

    pub fn account(&self) -> Result<super::types::Account, LedgerError> {
        Ok(super::types::Account {
            id: AccountId::from_db(self.id.clone()),
            kind: AccountKind::from_db(&self.kind)?,
            owner: self.owner.clone(),
            allow_negative: self.allow_negative,
            created_at: UnixMillis(from_db_u64(self.created_at_ms, "time")?),
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct TransferRow {
    seq: i64,
    id: String,
    kind: String,
    debit_account: String,
    credit_account: String,
    amount: i64,
    quote_id: Option<String>,
    request_hash: Option<String>,
    chain_tx: Option<String>,
    payer: Option<String>,
    nonce: Option<String>,
    reason: Option<String>,
    group_id: Option<String>,
    pending_id: Option<String>,
    expires_at_ms: Option<i64>,
    created_at_ms: i64,
}

impl TransferRow {
    pub fn into_transfer(self) -> Result<Transfer, LedgerError> {
        Ok(Transfer {
            id: TransferId::from_db(self.id),
            seq: self.seq,
            kind: TransferKind::from_db(&self.kind)?,
            debit: AccountId::from_db(self.debit_account),
            credit: AccountId::from_db(self.credit_account),
            amount: UsdMicros(from_db_u64(self.amount, "amount")?),
            refs: References {
                quote_id: self.quote_id,
                request_hash: self.request_hash,
                chain_tx: self.chain_tx,
                payer: self.payer,
                nonce: self.nonce,
                reason: self.reason,
            },
            group_id: self.group_id.map(TransferId::from_db),
            pending_id: self.pending_id.map(TransferId::from_db),
            expires_at: self
                .expires_at_ms
                .map(|e| from_db_u64(e, "time").map(UnixMillis))
                .transpose()?,
            created_at: UnixMillis(from_db_u64(self.created_at_ms, "time")?),
        })
    }
}

// ---- Statements outside a write transaction (single statements: each sees one snapshot). ----

pub(super) async fn account(db: &Db, id: &AccountId) -> Result<Option<AccountRow>, LedgerError> {
    Ok(on_db!(db, |p| sqlx::query_as(SELECT_ACCOUNT)
        .bind(id.as_str())
        .fetch_optional(p)
        .await)?)
}

/// Accounts in id order after `after` (exclusive), at most `limit`.
pub(super) async fn accounts(
    db: &Db,
    after: &str,
    limit: i64,
) -> Result<Vec<AccountRow>, LedgerError> {
    Ok(on_db!(db, |p| sqlx::query_as(concat!(
        "SELECT ",
        account_columns!(),
        " FROM ledger_accounts WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(p)
    .await)?)
}

pub(super) async fn account_by_owner(
    db: &Db,
    owner: &str,
) -> Result<Option<AccountRow>, LedgerError> {
    Ok(on_db!(db, |p| sqlx::query_as(concat!(
        "SELECT ",
        account_columns!(),
        " FROM ledger_accounts WHERE owner = $1"
    ))
    .bind(owner)
    .fetch_optional(p)
    .await)?)
}

/// Inserts an account unless its id exists. `Ok(true)` if this call created it.
pub(super) async fn insert_account(
    db: &Db,
    a: &super::types::NewAccount,
    now: UnixMillis,
) -> Result<bool, sqlx::Error> {
    let row: Option<(String,)> = on_db!(db, |p| sqlx::query_as(
        "INSERT INTO ledger_accounts (id, kind, owner, allow_negative, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING RETURNING id"
    )
    .bind(a.id.as_str())
    .bind(a.kind.as_str())
    .bind(a.owner.as_deref())
    .bind(a.allow_negative)
    .bind(db_i64(now.0))
    .fetch_optional(p)
    .await)?;
    Ok(row.is_some())
}

/// Newest first, strictly older than `before`.
pub(super) async fn history(
    db: &Db,
    account: &AccountId,
    before: i64,
    limit: i64,
) -> Result<Vec<Transfer>, LedgerError> {
    // Two index range scans merged, rather than one OR over two columns, so each side uses its
    // (account, seq) index on both backends.
    const SQL: &str = concat!(
        "SELECT ",
        transfer_columns!(),
        " FROM ledger_transfers WHERE seq IN ( \
           SELECT seq FROM (SELECT seq FROM ledger_transfers WHERE debit_account = $1 AND seq < $2 \
                            ORDER BY seq DESC LIMIT $3) d \
           UNION \
           SELECT seq FROM (SELECT seq FROM ledger_transfers WHERE credit_account = $1 AND seq < $2 \
                            ORDER BY seq DESC LIMIT $3) c) \
         ORDER BY seq DESC LIMIT $3"
    );
    let rows: Vec<TransferRow> = on_db!(db, |p| sqlx::query_as(SQL)
        .bind(account.as_str())
        .bind(before)
        .bind(limit)
        .fetch_all(p)
        .await)?;
    rows.into_iter().map(TransferRow::into_transfer).collect()
}

/// Every transfer newest first, strictly older than `before`, optionally only of one kind
/// and touching one account: the operator's list. (A scan along `seq` with the filters
/// applied; meant for pages of an admin view, not for the request path.)
pub(super) async fn transfers(
    db: &Db,
    kind: Option<TransferKind>,
    account: Option<&AccountId>,
    before: i64,
    limit: i64,
) -> Result<Vec<Transfer>, LedgerError> {
    const SQL: &str = concat!(
        "SELECT ",
        transfer_columns!(),
        " FROM ledger_transfers WHERE seq < $1 AND ($2 IS NULL OR kind = $2) \
           AND ($3 IS NULL OR debit_account = $3 OR credit_account = $3) \
         ORDER BY seq DESC LIMIT $4"
    );
    let kind = kind.map(TransferKind::as_str);
    let account = account.map(AccountId::as_str);
    let rows: Vec<TransferRow> = on_db!(db, |p| sqlx::query_as(SQL)
        .bind(before)
        .bind(kind)
        .bind(account)
        .bind(limit)
        .fetch_all(p)
        .await)?;
    rows.into_iter().map(TransferRow::into_transfer).collect()
}

/// Holds not yet posted or voided, newest first.
pub(super) async fn open_holds(db: &Db, limit: i64) -> Result<Vec<Transfer>, LedgerError> {
    const SQL: &str = concat!(
        "SELECT ",
        transfer_columns!(),
        " FROM ledger_transfers h WHERE h.kind = 'hold' \
           AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = h.id) \
         ORDER BY h.seq DESC LIMIT $1"
    );
    let rows: Vec<TransferRow> =
        on_db!(db, |p| sqlx::query_as(SQL).bind(limit).fetch_all(p).await)?;
    rows.into_iter().map(TransferRow::into_transfer).collect()
}

/// Unresolved holds that expired at or before `now`, oldest expiry first.
pub(super) async fn expired_holds(
    db: &Db,
    now: UnixMillis,
    limit: i64,
) -> Result<Vec<TransferId>, LedgerError> {
    let rows: Vec<(String,)> = on_db!(db, |p| sqlx::query_as(
        "SELECT h.id FROM ledger_transfers h WHERE h.kind = 'hold' AND h.expires_at_ms <= $1 \
         AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = h.id) \
         ORDER BY h.expires_at_ms, h.id LIMIT $2"
    )
    .bind(db_i64(now.0))
    .bind(limit)
    .fetch_all(p)
    .await)?;
    Ok(rows
        .into_iter()
        .map(|(id,)| TransferId::from_db(id))
        .collect())
}

/// Every account's stored counters next to the counters recomputed from its transfers, in one
/// statement (one consistent snapshot on both backends).
///
/// Recomputation rules: single-phase kinds and posts add `amount` to the posted counters; holds
/// add `amount` to the pending counters; posts and voids take the whole hold's amount back off
/// the pending counters (a partial post releases the rest).
pub(super) async fn recompute(db: &Db) -> Result<Vec<RecomputedRow>, LedgerError> {
    const SQL: &str = "SELECT a.id, a.allow_negative, a.debits_posted, a.credits_posted, \
         a.debits_pending, a.credits_pending, \
         CAST(COALESCE(SUM(m.dp), 0) AS BIGINT) AS r_debits_posted, \
         CAST(COALESCE(SUM(m.cp), 0) AS BIGINT) AS r_credits_posted, \
         CAST(COALESCE(SUM(m.dq), 0) AS BIGINT) AS r_debits_pending, \
         CAST(COALESCE(SUM(m.cq), 0) AS BIGINT) AS r_credits_pending \
         FROM ledger_accounts a LEFT JOIN ( \
           SELECT debit_account AS account, \
                  CASE WHEN kind IN ('hold', 'void') THEN 0 ELSE amount END AS dp, \
                  0 AS cp, CASE WHEN kind = 'hold' THEN amount ELSE 0 END AS dq, 0 AS cq \
             FROM ledger_transfers \
           UNION ALL \
           SELECT credit_account, 0, CASE WHEN kind IN ('hold', 'void') THEN 0 ELSE amount END, \
                  0, CASE WHEN kind = 'hold' THEN amount ELSE 0 END \
             FROM ledger_transfers \
           UNION ALL \
           SELECT h.debit_account, 0, 0, -h.amount, 0 \
             FROM ledger_transfers r JOIN ledger_transfers h ON h.id = r.pending_id \
           UNION ALL \
           SELECT h.credit_account, 0, 0, 0, -h.amount \
             FROM ledger_transfers r JOIN ledger_transfers h ON h.id = r.pending_id \
         ) m ON m.account = a.id \
         GROUP BY a.id, a.allow_negative, a.debits_posted, a.credits_posted, a.debits_pending, \
                  a.credits_pending \
         ORDER BY a.id";
    Ok(on_db!(db, |p| sqlx::query_as(SQL).fetch_all(p).await)?)
}

/// Posts and voids inconsistent with their hold (the write path never produces one; this
/// audits rows written by any other path).
pub(super) async fn bad_resolutions(db: &Db) -> Result<Vec<TransferId>, LedgerError> {
    const SQL: &str = "SELECT r.id FROM ledger_transfers r \
         LEFT JOIN ledger_transfers h ON h.id = r.pending_id \
         WHERE r.pending_id IS NOT NULL AND ( \
           h.id IS NULL OR h.kind <> 'hold' \
           OR r.debit_account <> h.debit_account OR r.credit_account <> h.credit_account \
           OR (r.kind = 'post' AND r.amount > h.amount) \
           OR (r.kind = 'void' AND r.amount <> h.amount)) \
         ORDER BY r.id";
    let rows: Vec<(String,)> = on_db!(db, |p| sqlx::query_as(SQL).fetch_all(p).await)?;
    Ok(rows
        .into_iter()
        .map(|(id,)| TransferId::from_db(id))
        .collect())
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct RecomputedRow {
    pub id: String,
    pub allow_negative: bool,
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
    pub r_debits_posted: i64,
    pub r_credits_posted: i64,
    pub r_debits_pending: i64,
    pub r_credits_pending: i64,
}

/// A stored transfer read outside any transaction. Transfers are immutable once written, so a
/// row read here cannot change before the caller acts on it (only new rows can appear).
pub(super) async fn transfer(db: &Db, id: &TransferId) -> Result<Option<Transfer>, LedgerError> {
    let row: Option<TransferRow> = on_db!(db, |p| sqlx::query_as(SELECT_TRANSFER_BY_ID)
        .bind(id.as_str())
        .fetch_optional(p)
        .await)?;
    row.map(TransferRow::into_transfer).transpose()
}

/// Counter deltas of one account, narrowed to what the UPDATE adds.
pub(super) struct AccountDelta {
    pub account: AccountId,
    /// debits_posted, credits_posted, debits_pending, credits_pending.
    pub add: [i64; 4],
}

/// One write for `ledger_apply`: its rows, and the deltas of the accounts it touches.
pub(super) struct BatchWrite {
    pub rows: Vec<Transfer>,
    pub deltas: Vec<AccountDelta>,
}

/// PostgreSQL's one-statement write of a batch (`ledger_apply`, migration 0010): locks every
/// touched account in id order, then applies each write in its own subtransaction, in
/// autocommit. Per write: `Some(seqs)` (in its rows' order) when it was written, `None` when
/// it was not (a replay, a refusal, an unknown account) and the transactional path decides.
pub(super) async fn apply_batch(
    pool: &sqlx::PgPool,
    writes: &[BatchWrite],
) -> Result<Vec<Option<Vec<i64>>>, sqlx::Error> {
    let rows: Vec<&Transfer> = writes.iter().flat_map(|w| &w.rows).collect();
    let deltas: Vec<&AccountDelta> = writes.iter().flat_map(|w| &w.deltas).collect();
    // BTreeSet order is byte order: the order the transactional path locks in.
    let locks: std::collections::BTreeSet<&str> =
        deltas.iter().map(|d| d.account.as_str()).collect();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let col = |f: fn(&Transfer) -> Option<&str>| rows.iter().map(|t| f(t)).collect::<Vec<_>>();
    let add = |k: usize| deltas.iter().map(|d| d.add[k]).collect::<Vec<_>>();
    let (seqs,): (Vec<Option<i64>>,) = sqlx::query_as(
        "SELECT ledger_apply($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
         $16, $17, $18, $19, $20, $21, $22, $23)",
    )
    .bind(
        writes
            .iter()
            .map(|w| count(w.rows.len()))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|t| t.id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| t.kind.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| t.debit.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| t.credit.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|t| db_amount(t.amount)).collect::<Vec<_>>())
    .bind(col(|t| t.refs.quote_id.as_deref()))
    .bind(col(|t| t.refs.request_hash.as_deref()))
    .bind(col(|t| t.refs.chain_tx.as_deref()))
    .bind(col(|t| t.refs.payer.as_deref()))
    .bind(col(|t| t.refs.nonce.as_deref()))
    .bind(col(|t| t.refs.reason.as_deref()))
    .bind(col(|t| t.group_id.as_ref().map(TransferId::as_str)))
    .bind(col(|t| t.pending_id.as_ref().map(TransferId::as_str)))
    .bind(
        rows.iter()
            .map(|t| t.expires_at.map(|e| db_i64(e.0)))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|t| db_i64(t.created_at.0))
            .collect::<Vec<_>>(),
    )
    .bind(locks.into_iter().collect::<Vec<_>>())
    .bind(
        writes
            .iter()
            .map(|w| count(w.deltas.len()))
            .collect::<Vec<_>>(),
    )
    .bind(
        deltas
            .iter()
            .map(|d| d.account.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(add(0))
    .bind(add(1))
    .bind(add(2))
    .bind(add(3))
    .fetch_one(pool)
    .await?;
    if seqs.len() != rows.len() {
        // Rows may have been written that the caller cannot match to writes: refuse the
        // answer, and the transactional path finds them as replays.
        return Err(sqlx::Error::Protocol(format!(
            "ledger_apply returned {} seqs for {} rows",
            seqs.len(),
            rows.len()
        )));
    }
    let mut seqs = seqs.into_iter();
    Ok(writes
        .iter()
        .map(|w| {
            seqs.by_ref()
                .take(w.rows.len())
                .collect::<Option<Vec<i64>>>()
        })
        .collect())
}
