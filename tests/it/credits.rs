//! Credit-funded requests through the real router, on a real PostgreSQL ledger: open an account,
//! get credits, spend them request by request, never overspend, never pay for an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tariff::ledger::AccountId;

use crate::harness::{Reply, TempDir, TestApp, repo_rules};

pub(crate) const ADMIN: &str = "admin-token-0123456789abcdef0123456789";

pub(crate) async fn app_with(rules: &std::path::Path, extra: &[(&str, String)]) -> TestApp {
    let mut vars = vec![
        ("TARIFF_DATABASE_URL", crate::db::fresh_postgres().await),
        ("TARIFF_ADMIN_TOKEN", ADMIN.to_string()),
    ];
    vars.extend(extra.iter().cloned());
    TestApp::start(rules, &vars).await
}

pub(crate) async fn open(app: &TestApp) -> (String, String) {
    let reply = Reply::read(
        app.send(Request::post("/accounts").body(Body::empty()).unwrap())
            .await,
    )
    .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    let j = reply.json();
    (
        j["account"].as_str().unwrap().to_string(),
        j["api_key"].as_str().unwrap().to_string(),
    )
}

pub(crate) async fn grant(
    app: &TestApp,
    id: &str,
    account: &str,
    amount: i64,
    token: &str,
) -> Reply {
    let body = json!({"id": id, "account": account, "amount": amount, "reason": "test grant"});
    let req = Request::post("/admin/credits")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    Reply::read(app.send(req).await).await
}

async fn get_with_key(app: &TestApp, uri: &str, key: &str) -> Reply {
    let req = Request::get(uri)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    Reply::read(app.send(req).await).await
}

pub(crate) async fn me(app: &TestApp, key: &str) -> Value {
    let r = get_with_key(app, "/accounts/me", key).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

#[tokio::test]
async fn a_funded_account_pays_request_by_request_with_receipts() {
    let app = app_with(&repo_rules(), &[]).await;
    let (account, key) = open(&app).await;
    assert_eq!(me(&app, &key).await["available"], 0);

    // No credits yet: the normal 402, with the reason, and nothing moves.
    let broke = get_with_key(&app, "/search?q=bitcoin+price", &key).await;
    assert_eq!(broke.status, 402);
    assert_eq!(
        broke.header("tariff-reason").as_deref(),
        Some("insufficient_credits")
    );
    assert!(
        broke.json()["error"]
            .as_str()
            .unwrap()
            .contains("insufficient credits")
    );
    assert!(
        broke.header("payment-required").is_some(),
        "the agent can still pay on chain"
    );
    assert_eq!(me(&app, &key).await["held"], 0);

    let g = grant(&app, "g1", &account, 1_000_000, ADMIN).await;
    assert_eq!(g.status, 200, "{}", String::from_utf8_lossy(&g.body));
    assert_eq!(g.json()["balance"], 1_000_000);

    let paid = get_with_key(&app, "/search?q=bitcoin+price", &key).await;
    assert_eq!(paid.status, 200, "{}", String::from_utf8_lossy(&paid.body));
    assert_eq!(paid.json()["served_by"], "tariff-demo");
    let receipt: Value = serde_json::from_str(&paid.header("tariff-receipt").unwrap()).unwrap();
    assert_eq!(receipt["amount"], 20_000);
    assert_eq!(receipt["balance"], 980_000);
    assert_eq!(receipt["account"], account.as_str());
    assert!(receipt["transfer"].as_str().unwrap().ends_with(":post"));

    // Each request served is charged; a dearer one costs more.
    let compare = Request::post("/search")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"query":"x","documents":["a","b","c"]}"#))
        .unwrap();
    let paid2 = Reply::read(app.send(compare).await).await;
    assert_eq!(paid2.status, 200);
    let receipt2: Value = serde_json::from_str(&paid2.header("tariff-receipt").unwrap()).unwrap();
    assert_eq!(receipt2["amount"], 120_000);
    assert_eq!(receipt2["balance"], 860_000);

    let mine = me(&app, &key).await;
    assert_eq!(mine["posted"], 860_000);
    assert_eq!(mine["held"], 0);
    assert_eq!(
        mine["recent"].as_array().unwrap().len(),
        5,
        "grant, 2 holds, 2 posts: {mine}"
    );
    let revenue = app
        .state
        .accounts
        .as_ref()
        .unwrap()
        .ledger()
        .balance(&AccountId::new("sys:revenue").unwrap())
        .await
        .unwrap();
    assert_eq!(revenue.posted(), 140_000);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn concurrent_requests_cannot_overspend() {
    let app = app_with(&repo_rules(), &[]).await;
    let (account, key) = open(&app).await;
    grant(&app, "g", &account, 50_000, ADMIN).await; // room for two $0.02 lookups, not three
    let mut tasks = Vec::new();
    for i in 0..6 {
        let state = app.state.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let req = Request::get(format!("/search?q=price+{i}"))
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap();
            Reply::read(tariff::http::app(state).oneshot(req).await.unwrap())
                .await
                .status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 402, 402, 402, 402]);
    assert_eq!(me(&app, &key).await["available"], 10_000);
    app.assert_ledger_clean().await;
}

