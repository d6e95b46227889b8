//! Quote statistics: counts per (minute, route, rule), kept in memory on the request path and
//! added to the database periodically (see `migrations/*/0001_quote_stats.sql` for why quotes
//! are counted rather than stored one by one); and, the same way, what each rule earned
//! (`rule_revenue`: requests charged and their amount, on chain or from credits).
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
use crate::money::UsdMicros;
use crate::quote::{Quote, RuleRef};
use crate::time::UnixMillis;

const BUCKET_MS: u64 = 60_000;

/// How long per-minute aggregates are kept: rows older than this are deleted (once an hour by
/// the flusher), so the tables stay bounded by the rule set and this window.
pub const RETENTION_DAYS: u64 = 400;

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

/// How a charged request was paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PaidVia {
    OnChain,
    Credits,
}

impl PaidVia {
    fn as_str(self) -> &'static str {
        match self {
            PaidVia::OnChain => "onchain",
            PaidVia::Credits => "credits",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PaidKey {
    key: Key,
    via: PaidVia,
}

#[derive(Clone)]
pub struct QuoteStats {
    pending: Arc<Mutex<HashMap<Key, Counts>>>,
    paid: Arc<Mutex<HashMap<PaidKey, Counts>>>,
    db: Db,
}

impl RuleFigures {
    /// Earned on chain and from credits.
    pub fn revenue(&self) -> i64 {
        self.revenue_onchain_usd_micros + self.revenue_credits_usd_micros
    }

    /// Paid requests per quote, in basis points (integers only; 0 without quotes).
    pub fn conversion_bps(&self) -> i64 {
        if self.quotes <= 0 {
            return 0;
        }
        (self.paid_onchain + self.paid_credits).saturating_mul(10_000) / self.quotes
    }
}

/// Per rule, over a window: quotes issued and what was asked, requests charged and earned.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuleFigures {
    pub route: String,
    pub rule: String,
    pub quotes: i64,
    pub quoted_usd_micros: i64,
    pub paid_onchain: i64,
    pub paid_credits: i64,
    pub revenue_onchain_usd_micros: i64,
    pub revenue_credits_usd_micros: i64,
}

impl QuoteStats {
    pub fn new(db: Db) -> Self {
        QuoteStats {
            pending: Arc::default(),
            paid: Arc::default(),
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

    /// Counts a charged request of `rule` (at `at`), paid `via` chain or credits.
    pub fn record_paid(&self, rule: &RuleRef, at: UnixMillis, amount: UsdMicros, via: PaidVia) {
        let key = PaidKey {
            key: Key {
                bucket_start_ms: bucket_of(at),
                route: rule.route.clone(),
                rule: rule.rule.clone(),
            },
            via,
        };
        let mut paid = self.paid.lock().unwrap_or_else(|p| p.into_inner());
        let c = paid.entry(key).or_default();
        c.quotes += 1;
        c.usd_micros = c.usd_micros.saturating_add(amount.0);
    }

    /// Writes the pending counts now. On failure they are kept for the next flush.
    pub async fn flush(&self) -> Result<(), DbError> {
        let batch: Vec<(Key, Counts)> = std::mem::take(&mut *self.lock()).into_iter().collect();
        let paid: Vec<(PaidKey, Counts)> =
            std::mem::take(&mut *self.paid.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if batch.is_empty() && paid.is_empty() {
            return Ok(());
        }
        let result = upsert(&self.db, &batch, &paid).await;
        if result.is_err() {
            merge(&mut self.lock(), batch);
            merge(
                &mut self.paid.lock().unwrap_or_else(|p| p.into_inner()),
                paid,
            );
        }
        result
    }

    /// Flushes every `interval` until the task is aborted, and about once an hour deletes the
    /// aggregates older than [`RETENTION_DAYS`].
    pub fn spawn_flusher(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let stats = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let every = (3600 / interval.as_secs().max(1)).max(1);
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                if let Err(e) = stats.flush().await {
                    tracing::warn!(error = %e, "quote statistics not written; will retry");
                }
                if ticks.is_multiple_of(every) {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    let cutoff = now.saturating_sub(RETENTION_DAYS * 24 * 3_600_000);
                    if let Err(e) = purge_before(&stats.db, cutoff).await {
                        tracing::warn!(error = %e, "old statistics not purged; will retry");
                    }
                }
                ticks += 1;
            }
        })
    }
}

/// Puts counts that could not be written back with the ones gathered since.
fn merge<K: std::hash::Hash + Eq>(into: &mut HashMap<K, Counts>, batch: Vec<(K, Counts)>) {
    for (k, c) in batch {
        let slot = into.entry(k).or_default();
        slot.quotes += c.quotes;
        slot.usd_micros = slot.usd_micros.saturating_add(c.usd_micros);
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

macro_rules! push_paid_rows {
    ($qb:expr, $rows:expr) => {{
        $qb.push_values($rows, |mut b, (k, c)| {
            b.push_bind(i64_of(k.key.bucket_start_ms))
                .push_bind(k.key.route.clone())
                .push_bind(k.key.rule.clone())
                .push_bind(k.via.as_str())
                .push_bind(i64_of(c.quotes))
                .push_bind(i64_of(c.usd_micros));
        });
        $qb.push(PAID_UPSERT_TAIL);
    }};
}

const PAID_INSERT_HEAD: &str =
    "INSERT INTO rule_revenue (bucket_start_ms, route, rule, source, requests, usd_micros) ";
const PAID_UPSERT_TAIL: &str = " ON CONFLICT (bucket_start_ms, route, rule, source) DO UPDATE SET \
     requests = rule_revenue.requests + excluded.requests, \
     usd_micros = rule_revenue.usd_micros + excluded.usd_micros";

/// Both tables in one transaction.
macro_rules! upsert_on {
    ($pool:expr, $db:ty, $rows:expr, $paid:expr) => {{
        let mut tx = $pool.begin().await?;
        for chunk in $rows.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::<$db>::new(INSERT_HEAD);
            push_rows!(qb, chunk);
            qb.build().execute(&mut *tx).await?;
        }
        for chunk in $paid.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::<$db>::new(PAID_INSERT_HEAD);
            push_paid_rows!(qb, chunk);
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }};
}

async fn upsert(
    db: &Db,
    rows: &[(Key, Counts)],
    paid: &[(PaidKey, Counts)],
) -> Result<(), DbError> {
    match db {
        Db::Postgres(p) => upsert_on!(p, sqlx::Postgres, rows, paid),
        Db::Sqlite(p) => upsert_on!(p, sqlx::Sqlite, rows, paid),
    }
    Ok(())
}

/// Deletes the aggregates of minutes before `cutoff_ms`; the number of rows deleted.
pub async fn purge_before(db: &Db, cutoff_ms: u64) -> Result<u64, DbError> {
    let cutoff = i64_of(cutoff_ms);
    let mut deleted = 0;
    for sql in [
        "DELETE FROM quote_stats WHERE bucket_start_ms < $1",
        "DELETE FROM rule_revenue WHERE bucket_start_ms < $1",
    ] {
        deleted += super::on_pool!(db, p => sqlx::query(sql).bind(cutoff).execute(p).await?.rows_affected());
    }
    Ok(deleted)
}

/// Revenue per hour from `since_ms` on: (hour start, on chain, from credits), oldest first.
pub async fn revenue_by_hour(db: &Db, since_ms: i64) -> Result<Vec<(i64, i64, i64)>, DbError> {
    const SQL: &str = "SELECT bucket_start_ms - bucket_start_ms % 3600000, source, \
         CAST(SUM(usd_micros) AS BIGINT) FROM rule_revenue WHERE bucket_start_ms >= $1 \
         GROUP BY bucket_start_ms - bucket_start_ms % 3600000, source";
    let rows: Vec<(i64, String, i64)> =
        super::on_pool!(db, p => sqlx::query_as(SQL).bind(since_ms).fetch_all(p).await?);
    let mut hours: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
    for (hour, source, usd) in rows {
        let h = hours.entry(hour).or_default();
        if source == PaidVia::OnChain.as_str() {
            h.0 += usd;
        } else {
            h.1 += usd;
        }
    }
    Ok(hours.into_iter().map(|(h, (a, b))| (h, a, b)).collect())
}

/// Per route and rule, from `since_ms` on: quotes, what they asked, requests charged and
/// earned (on chain and from credits). Rules with neither quotes nor revenue are absent.
pub async fn rule_figures(db: &Db, since_ms: i64) -> Result<Vec<RuleFigures>, DbError> {
    const QUOTES: &str = "SELECT route, rule, CAST(SUM(quotes) AS BIGINT), \
         CAST(SUM(quoted_usd_micros) AS BIGINT) FROM quote_stats WHERE bucket_start_ms >= $1 \
         GROUP BY route, rule";
    const PAID: &str = "SELECT route, rule, source, CAST(SUM(requests) AS BIGINT), \
         CAST(SUM(usd_micros) AS BIGINT) FROM rule_revenue WHERE bucket_start_ms >= $1 \
         GROUP BY route, rule, source";
    let quotes: Vec<(String, String, i64, i64)> =
        super::on_pool!(db, p => sqlx::query_as(QUOTES).bind(since_ms).fetch_all(p).await?);
    let paid: Vec<(String, String, String, i64, i64)> =
        super::on_pool!(db, p => sqlx::query_as(PAID).bind(since_ms).fetch_all(p).await?);
    let mut by_rule: std::collections::BTreeMap<(String, String), RuleFigures> = Default::default();
    fn slot(
        by_rule: &mut std::collections::BTreeMap<(String, String), RuleFigures>,
        route: String,
        rule: String,
    ) -> &mut RuleFigures {
        by_rule
            .entry((route.clone(), rule.clone()))
            .or_insert_with(|| RuleFigures {
                route,
                rule,
                ..RuleFigures::default()
            })
    }
    for (route, rule, n, usd) in quotes {
        let f = slot(&mut by_rule, route, rule);
        f.quotes = n;
        f.quoted_usd_micros = usd;
    }
    for (route, rule, source, n, usd) in paid {
        let f = slot(&mut by_rule, route, rule);
        if source == PaidVia::OnChain.as_str() {
            f.paid_onchain = n;
            f.revenue_onchain_usd_micros = usd;
        } else {
            f.paid_credits = n;
            f.revenue_credits_usd_micros = usd;
        }
    }
    Ok(by_rule.into_values().collect())
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
