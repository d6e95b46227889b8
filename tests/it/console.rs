//! The operator's console over the real router and PostgreSQL: the login (admin token → a
//! signed, expiring, HttpOnly + SameSite=Strict session cookie, with a double-submit token on
//! the login form and a session token on every other form), the overview's figures, the JSON
//! API reachable with the session for reads only (writes need the form token), logout, expiry,
//! and no secret ever rendered.

use axum::body::Body;
use axum::http::Request;
use serde_json::json;
use tariff::time::{Clock, UnixMillis};

use crate::credits::{ADMIN, open};
use crate::harness::{Reply, TestApp, repo_rules};

async fn app(clock: Clock) -> (TestApp, String) {
    let db = crate::db::fresh_postgres().await;
    let app = TestApp::start_with(
        &repo_rules(),
        &[
            ("TARIFF_DATABASE_URL", db.clone()),
            ("TARIFF_ADMIN_TOKEN", ADMIN.to_string()),
        ],
        clock,
    )
    .await;
    (app, db)
}

pub(crate) async fn get(app: &TestApp, uri: &str, cookie: Option<&str>) -> Reply {
    let mut req = Request::get(uri);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    Reply::read(app.send(req.body(Body::empty()).unwrap()).await).await
}

async fn post_form(app: &TestApp, uri: &str, cookie: &str, fields: &[(&str, &str)]) -> Reply {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let req = Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie)
        .body(Body::from(body))
        .unwrap();
    Reply::read(app.send(req).await).await
}

/// `name=value` of a `Set-Cookie` header, and the whole header.
fn set_cookie(r: &Reply, name: &str) -> (String, String) {
    let header = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", r.headers));
    (header.split(';').next().unwrap().to_string(), header)
}

/// The value of the hidden `csrf` field of a page.
fn csrf_field(html: &str) -> String {
    let at = html.find("name=csrf value=\"").expect("a csrf field") + 17;
    html[at..at + html[at..].find('"').unwrap()].to_string()
}

