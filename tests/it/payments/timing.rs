//! When settlement happens relative to the upstream, and failing closed: a settle-after route
//! holds the answer until the money moved and charges nothing when the upstream fails; a
//! settle-before route refunds the price as credits when the upstream fails; an unreachable
//! chain or facilitator is a 503 that moves nothing.

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;
use std::collections::HashMap;
use tariff::ledger::TransferKind;
use tariff::payment::record::Status;

use super::{
    Chain, Draft, FINGERPRINT_KEY, PAY_TO, SIMPLE_PRICE, b64, get_with, ledger_of, local_vars,
    payment_response, quote,
};
use crate::harness::{TempDir, TestApp, serve};
use crate::support::free_port;

const RULES: &str = r#"
[[route]]
id = "after"
methods = ["GET"]
path = "/after"
settle = "after"
[[route.rule]]
id = "flat"
price = "$0.02"

[[route]]
id = "before"
methods = ["GET"]
path = "/before"
[[route.rule]]
id = "flat"
price = "$0.02"
"#;

/// A stand-in upstream: 500 when `q` says so, else 200.
async fn upstream() -> String {
    let answer = |Query(q): Query<HashMap<String, String>>| async move {
        if q.get("q").is_some_and(|q| q.contains("fail")) {
            (StatusCode::INTERNAL_SERVER_ERROR, "upstream broke")
        } else {
            (StatusCode::OK, "fresh data")
        }
    };
    let router = Router::new()
        .route("/after", get(answer))
        .route("/before", get(answer));
    serve(router).await.0
}

