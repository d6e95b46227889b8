//! The database layer on both backends: real PostgreSQL and embedded SQLite.

use tariff::db::quote_stats::{self, StatRow};
use tariff::db::{Db, QuoteStats};
use tariff::money::UsdMicros;
use tariff::quote::{Quote, QuoteId, RequestHash, RuleRef};
use tariff::time::UnixMillis;

use crate::harness::{TempDir, TestApp, repo_rules};

/// A fresh, empty PostgreSQL database on the test server.
pub async fn fresh_postgres() -> String {
    let admin = crate::support::database_url();
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("test PostgreSQL is up");
    let name = format!("tariff_test_{:016x}", rand::random::<u64>());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let base = admin.rsplit_once('/').unwrap().0;
    format!("{base}/{name}")
}

pub struct Backend {
    pub db: Db,
    _dir: Option<TempDir>,
}

pub async fn backends() -> Vec<Backend> {
    let dir = TempDir::new("sqlite");
    let sqlite = Db::embedded(dir.path()).await.unwrap();
    let pg = Db::connect(&fresh_postgres().await).await.unwrap();
    vec![
        Backend {
            db: sqlite,
            _dir: Some(dir),
        },
        Backend { db: pg, _dir: None },
    ]
}

fn quote(route: &str, rule: &str, price: u64, at_ms: u64) -> Quote {
    Quote {
        id: QuoteId::for_request(&RequestHash([1; 32])),
        request_hash: RequestHash([1; 32]),
        price: UsdMicros(price),
        rule: RuleRef {
            route: route.into(),
            rule: rule.into(),
        },
        method: "GET".into(),
        path: "/search".into(),
        offers: vec![].into(),
        created_at: UnixMillis(at_ms),
        expires_at: UnixMillis(at_ms + 300_000),
        topup: None,
    }
}

#[tokio::test]
async fn stats_count_per_minute_and_rule_and_add_up_across_flushes_and_instances() {
    for b in backends().await {
        let name = b.db.backend_name();
        // Two "instances" writing to one database.
        let a = QuoteStats::new(b.db.clone());
        let c = QuoteStats::new(b.db.clone());
        a.record(&quote("search", "simple", 20_000, 60_000));
        a.record(&quote("search", "simple", 20_000, 119_999));
        a.record(&quote("search", "compare", 120_000, 120_000));
        c.record(&quote("search", "simple", 20_000, 61_000));
        a.flush().await.unwrap();
        c.flush().await.unwrap();
        a.record(&quote("search", "simple", 20_000, 100_000));
        a.flush().await.unwrap();
        a.flush().await.unwrap(); // nothing pending: a no-op
        let rows = quote_stats::since(&b.db, 0).await.unwrap();
        assert_eq!(
            rows,
            vec![
                StatRow {
                    bucket_start_ms: 60_000,
                    route: "search".into(),
                    rule: "simple".into(),
                    quotes: 4,
                    quoted_usd_micros: 80_000
                },
                StatRow {
                    bucket_start_ms: 120_000,
                    route: "search".into(),
                    rule: "compare".into(),
                    quotes: 1,
                    quoted_usd_micros: 120_000
                },
            ],
            "{name}"
        );
        assert_eq!(
            quote_stats::since(&b.db, 120_000).await.unwrap().len(),
            1,
            "{name}"
        );
        b.db.ping().await.unwrap();
    }
}