async fn failing_upstream(hits: Arc<AtomicU64>) -> String {
    use axum::routing::any;
    let app = axum::Router::new().route(
        "/{*rest}",
        any(move |req: axum::extract::Request| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let auth = req
                    .headers()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string());
                let status = if req.uri().path() == "/broken" {
                    503
                } else {
                    200
                };
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    axum::Json(json!({"authorization_seen": auth})),
                )
            }
        }),
    );
    crate::harness::serve(app).await.0
}

const PROXY_RULES: &str = r#"
[[route]]
id = "all"
methods = ["GET"]
path = "/{*rest}"
default = "$0.10"
"#;

#[tokio::test]
async fn upstream_errors_are_not_charged_and_keys_do_not_leak() {
    let hits = Arc::new(AtomicU64::new(0));
    let url = failing_upstream(hits.clone()).await;
    let dir = TempDir::new("credits-proxy");
    dir.write("a.toml", PROXY_RULES);
    let app = app_with(dir.path(), &[("TARIFF_UPSTREAM", url)]).await;
    let (account, key) = open(&app).await;
    grant(&app, "g", &account, 1_000_000, ADMIN).await;

    let broken = get_with_key(&app, "/broken", &key).await;
    assert_eq!(broken.status, 503);
    assert!(broken.header("tariff-receipt").is_none());
    assert_eq!(
        me(&app, &key).await["available"],
        1_000_000,
        "a 5xx is not charged"
    );

    let ok = get_with_key(&app, "/fine", &key).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.json()["authorization_seen"],
        Value::Null,
        "the Tariff key never reaches the upstream"
    );
    assert_eq!(me(&app, &key).await["available"], 900_000);
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // A bearer token that is not a Tariff key belongs to the upstream: unpaid → 402, not 401.
    let other = get_with_key(&app, "/fine", "upstream-session-token").await;
    assert_eq!(other.status, 402);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn bad_keys_and_bad_admin_calls_get_specific_errors_and_change_nothing() {
    let app = app_with(&repo_rules(), &[]).await;
    let (account, key) = open(&app).await;
    grant(&app, "g", &account, 100_000, ADMIN).await;

    let malformed = get_with_key(&app, "/search?q=x", "tk_nothex").await;
    assert_eq!(
        (malformed.status, malformed.error_code().as_str()),
        (401, "invalid_api_key")
    );
    let unknown = get_with_key(&app, "/search?q=x", &format!("tk_{}", "0".repeat(64))).await;
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (401, "invalid_api_key")
    );
    let no_key = Reply::read(
        app.send(Request::get("/accounts/me").body(Body::empty()).unwrap())
            .await,
    )
    .await;
    assert_eq!(
        (no_key.status, no_key.error_code().as_str()),
        (401, "missing_api_key")
    );

    assert_eq!(
        grant(&app, "x", &account, 5, "wrong-token")
            .await
            .error_code(),
        "invalid_admin_token"
    );
    assert_eq!(
        grant(&app, "x", "agent:nobody", 5, ADMIN)
            .await
            .error_code(),
        "unknown_account"
    );
    let empty_reason = {
        let req = Request::post("/admin/credits")
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"id": "y", "account": account, "amount": 5, "reason": " "}).to_string(),
            ))
            .unwrap();
        Reply::read(app.send(req).await).await
    };
    assert_eq!(
        (empty_reason.status, empty_reason.error_code().as_str()),
        (400, "reason_required")
    );
    // Taking back more than the agent has is refused by the ledger.
    let overdraw = grant(&app, "take", &account, -200_000, ADMIN).await;
    assert_eq!(
        overdraw.status,
        402,
        "{}",
        String::from_utf8_lossy(&overdraw.body)
    );

    // Replaying a grant changes nothing; the same id with another amount is a conflict.
    assert_eq!(grant(&app, "g", &account, 100_000, ADMIN).await.status, 200);
    let conflict = grant(&app, "g", &account, 999, ADMIN).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(me(&app, &key).await["available"], 100_000);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn admin_endpoints_are_off_without_a_token() {
    let app = TestApp::start(&repo_rules(), &[]).await;
    let r = grant(&app, "g", "agent:x", 5, ADMIN).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "admin_disabled"));
}

