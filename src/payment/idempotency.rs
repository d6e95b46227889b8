//! Answers kept under a buyer's payment id (the x402 `payment-identifier` extension), durably
//! and shared by every instance: the first request with an id takes it (`pending`), serves, and
//! stores its answer (`done`); a retry with the same id and the same payment gets that answer; the
//! same id with another payment is a conflict. Expired ids are taken over by the next request.

use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError, on_pool};
use crate::time::UnixMillis;

/// An answer as stored: status, the headers worth replaying, and the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What taking an id found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// The id is this request's: serve it, then [`PaymentIds::store`] or [`PaymentIds::release`].
    Fresh,
    /// The same id and payment were served before: this is the answer.
    Replay(StoredAnswer),
    /// The same id came with another payment (or for another request).
    Conflict,
    /// The same id and payment are being served right now by another request.
    InProgress,
}

#[derive(Clone, Debug)]
pub struct PaymentIds {
    db: Db,
}

#[derive(sqlx::FromRow)]
struct Row {
    fingerprint: String,
    state: String,
    status: Option<i64>,
    headers: Option<String>,
    body: Option<Vec<u8>>,
}

fn ms(t: UnixMillis) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

impl PaymentIds {
    pub fn new(db: Db) -> Self {
        PaymentIds { db }
    }

    /// Takes `key` for a request whose payment has `fingerprint`, until `expires_at`.
    pub async fn take(
        &self,
        key: &str,
        fingerprint: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<Taken, DbError> {
        // An expired id is free again (its answer is no longer promised).
        on_pool!(&self.db, p => sqlx::query("DELETE FROM payment_ids WHERE key = $1 AND expires_at_ms <= $2")
            .bind(key)
            .bind(ms(now))
            .execute(p)
            .await
            .map(|_| ())?);
        const INSERT: &str = "INSERT INTO payment_ids (key, fingerprint, state, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, 'pending', $3, $4) ON CONFLICT DO NOTHING";
        let inserted = on_pool!(&self.db, p => sqlx::query(INSERT)
            .bind(key)
            .bind(fingerprint)
            .bind(ms(now))
            .bind(ms(expires_at))
            .execute(p)
            .await?
            .rows_affected());
        if inserted == 1 {
            return Ok(Taken::Fresh);
        }
        const SELECT: &str =
            "SELECT fingerprint, state, status, headers, body FROM payment_ids WHERE key = $1";
        let row: Option<Row> = on_pool!(&self.db, p => sqlx::query_as(SELECT)
            .bind(key)
            .fetch_optional(p)
            .await?);
        let Some(row) = row else {
            // Released between our insert and our read: the caller may simply retry.
            return Ok(Taken::InProgress);
        };
        if row.fingerprint != fingerprint {
            return Ok(Taken::Conflict);
        }
        if row.state != "done" {
            return Ok(Taken::InProgress);
        }
        let headers = row
            .headers
            .as_deref()
            .and_then(|h| serde_json::from_str(h).ok())
            .ok_or_else(|| DbError::Query(format!("payment id {key}: stored headers")))?;
        Ok(Taken::Replay(StoredAnswer {
            status: row
                .status
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| DbError::Query(format!("payment id {key}: stored status")))?,
            headers,
            body: row.body.unwrap_or_default(),
        }))
    }

    /// Stores the answer of the request that took `key`.
    pub async fn store(&self, key: &str, answer: &StoredAnswer) -> Result<bool, DbError> {
        const SQL: &str = "UPDATE payment_ids SET state = 'done', status = $1, headers = $2, body = $3 \
             WHERE key = $4 AND state = 'pending'";
        let headers = serde_json::to_string(&answer.headers).expect("strings serialise");
        let n = on_pool!(&self.db, p => sqlx::query(SQL)
            .bind(i64::from(answer.status))
            .bind(&headers)
            .bind(&answer.body)
            .bind(key)
            .execute(p)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Gives `key` up: nothing was paid or served under it, so a retry starts afresh.
    pub async fn release(&self, key: &str) -> Result<(), DbError> {
        on_pool!(&self.db, p => sqlx::query("DELETE FROM payment_ids WHERE key = $1 AND state = 'pending'")
            .bind(key)
            .execute(p)
            .await
            .map(|_| ())?);
        Ok(())
    }
}