#[tokio::test]
async fn revenue_per_rule_adds_up_across_instances_and_sources() {
    use tariff::db::{PaidVia, RuleFigures};
    for b in backends().await {
        let name = b.db.backend_name();
        let (a, c) = (QuoteStats::new(b.db.clone()), QuoteStats::new(b.db.clone()));
        let simple = RuleRef {
            route: "search".into(),
            rule: "simple".into(),
        };
        a.record(&quote("search", "simple", 20_000, 60_000));
        a.record(&quote("search", "simple", 20_000, 61_000));
        c.record(&quote("search", "simple", 20_000, 62_000));
        a.record_paid(
            &simple,
            UnixMillis(61_500),
            UsdMicros(20_000),
            PaidVia::OnChain,
        );
        c.record_paid(
            &simple,
            UnixMillis(125_000),
            UsdMicros(15_000),
            PaidVia::Credits,
        );
        c.record_paid(
            &simple,
            UnixMillis(126_000),
            UsdMicros(20_000),
            PaidVia::Credits,
        );
        // Revenue of a rule whose quote was counted elsewhere (or earlier) stands alone.
        let gone = RuleRef {
            route: "old".into(),
            rule: "renamed".into(),
        };
        a.record_paid(&gone, UnixMillis(65_000), UsdMicros(5), PaidVia::OnChain);
        a.flush().await.unwrap();
        c.flush().await.unwrap();
        let figures = quote_stats::rule_figures(&b.db, 0).await.unwrap();
        assert_eq!(
            figures,
            vec![
                RuleFigures {
                    route: "old".into(),
                    rule: "renamed".into(),
                    paid_onchain: 1,
                    revenue_onchain_usd_micros: 5,
                    ..RuleFigures::default()
                },
                RuleFigures {
                    route: "search".into(),
                    rule: "simple".into(),
                    quotes: 3,
                    quoted_usd_micros: 60_000,
                    paid_onchain: 1,
                    paid_credits: 2,
                    revenue_onchain_usd_micros: 20_000,
                    revenue_credits_usd_micros: 35_000,
                },
            ],
            "{name}"
        );
        // Old minutes are purged, newer ones kept.
        let hourly = quote_stats::revenue_by_hour(&b.db, 0).await.unwrap();
        assert_eq!(hourly, vec![(0, 20_005, 35_000)], "{name}");
        // The window starts at a minute: the credits of minute 2 only.
        let later = quote_stats::rule_figures(&b.db, 120_000).await.unwrap();
        assert_eq!(later.len(), 1, "{name}");
        assert_eq!((later[0].quotes, later[0].paid_credits), (0, 2), "{name}");
        assert_eq!(
            quote_stats::purge_before(&b.db, 120_000).await.unwrap(),
            3,
            "{name}"
        );
        let left = quote_stats::rule_figures(&b.db, 0).await.unwrap();
        assert_eq!(left.len(), 1, "{name}: {left:?}");
        assert_eq!((left[0].quotes, left[0].paid_credits), (0, 2), "{name}");
        for sql in [
            "INSERT INTO rule_revenue VALUES (60000, 'r', 'x', 'cash', 1, 1)",
            "INSERT INTO rule_revenue VALUES (60000, 'r', 'x', 'credits', 0, 1)",
            "INSERT INTO rule_revenue VALUES (60001, 'r', 'x', 'credits', 1, 1)",
        ] {
            assert!(
                crate::ledger::raw(&b.db, sql).await.is_err(),
                "{name}: {sql}"
            );
        }
    }
}

#[tokio::test]
async fn constraints_refuse_bad_rows() {
    for b in backends().await {
        let name = b.db.backend_name();
        for sql in [
            "INSERT INTO quote_stats VALUES (60001, 'r', 'x', 1, 1)",
            "INSERT INTO quote_stats VALUES (60000, 'r', 'x', 0, 1)",
            "INSERT INTO quote_stats VALUES (60000, 'r', 'x', 1, -1)",
        ] {
            let res = crate::ledger::raw(&b.db, sql).await;
            assert!(res.is_err(), "{name}: {sql} must be refused");
        }
        assert!(
            quote_stats::since(&b.db, 0).await.unwrap().is_empty(),
            "{name}: nothing written"
        );
    }
}

#[tokio::test]
async fn a_failed_flush_keeps_the_counts_for_the_next_one() {
    let url = fresh_postgres().await;
    let db = Db::connect(&url).await.unwrap();
    let stats = QuoteStats::new(db.clone());
    stats.record(&quote("search", "simple", 20_000, 60_000));
    // Break the table for one flush.
    let Db::Postgres(pool) = &db else {
        unreachable!()
    };
    sqlx::query("ALTER TABLE quote_stats RENAME TO quote_stats_away")
        .execute(pool)
        .await
        .unwrap();
    assert!(stats.flush().await.is_err());
    sqlx::query("ALTER TABLE quote_stats_away RENAME TO quote_stats")
        .execute(pool)
        .await
        .unwrap();
    stats.flush().await.unwrap();
    let rows = quote_stats::since(&db, 0).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].quotes, 1, "counted once, not lost and not doubled");
}