#[tokio::test]
async fn ledger_down_fails_closed_with_503_and_serves_nothing() {
    let hits = Arc::new(AtomicU64::new(0));
    let url = failing_upstream(hits.clone()).await;
    let dir = TempDir::new("credits-down");
    dir.write("a.toml", PROXY_RULES);
    let db_url = crate::db::fresh_postgres().await;
    let app = TestApp::start(
        dir.path(),
        &[
            ("TARIFF_DATABASE_URL", db_url.clone()),
            ("TARIFF_ADMIN_TOKEN", ADMIN.to_string()),
            ("TARIFF_UPSTREAM", url),
        ],
    )
    .await;
    let (account, key) = open(&app).await;
    grant(&app, "g", &account, 1_000_000, ADMIN).await;

    // Take the database away: refuse new connections and cut the pool's existing ones.
    let name = db_url.rsplit('/').next().unwrap().to_string();
    let admin = sqlx::PgPool::connect(&crate::support::database_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&admin)
        .await
        .unwrap();

    let down = get_with_key(&app, "/fine", &key).await;
    assert_eq!(
        (down.status, down.error_code().as_str()),
        (503, "ledger_unavailable")
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing served without a posted debit"
    );

    // Back up: the balance is untouched and the next request is served and charged once.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS true"
    )))
    .execute(&admin)
    .await
    .unwrap();
    assert_eq!(me(&app, &key).await["available"], 1_000_000);
    assert_eq!(get_with_key(&app, "/fine", &key).await.status, 200);
    assert_eq!(me(&app, &key).await["available"], 900_000);
    app.assert_ledger_clean().await;
}

/// An upstream that reports usage like an LLM API: /v1/<tokens> answers that many tokens.
pub(crate) async fn usage_upstream() -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/{tokens}",
        post(
            |axum::extract::Path(tokens): axum::extract::Path<String>| async move {
                match tokens.parse::<u64>() {
                    Ok(n) => axum::Json(json!({"text": "…", "usage": {"total_tokens": n}})),
                    Err(_) => axum::Json(json!({"text": "no usage reported"})),
                }
            },
        ),
    );
    crate::harness::serve(app).await.0
}

pub(crate) const USAGE_RULES: &str = r#"
[[route]]
id = "llm"
methods = ["POST"]
path = "/v1/{model}"
[[route.rule]]
id = "tokens"
price = "$0.50"
actual = "response.body.usage.total_tokens * 100"
"#;

