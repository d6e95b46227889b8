//! The operator's JSON API on a real PostgreSQL and a real chain: what each pricing rule earned,
//! from the per-minute aggregates, after quotes, a request paid from credits and one paid on
//! chain; and the admin token guarding it.

use serde_json::Value;

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
