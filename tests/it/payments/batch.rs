//! Batched local settlement on a real chain: payments ready together go out in one `aggregate3`
//! transaction of Multicall3 (the deployed bytecode, placed at its canonical address by
//! tests/interop/chain.mjs), each still credited once, and one payment that fails inside a batch
//! fails alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use serde_json::{Value, json};
use tariff::ledger::TransferKind;
use tariff::payment::record::Status;

use super::{
    Chain, Draft, GAS_KEY, PAY_TO, SIMPLE_PRICE, USDC, b64, get_with, ledger_of, payment_response,
    quote,
};
use crate::harness::{Reply, TempDir, TestApp, repo_rules};

const MULTICALL3: &str = "0xcA11bde05977b3631167028862bE2a173976CA11";

/// `keccak256("AuthorizationUsed(address,bytes32)")`.
const AUTHORIZATION_USED: &str =
    "0x98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5";

/// A gateway settling locally on `chain` with batches collected for `window_ms`.
async fn batching_app(chain: &Chain, window_ms: u64) -> (TestApp, TempDir) {
    let dir = TempDir::new("batch-config");
    dir.write(
        "tariff.toml",
        &format!(
            "[[networks]]\nnetwork = \"eip155:84532\"\nbatch_contract = \"{MULTICALL3}\"\n\
             batch_window_ms = {window_ms}\n"
        ),
    );
    let vars = vec![
        (
            "TARIFF_CONFIG",
            dir.path().join("tariff.toml").display().to_string(),
        ),
        ("TARIFF_PAY_TO", PAY_TO.into()),
        ("TARIFF_RPC_URL", chain.rpc()),
        ("TARIFF_GAS_KEY", GAS_KEY.into()),
        ("TARIFF_FINGERPRINT_KEY", super::FINGERPRINT_KEY.into()),
    ];
    (TestApp::start(&repo_rules(), &vars).await, dir)
}

/// Quotes `uri` and signs an honest payment for it: the `PAYMENT-SIGNATURE` value.
async fn signed(app: &TestApp, payer: &PrivateKeySigner, uri: &str) -> String {
    let (_, accepted) = quote(app, uri).await;
    b64(&Draft::honest(payer, &accepted).v2(payer))
}

/// A batching gateway on a fresh chain, and `n` funded payers each holding a signed payment
/// for its own request.
struct Rig {
    chain: Chain,
    app: Arc<TestApp>,
    _config: TempDir,
    /// payTo's balance before any payment.
    seller: u128,
    payers: Vec<PrivateKeySigner>,
    /// (uri, PAYMENT-SIGNATURE) per payer.
    paid: Vec<(String, String)>,
}

async fn rig(window_ms: u64, n: usize, tag: &str) -> Rig {
    let chain = Chain::start().await;
    let (app, config) = batching_app(&chain, window_ms).await;
    let seller = chain.balance(PAY_TO).await;
    let (mut payers, mut paid) = (Vec::new(), Vec::new());
    for i in 0..n {
        let payer = chain.payer(1_000_000).await;
        let uri = format!("/search?q={tag}+{i}");
        paid.push((uri.clone(), signed(&app, &payer, &uri).await));
        payers.push(payer);
    }
    Rig {
        chain,
        app: Arc::new(app),
        _config: config,
        seller,
        payers,
        paid,
    }
}

/// The sorted addresses of `payers[i]` for each `i`.
fn addresses(payers: &[PrivateKeySigner], which: &[usize]) -> Vec<String> {
    let mut out: Vec<String> = which
        .iter()
        .map(|&i| format!("{:#x}", payers[i].address()))
        .collect();
    out.sort();
    out
}