/// Logs in; the session cookie (`tariff_console=…`) and the page's form token.
pub(crate) async fn log_in(app: &TestApp) -> (String, String) {
    let form = get(app, "/console/login", None).await;
    let (login_cookie, _) = set_cookie(&form, "tariff_console_login");
    let nonce = csrf_field(&String::from_utf8_lossy(&form.body));
    let r = post_form(
        app,
        "/console/login",
        &login_cookie,
        &[("token", ADMIN), ("csrf", &nonce)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let (session, _) = set_cookie(&r, "tariff_console");
    let page = get(app, "/console", Some(&session)).await;
    assert_eq!(page.status, 200);
    let csrf = csrf_field(&String::from_utf8_lossy(&page.body));
    (session, csrf)
}

#[tokio::test]
async fn an_operator_logs_in_sees_the_figures_and_nothing_secret() {
    let (app, db_url) = app(Clock::System).await;
    // Some traffic: two quotes and a request paid from credits.
    app.get("/search?q=console+one").await;
    app.get("/search?q=console+two").await;
    let (account, key) = open(&app).await;
    crate::credits::grant(&app, "c1", &account, 1_000_000, ADMIN).await;
    let r = crate::sign_in::send(
        &app,
        "GET",
        "/search?q=console+paid",
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    app.state
        .quote_stats
        .as_ref()
        .unwrap()
        .flush()
        .await
        .unwrap();

    // Not logged in: pages send to the login form, the JSON API wants the token.
    let r = get(&app, "/console", None).await;
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (303, Some("/console/login"))
    );
    assert_eq!(get(&app, "/admin/rules", None).await.status, 401);

    // The login form: an anti-forgery cookie, a strict content policy.
    let form = get(&app, "/console/login", None).await;
    assert_eq!(form.status, 200);
    let (login_cookie, header) = set_cookie(&form, "tariff_console_login");
    assert!(
        header.contains("HttpOnly") && header.contains("SameSite=Strict"),
        "{header}"
    );
    assert!(
        form.header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    let nonce = csrf_field(&String::from_utf8_lossy(&form.body));
    // A login posted without the form's cookie, or with the wrong token, gets no session.
    let r = post_form(
        &app,
        "/console/login",
        "x=1",
        &[("token", ADMIN), ("csrf", &nonce)],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(
        r.headers
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("tariff_console="))
    );
    let r = post_form(
        &app,
        "/console/login",
        &login_cookie,
        &[
            ("token", "not-the-token-0123456789abcdef01234"),
            ("csrf", &nonce),
        ],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(String::from_utf8_lossy(&r.body).contains("not the admin token"));

    // The right token: a session cookie, HttpOnly, SameSite=Strict, expiring.
    let r = post_form(
        &app,
        "/console/login",
        &login_cookie,
        &[("token", ADMIN), ("csrf", &nonce)],
    )
    .await;
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (303, Some("/console"))
    );
    let (session, header) = set_cookie(&r, "tariff_console");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(header.contains(attr), "{attr}: {header}");
    }

    // The overview shows the figures of the aggregates.
    let page = get(&app, "/console", Some(&session)).await;
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(html.contains("<b id=quotes>3</b>"), "{html}");
    assert!(html.contains("<b id=paid>1</b>"), "{html}");
    assert!(html.contains("<b id=revenue>$0.020000</b>"), "{html}");
    assert!(html.contains("<svg role=img"), "{html}");
    assert!(html.contains("aria-label=\"Revenue per hour\""), "{html}");
    assert!(
        html.contains("<b id=open>0</b>") && html.contains("<b id=failures>0</b>"),
        "{html}"
    );
    let latency = html.split("<b id=latency>").nth(1).unwrap();
    assert!(
        latency.starts_with("≤ ") && latency.contains(" ms / ≤ "),
        "{latency}"
    );
    assert!(html.contains("<td>simple-lookup</td>"), "{html}");
    // Nothing secret is rendered.
    for secret in [
        ADMIN,
        key.as_str(),
        db_url.as_str(),
        crate::payments::FINGERPRINT_KEY,
    ] {
        assert!(!html.contains(secret), "the page shows a secret");
    }
    let csrf = csrf_field(&html);

    // The session reads the JSON API; a write needs its form token too.
    assert_eq!(get(&app, "/admin/rules", Some(&session)).await.status, 200);
    let grant = |csrf: Option<String>| {
        let mut req = Request::post("/admin/credits")
            .header("cookie", session.as_str())
            .header("content-type", "application/json");
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        req.body(Body::from(format!(
            r#"{{"id":"console-1","account":"{account}","amount":5,"reason":"console"}}"#
        )))
        .unwrap()
    };
    let r = Reply::read(app.send(grant(None)).await).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "csrf_token_invalid")
    );
    let r = Reply::read(app.send(grant(Some("0".repeat(64)))).await).await;
    assert_eq!(r.status, 403);
    let r = Reply::read(app.send(grant(Some(csrf.clone()))).await).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // The ledger page: clean, the account listed; a grant from the form, once per id.
    let page = get(&app, "/console/ledger", Some(&session)).await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(html.contains("Ledger check clean"), "{html}");
    assert!(html.contains(&format!("<td>{account}</td>")), "{html}");
    let grant_form = |id: &str, amount: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("id", id.to_string()),
            ("account", account.clone()),
            ("amount", amount.to_string()),
            ("reason", "console grant".to_string()),
        ]
    };
    let fields = grant_form("console-2", "250");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = post_form(&app, "/console/ledger/grant", &session, &fields).await;
    let html = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 200, "{html}");
    assert!(html.contains("is now 980255 micro-dollars"), "{html}");
    let fields = grant_form("console-3", "ten");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = post_form(&app, "/console/ledger/grant", &session, &fields).await;
    assert_eq!(r.status, 422);
    // The payments page (no on-chain payment here) and a reconcile pass.
    let page = get(&app, "/console/payments", Some(&session)).await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("id=payments"));
    let r = post_form(
        &app,
        "/console/payments/reconcile",
        &session,
        &[("csrf", &csrf)],
    )
    .await;
    assert!(String::from_utf8_lossy(&r.body).contains("Reconciled: 0 examined"));

    // A tampered cookie is no session.
    let last = if session.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &session[..session.len() - 1]);
    assert_eq!(get(&app, "/console", Some(&forged)).await.status, 303);

    // Logging out needs the form token, and ends the cookie.
    let r = post_form(&app, "/console/logout", &session, &[("csrf", "nope")]).await;
    assert_eq!(r.status, 403);
    let r = post_form(&app, "/console/logout", &session, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    let (cleared, header) = set_cookie(&r, "tariff_console");
    assert_eq!(cleared, "tariff_console=");
    assert!(header.contains("Max-Age=0"), "{header}");
}

