//! Paid requests end to end on a real anvil chain (id 84532) with our TestUSDC placed at the
//! Base Sepolia USDC address: hostile payments, the official clients, the facilitator mode,
//! and crash recovery.

mod batch;
mod crash;
mod hostile;
mod interop;
mod payment_id;
mod permit2;
mod rpc_fault;
mod store;
mod timing;
mod upto;
mod wallets;

use std::process::Command;

use alloy::primitives::{Address, B256, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{SolCall, SolStruct};
use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use serde_json::{Value, json};
use tariff::ledger::{AccountId, TransferKind};
use tariff::payment::scheme::Terms;
use tariff::payment::scheme::exact_eip3009::TransferWithAuthorization;

use crate::harness::{Reply, TestApp, repo_rules};
use crate::support::AnvilNode;

pub const CHAIN_ID: u64 = 84532;
pub const USDC: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
/// anvil dev account 1: the seller's payee.
pub const PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
/// anvil dev account 2: Tariff's gas key in local mode.
pub const GAS_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
/// anvil dev account 3: the official facilitator's key.
pub const FACILITATOR_KEY: &str =
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";
pub const FINGERPRINT_KEY: &str =
    "7f3a9c2e5b1d4f6a8c0e2b4d6f8a1c3e5b7d9f0a2c4e6b8d0f1a3c5e7b9d2f4a";
/// The demo rules' price of `/search?q=bitcoin+price`-like queries (USDC base units).
pub const SIMPLE_PRICE: u128 = 20_000;

sol! {
    function mint(address to, uint256 amount);
    function balanceOf(address account) returns (uint256);
}

/// A local chain with the token deployed.
pub struct Chain {
    pub node: AnvilNode,
}

impl Chain {
    pub async fn start() -> Chain {
        let node = AnvilNode::spawn(CHAIN_ID).await;
        let out = node_script(&["tests/interop/chain.mjs", "setup", "--rpc", &node.rpc_url()]);
        assert_eq!(
            out["usdc"].as_str().map(str::to_lowercase),
            Some(USDC.to_lowercase())
        );
        Chain { node }
    }

    pub fn rpc(&self) -> String {
        self.node.rpc_url()
    }

    /// A fresh payer holding `amount` base units.
    pub async fn payer(&self, amount: u128) -> PrivateKeySigner {
        let key = PrivateKeySigner::random();
        if amount > 0 {
            let data = mintCall {
                to: key.address(),
                amount: U256::from(amount),
            }
            .abi_encode();
            let from = self.node.accounts().await[0].clone();
            self.node
                .send_tx(
                    json!({ "from": from, "to": USDC, "data": format!("0x{}", hex::encode(data)) }),
                )
                .await;
        }
        key
    }

    pub async fn balance(&self, who: &str) -> u128 {
        let who: Address = who.parse().unwrap();
        let data = balanceOfCall { account: who }.abi_encode();
        let out = self
            .node
            .call(USDC, &format!("0x{}", hex::encode(data)))
            .await
            .unwrap();
        u128::from_str_radix(out.trim_start_matches("0x"), 16).unwrap()
    }

    /// Moves chain time forward and mines a block.
    pub async fn advance(&self, secs: u64) {
        self.node
            .rpc("evm_increaseTime", json!([secs]))
            .await
            .unwrap();
        self.node.rpc("evm_mine", json!([])).await.unwrap();
    }
}

/// Runs a Node script from the repository root and parses its one JSON line.
pub fn node_script(args: &[&str]) -> Value {
    let out = Command::new("node")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "node {args:?}: not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// TARIFF_* settings of a gateway settling locally on `chain`.
pub fn local_vars(chain: &Chain) -> Vec<(&'static str, String)> {
    vec![
        ("TARIFF_NETWORK", "eip155:84532".into()),
        ("TARIFF_PAY_TO", PAY_TO.into()),
        ("TARIFF_RPC_URL", chain.rpc()),
        ("TARIFF_GAS_KEY", GAS_KEY.into()),
        ("TARIFF_FINGERPRINT_KEY", FINGERPRINT_KEY.into()),
    ]
}

pub async fn local_app(chain: &Chain) -> TestApp {
    TestApp::start(&repo_rules(), &local_vars(chain)).await
}

/// An authorization before signing; tests bend any field.
#[derive(Clone)]
pub struct Draft {
    /// The v2 `accepted` (a copy of the 402's requirement).
    pub accepted: Value,
    pub from: Address,
    pub to: Address,
    pub value: U256,
    pub valid_after: u64,
    pub valid_before: u64,
    pub nonce: B256,
    /// The EIP-712 domain signed over.
    pub terms: Terms,
    /// Signs instead of the payer (a forged authorization).
    pub signer: Option<PrivateKeySigner>,
    /// Replaces the computed signature.
    pub signature: Option<String>,
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Draft {
    /// What an honest client would sign for `accepted` (a v2 requirement).
    pub fn honest(payer: &PrivateKeySigner, accepted: &Value) -> Draft {
        let s = |k: &str| accepted[k].as_str().unwrap().to_string();
        let terms = Terms {
            chain_id: CHAIN_ID,
            asset: s("asset").parse().unwrap(),
            pay_to: s("payTo").parse().unwrap(),
            amount: s("amount").parse().unwrap(),
            eip712_name: accepted["extra"]["name"].as_str().unwrap().into(),
            eip712_version: accepted["extra"]["version"].as_str().unwrap().into(),
            facilitator: None,
        };
        Draft {
            accepted: accepted.clone(),
            from: payer.address(),
            to: terms.pay_to,
            value: terms.amount,
            valid_after: now_secs() - 600,
            valid_before: now_secs() + accepted["maxTimeoutSeconds"].as_u64().unwrap(),
            nonce: B256::from(rand::random::<[u8; 32]>()),
            terms,
            signer: None,
            signature: None,
        }
    }

    fn signed(&self, payer: &PrivateKeySigner) -> (String, Value) {
        let message = TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: self.value,
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
        };
        let signer = self.signer.as_ref().unwrap_or(payer);
        let hash = message.eip712_signing_hash(&self.terms.token_domain());
        let signature = self.signature.clone().unwrap_or_else(|| {
            format!(
                "0x{}",
                hex::encode(signer.sign_hash_sync(&hash).unwrap().as_bytes())
            )
        });
        let authorization = json!({
            "from": format!("{:#x}", self.from),
            "to": format!("{:#x}", self.to),
            "value": self.value.to_string(),
            "validAfter": self.valid_after.to_string(),
            "validBefore": self.valid_before.to_string(),
            "nonce": format!("{:#x}", self.nonce),
        });
        (signature, authorization)
    }

    /// The v2 `PAYMENT-SIGNATURE` JSON.
    pub fn v2(&self, payer: &PrivateKeySigner) -> Value {
        let (signature, authorization) = self.signed(payer);
        json!({
            "x402Version": 2,
            "resource": { "url": "http://localhost/" },
            "accepted": self.accepted,
            "payload": { "signature": signature, "authorization": authorization },
        })
    }

    /// The v1 `X-PAYMENT` JSON.
    pub fn v1(&self, payer: &PrivateKeySigner) -> Value {
        let (signature, authorization) = self.signed(payer);
        json!({
            "x402Version": 1,
            "scheme": "exact",
            "network": "base-sepolia",
            "payload": { "signature": signature, "authorization": authorization },
        })
    }
}

pub fn b64(v: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(v).unwrap())
}

/// GET `uri` with extra headers.
pub async fn get_with(app: &TestApp, uri: &str, headers: &[(&str, String)]) -> Reply {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    Reply::read(app.send(req.body(Body::empty()).unwrap()).await).await
}

/// A decoded `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE` header.
pub fn payment_response(r: &Reply, name: &str) -> Value {
    let b64 = r.header(name).unwrap_or_else(|| panic!("no {name} header"));
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

/// The payment transfers the ledger holds for `payer`: (kind, amount) newest first.
pub async fn ledger_of(app: &TestApp, payer: Address) -> Vec<(TransferKind, u64)> {
    let ledger = app.state.accounts.as_ref().unwrap().ledger();
    let account = AccountId::new(tariff::payment::payer_account(&format!("{payer:#x}"))).unwrap();
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        match ledger.history(&account, cursor, 100).await {
            Ok(page) => {
                out.extend(page.transfers.iter().map(|t| (t.kind, t.amount.get())));
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => return out,
                }
            }
            Err(tariff::ledger::LedgerError::UnknownAccount(_)) => return out,
            Err(e) => panic!("ledger history: {e}"),
        }
    }
}

/// A 402 for `uri` and its first v2 requirement.
pub async fn quote(app: &TestApp, uri: &str) -> (Reply, Value) {
    let r = app.get(uri).await;
    assert_eq!(r.status, 402, "{uri}: {}", String::from_utf8_lossy(&r.body));
    let accepted = r.payment_required()["accepts"][0].clone();
    (r, accepted)
}
