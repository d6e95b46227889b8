//! The `payment-identifier` extension: a buyer that lost the answer to a paid request retries
//! with the same payment id and the same payment and gets the stored answer, paying once. On
//! anvil with TestUSDC; the official v2 client names its payments through the extension's
//! public API.

use axum::http::Request;
use serde_json::{Value, json};
use tariff::ledger::TransferKind;
use tariff::payment::idempotency::{PaymentIds, StoredAnswer, Taken};
use tariff::time::UnixMillis;

use super::{Chain, Draft, PAY_TO, SIMPLE_PRICE, b64, ledger_of, local_vars, node_script, quote};
use crate::db::backends;
use crate::harness::{Reply, TempDir, TestApp, repo_rules};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_ids_follow_one_contract_on_every_backend() {
    for backend in backends().await {
        let name = backend.db.backend_name();
        let ids = PaymentIds::new(backend.db.clone());
        let (t, exp) = (UnixMillis(1_000), UnixMillis(5_000));
        assert_eq!(
            ids.take("r:a", "fp1", t, exp).await.unwrap(),
            Taken::Fresh,
            "{name}"
        );
        assert_eq!(
            ids.take("r:a", "fp1", t, exp).await.unwrap(),
            Taken::InProgress,
            "{name}"
        );
        assert_eq!(
            ids.take("r:a", "fp2", t, exp).await.unwrap(),
            Taken::Conflict,
            "{name}"
        );
        let answer = StoredAnswer {
            status: 200,
            headers: vec![("payment-response".into(), "eyJ4Ijoie30=".into())],
            body: b"{\"ok\":true}\x00\xff".to_vec(),
        };
        assert!(ids.store("r:a", &answer).await.unwrap(), "{name}");
        assert!(
            !ids.store("r:a", &answer).await.unwrap(),
            "{name}: stored once"
        );
        assert_eq!(
            ids.take("r:a", "fp1", t, exp).await.unwrap(),
            Taken::Replay(answer.clone()),
            "{name}"
        );
        assert_eq!(
            ids.take("r:a", "fp2", t, exp).await.unwrap(),
            Taken::Conflict,
            "{name}"
        );
        // A released id (nothing was paid) is free again; a done one is not released.
        assert_eq!(
            ids.take("r:b", "fp1", t, exp).await.unwrap(),
            Taken::Fresh,
            "{name}"
        );
        ids.release("r:b").await.unwrap();
        assert_eq!(
            ids.take("r:b", "fp9", t, exp).await.unwrap(),
            Taken::Fresh,
            "{name}"
        );
        ids.release("r:a").await.unwrap();
        assert_eq!(
            ids.take("r:a", "fp1", t, exp).await.unwrap(),
            Taken::Replay(answer),
            "{name}"
        );
        // Expired: the next request takes it over.
        assert_eq!(
            ids.take("r:a", "fp2", exp, UnixMillis(9_000))
                .await
                .unwrap(),
            Taken::Fresh,
            "{name}"
        );
        // Concurrent first uses of one id: exactly one takes it.
        let mut tasks = vec![];
        for _ in 0..8 {
            let ids = ids.clone();
            tasks.push(tokio::spawn(async move {
                ids.take("r:race", "fp", t, exp).await.unwrap() == Taken::Fresh
            }));
        }
        let mut won = 0;
        for task in tasks {
            won += usize::from(task.await.unwrap());
        }
        assert_eq!(won, 1, "{name}");
    }
}

/// The demo rules with `/search` offering the extension (`policy`: its inline-table fields).
fn with_policy(policy: &str) -> String {
    let text = std::fs::read_to_string(repo_rules().join("search.toml")).unwrap();
    let anchor = "max = \"$1.00\"\n";
    assert_eq!(text.matches(anchor).count(), 1, "the search route's cap");
    text.replace(
        anchor,
        &format!("{anchor}payment_identifier = {{ {policy} }}\n"),
    )
}

/// The demo rules with `/search` offering (or requiring) the extension.
fn rules(dir: &TempDir, required: bool) -> std::path::PathBuf {
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("search.toml"),
        with_policy(&format!("required = {required}")),
    )
    .unwrap();
    rules
}

