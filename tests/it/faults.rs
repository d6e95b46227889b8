//! Faults under load: Redis stopped and started again, and the PostgreSQL database made
//! unreachable and reachable again, while unpaid and credit-paid requests keep coming. Every
//! answer is a 402, a served request, or a 503 naming what is down; service comes back by
//! itself; every credit-paid answer is charged exactly once and no hold is left open. (The
//! chain RPC's outage is in `payments::rpc_fault`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tariff::ledger::{AccountId, TransferKind};

use crate::credits::{ADMIN, grant, open};
use crate::harness::{TestApp, repo_rules};
use crate::payments::get_with;
use crate::support::{redis_on, wait_for_socket};

#[derive(Default, Debug)]
struct Tally {
    quoted: u64,
    served: u64,
    store_down: u64,
    other: Vec<(u16, String)>,
}

/// Four clients until `stop`: two unpaid, two paying from credits with `key`, every query
/// distinct. A 503 is expected only with one of the `down` reasons.
fn mixed_clients(
    app: &Arc<TestApp>,
    key: &str,
    stop: &Arc<AtomicBool>,
    down: &'static [&'static str],
) -> Vec<tokio::task::JoinHandle<Tally>> {
    (0..4)
        .map(|c| {
            let (app, stop, key) = (app.clone(), stop.clone(), key.to_string());
            tokio::spawn(async move {
                let mut t = Tally::default();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // An unpaid request on the in-memory quote store never waits on I/O, so
                    // without this the loop would never give its worker back to the runtime.
                    tokio::task::yield_now().await;
                    i += 1;
                    let uri = format!("/search?q=fault+{c}+{i}");
                    let r = if c % 2 == 0 {
                        app.get(&uri).await
                    } else {
                        get_with(&app, &uri, &[("authorization", format!("Bearer {key}"))]).await
                    };
                    match (r.status, r.error_code()) {
                        (402, _) => t.quoted += 1,
                        (200, _) => t.served += 1,
                        (503, code) if down.contains(&code.as_str()) => t.store_down += 1,
                        (s, code) => t.other.push((s, code)),
                    }
                }
                t
            })
        })
        .collect()
}

