//! The `tariff` binary as a user runs it.

use std::process::Command;

use crate::harness::{TempDir, repo_rules};

fn tariff(args: &[&str]) -> (i32, String, String) {
    tariff_env(args, &[])
}

/// Runs the binary with `env` set (and the config-file variables cleared).
fn tariff_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tariff"))
        .args(args)
        .env_remove("TARIFF_CONFIG")
        .env_remove("TARIFF_RULES")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn rules_check_lists_routes_and_rules() {
    let dir = repo_rules();
    let (code, out, err) = tariff(&["rules", "check", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("search  GET,POST /search"), "{out}");
    assert!(out.contains("compare-filings"), "{out}");
    assert!(out.contains("ok: 2 route(s) in 1 file(s)"), "{out}");
}

#[test]
fn rules_check_names_the_broken_file_and_rule() {
    let dir = TempDir::new("cli");
    dir.write(
        "bad.toml",
        "[[route]]\nid = \"r\"\nmethods = [\"GET\"]\npath = \"/p\"\n[[route.rule]]\nid = \"oops\"\nprice = \"size(bdy.items)\"\n",
    );
    let (code, _, err) = tariff(&["rules", "check", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.toml: route `r`, rule `oops`: price:"),
        "{err}"
    );
    assert!(err.contains("bdy"), "{err}");
}

#[test]
fn quote_previews_price_and_rule() {
    let rules = repo_rules();
    let (code, out, err) = tariff(&[
        "quote",
        "--rules",
        rules.to_str().unwrap(),
        "--method",
        "POST",
        "--path",
        "/search",
        "--body",
        r#"{"query":"compare","documents":["a","b","c","d","e"]}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rule compare-filings  price $0.160000 (160000 micro-USD)"),
        "{out}"
    );
    assert!(out.contains("eip155:84532  160000 base units"), "{out}");
    let (code, out, _) = tariff(&[
        "quote",
        "--rules",
        rules.to_str().unwrap(),
        "--path",
        "/search?q=bitcoin+price",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("rule simple-lookup  price $0.020000"), "{out}");
}

#[test]
fn serve_refuses_bad_config_and_bad_rules_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_tariff"))
        .arg("serve")
        .env("TARIFF_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen: `not-an-address`"));

    let dir = TempDir::new("cli-serve");
    dir.write("bad.toml", "[[route]]\nid = \"r\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_tariff"))
        .arg("serve")
        .env("TARIFF_RULES", dir.path())
        .env("TARIFF_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pricing rules are invalid") && err.contains("bad.toml"),
        "{err}"
    );
}

#[test]
fn help_explains_every_subcommand() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["rules", "check", "--help"],
        &["quote", "--help"],
    ] {
        let (code, out, _) = tariff(args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Usage: tariff"), "{args:?}: {out}");
    }
    let (_, out, _) = tariff(&["--help"]);
    assert!(out.contains("TARIFF_REDIS_URL"), "{out}");
}

#[tokio::test]
async fn ledger_grant_and_check_from_the_command_line() {
    let url = crate::db::fresh_postgres().await;
    let app =
        crate::harness::TestApp::start(&repo_rules(), &[("TARIFF_DATABASE_URL", url.clone())])
            .await;
    let reply = crate::harness::Reply::read(
        app.send(
            axum::http::Request::post("/accounts")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await,
    )
    .await;
    let account = reply.json()["account"].as_str().unwrap().to_string();
    let run = |args: &[&str]| tariff_env(args, &[("TARIFF_DATABASE_URL", url.as_str())]);
    let grant = [
        "ledger",
        "grant",
        "--account",
        &account,
        "--amount",
        "2500000",
        "--reason",
        "welcome",
        "--id",
        "w1",
    ];
    let (code, out, err) = run(&grant);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("now has 2500000 micro-USD available"), "{out}");
    let (_, out, _) = run(&grant); // the same id again: no second grant
    assert!(out.contains("now has 2500000"), "{out}");
    let (code, _, err) = run(&[
        "ledger",
        "grant",
        "--account",
        &account,
        "--amount",
        "-1",
        "--reason",
        " ",
        "--id",
        "w2",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("reason"), "{err}");
    let (code, _, err) = run(&[
        "ledger",
        "grant",
        "--account",
        "agent:nobody",
        "--amount",
        "5",
        "--reason",
        "x",
        "--id",
        "w3",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown account"), "{err}");
    let (code, out, _) = run(&["ledger", "check"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("posted sum 0, pending sum 0") && out.contains("ok: the ledger balances"),
        "{out}"
    );
}

/// `tariff serve` with `TARIFF_LOG_FORMAT=json`: every line is a JSON object, and the lines
/// written while answering a request carry the id sent back in `X-Request-Id`.
#[tokio::test]
async fn json_logs_carry_the_request_id() {
    let dir = TempDir::new("json-logs");
    let port = crate::support::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tariff"))
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("TARIFF_CONFIG")
        .env("TARIFF_RULES", repo_rules())
        .env("TARIFF_LISTEN", format!("127.0.0.1:{port}"))
        .env("TARIFF_LOG", "info,tariff=debug")
        .env("TARIFF_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/search?q=json+logs");
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let resp = loop {
        match client.get(&url).send().await {
            Ok(r) => break r,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("tariff serve did not answer: {e}"),
        }
    };
    assert_eq!(resp.status(), 402);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    // Give the log line its moment, then stop the server and read everything it wrote.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let answered = lines
        .iter()
        .find(|l| l["fields"]["message"] == "answered" && l["span"]["request_id"] == id)
        .unwrap_or_else(|| panic!("no line for request {id}: {text}"));
    assert_eq!(answered["fields"]["status"], 402, "{answered}");
    assert_eq!(answered["fields"]["handler"], "gateway", "{answered}");

    // Anything but text or json is refused.
    let (code, _, err) = tariff_env(&["rules", "check"], &[("TARIFF_LOG_FORMAT", "xml")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("TARIFF_LOG_FORMAT"), "{err}");
}