/// A v2 payment for `accepted` carrying `id` (as the official client echoes the declaration).
fn with_id(payment: &Value, id: Option<&str>) -> String {
    let mut p = payment.clone();
    let mut info = json!({"required": true});
    if let Some(id) = id {
        info["id"] = json!(id);
    }
    p["extensions"] = json!({"payment-identifier": {"info": info, "schema": {}}});
    b64(&p)
}

async fn get(app: &TestApp, uri: &str, payment: &str) -> Reply {
    let req = Request::get(uri)
        .header("payment-signature", payment)
        .body(axum::body::Body::empty())
        .unwrap();
    Reply::read(app.send(req).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_id_gets_the_first_answer_and_pays_once() {
    let chain = Chain::start().await;
    let dir = TempDir::new("payment-id");
    let app = TestApp::start(&rules(&dir, true), &local_vars(&chain)).await;
    let uri = "/search?q=idempotent+retry";
    let (r, accepted) = quote(&app, uri).await;
    assert_eq!(
        r.payment_required()["extensions"]["payment-identifier"]["info"],
        json!({"required": true}),
        "the 402 declares it"
    );
    assert!(
        r.payment_required()["extensions"]["bazaar"].is_object(),
        "next to bazaar"
    );
    let payer = chain.payer(1_000_000).await;
    let seller_before = chain.balance(PAY_TO).await;
    let payment = Draft::honest(&payer, &accepted).v2(&payer);

    // Required and missing, or malformed: 400, nothing moves.
    let r = get(&app, uri, &with_id(&payment, None)).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "payment_identifier_required")
    );
    let r = get(&app, uri, &with_id(&payment, Some("short"))).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "invalid_payment_identifier")
    );
    assert_eq!(chain.balance(PAY_TO).await, seller_before);

    // Concurrent first sends of one id and payment: one settles; the others are told it is in
    // progress or get its answer.
    let id = "pay_0c3d4645da4040dda55e99b53873e143";
    let header = with_id(&payment, Some(id));
    let mut tasks = vec![];
    for _ in 0..6 {
        let (state, header) = (app.state.clone(), header.clone());
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let req = Request::get(uri)
                .header("payment-signature", header)
                .body(axum::body::Body::empty())
                .unwrap();
            Reply::read(tariff::http::app(state).oneshot(req).await.unwrap()).await
        }));
    }
    let mut served = vec![];
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => served.push(r),
            409 => assert_eq!(r.error_code(), "payment_in_progress"),
            other => panic!("{other}: {}", String::from_utf8_lossy(&r.body)),
        }
    }
    assert!(!served.is_empty());
    assert_eq!(
        chain.balance(PAY_TO).await - seller_before,
        SIMPLE_PRICE,
        "paid once"
    );

    // The answer is lost; the retry gets it back, byte for byte, and pays nothing.
    let first = &served[0];
    let retry = get(&app, uri, &header).await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.body, first.body);
    assert_eq!(
        retry.header("payment-response"),
        first.header("payment-response")
    );
    assert_eq!(
        retry.header("tariff-replay").as_deref(),
        Some("payment-identifier")
    );
    assert_eq!(chain.balance(PAY_TO).await - seller_before, SIMPLE_PRICE);

    // The same id with another payment: 409.
    let other = Draft::honest(&payer, &accepted).v2(&payer);
    let r = get(&app, uri, &with_id(&other, Some(id))).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "payment_identifier_conflict")
    );
    assert_eq!(
        ledger_of(&app, payer.address()).await,
        vec![
            (TransferKind::RequestDebit, 20_000),
            (TransferKind::PaymentCredit, 20_000)
        ]
    );
    app.assert_ledger_clean().await;
}