#[tokio::test]
async fn a_session_expires_and_the_console_is_off_without_an_admin_token() {
    let start = UnixMillis(1_800_000_000_000);
    let clock = Clock::manual(start);
    let (app, _) = app(clock.clone()).await;
    let (session, _) = log_in(&app).await;
    clock.advance_ms(8 * 3600 * 1000 - 1);
    assert_eq!(get(&app, "/console", Some(&session)).await.status, 200);
    clock.advance_ms(1);
    let r = get(&app, "/console", Some(&session)).await;
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (303, Some("/console/login"))
    );
    assert_eq!(get(&app, "/admin/rules", Some(&session)).await.status, 401);

    let off = TestApp::start(&repo_rules(), &[]).await;
    for uri in ["/console", "/console/login"] {
        let r = get(&off, uri, None).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (404, "admin_disabled"),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn a_rule_is_previewed_edited_checked_reloaded_and_reverted() {
    let dir = crate::harness::TempDir::new("console-rules");
    let file = dir.path().join("search.toml");
    std::fs::copy(repo_rules().join("search.toml"), &file).unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    let app = TestApp::start_with(
        dir.path(),
        &[
            ("TARIFF_DATABASE_URL", crate::db::fresh_postgres().await),
            ("TARIFF_ADMIN_TOKEN", ADMIN.to_string()),
        ],
        Clock::System,
    )
    .await;
    let (session, csrf) = log_in(&app).await;
    let price_of = |r: Reply| r.amount();

    // The rules page lists the rule and the file; the preview prices a request.
    let page = get(&app, "/console/rules", Some(&session)).await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(
        html.contains("<td>simple-lookup</td>") && html.contains("search.toml"),
        "{html}"
    );
    let r = post_form(
        &app,
        "/console/rules/preview",
        &session,
        &[
            ("csrf", &csrf),
            ("method", "GET"),
            ("path", "/search?q=bitcoin+price"),
            ("body", ""),
            ("headers", ""),
        ],
    )
    .await;
    let html = String::from_utf8_lossy(&r.body).to_string();
    assert!(
        html.contains("route search, rule simple-lookup: $0.020000"),
        "{html}"
    );
    // The same through the JSON API.
    let req = Request::post("/admin/preview")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"path":"/search","method":"POST","body":{"query":"q","documents":["a","b","c"]}}"#,
        ))
        .unwrap();
    let r = Reply::read(app.send(req).await).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let p = r.json();
    assert_eq!(
        (
            p["outcome"].as_str(),
            p["rule"].as_str(),
            p["price"].as_u64()
        ),
        (Some("priced"), Some("compare-filings"), Some(120_000)),
        "{p}"
    );

    // The editor shows the file.
    let r = get(&app, "/console/rules/edit?file=search.toml", Some(&session)).await;
    assert!(String::from_utf8_lossy(&r.body).contains("price = &quot;$0.02&quot;"));
    let save = |text: String, csrf: String| {
        let app = &app;
        let session = session.clone();
        async move {
            post_form(
                app,
                "/console/rules/save",
                &session,
                &[("csrf", &csrf), ("file", "search.toml"), ("text", &text)],
            )
            .await
        }
    };
    // A broken edit is refused with the loader's message and changes nothing.
    let r = save(
        original.replace("price = \"$0.02\"", "price = \"$0.02\" +"),
        csrf.clone(),
    )
    .await;
    assert_eq!(r.status, 422);
    let html = String::from_utf8_lossy(&r.body).to_string();
    assert!(
        html.contains("id=save-error") && html.contains("search.toml"),
        "{html}"
    );
    // So is an edit whose own samples no longer hold.
    let r = save(
        original.replacen("price = \"$0.02\"", "price = \"$0.03\"", 1),
        csrf.clone(),
    )
    .await;
    assert_eq!(r.status, 422, "the sample still expects $0.02");
    // And a form without the session's token.
    let r = save(original.replace("$0.02", "$0.03"), "0".repeat(64)).await;
    assert_eq!(r.status, 403);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    assert_eq!(price_of(app.get("/search?q=before+edit").await), 20_000);

    // A valid edit is written, loaded at once, and prices the next request.
    let r = save(original.replace("$0.02", "$0.03"), csrf.clone()).await;
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (303, Some("/console/rules?saved=search.toml"))
    );
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("price = \"$0.03\"")
    );
    assert_eq!(price_of(app.get("/search?q=after+edit").await), 30_000);
    let html = String::from_utf8_lossy(
        &get(&app, "/console/rules?saved=search.toml", Some(&session))
            .await
            .body,
    )
    .to_string();
    assert!(
        html.contains("id=notice") && html.contains("Revert to previous"),
        "{html}"
    );

    // One click back.
    let r = post_form(
        &app,
        "/console/rules/revert",
        &session,
        &[("csrf", &csrf), ("file", "search.toml")],
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    assert_eq!(price_of(app.get("/search?q=after+revert").await), 20_000);

    // Only the directory's own files.
    for name in ["../search.toml", ".search.toml.previous", "other.toml"] {
        let r = post_form(
            &app,
            "/console/rules/save",
            &session,
            &[("csrf", &csrf), ("file", name), ("text", "x")],
        )
        .await;
        assert_eq!(r.status, 404, "{name}");
    }
    assert_eq!(
        get(
            &app,
            "/console/rules/edit?file=../tariff.toml",
            Some(&session)
        )
        .await
        .status,
        404
    );
}

