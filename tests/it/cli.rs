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
