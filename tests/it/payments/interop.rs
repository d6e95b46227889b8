//! The official x402 clients, unmodified (`@x402/fetch` + `@x402/evm` for v2, `x402-fetch` for
//! v1, pinned in package-lock.json), pay a running Tariff over a real socket, in both settlement
//! modes. Facilitator mode runs the official facilitator (`@x402/core` + `@x402/evm`) on the
//! same anvil.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use alloy::signers::local::PrivateKeySigner;
use serde_json::{Value, json};
use tariff::ledger::TransferKind;

use super::{
    Chain, FACILITATOR_KEY, FINGERPRINT_KEY, PAY_TO, SIMPLE_PRICE, ledger_of, local_vars,
    node_script,
};
use crate::harness::{TestApp, repo_rules, serve};

/// The official facilitator as a child process; it exits when its stdin closes (on drop).
pub(super) struct OfficialFacilitator {
    child: Child,
    pub(super) url: String,
}

impl OfficialFacilitator {
    fn start(chain: &Chain) -> OfficialFacilitator {
        Self::start_on(&chain.rpc())
    }

    pub(super) fn start_on(rpc: &str) -> OfficialFacilitator {
        let mut child = Command::new("node")
            .args([
                "tests/interop/facilitator.mjs",
                "--rpc",
                rpc,
                "--key",
                FACILITATOR_KEY,
                "--port",
                "0",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("facilitator did not start: {line:?}"));
        OfficialFacilitator {
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }
}

impl Drop for OfficialFacilitator {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn key_hex(k: &PrivateKeySigner) -> String {
    format!("0x{}", hex::encode(k.to_bytes()))
}

/// One request through an official client; its printed `{status, headers, body}`.
async fn official_pay(client: &str, payer: &PrivateKeySigner, url: String) -> Value {
    let (client, key) = (client.to_string(), key_hex(payer));
    tokio::task::spawn_blocking(move || {
        node_script(&[
            "tests/interop/pay.mjs",
            "--client",
            &client,
            "--key",
            &key,
            "--url",
            &url,
        ])
    })
    .await
    .unwrap()
}

fn decode_header(out: &Value, name: &str) -> Value {
    let b64 = out["headers"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {out}"));
    use base64::Engine;
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

/// Both clients pay one request each; money and ledger must agree exactly.
async fn both_clients_pay(chain: &Chain, app: TestApp) {
    let (base, _server) = serve(tariff::http::app(app.state.clone())).await;
    for (client, header, network) in [
        ("v2", "payment-response", "eip155:84532"),
        ("v1", "x-payment-response", "base-sepolia"),
    ] {
        let payer = chain.payer(1_000_000).await;
        let payer_hex = format!("{:#x}", payer.address());
        let seller_before = chain.balance(PAY_TO).await;
        let out = official_pay(client, &payer, format!("{base}/search?q=interop+{client}")).await;
        assert_eq!(out["status"], json!(200), "{client}: {out}");
        let receipt = decode_header(&out, header);
        assert_eq!(receipt["success"], json!(true), "{client}: {receipt}");
        assert_eq!(receipt["network"], json!(network), "{client}: {receipt}");
        assert_eq!(
            receipt["payer"].as_str().map(str::to_lowercase),
            Some(payer_hex.clone())
        );
        let tx = receipt["transaction"].as_str().unwrap();
        let mined = chain
            .node
            .rpc("eth_getTransactionReceipt", json!([tx]))
            .await
            .unwrap();
        assert_eq!(
            mined["status"],
            json!("0x1"),
            "{client}: {tx} is a mined transfer"
        );
        assert_eq!(
            chain.balance(PAY_TO).await - seller_before,
            SIMPLE_PRICE,
            "{client}: the seller got exactly the quoted amount"
        );
        assert_eq!(chain.balance(&payer_hex).await, 1_000_000 - SIMPLE_PRICE);
        assert_eq!(
            ledger_of(&app, payer.address()).await,
            vec![
                (TransferKind::RequestDebit, 20_000),
                (TransferKind::PaymentCredit, 20_000)
            ],
            "{client}: exactly one credit (and the request's debit)"
        );
        let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
        assert_eq!(
            body["query"],
            json!(format!("interop {client}")),
            "the upstream answered"
        );
    }
    app.assert_ledger_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_clients_pay_with_local_settlement() {
    let chain = Chain::start().await;
    let app = TestApp::start(&repo_rules(), &local_vars(&chain)).await;
    both_clients_pay(&chain, app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_clients_pay_through_the_official_facilitator() {
    pay_through_the_official_facilitator(&[]).await;
}

/// `extension_schemas = false`: the official clients and facilitator take a 402 whose
/// extensions come without their schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_clients_pay_without_extension_schemas_through_the_official_facilitator() {
    let (_dir, lean_config) = crate::harness::config_file("extension_schemas = false\n");
    pay_through_the_official_facilitator(&[lean_config]).await;
}

async fn pay_through_the_official_facilitator(extra_vars: &[(&str, String)]) {
    let chain = Chain::start().await;
    let facilitator = OfficialFacilitator::start(&chain);
    let mut vars = vec![
        ("TARIFF_NETWORK", "eip155:84532".to_string()),
        ("TARIFF_PAY_TO", PAY_TO.to_string()),
        ("TARIFF_SETTLEMENT", "facilitator".to_string()),
        ("TARIFF_FACILITATOR_URL", facilitator.url.clone()),
        ("TARIFF_RPC_URL", chain.rpc()),
        ("TARIFF_FINGERPRINT_KEY", FINGERPRINT_KEY.to_string()),
    ];
    // Our facilitator client reads the official facilitator's /supported.
    let client = tariff::payment::facilitator::Facilitator::new(
        &facilitator.url,
        &Default::default(),
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let supported = client.supported().await.unwrap();
    for (version, network) in [(2, "eip155:84532"), (1, "base-sepolia")] {
        assert!(
            supported
                .kinds
                .iter()
                .any(|k| k.x402_version == version && k.scheme == "exact" && k.network == network),
            "{supported:?}"
        );
    }
    vars.extend_from_slice(extra_vars);
    let app = TestApp::start(&repo_rules(), &vars).await;
    both_clients_pay(&chain, app).await;
}
