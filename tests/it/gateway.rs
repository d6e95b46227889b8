//! The unpaid path through the real router: prices from the demo rules, quote reuse, and every
//! refusal with its status and code.

use axum::body::Body;
use axum::http::Request;

use crate::harness::{TestApp, repo_rules};

async fn demo() -> TestApp {
    TestApp::start(&repo_rules(), &[]).await
}

#[tokio::test]
async fn demo_queries_get_context_dependent_prices() {
    let app = demo().await;
    let simple = app.get("/search?q=bitcoin+price").await;
    assert_eq!(simple.status, 402);
    assert_eq!(simple.amount(), 20_000, "simple lookup is $0.02");

    let aggregate = app.get("/search?q=P%2FS+and+P%2FF+of+Uniswap").await;
    assert_eq!(aggregate.status, 402);
    assert_eq!(aggregate.amount(), 50_000, "aggregate metric is $0.05");

    let two = app
        .post_json("/search", r#"{"query":"compare","documents":["a","b"]}"#)
        .await;
    assert_eq!(two.amount(), 100_000, "two filings is $0.10");
    let four = app
        .post_json(
            "/search",
            r#"{"query":"compare","documents":["a","b","c","d"]}"#,
        )
        .await;
    assert_eq!(four.amount(), 140_000, "four filings is $0.10 + 2 x $0.02");
    assert_eq!(four.header("x-tariff-price").unwrap(), "$0.140000");
}

#[tokio::test]
async fn same_request_same_quote_different_request_different_quote() {
    let app = demo().await;
    let a1 = app.get("/search?q=bitcoin+price").await.quote_id();
    let a2 = app.get("/search?q=bitcoin+price").await.quote_id();
    assert_eq!(a1, a2);
    let b = app.get("/search?q=ether+price").await.quote_id();
    assert_ne!(a1, b);

    // JSON key order, whitespace and number spelling do not make a new request.
    let j1 = app
        .post_json("/search", r#"{"query":"x","documents":["a","b"],"top":1}"#)
        .await
        .quote_id();
    let j2 = app
        .post_json(
            "/search",
            "{ \"top\": 1.0,\n \"documents\" : [\"a\",\"b\"], \"query\":\"x\" }",
        )
        .await
        .quote_id();
    assert_eq!(j1, j2);
    let j3 = app
        .post_json("/search", r#"{"query":"x","documents":["b","a"],"top":1}"#)
        .await
        .quote_id();
    assert_ne!(j1, j3, "document order is meaningful");
}

#[tokio::test]
async fn concurrent_identical_requests_share_one_quote() {
    let app = demo().await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let state = app.state.clone();
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let resp = tariff::http::app(state)
                .oneshot(
                    Request::get("/search?q=same+thing")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            crate::harness::Reply::read(resp).await.quote_id()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one quote for one request: {ids:?}");
}

#[tokio::test]
async fn free_route_reaches_the_upstream_and_priced_route_does_not() {
    let app = demo().await;
    let about = app.get("/about").await;
    assert_eq!(about.status, 200);
    assert_eq!(about.json()["service"], "Tariff demo search");
    let search = app.get("/search?q=x").await;
    assert_eq!(search.status, 402);
    assert!(
        search.json().get("results").is_none(),
        "no upstream content in a 402"
    );
}

#[tokio::test]
async fn bad_requests_get_specific_errors() {
    let app = demo().await;
    let cases: Vec<(Request<Body>, u16, &str)> = vec![
        (
            Request::get("/search?q=a&q=b").body(Body::empty()).unwrap(),
            400,
            "ambiguous_query",
        ),
        (
            Request::get("/x/../search?q=a")
                .body(Body::empty())
                .unwrap(),
            400,
            "non_canonical_path",
        ),
        (
            Request::get("/sea%2Frch?q=a").body(Body::empty()).unwrap(),
            400,
            "non_canonical_path",
        ),
        (
            Request::post("/search")
                .header("content-type", "application/json")
                .body(Body::from("{\"query\":"))
                .unwrap(),
            400,
            "invalid_json_body",
        ),
        (
            Request::post("/search")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"documents":["a","b","c"],"documents":[]}"#))
                .unwrap(),
            400,
            "duplicate_json_key",
        ),
        (
            Request::post("/search")
                .header("content-type", "application/json")
                .body(Body::from(format!(
                    "{{\"query\":\"{}\"}}",
                    "a".repeat(70_000)
                )))
                .unwrap(),
            413,
            "body_too_large",
        ),
        (
            Request::get("/admin").body(Body::empty()).unwrap(),
            404,
            "no_route",
        ),
        (
            Request::delete("/search").body(Body::empty()).unwrap(),
            405,
            "method_not_allowed",
        ),
        (
            Request::post("/about").body(Body::empty()).unwrap(),
            405,
            "method_not_allowed",
        ),
    ];
    for (req, status, code) in cases {
        let uri = req.uri().clone();
        let reply = crate::harness::Reply::read(app.send(req).await).await;
        assert_eq!(
            reply.status,
            status,
            "{uri}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.error_code(), code, "{uri}");
        assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    }
    // None of them created a quote.
    assert_eq!(app.state.metrics.total("tariff_quotes_total", None), 0);
}

#[tokio::test]
async fn percent_encoded_path_is_priced_like_the_plain_one() {
    // The upstream decodes %72 to 'r': the gateway must price what the upstream will serve.
    let app = demo().await;
    let plain = app.get("/search?q=bitcoin+price").await.quote_id();
    let encoded = app.get("/sea%72ch?q=bitcoin+price").await;
    assert_eq!(encoded.status, 402);
    assert_eq!(encoded.quote_id(), plain);
}

#[tokio::test]
async fn quotes_expire_and_a_new_one_is_issued() {
    let clock = tariff::time::Clock::manual(tariff::time::UnixMillis(1_800_000_000_000));
    let app = TestApp::start_with(&repo_rules(), &[], clock.clone()).await;
    let first = app.get("/search?q=bitcoin+price").await.quote_id();
    clock.advance_ms(299_000);
    assert_eq!(
        app.get("/search?q=bitcoin+price").await.quote_id(),
        first,
        "still open"
    );
    clock.advance_ms(1_000);
    let second = app.get("/search?q=bitcoin+price").await.quote_id();
    assert_ne!(second, first, "expired at 300 s");
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let app = demo().await;
    assert_eq!(app.get("/health").await.status, 200);
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["quote_store"], "memory");
    let first = app.get("/search?q=one").await;
    let second = app.get("/search?q=one").await;
    let (a, b) = (first.header("x-request-id"), second.header("x-request-id"));
    assert!(
        a.is_some() && a != b,
        "a fresh request id each: {a:?} {b:?}"
    );
    // A caller's own id is kept when it is plain, replaced when it is not.
    let kept = app
        .send(
            Request::get("/health")
                .header("x-request-id", "lb-7f3a.1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(kept.headers()["x-request-id"], "lb-7f3a.1");
    let replaced = app
        .send(
            Request::get("/health")
                .header("x-request-id", "a b<script>")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_ne!(replaced.headers()["x-request-id"], "a b<script>");

    // /metrics read back by an independent Prometheus text-format parser.
    let reply = app.get("/metrics").await;
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(reply.body).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    let value = |metric: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => 0.0,
            })
            .sum()
    };
    let search = [("route", "search")];
    assert_eq!(
        value("tariff_quotes_total", &[search[0], ("outcome", "created")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        value("tariff_quotes_total", &[search[0], ("outcome", "reused")]),
        1.0,
        "{text}"
    );
    // Both 402s are in the latency histogram of the priced routes; the health checks in theirs.
    // A histogram's count, however the parser files it (as buckets, or as `_count`).
    let count = |labels: &[(&str, &str)]| {
        f64::max(
            value("tariff_http_request_duration_seconds", labels),
            value("tariff_http_request_duration_seconds_count", labels),
        )
    };
    assert_eq!(
        count(&[("handler", "gateway"), ("status", "402")]),
        2.0,
        "{text}"
    );
    assert!(
        count(&[("handler", "/health"), ("status", "200")]) >= 3.0,
        "{text}"
    );
    assert!(value("tariff_rules_generation", &[]) >= 1.0, "{text}");
}

#[tokio::test]
async fn real_socket_answers_402() {
    let app = demo().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server =
        tokio::spawn(axum::serve(listener, tariff::http::app(app.state.clone())).into_future());
    let resp = reqwest::get(format!("http://{addr}/search?q=bitcoin+price"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 402);
    assert!(resp.headers().get("payment-required").is_some());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["accepts"][0]["resource"],
        format!("http://{addr}/search?q=bitcoin+price")
    );
    server.abort();
}

fn random_key() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

#[tokio::test]
async fn instances_sharing_redis_share_quotes() {
    let key = random_key();
    let vars = [
        ("TARIFF_REDIS_URL", crate::support::redis_url()),
        ("TARIFF_FINGERPRINT_KEY", key),
    ];
    let a = TestApp::start(&repo_rules(), &vars).await;
    let b = TestApp::start(&repo_rules(), &vars).await;
    assert_eq!(a.get("/ready").await.json()["quote_store"], "redis");
    let qa = a.get("/search?q=shared+between+instances").await.quote_id();
    let qb = b.get("/search?q=shared+between+instances").await.quote_id();
    assert_eq!(
        qa, qb,
        "a quote issued by one instance is found by the other"
    );

    // An instance with another key hashes differently and cannot see (or hijack) those quotes.
    let other = TestApp::start(
        &repo_rules(),
        &[
            ("TARIFF_REDIS_URL", crate::support::redis_url()),
            ("TARIFF_FINGERPRINT_KEY", random_key()),
        ],
    )
    .await;
    assert_ne!(
        other
            .get("/search?q=shared+between+instances")
            .await
            .quote_id(),
        qa
    );
}

#[tokio::test]
async fn redis_going_down_fails_closed_with_503() {
    let dir = crate::harness::TempDir::new("redis-down");
    let sock = dir.path().join("r.sock");
    let mut redis = crate::support::redis_on(&sock);
    crate::support::wait_for_socket(&sock).await;
    let vars = [
        ("TARIFF_REDIS_URL", format!("unix://{}", sock.display())),
        ("TARIFF_FINGERPRINT_KEY", random_key()),
    ];
    let app = TestApp::start(&repo_rules(), &vars).await;
    let open = app.get("/search?q=up").await;
    assert_eq!(open.status, 402);
    redis.kill().unwrap();
    redis.wait().unwrap();
    // A quote already open is answered from the local cache: it cannot change until it expires.
    assert_eq!(app.get("/search?q=up").await.quote_id(), open.quote_id());
    let down = app.get("/search?q=down").await;
    assert_eq!(down.status, 503);
    assert_eq!(down.error_code(), "quote_store_unavailable");
    assert_eq!(app.get("/ready").await.status, 503);
    // Free routes do not need the quote store.
    assert_eq!(app.get("/about").await.status, 200);
}

#[tokio::test]
async fn wrong_method_names_the_allowed_ones() {
    let app = demo().await;
    let reply = crate::harness::Reply::read(
        app.send(Request::put("/search").body(Body::empty()).unwrap())
            .await,
    )
    .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow").as_deref(), Some("GET, POST"));
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("/search accepts GET, POST, not PUT")
    );
}

/// Rules for the memo tests: a price for large bodies, one for lookups, the rest free.
const MEMO_RULES: &str = r#"
[[route]]
id = "search"
methods = ["GET", "POST"]
path = "/search"
max = "$1.00"

[[route.rule]]
id = "big-bodies"
when = "request.body_size > 40"
price = "$0.05"

[[route.rule]]
id = "lookups"
when = "has(request.query.q)"
price = "$0.02"

[[route.rule]]
id = "rest"
free = true
"#;

async fn memo_app(rules: &str) -> (crate::harness::TempDir, TestApp) {
    let dir = crate::harness::TempDir::new("decisions");
    dir.write("search.toml", rules);
    let app = TestApp::start(dir.path(), &[]).await;
    (dir, app)
}

/// A repeated request's pricing decision is remembered (only repeats enter) and gives the same
/// answer as pricing it again.
#[tokio::test]
async fn a_repeated_requests_decision_is_remembered_and_distinct_ones_are_not() {
    let (_dir, app) = memo_app(MEMO_RULES).await;
    for i in 0..5 {
        assert_eq!(
            app.get(&format!("/search?q=distinct-{i}")).await.status,
            402
        );
    }
    assert!(app.state.decisions.is_empty());
    let first = app.get("/search?q=again").await;
    let second = app.get("/search?q=again").await;
    assert_eq!(app.state.decisions.len(), 1);
    let third = app.get("/search?q=again").await;
    for r in [&first, &second, &third] {
        assert_eq!(r.status, 402);
        assert_eq!(r.header("x-tariff-price").as_deref(), Some("$0.020000"));
        assert_eq!(r.quote_id(), first.quote_id());
    }
}

/// A rules reload that makes a repeated request free serves it free at once: a remembered
/// decision belongs to the rules that made it.
#[tokio::test]
async fn a_remembered_decision_does_not_outlive_a_rules_reload() {
    let (dir, app) = memo_app(MEMO_RULES).await;
    for _ in 0..3 {
        assert_eq!(app.get("/search?q=bitcoin").await.status, 402);
    }
    assert_eq!(app.state.decisions.len(), 1);
    let free = MEMO_RULES.replace(
        "when = \"has(request.query.q)\"\nprice = \"$0.02\"",
        "when = \"has(request.query.q)\"\nfree = true",
    );
    assert_ne!(free, MEMO_RULES);
    dir.write("search.toml", &free);
    app.state.rules.reload().expect("the edited rules load");
    let after = app.get("/search?q=bitcoin").await;
    assert_eq!(
        after.status,
        200,
        "{}",
        String::from_utf8_lossy(&after.body)
    );
}

/// Two JSON bodies with one fingerprint (whitespace) but different sizes are decided each on
/// its own: rules may read `request.body_size`, which the fingerprint does not cover.
#[tokio::test]
async fn a_remembered_decision_is_per_body_size() {
    let (_dir, app) = memo_app(MEMO_RULES).await;
    let spaced = r#"{   "query" :   "compare revenue recognition"   }"#;
    let compact = r#"{"query":"compare revenue recognition"}"#;
    assert!(spaced.len() > 40 && compact.len() <= 40);
    for _ in 0..3 {
        let r = app.post_json("/search", spaced).await;
        assert_eq!(r.status, 402);
        assert_eq!(r.header("x-tariff-price").as_deref(), Some("$0.050000"));
    }
    assert_eq!(app.state.decisions.len(), 1);
    let r = app.post_json("/search", compact).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}
