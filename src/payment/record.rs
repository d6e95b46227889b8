//! The durable payment record (`payments` table): the claim on an authorization, written before
//! anything is broadcast, and its progress to a final state.
//!
//! ```text
//! claimed ──► submitted ──► settled ──► credited
//!    │            │            (money moved; ledger written)
//!    └────────────┴──► failed  (money did not and cannot move)
//! ```
//! Transitions only move forward (each UPDATE names the states it may leave), so a late writer
//! (a slow request racing the reconciler) cannot undo a final state.

use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError, on_pool};
use crate::time::UnixMillis;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Claimed,
    Submitted,
    Settled,
    Credited,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Claimed => "claimed",
            Status::Submitted => "submitted",
            Status::Settled => "settled",
            Status::Credited => "credited",
            Status::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Status, DbError> {
        Ok(match s {
            "claimed" => Status::Claimed,
            "submitted" => Status::Submitted,
            "settled" => Status::Settled,
            "credited" => Status::Credited,
            "failed" => Status::Failed,
            other => return Err(DbError::Query(format!("unknown payment status {other:?}"))),
        })
    }

    /// Money moved (or will be recorded as moved): nothing may fail it any more.
    pub fn money_moved(self) -> bool {
        matches!(self, Status::Settled | Status::Credited)
    }
}

/// The authorization as stored: enough to find it on chain and to settle it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredAuthorization {
    pub from: String,
    pub to: String,
    pub value: String,
    pub valid_after: String,
    pub valid_before: String,
    pub nonce: String,
    pub signature: String,
    /// `extra.assetTransferMethod` of the scheme; absent for EIP-3009 (rows written before
    /// other schemes existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The x402 scheme when it is not `exact` (absent in rows written before `upto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The scheme's own payload, for schemes whose message has more than the fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// A new claim.
#[derive(Clone, Debug)]
pub struct NewPayment {
    pub id: String,
    pub network: String,
    pub asset: String,
    pub payer: String,
    pub nonce: String,
    pub pay_to: String,
    pub amount: String,
    pub price_micros: u64,
    pub quote_id: String,
    pub request_hash: String,
    pub x402_version: u32,
    pub mode: &'static str,
    pub authorization: StoredAuthorization,
    pub valid_before: u64,
    pub from_block: Option<u64>,
    /// A top-up's account and valuation (JSON), for a payment of a top-up quote.
    pub topup: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaymentRow {
    pub id: String,
    pub network: String,
    pub asset: String,
    pub payer: String,
    pub nonce: String,
    pub pay_to: String,
    pub amount: String,
    pub price_micros: u64,
    pub quote_id: String,
    pub request_hash: String,
    pub x402_version: u32,
    pub mode: String,
    pub authorization: StoredAuthorization,
    pub valid_before: u64,
    pub from_block: Option<u64>,
    pub status: Status,
    pub tx_hash: Option<String>,
    pub error: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub topup: Option<String>,
}

/// A row as stored (integers are signed in SQL).
#[derive(sqlx::FromRow)]
struct RawRow {
    id: String,
    network: String,
    asset: String,
    payer: String,
    nonce: String,
    pay_to: String,
    amount: String,
    price_micros: i64,
    quote_id: String,
    request_hash: String,
    x402_version: i32,
    mode: String,
    signed_auth: String,
    valid_before: i64,
    from_block: Option<i64>,
    status: String,
    tx_hash: Option<String>,
    error: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    topup: Option<String>,
}

const COLUMNS: &str = "id, network, asset, payer, nonce, pay_to, amount, price_micros, quote_id, \
     request_hash, x402_version, mode, signed_auth, valid_before, from_block, status, tx_hash, \
     error, created_at_ms, updated_at_ms, topup";

fn row(r: RawRow) -> Result<PaymentRow, DbError> {
    let authorization = serde_json::from_str(&r.signed_auth)
        .map_err(|e| DbError::Query(format!("payment {}: stored authorization: {e}", r.id)))?;
    let u = |v: i64| v.max(0) as u64;
    Ok(PaymentRow {
        status: Status::parse(&r.status)?,
        id: r.id,
        network: r.network,
        asset: r.asset,
        payer: r.payer,
        nonce: r.nonce,
        pay_to: r.pay_to,
        amount: r.amount,
        price_micros: u(r.price_micros),
        quote_id: r.quote_id,
        request_hash: r.request_hash,
        x402_version: r.x402_version.max(0) as u32,
        mode: r.mode,
        authorization,
        valid_before: u(r.valid_before),
        from_block: r.from_block.map(u),
        tx_hash: r.tx_hash,
        error: r.error,
        created_at_ms: u(r.created_at_ms),
        updated_at_ms: u(r.updated_at_ms),
        topup: r.topup,
    })
}

fn ms(t: UnixMillis) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[derive(Clone, Debug)]
pub struct PaymentStore {
    db: Db,
}

/// Whether a claim was taken, or who holds it.
#[derive(Debug)]
pub enum Claim {
    Taken,
    /// The authorization was claimed before (a replay, or a concurrent duplicate).
    Held(Box<PaymentRow>),
}

impl PaymentStore {
    pub fn new(db: Db) -> Self {
        PaymentStore { db }
    }