async fn pay(
    app: &TestApp,
    payer: &alloy::signers::local::PrivateKeySigner,
    uri: &str,
) -> crate::harness::Reply {
    let (_, accepted) = quote(app, uri).await;
    let header = b64(&Draft::honest(payer, &accepted).v2(payer));
    get_with(app, uri, &[("payment-signature", header)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_after_holds_the_answer_and_settle_before_refunds_a_failed_upstream() {
    let chain = Chain::start().await;
    let rules = TempDir::new("timing-rules");
    rules.write("routes.toml", RULES);
    let mut vars = local_vars(&chain);
    vars.push(("TARIFF_UPSTREAM", upstream().await));
    let app = TestApp::start(rules.path(), &vars).await;
    let payments = app.state.payments.clone().unwrap();

    // Settle-after, upstream fine: served once the money moved.
    let payer = chain.payer(1_000_000).await;
    let seller = chain.balance(PAY_TO).await;
    let r = pay(&app, &payer, "/after?q=ok").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"fresh data");
    assert_eq!(
        payment_response(&r, "payment-response")["success"],
        json!(true)
    );
    assert_eq!(chain.balance(PAY_TO).await - seller, SIMPLE_PRICE);
    assert_eq!(
        ledger_of(&app, payer.address()).await,
        vec![
            (TransferKind::RequestDebit, 20_000),
            (TransferKind::PaymentCredit, 20_000)
        ]
    );

    // Settle-after, upstream fails: its error passes through, nothing is settled or owed.
    let payer = chain.payer(1_000_000).await;
    let seller = chain.balance(PAY_TO).await;
    let r = pay(&app, &payer, "/after?q=fail").await;
    assert_eq!(r.status, 500);
    assert!(r.header("payment-response").is_none());
    assert_eq!(chain.balance(PAY_TO).await, seller, "no money moved");
    assert!(ledger_of(&app, payer.address()).await.is_empty());
    let rows = payments.store().recent(10).await.unwrap();
    let row = rows
        .iter()
        .find(|p| p.payer == format!("{:#x}", payer.address()))
        .unwrap();
    assert_eq!(
        (row.status, row.error.as_deref()),
        (Status::Failed, Some("upstream_failed"))
    );

    // Settle-before, upstream fails: the money moved, so the price comes back as credits.
    let payer = chain.payer(1_000_000).await;
    let seller = chain.balance(PAY_TO).await;
    let r = pay(&app, &payer, "/before?q=fail").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.header("tariff-refund").as_deref(), Some("credits"));
    assert_eq!(chain.balance(PAY_TO).await - seller, SIMPLE_PRICE);
    assert_eq!(
        ledger_of(&app, payer.address()).await,
        vec![
            (TransferKind::Refund, 20_000),
            (TransferKind::RequestDebit, 20_000),
            (TransferKind::PaymentCredit, 20_000)
        ]
    );
    let ledger = app.state.accounts.as_ref().unwrap().ledger();
    let account = tariff::ledger::AccountId::new(tariff::payment::payer_account(&format!(
        "{:#x}",
        payer.address()
    )))
    .unwrap();
    assert_eq!(ledger.balance(&account).await.unwrap().available(), 20_000);
    assert!(ledger.check().await.unwrap().is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_chain_facilitator_or_missing_settlement_fails_closed() {
    let chain = Chain::start().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let base = |extra: Vec<(&'static str, String)>| {
        let mut v = vec![
            ("TARIFF_NETWORK", "eip155:84532".to_string()),
            ("TARIFF_PAY_TO", PAY_TO.to_string()),
            ("TARIFF_FINGERPRINT_KEY", FINGERPRINT_KEY.to_string()),
        ];
        v.extend(extra);
        v
    };
    let setups = [
        (
            base(vec![
                ("TARIFF_RPC_URL", dead.clone()),
                ("TARIFF_GAS_KEY", super::GAS_KEY.to_string()),
            ]),
            "chain_unavailable",
        ),
        (
            base(vec![
                ("TARIFF_SETTLEMENT", "facilitator".to_string()),
                ("TARIFF_FACILITATOR_URL", dead.clone()),
            ]),
            "facilitator_unavailable",
        ),
        (base(vec![]), "settlement_unconfigured"),
    ];
    let payer = chain.payer(1_000_000).await;
    for (vars, reason) in setups {
        let app = TestApp::start(&crate::harness::repo_rules(), &vars).await;
        let r = pay(&app, &payer, "/search?q=closed").await;
        assert_eq!((r.status, r.error_code()), (503, reason.to_string()));
        assert!(ledger_of(&app, payer.address()).await.is_empty());
    }
    assert_eq!(
        chain.balance(&format!("{:#x}", payer.address())).await,
        1_000_000
    );
}

alloy::sol! {
    function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter,
        uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s);
}

/// Submits a signed v2 payment's authorization straight to the token, as a front-runner
/// watching the mempool (or the payer itself) could; returns the transaction hash.
async fn submit_directly(rpc: &str, payment: &serde_json::Value) -> String {
    use alloy::primitives::{Address, B256, U256};
    use alloy::sol_types::SolCall;
    let a = &payment["payload"]["authorization"];
    let sig = hex::decode(&payment["payload"]["signature"].as_str().unwrap()[2..]).unwrap();
    let u = |k: &str| a[k].as_str().unwrap().parse::<U256>().unwrap();
    let data = transferWithAuthorizationCall {
        from: a["from"].as_str().unwrap().parse::<Address>().unwrap(),
        to: a["to"].as_str().unwrap().parse::<Address>().unwrap(),
        value: u("value"),
        validAfter: u("validAfter"),
        validBefore: u("validBefore"),
        nonce: a["nonce"].as_str().unwrap().parse::<B256>().unwrap(),
        v: sig[64],
        r: B256::from_slice(&sig[..32]),
        s: B256::from_slice(&sig[32..64]),
    }
    .abi_encode();
    let http = reqwest::Client::new();
    let rpc_call = |method: &str, params: serde_json::Value| {
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        http.post(rpc).json(&body).send()
    };
    let accounts: serde_json::Value = rpc_call("eth_accounts", json!([]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let from = accounts["result"][5].clone();
    let sent: serde_json::Value = rpc_call(
        "eth_sendTransaction",
        json!([{ "from": from, "to": super::USDC, "data": format!("0x{}", hex::encode(data)) }]),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    sent["result"]
        .as_str()
        .unwrap_or_else(|| panic!("{sent}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_run_settlement_still_counts_when_the_money_reached_pay_to() {
    use std::sync::{Arc, Mutex};
    let chain = Chain::start().await;
    // A settle-after route whose upstream front-runs: while Tariff waits for the answer (after
    // verifying and claiming), the same authorization lands on chain from someone else.
    let stash: Arc<Mutex<Option<serde_json::Value>>> = Arc::default();
    let front_run_tx: Arc<Mutex<Option<String>>> = Arc::default();
    let (rpc, stash2, tx2) = (chain.rpc(), stash.clone(), front_run_tx.clone());
    let router = Router::new().route(
        "/after",
        get(move || {
            let (rpc, stash, tx) = (rpc.clone(), stash2.clone(), tx2.clone());
            async move {
                let payment = stash.lock().unwrap().take();
                if let Some(p) = payment {
                    let hash = submit_directly(&rpc, &p).await;
                    *tx.lock().unwrap() = Some(hash);
                }
                (StatusCode::OK, "fresh data")
            }
        }),
    );
    let rules = TempDir::new("frontrun-rules");
    rules.write("routes.toml", RULES);
    let mut vars = local_vars(&chain);
    vars.push(("TARIFF_UPSTREAM", serve(router).await.0));
    let app = TestApp::start(rules.path(), &vars).await;

    let payer = chain.payer(1_000_000).await;
    let seller = chain.balance(PAY_TO).await;
    let (_, accepted) = quote(&app, "/after?q=race").await;
    let payment = Draft::honest(&payer, &accepted).v2(&payer);
    *stash.lock().unwrap() = Some(payment.clone());
    let r = get_with(
        &app,
        "/after?q=race",
        &[("payment-signature", b64(&payment))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let receipt = payment_response(&r, "payment-response");
    let theirs = front_run_tx
        .lock()
        .unwrap()
        .clone()
        .expect("the upstream front-ran");
    assert_eq!(receipt["success"], json!(true));
    assert_eq!(
        receipt["transaction"],
        json!(theirs),
        "the front-runner's transaction is the settlement"
    );
    assert_eq!(
        chain.balance(PAY_TO).await - seller,
        SIMPLE_PRICE,
        "paid once"
    );
    assert_eq!(
        ledger_of(&app, payer.address()).await,
        vec![
            (TransferKind::RequestDebit, 20_000),
            (TransferKind::PaymentCredit, 20_000)
        ]
    );
}

alloy::sol! {
    function transfer(address to, uint256 amount) returns (bool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_that_fails_answers_402_with_the_failure_and_serves_nothing() {
    use alloy::sol_types::SolCall;
    use std::sync::{Arc, Mutex};
    let chain = Chain::start().await;
    // A settle-after route whose upstream, while Tariff waits for it, lets the payer spend its
    // whole balance elsewhere: the verified payment can no longer settle.
    let drain: Arc<Mutex<Option<String>>> = Arc::default();
    let (rpc, drain2) = (chain.rpc(), drain.clone());
    let router = Router::new().route(
        "/after",
        get(move || {
            let (rpc, drain) = (rpc.clone(), drain2.clone());
            async move {
                let payer = drain.lock().unwrap().take();
                if let Some(payer) = payer {
                    let http = reqwest::Client::new();
                    let call = |method: &'static str, params: serde_json::Value| {
                        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
                        http.post(&rpc).json(&body).send()
                    };
                    call("anvil_impersonateAccount", json!([payer])).await.unwrap();
                    call("anvil_setBalance", json!([payer, "0xde0b6b3a7640000"])).await.unwrap();
                    let data = transferCall {
                        to: alloy::primitives::Address::repeat_byte(0x42),
                        amount: alloy::primitives::U256::from(1_000_000u64),
                    }
                    .abi_encode();
                    let sent: serde_json::Value = call(
                        "eth_sendTransaction",
                        json!([{ "from": payer, "to": super::USDC, "data": format!("0x{}", hex::encode(data)) }]),
                    )
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                    assert!(sent["result"].is_string(), "{sent}");
                }
                (StatusCode::OK, "must not be served")
            }
        }),
    );
    let rules = TempDir::new("drain-rules");
    rules.write("routes.toml", RULES);
    let mut vars = local_vars(&chain);
    vars.push(("TARIFF_UPSTREAM", serve(router).await.0));
    let app = TestApp::start(rules.path(), &vars).await;

    let payer = chain.payer(1_000_000).await;
    let payer_hex = format!("{:#x}", payer.address());
    let seller = chain.balance(PAY_TO).await;
    *drain.lock().unwrap() = Some(payer_hex.clone());
    let r = pay(&app, &payer, "/after?q=drained").await;
    assert_eq!(r.status, 402, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("tariff-reason").as_deref(),
        Some("insufficient_funds")
    );
    let failure = payment_response(&r, "payment-response");
    assert_eq!(failure["success"], json!(false));
    assert_eq!(failure["errorReason"], json!("insufficient_funds"));
    assert_eq!(failure["transaction"], json!(""));
    assert_eq!(failure["payer"], json!(payer_hex));
    assert!(!String::from_utf8_lossy(&r.body).contains("must not be served"));
    assert_eq!(
        chain.balance(PAY_TO).await,
        seller,
        "nothing reached the seller"
    );
    assert!(
        ledger_of(&app, payer.address()).await.is_empty(),
        "nothing credited"
    );
    let rows = app
        .state
        .payments
        .as_ref()
        .unwrap()
        .store()
        .recent(5)
        .await
        .unwrap();
    assert_eq!(rows[0].status, Status::Failed);
    assert_eq!(
        app.state
            .metrics
            .total("tariff_payments_total", Some(("outcome", "failed"))),
        1
    );
}