/// The official v2 client names its payment (`--payment-id auto`, through the extension's
/// `appendPaymentIdentifierToExtensions`), loses nothing, and its exact request is replayed
/// twice: the same answer each time, one settlement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_retries_with_its_payment_id_and_pays_once() {
    let chain = Chain::start().await;
    let dir = TempDir::new("payment-id-interop");
    let app = TestApp::start(&rules(&dir, false), &local_vars(&chain)).await;
    let (base, _server) = crate::harness::serve(tariff::http::app(app.state.clone())).await;
    let payer = chain.payer(1_000_000).await;
    let key = format!("0x{}", hex::encode(payer.to_bytes()));
    let seller_before = chain.balance(PAY_TO).await;
    let url = format!("{base}/search?q=official+retry");
    let out = tokio::task::spawn_blocking(move || {
        node_script(&[
            "tests/interop/pay.mjs",
            "--client",
            "v2",
            "--key",
            &key,
            "--url",
            &url,
            "--payment-id",
            "auto",
            "--replay",
            "2",
        ])
    })
    .await
    .unwrap();
    assert_eq!(out["status"], json!(200), "{out}");
    assert!(
        out["paymentId"]
            .as_str()
            .is_some_and(|id| id.starts_with("pay_")),
        "{out}"
    );
    let replays = out["replays"].as_array().unwrap();
    assert_eq!(replays.len(), 2);
    for r in replays {
        assert_eq!(r["status"], json!(200), "{r}");
        assert_eq!(r["body"], out["body"]);
        assert_eq!(
            r["headers"]["payment-response"],
            out["headers"]["payment-response"]
        );
        assert_eq!(r["headers"]["tariff-replay"], json!("payment-identifier"));
    }
    assert_eq!(
        chain.balance(PAY_TO).await - seller_before,
        SIMPLE_PRICE,
        "paid once"
    );
    assert_eq!(ledger_of(&app, payer.address()).await.len(), 2);
    app.assert_ledger_clean().await;
}

#[test]
fn a_route_whose_answers_are_too_large_to_keep_cannot_offer_it() {
    let dir = TempDir::new("payment-id-load");
    dir.write("search.toml", &with_policy("max_answer_bytes = 1000000"));
    let opts = tariff::pricing::LoadOptions {
        max_price: tariff::money::UsdMicros(10_000_000),
        max_stored_answer_bytes: 65_536,
        extension_schemas: true,
    };
    let env = tariff::pricing::expr::ExprEnv::new();
    let err = tariff::pricing::rules::load_dir(dir.path(), &env, &opts).unwrap_err();
    assert!(err.to_string().contains("payment_identifier"), "{err}");
    dir.write("search.toml", &with_policy("max_answer_bytes = 65536"));
    let set = tariff::pricing::rules::load_dir(dir.path(), &env, &opts).unwrap();
    assert_eq!(
        set.routes[0]
            .payment_identifier
            .map(|p| (p.required, p.max_answer_bytes)),
        Some((false, 65_536))
    );
}

/// Two instances sharing Redis and PostgreSQL: one id is served once across both, and a retry
/// that lands on the other instance gets the first instance's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_ids_are_shared_by_instances() {
    let chain = Chain::start().await;
    let dir = TempDir::new("payment-id-instances");
    let rules = rules(&dir, true);
    let mut vars = local_vars(&chain);
    vars.push(("TARIFF_REDIS_URL", crate::support::redis_url()));
    vars.push(("TARIFF_DATABASE_URL", crate::db::fresh_postgres().await));
    let a = TestApp::start(&rules, &vars).await;
    let b = TestApp::start(&rules, &vars).await;
    let uri = "/search?q=two+instances+one+id";
    let (_, accepted) = quote(&a, uri).await;
    let payer = chain.payer(1_000_000).await;
    let seller_before = chain.balance(PAY_TO).await;
    let header = with_id(
        &Draft::honest(&payer, &accepted).v2(&payer),
        Some("pay_shared_by_two_instances_0001"),
    );
    let (ra, rb) = tokio::join!(get(&a, uri, &header), get(&b, uri, &header));
    let statuses = [ra.status, rb.status];
    assert!(statuses.contains(&200), "{statuses:?}");
    for r in [&ra, &rb] {
        assert!(
            r.status == 200 || (r.status == 409 && r.error_code() == "payment_in_progress"),
            "{}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    let first = if ra.status == 200 { &ra } else { &rb };
    // Whichever instance served it, the other one replays it.
    for app in [&a, &b] {
        let retry = get(app, uri, &header).await;
        assert_eq!(retry.status, 200);
        assert_eq!(retry.body, first.body);
        assert_eq!(
            retry.header("payment-response"),
            first.header("payment-response")
        );
    }
    assert_eq!(
        chain.balance(PAY_TO).await - seller_before,
        SIMPLE_PRICE,
        "paid once"
    );
    assert_eq!(ledger_of(&a, payer.address()).await.len(), 2);
}