/// Sends every paid request at once; the replies in order.
async fn pay_all(app: &Arc<TestApp>, paid: Vec<(String, String)>) -> Vec<Reply> {
    let tasks: Vec<_> = paid
        .into_iter()
        .map(|(uri, header)| {
            let app = app.clone();
            tokio::spawn(
                async move { get_with(&app, &uri, &[("payment-signature", header)]).await },
            )
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

async fn receipt(chain: &Chain, tx: &str) -> Value {
    chain
        .node
        .rpc("eth_getTransactionReceipt", json!([tx]))
        .await
        .expect("receipt")
}

/// The payers (lowercase hex) whose `AuthorizationUsed` the token logged in `receipt`.
fn authorizers(receipt: &Value) -> Vec<String> {
    let mut out: Vec<String> = receipt["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["address"].as_str().unwrap().eq_ignore_ascii_case(USDC)
                && l["topics"][0] == json!(AUTHORIZATION_USED)
        })
        .map(|l| format!("0x{}", &l["topics"][1].as_str().unwrap()[26..]))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_ready_together_settle_in_one_transaction_and_are_each_credited_once() {
    let Rig {
        chain,
        app,
        seller,
        payers,
        paid,
        ..
    } = rig(1500, 6, "batch").await;
    let replies = pay_all(&app, paid).await;
    let mut txs = Vec::new();
    for (r, payer) in replies.iter().zip(&payers) {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let response = payment_response(r, "payment-response");
        assert_eq!(response["success"], json!(true));
        assert_eq!(response["payer"], json!(format!("{:#x}", payer.address())));
        txs.push(response["transaction"].as_str().unwrap().to_string());
        assert_eq!(
            ledger_of(&app, payer.address()).await,
            vec![
                (TransferKind::RequestDebit, 20_000),
                (TransferKind::PaymentCredit, 20_000)
            ],
            "credited once, charged once"
        );
    }
    let mut distinct = txs.clone();
    distinct.sort();
    distinct.dedup();
    // One transaction each without batching; the 1.5 s window gathers them (a second batch is
    // tolerated for a machine slow enough to verify a payment after the window closed).
    assert!(
        distinct.len() <= 2,
        "6 payments in {} transactions",
        distinct.len()
    );
    let mut logged = Vec::new();
    for tx in &distinct {
        let receipt = receipt(&chain, tx).await;
        assert_eq!(receipt["status"], json!("0x1"));
        if authorizers(&receipt).len() > 1 {
            assert!(
                receipt["to"]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case(MULTICALL3),
                "a batch goes through Multicall3: {receipt}"
            );
        }
        logged.extend(authorizers(&receipt));
    }
    logged.sort();
    assert_eq!(
        logged,
        addresses(&payers, &[0, 1, 2, 3, 4, 5]),
        "each payment's own authorization landed once"
    );
    assert_eq!(chain.balance(PAY_TO).await - seller, 6 * SIMPLE_PRICE);
    app.assert_ledger_clean().await;
    // Operators see the batch size on /metrics.
    let metrics = String::from_utf8(app.get("/metrics").await.body).unwrap();
    for (family, value) in [
        ("tariff_settlement_batch_transactions_total", distinct.len()),
        ("tariff_settlement_batched_payments_total", 6),
    ] {
        let line = format!("{family}{{network=\"eip155:84532\"}} {value}");
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
}

alloy::sol! {
    function transfer(address to, uint256 amount) returns (bool);
}

/// Moves all of `payer`'s tokens away with a priority fee that puts it first in the next block.
async fn drain_first(chain: &Chain, payer: &str, amount: u64) {
    let node = &chain.node;
    node.rpc("anvil_impersonateAccount", json!([payer]))
        .await
        .unwrap();
    node.rpc("anvil_setBalance", json!([payer, "0xde0b6b3a7640000"]))
        .await
        .unwrap();
    let data = transferCall {
        to: alloy::primitives::Address::repeat_byte(0x42),
        amount: alloy::primitives::U256::from(amount),
    }
    .abi_encode();
    node.rpc(
        "eth_sendTransaction",
        json!([{
            "from": payer,
            "to": USDC,
            "data": format!("0x{}", hex::encode(data)),
            "gas": "0x30000",
            "maxPriorityFeePerGas": "0x174876e800",
            "maxFeePerGas": "0x2540be4000",
        }]),
    )
    .await
    .unwrap();
}

async fn pending_txs(chain: &Chain) -> u64 {
    let status = chain.node.rpc("txpool_status", json!([])).await.unwrap();
    // anvil answers a hex quantity; accept a plain number too.
    status["pending"].as_str().map_or_else(
        || status["pending"].as_u64().unwrap_or(0),
        |h| u64::from_str_radix(h.trim_start_matches("0x"), 16).unwrap(),
    )
}

/// Of three payments in one batch, the middle payer's failed with `insufficient_funds` and was
/// not credited, the other two landed in one transaction and were each credited once; the
/// failed payment's response.
async fn only_the_middle_failed(
    chain: &Chain,
    app: &TestApp,
    replies: &[Reply],
    payers: &[PrivateKeySigner],
    seller: u128,
) -> Value {
    let failed = &replies[1];
    assert_eq!(
        failed.status,
        402,
        "{}",
        String::from_utf8_lossy(&failed.body)
    );
    let failure = payment_response(failed, "payment-response");
    assert_eq!(failure["errorReason"], json!("insufficient_funds"));
    assert!(
        ledger_of(app, payers[1].address()).await.is_empty(),
        "nothing credited"
    );
    let mut txs = Vec::new();
    for i in [0, 2] {
        let r = &replies[i];
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        txs.push(payment_response(r, "payment-response")["transaction"].clone());
        assert_eq!(
            ledger_of(app, payers[i].address()).await,
            vec![
                (TransferKind::RequestDebit, 20_000),
                (TransferKind::PaymentCredit, 20_000)
            ]
        );
    }
    assert_eq!(txs[0], txs[1], "the two that landed shared the batch");
    let receipt = receipt(chain, txs[0].as_str().unwrap()).await;
    assert_eq!(receipt["status"], json!("0x1"), "the batch itself ran");
    assert_eq!(authorizers(&receipt), addresses(payers, &[0, 2]));
    assert_eq!(chain.balance(PAY_TO).await - seller, 2 * SIMPLE_PRICE);
    app.assert_ledger_clean().await;
    failure
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_fails_inside_a_batch_fails_alone_and_the_others_are_credited() {
    let Rig {
        chain,
        app,
        seller,
        payers,
        paid,
        ..
    } = rig(1500, 3, "inside").await;
    // Blocks are mined by hand from here: the batch is broadcast, then the middle payer spends
    // everything in a transaction ordered before it, so its call fails inside the mined batch
    // (the pre-broadcast probe saw it succeed).
    chain
        .node
        .rpc("evm_setAutomine", json!([false]))
        .await
        .unwrap();
    let requests = {
        let app = app.clone();
        tokio::spawn(async move { pay_all(&app, paid).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while pending_txs(&chain).await == 0 {
        assert!(Instant::now() < deadline, "no settlement was broadcast");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = format!("{:#x}", payers[1].address());
    drain_first(&chain, &drained, 1_000_000).await;
    while !requests.is_finished() {
        chain.node.rpc("evm_mine", json!([])).await.unwrap();
        assert!(
            Instant::now() < deadline,
            "the paid requests did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    chain
        .node
        .rpc("evm_setAutomine", json!([true]))
        .await
        .unwrap();
    let replies = requests.await.unwrap();

    let failure = only_the_middle_failed(&chain, &app, &replies, &payers, seller).await;
    assert_eq!(failure["success"], json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_would_fail_is_taken_out_before_the_batch_is_sent() {
    let Rig {
        chain,
        app,
        seller,
        payers,
        paid,
        ..
    } = rig(2000, 3, "probe").await;
    let requests = {
        let app = app.clone();
        tokio::spawn(async move { pay_all(&app, paid).await })
    };
    // All three verified and claimed, waiting in the batch window: the middle payer spends
    // everything, so the probe before broadcast finds its call failing.
    let store = app.state.payments.as_ref().unwrap().store().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = store.recent(10).await.unwrap();
        if rows.len() == 3 {
            assert!(
                rows.iter().all(|r| r.status == Status::Claimed),
                "the window should still be open: {rows:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the payments were not claimed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drain_first(&chain, &format!("{:#x}", payers[1].address()), 1_000_000).await;
    let replies = requests.await.unwrap();

    let failure = only_the_middle_failed(&chain, &app, &replies, &payers, seller).await;
    assert_eq!(failure["transaction"], json!(""), "nothing was sent for it");
}
