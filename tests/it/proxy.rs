//! Reverse-proxy mode against a real upstream on a loopback port: free routes pass through,
//! priced routes never reach it unpaid.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::routing::any;

use crate::harness::{TempDir, TestApp};

async fn upstream(hits: Arc<AtomicU64>) -> String {
    let app = axum::Router::new().route(
        "/{*rest}",
        any(move |req: axum::extract::Request| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let leaked = req.headers().contains_key("x-payment")
                    || req.headers().contains_key("payment-signature");
                let fwd_host = req.headers().get("x-forwarded-host").is_some();
                axum::Json(serde_json::json!({
                    "path": req.uri().path(),
                    "query": req.uri().query(),
                    "payment_header_leaked": leaked,
                    "forwarded_host": fwd_host,
                }))
            }
        }),
    );
    crate::harness::serve(app).await.0
}

const RULES: &str = r#"
[[route]]
id = "docs"
methods = ["GET"]
path = "/docs/{*rest}"
[[route.rule]]
id = "free"
free = true

[[route]]
id = "data"
methods = ["GET", "POST"]
path = "/data/{id}"
[[route.rule]]
id = "by-id"
when = "request.params.id.startsWith('premium-')"
price = "$0.25"
[[route.rule]]
id = "plain"
price = "$0.01"
"#;

#[tokio::test]
async fn free_routes_pass_priced_routes_do_not() {
    let hits = Arc::new(AtomicU64::new(0));
    let url = upstream(hits.clone()).await;
    let dir = TempDir::new("proxy");
    dir.write("a.toml", RULES);
    let app = TestApp::start(dir.path(), &[("TARIFF_UPSTREAM", url.clone())]).await;

    let free = app.get("/docs/intro/start?lang=en").await;
    assert_eq!(free.status, 200);
    assert_eq!(free.json()["path"], "/docs/intro/start");
    assert_eq!(free.json()["query"], "lang=en");
    assert_eq!(
        free.json()["forwarded_host"],
        false,
        "no Host in a oneshot request"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let premium = app.get("/data/premium-7").await;
    assert_eq!(premium.status, 402);
    assert_eq!(
        premium.amount(),
        250_000,
        "path parameters price the request"
    );
    assert_eq!(app.get("/data/7").await.amount(), 10_000);
    // A payment header that is not a payment buys nothing (tests/it/payments covers real ones).
    let req = axum::http::Request::get("/data/7")
        .header("x-payment", "eyJ4NDAyVmVyc2lvbiI6MX0=")
        .body(axum::body::Body::empty())
        .unwrap();
    let refused = crate::harness::Reply::read(app.send(req).await).await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (400, "invalid_payload")
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the upstream never saw a priced request"
    );

    let unpriced = app.get("/elsewhere").await;
    assert_eq!(unpriced.status, 404, "unpriced paths are denied by default");
}

#[tokio::test]
async fn pass_policy_forwards_unpriced_paths_and_strips_payment_headers() {
    let hits = Arc::new(AtomicU64::new(0));
    let url = upstream(hits.clone()).await;
    let dir = TempDir::new("proxy-pass");
    dir.write("a.toml", RULES);
    let cfg = TempDir::new("proxy-cfg");
    let cfg_path = cfg.write("tariff.toml", "unpriced = \"pass\"\n");
    let mut vars = vec![
        ("TARIFF_UPSTREAM", url),
        ("TARIFF_RULES", dir.path().display().to_string()),
    ];
    vars.push(("TARIFF_CONFIG", cfg_path.display().to_string()));
    let config = {
        let map: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        tariff::config::Config::load(None, &move |k| map.get(k).cloned()).unwrap()
    };
    assert_eq!(config.unpriced, tariff::config::UnpricedPolicy::Pass);
    let data = TempDir::new("proxy-data");
    let state = tariff::server::build_state(
        config,
        tariff::server::BuildOptions {
            data_dir: Some(data.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    use tower::ServiceExt;
    let req = axum::http::Request::get("/elsewhere?x=1")
        .header("payment-signature", "abc")
        .header("host", "api.example.com")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp =
        crate::harness::Reply::read(tariff::http::app(state).oneshot(req).await.unwrap()).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["path"], "/elsewhere");
    assert_eq!(resp.json()["payment_header_leaked"], false);
    assert_eq!(resp.json()["forwarded_host"], true);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
