//! The database layer on both backends: real PostgreSQL and embedded SQLite.

use tariff::db::quote_log::{self, QuoteRow};
use tariff::db::{Db, QuoteLog};

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

fn row(id: &str, price: i64, created: i64) -> QuoteRow {
    QuoteRow {
        id: id.into(),
        request_hash: "ab".repeat(32),
        route: "search".into(),
        rule: "simple-lookup".into(),
        method: "GET".into(),
        path: "/search".into(),
        price_usd_micros: price,
        offers: "[]".into(),
        created_at_ms: created,
        expires_at_ms: created + 300_000,
    }
}

#[tokio::test]
async fn quote_rows_round_trip_and_inserts_are_idempotent() {
    for b in backends().await {
        let id = format!("q_{:032x}", 1);
        quote_log::insert(&b.db, &[row(&id, 20_000, 1_000)])
            .await
            .unwrap();
        // The same batch again (a retried write) changes nothing.
        quote_log::insert(&b.db, &[row(&id, 20_000, 1_000)])
            .await
            .unwrap();
        assert_eq!(
            quote_log::count(&b.db).await.unwrap(),
            1,
            "{}",
            b.db.backend_name()
        );
        let got = quote_log::recent(&b.db, 10).await.unwrap();
        assert_eq!(got, vec![row(&id, 20_000, 1_000)]);
        b.db.ping().await.unwrap();
    }
}

#[tokio::test]
async fn constraints_refuse_bad_rows() {
    for b in backends().await {
        let name = b.db.backend_name();
        let zero = row(&format!("q_{:032x}", 2), 0, 1_000);
        assert!(
            quote_log::insert(&b.db, &[zero]).await.is_err(),
            "{name}: zero price refused"
        );
        let mut bad_hash = row(&format!("q_{:032x}", 3), 1, 1_000);
        bad_hash.request_hash = "abc".into();
        assert!(
            quote_log::insert(&b.db, &[bad_hash]).await.is_err(),
            "{name}: bad hash refused"
        );
        let mut backwards = row(&format!("q_{:032x}", 4), 1, 1_000);
        backwards.expires_at_ms = 999;
        assert!(
            quote_log::insert(&b.db, &[backwards]).await.is_err(),
            "{name}: expiry before creation refused"
        );
        assert_eq!(
            quote_log::count(&b.db).await.unwrap(),
            0,
            "{name}: nothing written"
        );
    }
}

#[tokio::test]
async fn served_quotes_land_in_postgres() {
    let url = fresh_postgres().await;
    let app = TestApp::start(&repo_rules(), &[("TARIFF_DATABASE_URL", url.clone())]).await;
    let a = app.get("/search?q=bitcoin+price").await.quote_id();
    app.get("/search?q=bitcoin+price").await; // reused: not logged again
    let b = app
        .post_json("/search", r#"{"query":"x","documents":["a","b","c"]}"#)
        .await
        .quote_id();
    let log = app.state.quote_log.as_ref().unwrap();
    log.flush().await;
    let rows = quote_log::recent(log.db(), 10).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let by_id = |id: &str| rows.iter().find(|r| r.id == id).unwrap().clone();
    assert_eq!(by_id(&a).price_usd_micros, 20_000);
    assert_eq!(by_id(&a).rule, "simple-lookup");
    assert_eq!(by_id(&b).price_usd_micros, 120_000);
    assert_eq!(by_id(&b).rule, "compare-filings");
    assert!(
        by_id(&b).offers.contains("\"amount\":\"120000\""),
        "{}",
        by_id(&b).offers
    );
    assert_eq!(log.dropped(), 0);
}

#[tokio::test]
async fn the_embedded_default_is_sqlite() {
    let app = TestApp::start(&repo_rules(), &[]).await;
    app.get("/search?q=sqlite").await;
    let log: &QuoteLog = app.state.quote_log.as_ref().unwrap();
    log.flush().await;
    assert_eq!(log.db().backend_name(), "sqlite");
    assert_eq!(quote_log::count(log.db()).await.unwrap(), 1);
}