    /// Claims the authorization: exactly one caller wins per (network, asset, payer, nonce),
    /// whatever the concurrency and however many instances share the database.
    pub async fn claim(&self, p: &NewPayment, now: UnixMillis) -> Result<Claim, DbError> {
        const INSERT: &str = "INSERT INTO payments (id, network, asset, payer, nonce, pay_to, \
             amount, price_micros, quote_id, request_hash, x402_version, mode, signed_auth, \
             valid_before, from_block, status, created_at_ms, updated_at_ms, topup) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'claimed', $16, $16, $17) \
             ON CONFLICT DO NOTHING";
        let auth = serde_json::to_string(&p.authorization).expect("strings serialise");
        let inserted = on_pool!(&self.db, pool => sqlx::query(INSERT)
            .bind(&p.id)
            .bind(&p.network)
            .bind(&p.asset)
            .bind(&p.payer)
            .bind(&p.nonce)
            .bind(&p.pay_to)
            .bind(&p.amount)
            .bind(int(p.price_micros))
            .bind(&p.quote_id)
            .bind(&p.request_hash)
            .bind(i64::from(p.x402_version))
            .bind(p.mode)
            .bind(&auth)
            .bind(int(p.valid_before))
            .bind(p.from_block.map(int))
            .bind(ms(now))
            .bind(&p.topup)
            .execute(pool)
            .await?
            .rows_affected());
        if inserted == 1 {
            return Ok(Claim::Taken);
        }
        let held = self
            .by_key(&p.network, &p.asset, &p.payer, &p.nonce)
            .await?
            .or(self.get(&p.id).await?)
            .ok_or_else(|| DbError::Query("claim refused but no holder found".into()))?;
        Ok(Claim::Held(Box::new(held)))
    }

