//! The record of pricing inputs that backtests re-price (`pricing_inputs`, see
//! `migrations/*/0009_pricing_inputs.sql`). Off unless `[backtest] record = true`.
//!
//! Like the quote statistics, the request path never waits on the database: an input is
//! serialized into a bounded buffer, and a background task writes the buffer in one statement
//! per batch. An input over the size cap, or arriving while the buffer is full, is dropped and
//! counted: a backtest is a sample of traffic, never an account of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::QueryBuilder;

use super::{Db, DbError};
use crate::config::BacktestConfig;
use crate::pricing::backtest::StoredInput;
use crate::time::UnixMillis;

/// Inputs buffered between two flushes at most; beyond this they are dropped.
const MAX_PENDING: usize = 10_000;
/// Bind parameters per statement are limited (SQLite: 32766).
const ROWS_PER_STATEMENT: usize = 1000;
const DAY_MS: u64 = 24 * 3_600_000;

#[derive(Clone)]
pub struct InputLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    limits: BacktestConfig,
    pending: Mutex<Vec<(i64, String)>>,
    too_large: AtomicU64,
    overflowed: AtomicU64,
}

/// One stored row: its id (the order of recording) and its JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRow {
    pub id: i64,
    pub at_ms: i64,
    pub input: String,
}

impl InputLog {
    pub fn new(db: Db, limits: BacktestConfig) -> Self {
        InputLog {
            inner: Arc::new(Inner {
                db,
                limits,
                pending: Mutex::default(),
                too_large: AtomicU64::new(0),
                overflowed: AtomicU64::new(0),
            }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn limits(&self) -> BacktestConfig {
        self.inner.limits
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<(i64, String)>> {
        // A poisoned lock holds whole rows: each push is one operation.
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `input` for the next flush; false when it was dropped (too large, or the buffer
    /// is full). Never waits on the database.
    pub fn record(&self, at: UnixMillis, input: &StoredInput) -> bool {
        let Ok(text) = serde_json::to_string(input) else {
            return false;
        };
        if text.len() > self.inner.limits.max_input_bytes {
            self.inner.too_large.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let mut pending = self.pending();
        if pending.len() >= MAX_PENDING {
            self.inner.overflowed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        pending.push((i64::try_from(at.0).unwrap_or(i64::MAX), text));
        true
    }

    /// Inputs dropped so far: (over the size cap, over the buffer).
    pub fn dropped(&self) -> (u64, u64) {
        (
            self.inner.too_large.load(Ordering::Relaxed),
            self.inner.overflowed.load(Ordering::Relaxed),
        )
    }

    /// Writes the buffered inputs. On failure they are put back (ahead of newer ones, within
    /// the buffer's bound) for the next flush.
    pub async fn flush(&self) -> Result<u64, DbError> {
        let batch = std::mem::take(&mut *self.pending());
        if batch.is_empty() {
            return Ok(0);
        }
        match insert(&self.inner.db, &batch).await {
            Ok(()) => Ok(batch.len() as u64),
            Err(e) => {
                let mut pending = self.pending();
                let newer = std::mem::replace(&mut *pending, batch);
                pending.extend(newer);
                pending.truncate(MAX_PENDING);
                Err(e)
            }
        }
    }

    /// Deletes inputs older than the retention window and the oldest beyond the row bound.
    pub async fn purge(&self, now: UnixMillis) -> Result<u64, DbError> {
        let cutoff = now
            .0
            .saturating_sub(self.inner.limits.retention_days * DAY_MS);
        let cutoff = i64::try_from(cutoff).unwrap_or(i64::MAX);
        let keep = i64::try_from(self.inner.limits.max_rows).unwrap_or(i64::MAX);
        // The newest `keep` rows stay: everything at or below the id of the first row beyond
        // them goes (nothing when there are fewer rows, since the subquery is then NULL).
        const BEYOND: &str = "DELETE FROM pricing_inputs WHERE id <= \
             (SELECT id FROM pricing_inputs ORDER BY id DESC LIMIT 1 OFFSET $1)";
        let db = &self.inner.db;
        let old = super::on_pool!(db, p => sqlx::query("DELETE FROM pricing_inputs WHERE at_ms < $1")
            .bind(cutoff).execute(p).await?.rows_affected());
        let beyond = super::on_pool!(db, p => sqlx::query(BEYOND)
            .bind(keep).execute(p).await?.rows_affected());
        Ok(old + beyond)
    }

    /// Flushes every `interval` and purges about once a minute, until aborted.
    pub fn spawn_flusher(
        &self,
        interval: Duration,
        clock: crate::time::Clock,
    ) -> tokio::task::JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let every = (60 / interval.as_secs().max(1)).max(1);
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                if let Err(e) = log.flush().await {
                    tracing::warn!(error = %e, "pricing inputs not written; will retry");
                }
                if ticks.is_multiple_of(every)
                    && let Err(e) = log.purge(clock.now()).await
                {
                    tracing::warn!(error = %e, "old pricing inputs not purged; will retry");
                }
                ticks += 1;
            }
        })
    }

    /// Up to `limit` inputs recorded at or after `since_ms` with an id above `after_id`, in
    /// the order they were recorded (a backtest pages through them by id).
    pub async fn page(
        &self,
        since_ms: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredRow>, DbError> {
        const SQL: &str = "SELECT id, at_ms, input FROM pricing_inputs \
             WHERE at_ms >= $1 AND id > $2 ORDER BY id LIMIT $3";
        let db = &self.inner.db;
        let rows: Vec<(i64, i64, String)> = super::on_pool!(db, p => sqlx::query_as(SQL)
            .bind(since_ms).bind(after_id).bind(limit).fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .map(|(id, at_ms, input)| StoredRow { id, at_ms, input })
            .collect())
    }

    /// How many inputs are stored.
    pub async fn count(&self) -> Result<i64, DbError> {
        let db = &self.inner.db;
        let n: (i64,) = super::on_pool!(db, p => sqlx::query_as("SELECT COUNT(*) FROM pricing_inputs")
            .fetch_one(p).await?);
        Ok(n.0)
    }
}

macro_rules! insert_on {
    ($pool:expr, $db:ty, $rows:expr) => {{
        let mut tx = $pool.begin().await?;
        for chunk in $rows.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::<$db>::new("INSERT INTO pricing_inputs (at_ms, input) ");
            qb.push_values(chunk, |mut b, (at, text)| {
                b.push_bind(*at).push_bind(text.clone());
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }};
}

async fn insert(db: &Db, rows: &[(i64, String)]) -> Result<(), DbError> {
    match db {
        Db::Postgres(p) => insert_on!(p, sqlx::Postgres, rows),
        Db::Sqlite(p) => insert_on!(p, sqlx::Sqlite, rows),
    }
    Ok(())
}
