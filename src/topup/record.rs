//! Top-up records (`topups`) and their ledger transfers. The row is written first and the
//! transfer (`topup:<id>`, from the token's inflow account to the agent) is rebuilt from the row
//! every time, so however often a top-up is presented (a retry, a concurrent post of the same
//! transaction, the reconciler) it is credited once, at the amount first recorded.

use serde::Serialize;
use serde_json::Value;

use crate::db::{Db, DbError, on_pool};
use crate::ledger::{
    AccountId, AccountKind, Ledger, LedgerError, NewAccount, NewTransfer, References, TransferId,
    TransferKind,
};
use crate::money::UsdMicros;
use crate::payment::inflow_account;
use crate::time::UnixMillis;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<sqlx::Error> for RecordError {
    fn from(e: sqlx::Error) -> Self {
        RecordError::Db(e.into())
    }
}

/// Where a top-up came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    X402,
    Transfer,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::X402 => "x402",
            Source::Transfer => "transfer",
        }
    }
}

/// A top-up to credit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopupRow {
    pub id: String,
    pub account: String,
    pub network: String,
    pub token: String,
    /// Base units of `token` that arrived.
    pub amount: String,
    pub credit: UsdMicros,
    pub source: Source,
    pub tx_hash: String,
    pub payer: String,
    pub valuation: Value,
    pub created_at_ms: u64,
}

impl TopupRow {
    /// The id of a top-up paid through x402.
    pub fn x402_id(payment_id: &str) -> String {
        format!("pay:{payment_id}")
    }

    /// The id of a plain transfer: one per (network, transaction, log).
    pub fn transfer_id(network: &str, tx: &str, log_index: u64) -> String {
        format!("tx:{network}:{}:{log_index}", tx.to_ascii_lowercase())
    }
}

#[derive(sqlx::FromRow)]
struct RawRow {
    id: String,
    account_id: String,
    network: String,
    token: String,
    amount: String,
    credit_micros: i64,
    source: String,
    tx_hash: String,
    payer: String,
    valuation: String,
    created_at_ms: i64,
}

const COLUMNS: &str = "id, account_id, network, token, amount, credit_micros, source, tx_hash, \
     payer, valuation, created_at_ms";

fn row(r: RawRow) -> TopupRow {
    TopupRow {
        id: r.id,
        account: r.account_id,
        network: r.network,
        token: r.token,
        amount: r.amount,
        credit: UsdMicros(r.credit_micros.max(0) as u64),
        source: if r.source == "x402" {
            Source::X402
        } else {
            Source::Transfer
        },
        tx_hash: r.tx_hash,
        payer: r.payer,
        valuation: serde_json::from_str(&r.valuation).unwrap_or(Value::Null),
        created_at_ms: r.created_at_ms.max(0) as u64,
    }
}

/// Whether this call credited the top-up or found it credited already.
#[derive(Debug, PartialEq, Eq)]
pub enum Booked {
    Credited(TopupRow),
    Already(TopupRow),
}

impl Booked {
    pub fn row(&self) -> &TopupRow {
        match self {
            Booked::Credited(r) | Booked::Already(r) => r,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Topups {
    db: Db,
    ledger: Ledger,
}

impl Topups {
    pub fn new(db: Db, ledger: Ledger) -> Self {
        Topups { db, ledger }
    }

    /// Records and credits `t` once. A second call with the same id changes nothing and
    /// returns the first record (whatever this call's valuation said).
    pub async fn book(&self, t: &TopupRow, now: UnixMillis) -> Result<Booked, RecordError> {
        const INSERT: &str = "INSERT INTO topups (id, account_id, network, token, amount, \
             credit_micros, source, tx_hash, payer, valuation, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING";
        let credit = i64::try_from(t.credit.get())
            .map_err(|_| DbError::Query(format!("top-up {}: credit out of range", t.id)))?;
        let created = i64::try_from(now.0).unwrap_or(i64::MAX);
        let valuation = t.valuation.to_string();
        let inserted = on_pool!(&self.db, p => sqlx::query(INSERT)
            .bind(&t.id)
            .bind(&t.account)
            .bind(&t.network)
            .bind(t.token.to_ascii_lowercase())
            .bind(&t.amount)
            .bind(credit)
            .bind(t.source.as_str())
            .bind(&t.tx_hash)
            .bind(&t.payer)
            .bind(&valuation)
            .bind(created)
            .execute(p)
            .await?
            .rows_affected())
            == 1;
        let stored = self
            .get(&t.id)
            .await?
            .ok_or_else(|| DbError::Query(format!("top-up {} vanished", t.id)))?;
        self.transfer(&stored).await?;
        Ok(if inserted {
            Booked::Credited(stored)
        } else {
            Booked::Already(stored)
        })
    }

    /// The ledger transfer of a recorded top-up (idempotent: its id and content derive from the
    /// row).
    async fn transfer(&self, r: &TopupRow) -> Result<(), RecordError> {
        let inflow = AccountId::new(inflow_account(&r.network, &r.token))?;
        self.ledger
            .create_account(NewAccount {
                id: inflow.clone(),
                kind: AccountKind::System,
                owner: None,
                allow_negative: true,
            })
            .await?;
        let reason = format!(
            "top-up of {} base units of {} at block {}",
            r.amount,
            r.token,
            r.valuation
                .get("block")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        );
        self.ledger
            .transfer(NewTransfer {
                id: TransferId::new(format!("topup:{}", r.id))?,
                kind: TransferKind::Topup,
                debit: inflow,
                credit: AccountId::new(r.account.clone())?,
                amount: r.credit,
                refs: References {
                    chain_tx: Some(r.tx_hash.clone()),
                    payer: Some(r.payer.clone()),
                    reason: Some(reason),
                    ..References::default()
                },
            })
            .await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<TopupRow>, RecordError> {
        let sql = format!("SELECT {COLUMNS} FROM topups WHERE id = $1");
        let r: Option<RawRow> = on_pool!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(id)
            .fetch_optional(p)
            .await?);
        Ok(r.map(row))
    }

    /// An account's top-ups, newest first.
    pub async fn of_account(
        &self,
        account: &str,
        limit: i64,
    ) -> Result<Vec<TopupRow>, RecordError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM topups WHERE account_id = $1 ORDER BY created_at_ms DESC, id LIMIT $2"
        );
        let rows: Vec<RawRow> = on_pool!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(account)
            .bind(limit)
            .fetch_all(p)
            .await?);
        Ok(rows.into_iter().map(row).collect())
    }

    /// The most recent top-ups of every account, newest first.
    pub async fn recent(&self, limit: i64) -> Result<Vec<TopupRow>, RecordError> {
        let sql = format!("SELECT {COLUMNS} FROM topups ORDER BY created_at_ms DESC, id LIMIT $1");
        let rows: Vec<RawRow> = on_pool!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(limit)
            .fetch_all(p)
            .await?);
        Ok(rows.into_iter().map(row).collect())
    }

    /// Credits an account received from top-ups since `since`.
    pub async fn credited_since(
        &self,
        account: &str,
        since: UnixMillis,
    ) -> Result<UsdMicros, RecordError> {
        const SUM: &str = "SELECT CAST(COALESCE(SUM(credit_micros), 0) AS BIGINT) FROM topups \
             WHERE account_id = $1 AND created_at_ms >= $2";
        let (sum,): (i64,) = on_pool!(&self.db, p => sqlx::query_as(SUM)
            .bind(account)
            .bind(i64::try_from(since.0).unwrap_or(i64::MAX))
            .fetch_one(p)
            .await?);
        Ok(UsdMicros(sum.max(0) as u64))
    }
}