/// The console in a real browser (Debian's chromium, headless, through puppeteer-core), over a
/// seeded run (quotes, a request paid from credits, one paid on chain, a USDC top-up): log in,
/// read the overview's figures, price a request with the preview form, have a broken rule edit
/// refused with its message and a valid one applied, backtest a candidate price over the recorded
/// requests, run it as a shadow and apply it, and open the ledger and payments pages.
/// Screenshots of every page are kept in `target/console-screenshots/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let dir = crate::harness::TempDir::new("console-browser");
    std::fs::copy(
        repo_rules().join("search.toml"),
        dir.path().join("search.toml"),
    )
    .unwrap();
    let config = crate::harness::TempDir::new("console-browser-config");
    let config_file = config.path().join("tariff.toml");
    // Backtests recorded; USDC top-ups on the local chain (USDC is taken 1:1, no pool read).
    std::fs::write(
        &config_file,
        "[backtest]\nrecord = true\n\n[[topup]]\nnetwork = \"eip155:84532\"\n",
    )
    .unwrap();
    let chain = crate::payments::Chain::start().await;
    let mut vars = crate::payments::local_vars(&chain);
    vars.extend([
        ("TARIFF_DATABASE_URL", crate::db::fresh_postgres().await),
        ("TARIFF_ADMIN_TOKEN", ADMIN.to_string()),
        ("TARIFF_CONFIG", config_file.display().to_string()),
    ]);
    let app = TestApp::start_with(dir.path(), &vars, Clock::System).await;
    // Seeded traffic: three quotes, one of them paid from credits and one on chain, and a
    // $1.00 top-up paid in USDC through x402.
    for q in ["one", "two", "three"] {
        app.get(&format!("/search?q=browser+{q}")).await;
    }
    let (account, key) = open(&app).await;
    crate::credits::grant(&app, "b1", &account, 1_000_000, ADMIN).await;
    let bearer = format!("Bearer {key}");
    let r = crate::sign_in::send(
        &app,
        "GET",
        "/search?q=browser+one",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 200);
    let payer = chain.payer(10_000_000).await;
    let (_, accepted) = crate::payments::quote(&app, "/search?q=browser+two").await;
    let payment = crate::payments::Draft::honest(&payer, &accepted).v2(&payer);
    let r = crate::payments::get_with(
        &app,
        "/search?q=browser+two",
        &[("payment-signature", crate::payments::b64(&payment))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let top_up = |payment: Option<String>| {
        let mut req = Request::post("/top-up")
            .header("authorization", &bearer)
            .header("content-type", "application/json");
        if let Some(p) = payment {
            req = req.header("payment-signature", p);
        }
        req.body(Body::from(r#"{"credits":"$1.00"}"#)).unwrap()
    };
    let r = Reply::read(app.send(top_up(None)).await).await;
    assert_eq!(r.status, 402, "{}", String::from_utf8_lossy(&r.body));
    let accepted = r.payment_required()["accepts"][0].clone();
    let payment = crate::payments::Draft::honest(&payer, &accepted).v2(&payer);
    let r = Reply::read(app.send(top_up(Some(crate::payments::b64(&payment)))).await).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    app.state
        .quote_stats
        .as_ref()
        .unwrap()
        .flush()
        .await
        .unwrap();

    let (base, _server) = crate::harness::serve(tariff::http::app(app.state.clone())).await;
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let shots_arg = shots.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        crate::payments::node_script(&[
            "tests/interop/console.mjs",
            "--url",
            &base,
            "--token",
            ADMIN,
            "--shots",
            &shots_arg,
        ])
    })
    .await
    .unwrap();
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["loginUrl"], "/console/login", "{out}");
    assert_eq!(out["afterLogin"], "/console", "{out}");
    // The paid requests reused quotes "one" and "two": three quotes, two paid, $0.04 earned (the
    // top-up is credits bought, not revenue).
    assert_eq!(out["overview"]["quotes"], "3", "{out}");
    assert_eq!(out["overview"]["paid"], "2", "{out}");
    assert_eq!(out["overview"]["revenue"], "$0.040000", "{out}");
    assert_eq!(out["svg"], true, "{out}");
    assert_eq!(
        out["preview"], "route search, rule simple-lookup: $0.020000",
        "{out}"
    );
    assert!(
        out["saveError"].as_str().unwrap().contains("search.toml"),
        "{out}"
    );
    assert!(
        out["saved"].as_str().unwrap().contains("Saved search.toml"),
        "{out}"
    );
    assert!(
        out["ledgerCheck"]
            .as_str()
            .unwrap()
            .starts_with("Ledger check clean"),
        "{out}"
    );
    assert_eq!(out["paymentsTable"], true, "{out}");
    // The payments page: the paid request and the top-up, their totals, the top-up credited.
    let statuses: Vec<&str> = out["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[5].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["credited", "credited"], "{out}");
    assert_eq!(
        out["totals"],
        json!([[
            "eip155:84532",
            crate::payments::USDC.to_lowercase(),
            "credited",
            "2",
            "$1.020000"
        ]]),
        "{out}"
    );
    assert_eq!(out["topups"][0][0], account.as_str(), "{out}");
    assert_eq!(out["topups"][0][4], "$1.000000", "{out}");
    assert_eq!(out["topups"][0][5], "x402", "{out}");
    // The edit made in the browser prices the next request.
    assert_eq!(out["priceAfterSave"], "30000", "{out}");
    // The backtest re-priced the seven recorded requests (three quotes, the credits retry, the
    // on-chain quote and its paid retry, the one after the save) at today's $0.03 and the
    // candidate's $0.05.
    assert_eq!(out["backtest"]["inputs"], "7", "{out}");
    assert_eq!(out["backtest"]["now"], "$0.030000", "{out}");
    assert_eq!(out["backtest"]["candidate"], "$0.050000", "{out}");
    // The shadow never charged its price, and compared it on the two live requests.
    assert_eq!(out["shadowPrices"], json!(["30000", "30000"]), "{out}");
    assert_eq!(out["shadow"]["requests"], "2", "{out}");
    assert_eq!(out["shadow"]["candidate"], "$0.050000", "{out}");
    assert!(
        out["applied"].as_str().unwrap().contains("search.toml"),
        "{out}"
    );
    assert_eq!(out["priceAfterApply"], "50000", "{out}");
    assert_eq!(
        app.get("/search?q=after+the+browser").await.amount(),
        50_000
    );
    for page in [
        "login",
        "overview",
        "rules-preview",
        "rules-edit-refused",
        "rules-saved",
        "experiments-backtest",
        "experiments-shadow",
        "ledger",
        "payments",
    ] {
        let png = shots.join(format!("{page}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert_eq!(&bytes[1..4], b"PNG", "{page}");
    }
}

/// A price experiment: a candidate rule file prices live traffic as a shadow (never charged),
/// the page compares current and candidate revenue at the observed conversion, and applying it
/// makes it the live price.
#[tokio::test]
async fn a_shadow_price_is_compared_on_live_traffic_then_applied() {
    let dir = crate::harness::TempDir::new("console-shadow");
    let file = dir.path().join("search.toml");
    std::fs::copy(repo_rules().join("search.toml"), &file).unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    let app = TestApp::start_with(
        dir.path(),
        &[
            ("TARIFF_DATABASE_URL", crate::db::fresh_postgres().await),
            ("TARIFF_ADMIN_TOKEN", ADMIN.to_string()),
        ],
        Clock::System,
    )
    .await;
    let (session, csrf) = log_in(&app).await;
    let start = |text: &str| {
        let fields = [
            ("csrf", csrf.clone()),
            ("file", "search.toml".to_string()),
            ("text", text.to_string()),
        ];
        let app = &app;
        let session = session.clone();
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(app, "/console/experiments/start", &session, &fields).await
        }
    };
    // A candidate that does not compile is refused with the loader's message.
    let r = start(&original.replace("price = \"$0.02\"", "price = 2 +")).await;
    assert_eq!(r.status, 422);
    assert!(String::from_utf8_lossy(&r.body).contains("id=experiment-error"));
    assert!(app.state.rules.shadow().is_none());
    // The candidate: the simple lookup at $0.03.
    let r = start(&original.replace("$0.02", "$0.03")).await;
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (303, Some("/console/experiments"))
    );

    // Live traffic is quoted and charged at the live price only.
    for q in ["one", "two", "three"] {
        assert_eq!(
            app.get(&format!("/search?q=shadow+{q}")).await.amount(),
            20_000
        );
    }
    let (account, key) = open(&app).await;
    crate::credits::grant(&app, "s1", &account, 1_000_000, ADMIN).await;
    let r = crate::sign_in::send(
        &app,
        "GET",
        "/search?q=shadow+one",
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    let ledger = app.state.accounts.as_ref().unwrap().ledger();
    let available = ledger
        .balance(&tariff::ledger::AccountId::new(&account).unwrap())
        .await
        .unwrap()
        .available();
    assert_eq!(
        available,
        1_000_000 - 20_000,
        "charged the live price, not the candidate's"
    );
    app.state
        .quote_stats
        .as_ref()
        .unwrap()
        .flush()
        .await
        .unwrap();

    // The comparison: 4 requests priced by both; $0.02 earned now, $0.03 at this conversion.
    let req = Request::get("/admin/experiments")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let e = Reply::read(app.send(req).await).await.json();
    assert_eq!(e["running"], true, "{e}");
    let row = e["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "simple-lookup")
        .unwrap_or_else(|| panic!("{e}"));
    assert_eq!(row["compared"]["requests"], 4, "{e}");
    assert_eq!(row["compared"]["current_usd_micros"], 80_000, "{e}");
    assert_eq!(row["compared"]["candidate_usd_micros"], 120_000, "{e}");
    assert_eq!(row["observed_usd_micros"], 20_000, "{e}");
    assert_eq!(row["projected_usd_micros"], 30_000, "{e}");
    let page = get(&app, "/console/experiments", Some(&session)).await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(
        html.contains("<td class=projected>$0.030000</td>"),
        "{html}"
    );
    assert!(
        html.contains("<td class=candidate>$0.030000</td>"),
        "{html}"
    );

    // Applied: the candidate is the live price, and the experiment is over.
    let r = post_form(
        &app,
        "/console/experiments/apply",
        &session,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    assert!(app.state.rules.shadow().is_none());
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("price = \"$0.03\"")
    );
    assert_eq!(
        app.get("/search?q=after+the+experiment").await.amount(),
        30_000
    );
    let r = post_form(
        &app,
        "/console/experiments/apply",
        &session,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status, 409, "nothing left to apply");
}