#[tokio::test]
async fn served_quotes_are_counted_in_postgres() {
    let url = fresh_postgres().await;
    let app = TestApp::start(&repo_rules(), &[("TARIFF_DATABASE_URL", url.clone())]).await;
    app.get("/search?q=bitcoin+price").await;
    app.get("/search?q=bitcoin+price").await; // the open quote again: not a new quote
    app.get("/search?q=ether+price").await;
    app.post_json("/search", r#"{"query":"x","documents":["a","b","c"]}"#)
        .await;
    let stats = app.state.quote_stats.as_ref().unwrap();
    stats.flush().await.unwrap();
    let rows = quote_stats::since(stats.db(), 0).await.unwrap();
    let count = |rule: &str| {
        rows.iter()
            .filter(|r| r.rule == rule)
            .map(|r| (r.quotes, r.quoted_usd_micros))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    assert_eq!(count("simple-lookup"), (2, 40_000), "{rows:?}");
    assert_eq!(count("compare-filings"), (1, 120_000), "{rows:?}");
}

#[tokio::test]
async fn the_embedded_default_is_sqlite() {
    let app = TestApp::start(&repo_rules(), &[]).await;
    app.get("/search?q=sqlite").await;
    let stats = app.state.quote_stats.as_ref().unwrap();
    stats.flush().await.unwrap();
    assert_eq!(stats.db().backend_name(), "sqlite");
    assert_eq!(
        quote_stats::since(stats.db(), 0).await.unwrap()[0].quotes,
        1
    );
}

fn stored(path: &str, q: &str) -> tariff::pricing::backtest::StoredInput {
    tariff::pricing::backtest::StoredInput {
        method: "GET".into(),
        path: path.into(),
        query: [("q".to_string(), q.to_string())].into(),
        headers: Default::default(),
        body_size: 0,
        body: serde_json::json!({}),
    }
}

/// The record of pricing inputs on both backends: written in batches, read back in order and
/// by page, an oversized input dropped, and the table kept within its retention and row bound.
#[tokio::test]
async fn pricing_inputs_are_recorded_in_order_and_kept_bounded() {
    use tariff::config::BacktestConfig;
    use tariff::db::pricing_inputs::InputLog;
    const DAY: u64 = 24 * 3_600_000;
    let now = 100 * DAY;
    for b in backends().await {
        let name = b.db.backend_name();
        let log = InputLog::new(
            b.db.clone(),
            BacktestConfig {
                record: true,
                retention_days: 2,
                max_input_bytes: 200,
                max_rows: 3,
            },
        );
        // Two from five days ago, then four recent ones; one too large to keep.
        for (i, at) in [now - 5 * DAY, now - 5 * DAY + 1, now - 3, now - 2, now - 1]
            .into_iter()
            .enumerate()
        {
            assert!(log.record(UnixMillis(at), &stored("/search", &format!("q{i}"))));
        }
        assert!(!log.record(UnixMillis(now), &stored("/search", &"x".repeat(300))));
        assert!(log.record(UnixMillis(now), &stored("/search", "last")));
        assert_eq!(log.dropped(), (1, 0), "{name}");
        assert_eq!(log.flush().await.unwrap(), 6, "{name}");
        assert_eq!(log.flush().await.unwrap(), 0, "{name}: nothing twice");

        let all = log.page(0, 0, 100).await.unwrap();
        let qs: Vec<String> = all
            .iter()
            .map(|r| {
                serde_json::from_str::<serde_json::Value>(&r.input).unwrap()["query"]["q"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(qs, ["q0", "q1", "q2", "q3", "q4", "last"], "{name}");
        // Paging by id and by time.
        let second = log.page(0, all[1].id, 2).await.unwrap();
        assert_eq!(second, all[2..4].to_vec(), "{name}");
        let recent = log
            .page(i64::try_from(now - DAY).unwrap(), 0, 100)
            .await
            .unwrap();
        assert_eq!(recent, all[2..].to_vec(), "{name}");

        // The two old rows go for their age, then the oldest recent one for the row bound.
        assert_eq!(log.purge(UnixMillis(now)).await.unwrap(), 3, "{name}");
        assert_eq!(
            log.page(0, 0, 100).await.unwrap(),
            all[3..].to_vec(),
            "{name}"
        );
        assert_eq!(log.count().await.unwrap(), 3, "{name}");
        assert_eq!(
            log.purge(UnixMillis(now)).await.unwrap(),
            0,
            "{name}: stable"
        );
    }
}