    pub async fn get(&self, id: &str) -> Result<Option<PaymentRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM payments WHERE id = $1");
        let r: Option<RawRow> = on_pool!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(id)
            .fetch_optional(p)
            .await?);
        r.map(row).transpose()
    }

    async fn by_key(
        &self,
        network: &str,
        asset: &str,
        payer: &str,
        nonce: &str,
    ) -> Result<Option<PaymentRow>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM payments WHERE network = $1 AND asset = $2 AND payer = $3 AND nonce = $4"
        );
        let r: Option<RawRow> = on_pool!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(network)
            .bind(asset)
            .bind(payer)
            .bind(nonce)
            .fetch_optional(p)
            .await?);
        r.map(row).transpose()
    }

    /// Payments not final and untouched since `before`: the reconciler's work.
    pub async fn open_since(
        &self,
        before: UnixMillis,
        limit: i64,
    ) -> Result<Vec<PaymentRow>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM payments WHERE status IN ('claimed', 'submitted', 'settled') \
             AND updated_at_ms <= $1 ORDER BY updated_at_ms LIMIT $2"
        );
        let rows: Vec<RawRow> = on_pool!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(ms(before))
            .bind(limit)
            .fetch_all(p)
            .await?);
        rows.into_iter().map(row).collect()
    }

    /// Recent payments, newest first (operators' view).
    pub async fn recent(&self, limit: i64) -> Result<Vec<PaymentRow>, DbError> {
        let sql =
            format!("SELECT {COLUMNS} FROM payments ORDER BY created_at_ms DESC, id LIMIT $1");
        let rows: Vec<RawRow> = on_pool!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(limit)
            .fetch_all(p)
            .await?);
        rows.into_iter().map(row).collect()
    }

    async fn transition(
        &self,
        id: &str,
        to: Status,
        from: &[Status],
        tx_hash: Option<&str>,
        error: Option<&str>,
        now: UnixMillis,
    ) -> Result<bool, DbError> {
        let allowed = from
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE payments SET status = $1, tx_hash = COALESCE($2, tx_hash), \
             error = COALESCE($3, error), updated_at_ms = $4 WHERE id = $5 AND status IN ({allowed})"
        );
        let n = on_pool!(&self.db, p => sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(to.as_str())
            .bind(tx_hash)
            .bind(error)
            .bind(ms(now))
            .bind(id)
            .execute(p)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// An `upto` payment's charge, fixed once the upstream answered and before anything is
    /// broadcast: from here on the row's `amount` and `price_micros` are what settles and what
    /// the ledger books, so the reconciler looks for (and credits) exactly this. Only a claimed
    /// row can be charged, and only down from the amount claimed.
    pub async fn charge(
        &self,
        id: &str,
        amount: &str,
        price_micros: u64,
        now: UnixMillis,
    ) -> Result<bool, DbError> {
        const SQL: &str = "UPDATE payments SET amount = $1, price_micros = $2, updated_at_ms = $3 \
             WHERE id = $4 AND status = 'claimed' AND price_micros >= $2";
        let n = on_pool!(&self.db, p => sqlx::query(SQL)
            .bind(amount)
            .bind(int(price_micros))
            .bind(ms(now))
            .bind(id)
            .execute(p)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// The settlement transaction was broadcast (its outcome is not known yet).
    pub async fn submitted(&self, id: &str, tx: &str, now: UnixMillis) -> Result<bool, DbError> {
        self.transition(
            id,
            Status::Submitted,
            &[Status::Claimed],
            Some(tx),
            None,
            now,
        )
        .await
    }

    /// The money moved, in `tx`.
    pub async fn settled(&self, id: &str, tx: &str, now: UnixMillis) -> Result<bool, DbError> {
        self.transition(
            id,
            Status::Settled,
            &[Status::Claimed, Status::Submitted],
            Some(tx),
            None,
            now,
        )
        .await
    }

    /// The ledger holds the payment.
    pub async fn credited(&self, id: &str, now: UnixMillis) -> Result<bool, DbError> {
        self.transition(id, Status::Credited, &[Status::Settled], None, None, now)
            .await
    }

    /// The money did not move and cannot any more. Never applies to a settled payment.
    pub async fn failed(&self, id: &str, reason: &str, now: UnixMillis) -> Result<bool, DbError> {
        self.transition(
            id,
            Status::Failed,
            &[Status::Claimed, Status::Submitted],
            None,
            Some(reason),
            now,
        )
        .await
    }

    /// Per network, asset and status: how many payments and the price they paid for, in
    /// micro-dollars (the token amounts are decimal text of different tokens, so they are not
    /// summed here).
    pub async fn totals(&self) -> Result<Vec<PaymentTotals>, DbError> {
        const SQL: &str = "SELECT network, asset, status, COUNT(*), \
             CAST(COALESCE(SUM(price_micros), 0) AS BIGINT) FROM payments \
             GROUP BY network, asset, status ORDER BY network, asset, status";
        let rows: Vec<(String, String, String, i64, i64)> =
            on_pool!(&self.db, p => sqlx::query_as(SQL).fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .map(
                |(network, asset, status, payments, price_micros)| PaymentTotals {
                    network,
                    asset,
                    status,
                    payments,
                    price_micros,
                },
            )
            .collect())
    }

    /// Payment counts by status (for `/metrics` and the dashboard).
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, DbError> {
        const SQL: &str = "SELECT status, COUNT(*) FROM payments GROUP BY status ORDER BY status";
        Ok(on_pool!(&self.db, p => sqlx::query_as(SQL).fetch_all(p).await?))
    }
}

/// One line of [`PaymentStore::totals`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PaymentTotals {
    pub network: String,
    pub asset: String,
    pub status: String,
    pub payments: i64,
    pub price_micros: i64,
}