#[tokio::test]
async fn a_ceiling_is_held_and_the_actual_price_from_the_response_is_posted() {
    let dir = TempDir::new("credits-usage");
    dir.write("a.toml", USAGE_RULES);
    let app = app_with(dir.path(), &[("TARIFF_UPSTREAM", usage_upstream().await)]).await;
    let (account, key) = open(&app).await;
    grant(&app, "g", &account, 2_000_000, ADMIN).await;
    let call = |path: &'static str| {
        let key = key.clone();
        let app = &app;
        async move {
            let req = Request::post(path)
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .body(Body::from(r#"{"prompt":"hi"}"#))
                .unwrap();
            Reply::read(app.send(req).await).await
        }
    };
    // 1,200 tokens at 100 micro-dollars: $0.12 posted, the rest of the $0.50 hold released.
    let r = call("/v1/1200").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["usage"]["total_tokens"],
        1200,
        "the answer passes through intact"
    );
    let receipt: Value = serde_json::from_str(&r.header("tariff-receipt").unwrap()).unwrap();
    assert_eq!(
        (receipt["amount"].as_u64(), receipt["held"].as_u64()),
        (Some(120_000), Some(500_000))
    );
    assert_eq!(me(&app, &key).await["available"], 1_880_000);
    // Never above the ceiling.
    let r = call("/v1/99999").await;
    let receipt: Value = serde_json::from_str(&r.header("tariff-receipt").unwrap()).unwrap();
    assert_eq!(receipt["amount"], 500_000);
    // No usage in the answer: the ceiling the agent accepted, not zero.
    let r = call("/v1/none").await;
    let receipt: Value = serde_json::from_str(&r.header("tariff-receipt").unwrap()).unwrap();
    assert_eq!(receipt["amount"], 500_000);
    // Zero tokens: nothing charged, the hold released.
    let r = call("/v1/0").await;
    assert_eq!(r.status, 200);
    assert!(r.header("tariff-receipt").is_none());
    let mine = me(&app, &key).await;
    assert_eq!(
        (mine["available"].as_i64(), mine["held"].as_i64()),
        (Some(880_000), Some(0))
    );
    app.assert_ledger_clean().await;
}

#[test]
fn actual_needs_a_ceiling_and_may_read_the_response_only_there() {
    use tariff::pricing::expr::ExprEnv;
    use tariff::pricing::rules::{LoadOptions, load_sources};
    let load = |text: &str| {
        load_sources(
            &[(std::path::PathBuf::from("t.toml"), text.to_string())],
            &ExprEnv::new(),
            &LoadOptions {
                max_price: tariff::money::UsdMicros(10_000_000),
                max_stored_answer_bytes: tariff::pricing::DEFAULT_STORED_ANSWER_BYTES,
                extension_schemas: true,
            },
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let head =
        "[[route]]\nid = \"r\"\nmethods = [\"POST\"]\npath = \"/p\"\n[[route.rule]]\nid = \"a\"\n";
    assert!(
        load(&format!("{head}free = true\nactual = \"1\""))
            .unwrap_err()
            .contains("needs a `price`")
    );
    assert!(
        load(&format!("{head}price = \"response.status\""))
            .unwrap_err()
            .contains("response")
    );
    assert!(
        load(&format!(
            "{head}price = \"$1\"\nactual = \"respons.body.n\""
        ))
        .unwrap_err()
        .contains("actual")
    );
    load(&format!(
        "{head}price = \"$1\"\nactual = \"response.body.n * 2\""
    ))
    .unwrap();
}

#[tokio::test]
async fn account_signup_is_rate_limited() {
    let cfg = TempDir::new("signup-cfg");
    let path = cfg.write("tariff.toml", "signups_per_minute = 2\n");
    let app = TestApp::start(
        &repo_rules(),
        &[("TARIFF_CONFIG", path.display().to_string())],
    )
    .await;
    open(&app).await;
    open(&app).await;
    let third = Reply::read(
        app.send(Request::post("/accounts").body(Body::empty()).unwrap())
            .await,
    )
    .await;
    assert_eq!(
        (third.status, third.error_code().as_str()),
        (429, "too_many_signups")
    );
    let retry: u64 = third.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
}
