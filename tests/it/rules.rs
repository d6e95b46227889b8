//! Rule files: load-time errors name file, route, rule and reason; hot reload; the external
//! pricer over real HTTP.

use std::path::PathBuf;
use std::time::Duration;

use tariff::money::UsdMicros;
use tariff::pricing::expr::ExprEnv;
use tariff::pricing::rules::{LoadOptions, load_sources};
use tariff::pricing::{RuleErrors, RulesHandle};

use crate::harness::{TempDir, TestApp};

fn opts() -> LoadOptions {
    LoadOptions {
        max_price: UsdMicros(10_000_000),
        max_stored_answer_bytes: tariff::pricing::DEFAULT_STORED_ANSWER_BYTES,
        extension_schemas: true,
    }
}

fn load(text: &str) -> Result<tariff::pricing::RuleSet, RuleErrors> {
    load_sources(
        &[(PathBuf::from("pricing-rules/t.toml"), text.to_string())],
        &ExprEnv::new(),
        &opts(),
    )
}

fn err(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

const HEAD: &str = "[[route]]\nid = \"r\"\nmethods = [\"GET\", \"POST\"]\npath = \"/p\"\n";

#[test]
fn the_demo_rules_load() {
    let set =
        tariff::pricing::rules::load_dir(&crate::harness::repo_rules(), &ExprEnv::new(), &opts())
            .unwrap();
    assert_eq!(
        set.routes.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["search", "about"]
    );
}

#[test]
fn errors_name_file_route_rule_and_reason() {
    let cases = [
        ("[[route]]\nid = \"r\"\n", "missing field"),
        (
            &format!("{HEAD}color = \"red\"\n[[route.rule]]\nid = \"a\"\nprice = \"$1\""),
            "unknown field `color`",
        ),
        (
            &format!(
                "{HEAD}[[route.rule]]\nid = \"a\"\nwhen = \"reqest.method == 'GET'\"\nprice = \"$1\""
            ),
            "rule `a`: when:",
        ),
        (
            &format!("{HEAD}[[route.rule]]\nid = \"a\"\nprice = \"body.n * 2\""),
            "may be negative",
        ),
        (
            &format!("{HEAD}[[route.rule]]\nid = \"a\"\nprice = \"0.05\""),
            "write \"$0.05\"",
        ),
        (
            &format!("{HEAD}[[route.rule]]\nid = \"a\"\nprice = \"$0.0000001\""),
            "rule `a`: price",
        ),
        (
            &format!("{HEAD}[[route.rule]]\nid = \"a\"\nprice = \"$1\"\nfree = true"),
            "exactly one of",
        ),
        (
            &format!(
                "{HEAD}[[route.rule]]\nid = \"a\"\nprice = \"$1\"\n[[route.rule]]\nid = \"a\"\nfree = true"
            ),
            "used twice",
        ),
        (
            &format!("{HEAD}max = \"$20\"\ndefault = \"$1\""),
            "above the server's pricing.max_price",
        ),
        (
            &format!("{HEAD}headers = [\"Authorization\"]\ndefault = \"$1\""),
            "carries credentials",
        ),
        (HEAD, "no rules and no default"),
        (
            &format!(
                "{HEAD}[[route.rule]]\nid = \"a\"\nwhen = \"request.path.matches(body.pattern)\"\nprice = \"$1\""
            ),
            "literal",
        ),
        (
            &format!(
                "{HEAD}[[route.rule]]\nid = \"a\"\nwhen = \"request.path.matches('(')\"\nprice = \"$1\""
            ),
            "rule `a`",
        ),
        (
            &format!(
                "{HEAD}[[route.rule]]\nid = \"a\"\nprice = \"$1\"\n[[route.sample]]\nexpect_price = \"$2\""
            ),
            "sample #1: expected price $2.000000, got $1.000000",
        ),
        (
            &format!(
                "{HEAD}[[route.rule]]\nid = \"a\"\nexternal = {{ url = \"ftp://x\", fallback = \"$1\" }}"
            ),
            "external.url",
        ),
    ];
    for (text, want) in cases {
        let e = err(text);
        assert!(e.starts_with("pricing-rules/t.toml"), "{e}");
        assert!(e.contains(want), "expected `{want}` in: {e}");
    }
}

#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let text = format!(
        "{HEAD}[[route.rule]]\nid = \"a\"\nwhen = \"nope(1)\"\nprice = \"$1\"\n[[route.rule]]\nid = \"b\"\nprice = \"body.x - 1\""
    );
    let e = load(&text).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
    assert_eq!(e.0[0].rule.as_deref(), Some("a"));
    assert_eq!(e.0[1].rule.as_deref(), Some("b"));
}

#[test]
fn clamps_and_free_rules() {
    let set = load(&format!(
        "{HEAD}max = \"$0.50\"\n\
         [[route.rule]]\nid = \"free\"\nwhen = \"request.query.tier == 'free'\"\nfree = true\n\
         [[route.rule]]\nid = \"per-word\"\nwhen = \"has(request.query.q)\"\nprice = \"usd('0.01') * words(request.query.q)\"\nmin = \"$0.02\"\nmax = \"$0.06\"\n\
         [[route.rule]]\nid = \"huge\"\nprice = \"$5\"\n"
    ))
    .unwrap();
    let route = &set.routes[0];
    let env = ExprEnv::new();
    let price = |q: &[(&str, &str)]| {
        let view = tariff::pricing::expr::RequestView {
            method: "GET".into(),
            path: "/p".into(),
            params: Default::default(),
            query: q
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: Default::default(),
            body_size: 0,
        };
        let body = serde_json::json!({});
        route
            .decide(
                &env,
                &tariff::pricing::expr::EvalInput {
                    request: &view,
                    body: &body,
                    response: None,
                },
            )
            .unwrap()
    };
    use tariff::pricing::Decision;
    assert!(matches!(price(&[("tier", "free")]), Decision::Free { .. }));
    let p = |d: Decision| match d {
        Decision::Priced { price, .. } => price.0,
        other => panic!("{other:?}"),
    };
    assert_eq!(p(price(&[("q", "one")])), 20_000, "clamped up to min");
    assert_eq!(p(price(&[("q", "one two three four")])), 40_000);
    assert_eq!(
        p(price(&[("q", "a b c d e f g h i j")])),
        60_000,
        "clamped down to max"
    );
    assert_eq!(p(price(&[])), 500_000, "capped by the route max");
}

