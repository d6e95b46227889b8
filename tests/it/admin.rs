//! The operator's JSON API on a real PostgreSQL and a real chain: what each pricing rule earned,
//! from the per-minute aggregates, after quotes, a request paid from credits and one paid on
//! chain; and the admin token guarding it.

use serde_json::{Value, json};

use crate::credits::{ADMIN, grant, open};
use crate::harness::{Reply, TestApp, repo_rules};
use crate::payments::{Chain, Draft, b64, get_with, local_vars, quote};

async fn admin_get(app: &TestApp, uri: &str, token: Option<&str>) -> Reply {
    let headers: Vec<(&str, String)> = token
        .map(|t| vec![("authorization", format!("Bearer {t}"))])
        .unwrap_or_default();
    get_with(app, uri, &headers).await
}

fn rule<'a>(body: &'a Value, route: &str, rule: &str) -> &'a Value {
    body["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == route)
        .and_then(|r| {
            r["rules"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["rule"] == rule)
        })
        .unwrap_or_else(|| panic!("{route}/{rule} not in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revenue_per_rule_counts_quotes_credits_and_on_chain_payments() {
    let chain = Chain::start().await;
    let mut vars = local_vars(&chain);
    vars.push(("TARIFF_ADMIN_TOKEN", ADMIN.to_string()));
    vars.push(("TARIFF_DATABASE_URL", crate::db::fresh_postgres().await));
    let app = TestApp::start(&repo_rules(), &vars).await;

    // Three quotes of the $0.02 rule, one of them paid on chain; one of the $0.05 rule.
    let paid_uri = "/search?q=lookup+one";
    let (_, accepted) = quote(&app, paid_uri).await;
    quote(&app, "/search?q=lookup+two").await;
    quote(&app, "/search?q=lookup+two").await; // the same quote again: not counted twice
    quote(&app, "/search?q=lookup+three").await;
    quote(&app, "/search?q=tvl+of+uniswap").await;
    let payer = chain.payer(1_000_000).await;
    let payment = Draft::honest(&payer, &accepted).v2(&payer);
    let r = get_with(&app, paid_uri, &[("payment-signature", b64(&payment))]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // One paid from credits (its quote is a fourth of the $0.02 rule).
    let (account, key) = open(&app).await;
    assert_eq!(
        grant(&app, "g1", &account, 1_000_000, ADMIN).await.status,
        200
    );
    let r = get_with(
        &app,
        "/search?q=lookup+credits",
        &[("authorization", format!("Bearer {key}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    app.state
        .quote_stats
        .as_ref()
        .unwrap()
        .flush()
        .await
        .unwrap();

    let r = admin_get(&app, "/admin/rules?hours=1", Some(ADMIN)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    let simple = rule(&body, "search", "simple-lookup");
    assert_eq!(simple["quotes"], 4, "{body}");
    assert_eq!(simple["quoted_usd_micros"], 80_000, "{body}");
    assert_eq!(simple["paid_onchain"], 1, "{body}");
    assert_eq!(simple["paid_credits"], 1, "{body}");
    assert_eq!(simple["revenue_usd_micros"], 40_000, "{body}");
    assert_eq!(
        simple["conversion_bps"], 5_000,
        "2 paid of 4 quotes: {body}"
    );
    let aggregate = rule(&body, "search", "aggregate-metrics");
    assert_eq!(
        (
            aggregate["quotes"].as_i64(),
            aggregate["revenue_usd_micros"].as_i64()
        ),
        (Some(1), Some(0)),
        "{body}"
    );
    assert_eq!(rule(&body, "search", "compare-filings")["quotes"], 0);
    assert!(body["rules_generation"].as_u64().unwrap() >= 1);
    // The ledger agrees: the on-chain and the credits debit add up to the revenue.
    app.assert_ledger_clean().await;

    // The ledger: clean, every account with its balance, pageable.
    let r = admin_get(&app, "/admin/ledger?limit=1000", Some(ADMIN)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let ledger = r.json();
    assert_eq!(ledger["check"]["clean"], true, "{ledger}");
    let agent = ledger["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == account.as_str())
        .unwrap_or_else(|| panic!("{ledger}"));
    assert_eq!(agent["available"], 1_000_000 - 20_000, "{ledger}");
    let revenue = ledger["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "sys:revenue")
        .unwrap();
    assert_eq!(revenue["posted"], 40_000, "{ledger}");
    let first = admin_get(&app, "/admin/ledger?limit=1", Some(ADMIN))
        .await
        .json();
    let after = first["next_after"].as_str().unwrap().to_string();
    let second = admin_get(
        &app,
        &format!("/admin/ledger?limit=1&after={after}"),
        Some(ADMIN),
    )
    .await
    .json();
    assert_ne!(
        second["accounts"][0]["account"],
        first["accounts"][0]["account"]
    );

    // Payments: by status, and the recent ones without their signed authorizations.
    let r = admin_get(&app, "/admin/payments", Some(ADMIN)).await;
    assert_eq!(r.status, 200);
    let p = r.json();
    assert_eq!(p["counts"]["credited"], 1, "{p}");
    assert_eq!(p["recent"][0]["status"], "credited", "{p}");
    assert_eq!(p["recent"][0]["price_micros"], 20_000, "{p}");
    let by = &p["by_network_and_asset"];
    assert_eq!(by.as_array().map(Vec::len), Some(1), "{p}");
    assert_eq!(
        (
            by[0]["network"].as_str(),
            by[0]["asset"].as_str(),
            by[0]["status"].as_str(),
            by[0]["payments"].as_i64(),
            by[0]["price_micros"].as_i64()
        ),
        (
            p["recent"][0]["network"].as_str(),
            p["recent"][0]["asset"].as_str(),
            Some("credited"),
            Some(1),
            Some(20_000)
        ),
        "{p}"
    );
    assert!(!p.to_string().contains("signature"), "{p}");
    let req = axum::http::Request::post("/admin/payments/reconcile")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let r = Reply::read(app.send(req).await).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["examined"], 0, "nothing left open");

    // The token guards it; the window is bounded.
    for (token, status, code) in [
        (None, 401, "missing_admin_token"),
        (
            Some("not-the-admin-token-0123456789abcdef"),
            401,
            "invalid_admin_token",
        ),
    ] {
        let r = admin_get(&app, "/admin/rules", token).await;
        assert_eq!((r.status, r.error_code().as_str()), (status, code));
    }
    let r = admin_get(&app, "/admin/rules?hours=0", Some(ADMIN)).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_window"));
    let r = admin_get(&app, "/admin/rules?days=1", Some(ADMIN)).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_query"));
    for uri in ["/admin/ledger", "/admin/payments"] {
        assert_eq!(admin_get(&app, uri, None).await.status, 401, "{uri}");
        let r = admin_get(&app, &format!("{uri}?limit=0"), Some(ADMIN)).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_limit"),
            "{uri}"
        );
    }
}

async fn admin_send(app: &TestApp, method: &str, uri: &str, body: Option<Value>) -> Reply {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {ADMIN}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map_or(axum::body::Body::empty(), |b| {
        axum::body::Body::from(b.to_string())
    });
    Reply::read(app.send(req.body(body).unwrap()).await).await
}

/// Rule files and price experiments through the JSON API: read, a refused and an applied
/// save, a revert, and an experiment started, compared, stopped, then applied.
#[tokio::test]
async fn rule_files_and_experiments_over_the_json_api() {
    let dir = crate::harness::TempDir::new("admin-files");
    let file = dir.path().join("search.toml");
    std::fs::copy(repo_rules().join("search.toml"), &file).unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    let app = TestApp::start(
        dir.path(),
        &[
            ("TARIFF_DATABASE_URL", crate::db::fresh_postgres().await),
            ("TARIFF_ADMIN_TOKEN", ADMIN.to_string()),
        ],
    )
    .await;
    let cheaper = original.replace("$0.02", "$0.03");
    let uri = "/admin/rules/files/search.toml";
    let r = admin_send(&app, "GET", uri, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["text"], original.as_str());
    assert_eq!(r.json()["has_previous"], false);
    let r = admin_send(&app, "PUT", uri, Some(json!({"text": "[[route]]\nid = 1"}))).await;
    assert_eq!((r.status, r.error_code().as_str()), (422, "rules_invalid"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    let r = admin_send(&app, "PUT", uri, Some(json!({"text": cheaper}))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(app.get("/search?q=api+edit").await.amount(), 30_000);
    assert_eq!(
        admin_send(&app, "GET", uri, None).await.json()["has_previous"],
        true
    );
    let r = admin_send(&app, "POST", "/admin/rules/files/search.toml/revert", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.get("/search?q=api+revert").await.amount(), 20_000);
    let r = admin_send(&app, "GET", "/admin/rules/files/nope.toml", None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "unknown_rule_file")
    );
    let r = get_with(&app, uri, &[]).await;
    assert_eq!(r.status, 401);

    // An experiment: started, compared on live traffic, stopped; then started again and applied.
    let start = json!({"file": "search.toml", "text": cheaper});
    let r = admin_send(&app, "POST", "/admin/experiments", Some(start.clone())).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        app.get("/search?q=api+shadow").await.amount(),
        20_000,
        "live price"
    );
    let e = admin_send(&app, "GET", "/admin/experiments", None)
        .await
        .json();
    let row = &e["rules"][0];
    assert_eq!(
        (
            row["compared"]["requests"].as_u64(),
            row["compared"]["candidate_usd_micros"].as_u64()
        ),
        (Some(1), Some(30_000)),
        "{e}"
    );
    let r = admin_send(&app, "DELETE", "/admin/experiments", None).await;
    assert_eq!(r.json()["running"], false);
    let r = admin_send(&app, "POST", "/admin/experiments/apply", None).await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "no_experiment"));
    admin_send(&app, "POST", "/admin/experiments", Some(start)).await;
    let r = admin_send(&app, "POST", "/admin/experiments/apply", None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(app.get("/search?q=api+applied").await.amount(), 30_000);
    assert_eq!(
        admin_send(&app, "GET", "/admin/experiments", None)
            .await
            .json()["running"],
        false
    );
}

/// A backtest over the JSON API: the recorded requests re-priced under today's rules and a
/// candidate, per live rule, with nothing written; what is recorded is only what rules read;
/// and each refusal has its code.
#[tokio::test]
async fn a_backtest_reprices_the_recorded_requests() {
    let dir = crate::harness::TempDir::new("admin-backtest");
    let file = dir.path().join("search.toml");
    std::fs::copy(repo_rules().join("search.toml"), &file).unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    let config = dir.path().join("tariff.conf");
    std::fs::write(&config, "[backtest]\nrecord = true\nretention_days = 3\n").unwrap();
    let db = crate::db::fresh_postgres().await;
    let app = TestApp::start(
        dir.path(),
        &[
            ("TARIFF_DATABASE_URL", db.clone()),
            ("TARIFF_ADMIN_TOKEN", ADMIN.to_string()),
            ("TARIFF_CONFIG", config.display().to_string()),
        ],
    )
    .await;
    let secret = "Bearer sk_never_stored";
    for q in ["one", "two"] {
        let r = get_with(
            &app,
            &format!("/search?q=backtest+{q}"),
            &[("authorization", secret.to_string())],
        )
        .await;
        assert_eq!(r.status, 402);
    }
    let r = app
        .post_json("/search", r#"{"query":"x","documents":["a","b","c"]}"#)
        .await;
    assert_eq!(r.amount(), 120_000);

    let candidate = original.replace("$0.02", "$0.03");
    let run = |text: String, days: u64| {
        admin_send(
            &app,
            "POST",
            "/admin/experiments/backtest",
            Some(json!({"file": "search.toml", "text": text, "days": days})),
        )
    };
    let r = run(candidate.clone(), 1).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = r.json();
    assert_eq!(
        (b["inputs"].as_u64(), b["not_priced_now"].as_u64()),
        (Some(3), Some(0)),
        "{b}"
    );
    let row = |rule: &str| {
        b["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == rule)
            .unwrap_or_else(|| panic!("{rule} in {b}"))
            .clone()
    };
    let simple = row("simple-lookup");
    assert_eq!(simple["compared"]["requests"], 2, "{b}");
    assert_eq!(simple["compared"]["current_usd_micros"], 40_000, "{b}");
    assert_eq!(simple["compared"]["candidate_usd_micros"], 60_000, "{b}");
    let compare = row("compare-filings");
    assert_eq!(compare["compared"]["current_usd_micros"], 120_000, "{b}");
    assert_eq!(compare["compared"]["candidate_usd_micros"], 120_000, "{b}");
    // Nothing was written or loaded: the live price is unchanged.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    assert_eq!(app.get("/search?q=backtest+after").await.amount(), 20_000);

    // Only what rules may read was stored: no undeclared header.
    let stored = app
        .state
        .pricing_inputs
        .as_ref()
        .unwrap()
        .page(0, 0, 100)
        .await
        .unwrap();
    assert!(stored.len() >= 3);
    assert!(
        stored.iter().all(|r| !r.input.contains("sk_never_stored")),
        "{stored:?}"
    );

    // Refusals.
    let r = run(candidate.clone(), 0).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_days"));
    let r = run(candidate.clone(), 4).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_days"));
    let r = run(original.replace("price = \"$0.02\"", "price = 2 +"), 1).await;
    assert_eq!((r.status, r.error_code().as_str()), (422, "rules_invalid"));
    let r = admin_send(
        &app,
        "POST",
        "/admin/experiments/backtest",
        Some(json!({"file": "nope.toml", "text": "", "days": 1})),
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "unknown_rule_file")
    );
    let r = admin_send(
        &app,
        "POST",
        "/admin/experiments/backtest",
        Some(json!({"file": "search.toml", "days": 1})),
    )
    .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_body"));
    let unauthenticated = app
        .send(
            axum::http::Request::post("/admin/experiments/backtest")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    json!({"file": "search.toml", "text": candidate, "days": 1}).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(unauthenticated.status(), 401);

    // A server that does not record says so.
    let plain = TestApp::start(
        dir.path(),
        &[
            ("TARIFF_DATABASE_URL", db),
            ("TARIFF_ADMIN_TOKEN", ADMIN.to_string()),
        ],
    )
    .await;
    assert!(plain.state.pricing_inputs.is_none());
    let r = admin_send(
        &plain,
        "POST",
        "/admin/experiments/backtest",
        Some(json!({"file": "search.toml", "text": candidate, "days": 1})),
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "backtest_not_recording")
    );
}

/// The ledger's transfers, filtered by kind and account and paged, and its open holds: over
/// the JSON API and on the console's ledger page.
#[tokio::test]
async fn the_ledger_lists_transfers_by_kind_and_account_and_the_open_holds() {
    use tariff::ledger::{AccountId, NewHold, References, TransferId};
    let app = TestApp::start(
        &repo_rules(),
        &[
            ("TARIFF_DATABASE_URL", crate::db::fresh_postgres().await),
            ("TARIFF_ADMIN_TOKEN", ADMIN.to_string()),
        ],
    )
    .await;
    let (account, key) = open(&app).await;
    let (other, _) = open(&app).await;
    assert_eq!(
        grant(&app, "g-a", &account, 1_000_000, ADMIN).await.status,
        200
    );
    assert_eq!(grant(&app, "g-b", &other, 7_000, ADMIN).await.status, 200);
    let r = get_with(
        &app,
        "/search?q=ledger+list",
        &[("authorization", format!("Bearer {key}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let ledger = app.state.accounts.as_ref().unwrap().ledger();
    let hold_id = "hold-listed-1";
    ledger
        .hold(NewHold {
            id: TransferId::new(hold_id).unwrap(),
            debit: AccountId::new(account.as_str()).unwrap(),
            credit: AccountId::new("sys:revenue").unwrap(),
            amount: tariff::money::UsdMicros(5_000),
            expires_at: tariff::time::UnixMillis(u64::MAX / 4),
            refs: References::default(),
        })
        .await
        .unwrap();

    let list = |q: String| {
        let app = &app;
        async move { admin_get(app, &format!("/admin/ledger/transfers?{q}"), Some(ADMIN)).await }
    };
    let all = list(String::new()).await;
    assert_eq!(all.status, 200, "{}", String::from_utf8_lossy(&all.body));
    let all = all.json()["transfers"].as_array().unwrap().clone();
    let seqs: Vec<i64> = all.iter().map(|t| t["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    assert_eq!(all[0]["id"], hold_id);
    let kinds = |body: &Value| -> Vec<String> {
        body["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["kind"].as_str().unwrap().to_string())
            .collect()
    };
    let adjustments = list("kind=adjustment".into()).await.json();
    assert_eq!(
        kinds(&adjustments),
        ["adjustment", "adjustment"],
        "{adjustments}"
    );
    let mine = list(format!("account={account}")).await.json();
    assert!(
        mine["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["debit"] == account.as_str() || t["credit"] == account.as_str()),
        "{mine}"
    );
    assert_eq!(
        mine["transfers"].as_array().unwrap().len(),
        all.len() - 1,
        "all but the other grant"
    );
    let theirs = list(format!("account={other}&kind=adjustment"))
        .await
        .json();
    assert_eq!(theirs["transfers"][0]["amount"], 7_000, "{theirs}");
    assert_eq!(theirs["transfers"].as_array().unwrap().len(), 1, "{theirs}");
    // Paging: each page older than the last, none repeated.
    let first = list("limit=1".into()).await.json();
    let before = first["next_before"].as_i64().unwrap();
    let second = list(format!("limit=1&before={before}")).await.json();
    assert_eq!(
        second["transfers"][0]["seq"].as_i64(),
        Some(seqs[1]),
        "{second}"
    );
    for (q, code) in [
        ("kind=gift".to_string(), "invalid_kind"),
        (format!("account={}", "x".repeat(300)), "invalid_account"),
        ("before=yesterday".to_string(), "invalid_before"),
        ("limit=0".to_string(), "invalid_limit"),
        ("color=red".to_string(), "invalid_query"),
    ] {
        let r = list(q.clone()).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, code), "{q}");
    }

    let holds = admin_get(&app, "/admin/ledger/holds", Some(ADMIN))
        .await
        .json();
    let open_holds = holds["holds"].as_array().unwrap();
    assert_eq!(open_holds.len(), 1, "{holds}");
    assert_eq!(
        (
            open_holds[0]["id"].as_str(),
            open_holds[0]["amount"].as_u64()
        ),
        (Some(hold_id), Some(5_000))
    );
    ledger
        .void(
            TransferId::new("void-listed-1").unwrap(),
            &TransferId::new(hold_id).unwrap(),
        )
        .await
        .unwrap();
    let holds = admin_get(&app, "/admin/ledger/holds", Some(ADMIN))
        .await
        .json();
    assert_eq!(holds["holds"], json!([]), "a voided hold is not open");
    for uri in ["/admin/ledger/transfers", "/admin/ledger/holds"] {
        assert_eq!(admin_get(&app, uri, None).await.status, 401, "{uri}");
    }

    // The console's ledger page: the filter form keeps its choice, a bad one is said.
    let (session, _) = crate::console::log_in(&app).await;
    let page =
        crate::console::get(&app, "/console/ledger?kind=void&account=", Some(&session)).await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert_eq!(page.status, 200, "{html}");
    assert!(html.contains("<option selected>void</option>"), "{html}");
    assert!(html.contains("<td>void-listed-1</td>"), "{html}");
    assert!(!html.contains("<td>admin:g-a</td>"), "only voids: {html}");
    let page = crate::console::get(&app, "/console/ledger?kind=gift", Some(&session)).await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert_eq!(page.status, 400, "{html}");
    assert!(html.contains("id=filter-error"), "{html}");
    assert!(html.contains("<td>admin:g-a</td>"), "unfiltered: {html}");
}
