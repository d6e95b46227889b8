//! Quote statistics: counts per (minute, route, rule), kept in memory on the request path and
//! added to the database periodically (see `migrations/*/0001_quote_stats.sql` for why quotes
//! are counted rather than stored one by one).
//!
//! The hot path only takes a short lock and bumps two integers. A flush moves the pending counts
//! out and upserts them in one transaction; if it fails, the counts are merged back and retried
//! at the next flush. (A commit whose acknowledgement is lost would count twice: acceptable for
//! statistics, and the reason money never goes through here.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::QueryBuilder;

use super::{Db, DbError};
use crate::quote::Quote;
use crate::time::UnixMillis;

const BUCKET_MS: u64 = 60_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    bucket_start_ms: u64,
    route: String,
    rule: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    quotes: u64,
    usd_micros: u64,
}

/// One row of `quote_stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatRow {
    pub bucket_start_ms: i64,
    pub route: String,
    pub rule: String,
    pub quotes: i64,
    pub quoted_usd_micros: i64,
}

#[derive(Clone)]
pub struct QuoteStats {
    pending: Arc<Mutex<HashMap<Key, Counts>>>,
    db: Db,
}

impl QuoteStats {
    pub fn new(db: Db) -> Self {
        QuoteStats {
            pending: Arc::default(),
            db,
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Counts>> {
        // Counters only: a poisoned lock holds consistent integers.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a newly created quote. Never waits on the database.
    pub fn record(&self, q: &Quote) {
        let key = Key {
            bucket_start_ms: bucket_of(q.created_at),
            route: q.rule.route.clone(),
            rule: q.rule.rule.clone(),
        };
        let mut pending = self.lock();
        let c = pending.entry(key).or_default();
        c.quotes += 1;
        c.usd_micros = c.usd_micros.saturating_add(q.price.0);
    }

    /// Writes the pending counts now. On failure they are kept for the next flush.
    pub async fn flush(&self) -> Result<(), DbError> {
        let batch: Vec<(Key, Counts)> = std::mem::take(&mut *self.lock()).into_iter().collect();
        if batch.is_empty() {
            return Ok(());
        }
        let result = upsert(&self.db, &batch).await;
        if result.is_err() {
            let mut pending = self.lock();
            for (k, c) in batch {
                let slot = pending.entry(k).or_default();
                slot.quotes += c.quotes;
                slot.usd_micros = slot.usd_micros.saturating_add(c.usd_micros);
            }
        }
        result
    }

    /// Flushes every `interval` until the task is aborted.
    pub fn spawn_flusher(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let stats = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = stats.flush().await {
                    tracing::warn!(error = %e, "quote statistics not written; will retry");
                }
            }
        })
    }
}

fn bucket_of(t: UnixMillis) -> u64 {
    t.0 - t.0 % BUCKET_MS
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

macro_rules! push_rows {
    ($qb:expr, $rows:expr) => {{
        $qb.push_values($rows, |mut b, (k, c)| {
            b.push_bind(i64_of(k.bucket_start_ms))
                .push_bind(k.route.clone())
                .push_bind(k.rule.clone())
                .push_bind(i64_of(c.quotes))
                .push_bind(i64_of(c.usd_micros));
        });
        $qb.push(UPSERT_TAIL);
    }};
}

const INSERT_HEAD: &str =
    "INSERT INTO quote_stats (bucket_start_ms, route, rule, quotes, quoted_usd_micros) ";
const UPSERT_TAIL: &str = " ON CONFLICT (bucket_start_ms, route, rule) DO UPDATE SET \
     quotes = quote_stats.quotes + excluded.quotes, \
     quoted_usd_micros = quote_stats.quoted_usd_micros + excluded.quoted_usd_micros";

/// Bind parameters per statement are limited (SQLite: 32766), so large batches are chunked.
const ROWS_PER_STATEMENT: usize = 1000;

async fn upsert(db: &Db, rows: &[(Key, Counts)]) -> Result<(), DbError> {
    match db {
        Db::Postgres(p) => {
            let mut tx = p.begin().await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut qb = QueryBuilder::<sqlx::Postgres>::new(INSERT_HEAD);
                push_rows!(qb, chunk);
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        Db::Sqlite(p) => {
            let mut tx = p.begin().await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut qb = QueryBuilder::<sqlx::Sqlite>::new(INSERT_HEAD);
                push_rows!(qb, chunk);
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

type RowTuple = (i64, String, String, i64, i64);

const SELECT_SINCE: &str = "SELECT bucket_start_ms, route, rule, quotes, quoted_usd_micros FROM quote_stats \
     WHERE bucket_start_ms >= $1 ORDER BY bucket_start_ms, route, rule";

/// Rows from `since_ms` on, oldest first.
pub async fn since(db: &Db, since_ms: i64) -> Result<Vec<StatRow>, DbError> {
    let rows: Vec<RowTuple> =
        super::on_pool!(db, p => sqlx::query_as(SELECT_SINCE).bind(since_ms).fetch_all(p).await?);
    Ok(rows
        .into_iter()
        .map(
            |(bucket_start_ms, route, rule, quotes, quoted_usd_micros)| StatRow {
                bucket_start_ms,
                route,
                rule,
                quotes,
                quoted_usd_micros,
            },
        )
        .collect())
}