#[tokio::test]
async fn hot_reload_swaps_rules_and_a_broken_file_keeps_the_old_ones() {
    let dir = TempDir::new("reload");
    dir.write("a.toml", &format!("{HEAD}default = \"$0.03\""));
    let app = TestApp::start(dir.path(), &[]).await;
    assert_eq!(app.get("/p?x=1").await.amount(), 30_000);
    let watcher = app.state.rules.spawn_watcher(Duration::from_millis(50));

    // A valid change is picked up without a restart.
    dir.write("a.toml", &format!("{HEAD}default = \"$0.07\""));
    wait_for(|| app.state.rules.status().generation == 2).await;
    assert_eq!(app.get("/p?x=2").await.amount(), 70_000);

    // A broken change is refused; the previous rules keep serving and the reason is visible.
    dir.write("a.toml", &format!("{HEAD}default = \"seven cents\""));
    wait_for(|| app.state.rules.status().last_error.is_some()).await;
    assert_eq!(app.get("/p?x=3").await.amount(), 70_000);
    let ready = app.get("/ready").await.json();
    assert!(
        ready["rules_reload_error"]
            .as_str()
            .unwrap()
            .contains("a.toml: route `r`: default"),
        "{ready}"
    );

    // Fixing it recovers.
    dir.write("a.toml", &format!("{HEAD}default = \"$0.09\""));
    wait_for(|| app.state.rules.status().generation == 3).await;
    assert_eq!(app.get("/p?x=4").await.amount(), 90_000);
    assert!(app.state.rules.status().last_error.is_none());
    watcher.abort();
}

async fn wait_for(cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached in 5 s");
}

#[test]
fn startup_refuses_broken_rules() {
    let dir = TempDir::new("broken");
    dir.write("a.toml", &format!("{HEAD}default = \"cheap\""));
    let e = RulesHandle::load(dir.path(), ExprEnv::new(), opts())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("a.toml: route `r`: default"), "{e}");
}

/// A real pricer service on a loopback port.
async fn pricer(answer: &'static str, delay_ms: u64) -> (String, tokio::task::JoinHandle<()>) {
    pricer_counting(answer, delay_ms, Default::default()).await
}

async fn pricer_counting(
    answer: &'static str,
    delay_ms: u64,
    calls: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> (String, tokio::task::JoinHandle<()>) {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/price",
        post(
            move |axum::Json(req): axum::Json<serde_json::Value>| async move {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                // Echo a field of the request to prove the summary arrived.
                assert_eq!(req["route"], "r");
                answer
            },
        ),
    );
    let (base, task) = crate::harness::serve(app).await;
    (format!("{base}/price"), task)
}

#[tokio::test]
async fn external_pricer_sets_the_price_and_falls_back_on_timeout_or_garbage() {
    for (answer, delay, want) in [
        (r#"{"price":"$0.33"}"#, 0, 330_000),
        (r#"{"amount":"9"}"#, 0, 20_000), // below the rule's min
        (r#"{"price":"$0.33"}"#, 3_000, 150_000), // too slow: fallback
        ("not json", 0, 150_000),
    ] {
        let (url, task) = pricer(answer, delay).await;
        let dir = TempDir::new("pricer");
        dir.write(
            "a.toml",
            &format!(
                "{HEAD}[[route.rule]]\nid = \"llm\"\nmin = \"$0.02\"\nexternal = {{ url = \"{url}\", timeout_ms = 1500, fallback = \"$0.15\" }}\n"
            ),
        );
        let app = TestApp::start(dir.path(), &[]).await;
        let reply = app
            .post_json("/p", r#"{"model":"big","max_tokens":100}"#)
            .await;
        assert_eq!(reply.status, 402);
        assert_eq!(
            reply.amount(),
            want,
            "pricer answer {answer} after {delay} ms"
        );
        task.abort();
    }
}

#[tokio::test]
async fn external_pricer_is_asked_once_per_quote() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (url, task) = pricer_counting(r#"{"price":"$0.40"}"#, 0, calls.clone()).await;
    let dir = TempDir::new("pricer-once");
    dir.write(
        "a.toml",
        &format!("{HEAD}[[route.rule]]\nid = \"llm\"\nexternal = {{ url = \"{url}\", fallback = \"$0.15\" }}\n"),
    );
    let app = TestApp::start(dir.path(), &[]).await;
    let first = app.post_json("/p", r#"{"model":"big"}"#).await;
    let again = app.post_json("/p", r#"{"model":"big"}"#).await;
    assert_eq!(first.amount(), 400_000);
    assert_eq!(again.quote_id(), first.quote_id());
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the open quote answered the repeat"
    );
    app.post_json("/p", r#"{"model":"small"}"#).await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    task.abort();
}