/// The clients' tallies summed.
async fn join(clients: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut all = Tally::default();
    for c in clients {
        let t = c.await.unwrap();
        all.quoted += t.quoted;
        all.served += t.served;
        all.store_down += t.store_down;
        all.other.extend(t.other);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_under_load_fails_closed_and_recovers_without_double_charges() {
    let dir = crate::harness::TempDir::new("faults");
    let sock = dir.path().join("r.sock");
    let mut redis = redis_on(&sock);
    wait_for_socket(&sock).await;
    let app = Arc::new(
        TestApp::start(
            &repo_rules(),
            &[
                ("TARIFF_REDIS_URL", format!("unix://{}", sock.display())),
                ("TARIFF_FINGERPRINT_KEY", hex::encode([9u8; 32])),
                ("TARIFF_DATABASE_URL", crate::db::fresh_postgres().await),
                ("TARIFF_ADMIN_TOKEN", ADMIN.to_string()),
            ],
        )
        .await,
    );
    let (account, key) = open(&app).await;
    assert_eq!(
        grant(&app, "f1", &account, 100_000_000, ADMIN).await.status,
        200
    );

    let stop = Arc::new(AtomicBool::new(false));
    let clients = mixed_clients(&app, &key, &stop, &["quote_store_unavailable"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill().unwrap();
    redis.wait().unwrap();
    let _ = std::fs::remove_file(&sock);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut redis = redis_on(&sock);
    wait_for_socket(&sock).await;
    // Back by itself: within a few seconds a new request is quoted again.
    let mut recovered = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if app.get("/search?q=after+the+restart").await.status == 402 {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "service did not come back after Redis restarted");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let all = join(clients).await;
    redis.kill().unwrap();
    let _ = redis.wait();
    assert!(all.other.is_empty(), "unexpected answers: {:?}", all.other);
    assert!(all.store_down > 0, "the outage was not seen: {all:?}");
    assert!(all.quoted > 0 && all.served > 0, "{all:?}");

    // Exactly one charge per served request, and the books balance.
    let ledger = app.state.accounts.as_ref().unwrap().ledger();
    let account_id = AccountId::new(account.as_str()).unwrap();
    let mut charged = 0u64;
    let mut cursor = None;
    loop {
        let page = ledger.history(&account_id, cursor, 1000).await.unwrap();
        charged += page
            .transfers
            .iter()
            .filter(|t| t.kind == TransferKind::Post || t.kind == TransferKind::RequestDebit)
            .count() as u64;
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(charged, all.served, "{all:?}");
    let balance = ledger.balance(&account_id).await.unwrap();
    assert_eq!(
        balance.posted(),
        100_000_000 - 20_000 * all.served as i64,
        "{all:?}"
    );
    assert_eq!(balance.held().0, 0, "no hold left open");
    app.assert_ledger_clean().await;
}

/// Sets whether the test database accepts connections, and drops the ones it has: for the
/// service, the database is gone (as in an outage or a failover) without stopping the shared
/// PostgreSQL other tests use.
async fn database_reachable(url: &str, yes: bool) {
    let name = url.rsplit('/').next().unwrap().to_string();
    let admin = sqlx::PgPool::connect(&crate::support::database_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS {yes}"
    )))
    .execute(&admin)
    .await
    .unwrap();
    if !yes {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .execute(&admin)
            .await
            .unwrap();
    }
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_under_load_fails_closed_and_recovers_without_double_charges() {
    let url = crate::db::fresh_postgres().await;
    let app = Arc::new(
        TestApp::start(
            &repo_rules(),
            &[
                ("TARIFF_DATABASE_URL", url.clone()),
                ("TARIFF_ADMIN_TOKEN", ADMIN.to_string()),
            ],
        )
        .await,
    );
    let (account, key) = open(&app).await;
    assert_eq!(
        grant(&app, "d1", &account, 100_000_000, ADMIN).await.status,
        200
    );
    let stop = Arc::new(AtomicBool::new(false));
    let clients = mixed_clients(
        &app,
        &key,
        &stop,
        &["ledger_unavailable", "database_unavailable"],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    database_reachable(&url, false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    database_reachable(&url, true).await;
    // Back by itself: a request paid from credits is served again.
    let mut recovered = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = get_with(
            &app,
            "/search?q=after+the+database",
            &[("authorization", format!("Bearer {key}"))],
        )
        .await;
        if r.status == 200 {
            recovered = true;
            break;
        }
    }
    assert!(
        recovered,
        "credits did not come back after the database did"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let all = join(clients).await;
    assert!(all.other.is_empty(), "unexpected answers: {:?}", all.other);
    assert!(all.store_down > 0, "the outage was not seen: {all:?}");
    assert!(all.quoted > 0 && all.served > 0, "{all:?}");

    // The recovery probe was served too: one more charge than the clients saw. Holds of
    // requests that failed in the outage are released in the background once the database is
    // back (not left to the expiry sweep), and a post that landed for a withheld answer is
    // refunded: poll until that settles.
    let ledger = app.state.accounts.as_ref().unwrap().ledger();
    let account_id = AccountId::new(account.as_str()).unwrap();
    let expected = 100_000_000 - 20_000 * (all.served as i64 + 1);
    let mut balance = ledger.balance(&account_id).await.unwrap();
    for _ in 0..200 {
        if balance.held().0 == 0 && balance.posted() == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        balance = ledger.balance(&account_id).await.unwrap();
    }
    assert_eq!(balance.posted(), expected, "{all:?}");
    assert_eq!(balance.held().0, 0, "no hold left open: {all:?}");
    app.assert_ledger_clean().await;
}
