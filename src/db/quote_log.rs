//! The quote log: every created quote, written to the database off the request path.
//!
//! The 402 path must not wait for a database round trip (it is the hot path, and a quote is
//! already safe in the quote store). So `record` only enqueues; a writer task inserts in
//! batches. The queue is bounded: if the database falls behind, rows are dropped and counted —
//! this is analytics, not money (payments and credits never go through here).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::QueryBuilder;
use tokio::sync::{mpsc, oneshot};

use super::{Db, DbError};
use crate::quote::Quote;

const QUEUE: usize = 10_000;
const BATCH: usize = 500;
const LINGER: Duration = Duration::from_millis(50);

/// One row of the `quotes` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteRow {
    pub id: String,
    pub request_hash: String,
    pub route: String,
    pub rule: String,
    pub method: String,
    pub path: String,
    pub price_usd_micros: i64,
    pub offers: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

impl QuoteRow {
    pub fn from_quote(q: &Quote) -> QuoteRow {
        QuoteRow {
            id: q.id.to_string(),
            request_hash: q.request_hash.to_hex(),
            route: q.rule.route.clone(),
            rule: q.rule.rule.clone(),
            method: q.method.clone(),
            path: q.path.clone(),
            // Prices are capped far below i64::MAX micro-dollars (pricing.max_price).
            price_usd_micros: i64::try_from(q.price.0).unwrap_or(i64::MAX),
            offers: serde_json::to_string(&q.offers).expect("offers serialise"),
            created_at_ms: i64::try_from(q.created_at.0).unwrap_or(i64::MAX),
            expires_at_ms: i64::try_from(q.expires_at.0).unwrap_or(i64::MAX),
        }
    }
}

enum Msg {
    Row(QuoteRow),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct QuoteLog {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
    db: Db,
}

impl QuoteLog {
    /// Starts the writer task.
    pub fn spawn(db: Db) -> QuoteLog {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(db.clone(), rx));
        QuoteLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            db,
        }
    }

    /// Enqueues a created quote; never waits.
    pub fn record(&self, q: &Quote) {
        if self.tx.try_send(Msg::Row(QuoteRow::from_quote(q))).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "quote log is behind; rows dropped");
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything enqueued before this call is written (or failed).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}

async fn writer(db: Db, mut rx: mpsc::Receiver<Msg>) {
    let mut batch: Vec<QuoteRow> = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        let mut waiters = Vec::new();
        let push =
            |m: Msg, batch: &mut Vec<QuoteRow>, waiters: &mut Vec<oneshot::Sender<()>>| match m {
                Msg::Row(r) => batch.push(r),
                Msg::Flush(w) => waiters.push(w),
            };
        push(first, &mut batch, &mut waiters);
        // Linger briefly so a burst becomes one insert.
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH && waiters.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => push(m, &mut batch, &mut waiters),
                _ => break,
            }
        }
        if !batch.is_empty() {
            if let Err(e) = insert(&db, &batch).await {
                tracing::error!(error = %e, rows = batch.len(), "quote log write failed");
            }
            batch.clear();
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

macro_rules! push_rows {
    ($qb:expr, $rows:expr) => {{
        $qb.push_values($rows, |mut b, r| {
            b.push_bind(r.id.clone())
                .push_bind(r.request_hash.clone())
                .push_bind(r.route.clone())
                .push_bind(r.rule.clone())
                .push_bind(r.method.clone())
                .push_bind(r.path.clone())
                .push_bind(r.price_usd_micros)
                .push_bind(r.offers.clone())
                .push_bind(r.created_at_ms)
                .push_bind(r.expires_at_ms);
        });
        $qb.push(" ON CONFLICT (id) DO NOTHING");
    }};
}

const INSERT_HEAD: &str = "INSERT INTO quotes (id, request_hash, route, rule, method, path, \
     price_usd_micros, offers, created_at_ms, expires_at_ms) ";

/// Inserts rows idempotently (a retried batch changes nothing).
pub async fn insert(db: &Db, rows: &[QuoteRow]) -> Result<(), DbError> {
    match db {
        Db::Postgres(p) => {
            let mut qb = QueryBuilder::<sqlx::Postgres>::new(INSERT_HEAD);
            push_rows!(qb, rows);
            qb.build().execute(p).await?;
        }
        Db::Sqlite(p) => {
            let mut qb = QueryBuilder::<sqlx::Sqlite>::new(INSERT_HEAD);
            push_rows!(qb, rows);
            qb.build().execute(p).await?;
        }
    }
    Ok(())
}

type RowTuple = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    i64,
    i64,
);

fn to_row(t: RowTuple) -> QuoteRow {
    QuoteRow {
        id: t.0,
        request_hash: t.1,
        route: t.2,
        rule: t.3,
        method: t.4,
        path: t.5,
        price_usd_micros: t.6,
        offers: t.7,
        created_at_ms: t.8,
        expires_at_ms: t.9,
    }
}

const SELECT_RECENT: &str = "SELECT id, request_hash, route, rule, method, path, price_usd_micros, \
     offers, created_at_ms, expires_at_ms FROM quotes ORDER BY created_at_ms DESC, id LIMIT $1";

/// The most recent quotes, newest first.
pub async fn recent(db: &Db, limit: i64) -> Result<Vec<QuoteRow>, DbError> {
    let rows: Vec<RowTuple> = match db {
        Db::Postgres(p) => {
            sqlx::query_as(SELECT_RECENT)
                .bind(limit)
                .fetch_all(p)
                .await?
        }
        Db::Sqlite(p) => {
            sqlx::query_as(SELECT_RECENT)
                .bind(limit)
                .fetch_all(p)
                .await?
        }
    };
    Ok(rows.into_iter().map(to_row).collect())
}

/// How many quotes the log holds.
pub async fn count(db: &Db) -> Result<i64, DbError> {
    let n: (i64,) = match db {
        Db::Postgres(p) => {
            sqlx::query_as("SELECT COUNT(*) FROM quotes")
                .fetch_one(p)
                .await?
        }
        Db::Sqlite(p) => {
            sqlx::query_as("SELECT COUNT(*) FROM quotes")
                .fetch_one(p)
                .await?
        }
    };
    Ok(n.0)
}
