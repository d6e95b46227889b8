//! The `exact`/Permit2 scheme against real contracts on anvil: our Permit2 (SignatureTransfer
//! subset) and x402 exact proxy placed at their canonical addresses, and a plain ERC-20 with no
//! EIP-3009. Exercises the scheme's chain side exactly as the pipeline uses it: the preflight
//! (allowance first), the proxy settlement by Tariff's relayer, Permit2's nonce bitmap, the
//! proof that a settlement paid us, and the reconciler's verdict.

use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{SolCall, SolValue};
use async_trait::async_trait;
use serde_json::{Value, json};
use tariff::payment::PaymentError;
use tariff::payment::chain::{Broadcast, Chain, Relayer, Submitted};
use tariff::payment::resolve::{self, OnChain, Resolution};
use tariff::payment::scheme::exact_permit2::{
    EXACT_PROXY, ExactPermit2, PERMIT2, Permit2Authorization, PermitWitnessTransferFrom,
    TokenPermissions, Witness,
};
use tariff::payment::scheme::upto_permit2::UPTO_PROXY;
use tariff::payment::scheme::{Scheme, SchemePayment, Terms};

use super::{CHAIN_ID, FINGERPRINT_KEY, GAS_KEY, PAY_TO};
use crate::harness::{TestApp, repo_rules};
use crate::support::{AnvilNode, contract_artifact};
use tariff::ledger::TransferKind;

/// anvil dev account 5: the buyer, holding only the plain ERC-20.
pub(super) const PAYER_KEY: &str =
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba";
const PRICE: u64 = 20_000;

sol! {
    function mint(address to, uint256 value) external;
    function approve(address spender, uint256 value) external returns (bool);
    function balanceOf(address account) external view returns (uint256);
}

pub(super) struct Rig {
    pub(super) node: AnvilNode,
    pub(super) chain: Chain,
    pub(super) relayer: Relayer,
    pub(super) token: Address,
    pub(super) payer: PrivateKeySigner,
}

pub(super) struct NoRecord;

#[async_trait]
impl Broadcast for NoRecord {
    async fn broadcast(&self, _tx: B256) {}
}

pub(super) fn hex_data(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

impl Rig {
    pub(super) async fn start() -> Rig {
        let node = AnvilNode::spawn(CHAIN_ID).await;
        for (address, artifact) in [
            (PERMIT2, "TestPermit2.runtime.bin"),
            (EXACT_PROXY, "X402ExactPermit2Proxy.runtime.bin"),
            (UPTO_PROXY, "X402UptoPermit2Proxy.runtime.bin"),
        ] {
            let code = format!("0x{}", contract_artifact(artifact).trim());
            node.rpc("anvil_setCode", json!([format!("{address:#x}"), code]))
                .await
                .expect("anvil_setCode");
        }
        let deployer = node.accounts().await[0].clone();
        let args = (
            "Plain Token".to_string(),
            "PLAIN".to_string(),
            U256::from(6u8),
        )
            .abi_encode_params();
        let receipt = node
            .send_tx(json!({
                "from": deployer,
                "data": format!("0x{}{}", contract_artifact("TestERC20.bin").trim(), hex::encode(args)),
            }))
            .await;
        let token: Address = receipt["contractAddress"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let payer: PrivateKeySigner = PAYER_KEY.parse().unwrap();
        node.send_tx(json!({
            "from": deployer, "to": format!("{token:#x}"),
            "data": hex_data(&mintCall { to: payer.address(), value: U256::from(1_000_000u64) }.abi_encode()),
        }))
        .await;
        let url = node.rpc_url();
        let timeout = Duration::from_secs(5);
        Rig {
            chain: Chain::connect(&url, CHAIN_ID, timeout).unwrap(),
            relayer: Relayer::new(
                &url,
                GAS_KEY,
                1,
                timeout,
                Duration::from_secs(30),
                Duration::from_millis(20),
            )
            .unwrap(),
            node,
            token,
            payer,
        }
    }

    fn terms(&self) -> Terms {
        Terms {
            chain_id: CHAIN_ID,
            asset: self.token,
            pay_to: PAY_TO.parse().unwrap(),
            amount: U256::from(PRICE),
            eip712_name: String::new(),
            eip712_version: String::new(),
            facilitator: None,
        }
    }

    pub(super) async fn approve_permit2(&self) {
        self.node
            .send_tx(json!({
                "from": format!("{:#x}", self.payer.address()), "to": format!("{:#x}", self.token),
                "data": hex_data(&approveCall { spender: PERMIT2, value: U256::MAX }.abi_encode()),
            }))
            .await;
    }

    pub(super) async fn balance(&self, who: Address) -> U256 {
        self.chain.balance_of(self.token, who).await.unwrap()
    }

    /// The payload an official client would send: signed, then parsed by the scheme.
    async fn permit(&self, nonce: U256, valid_after: u64) -> Box<dyn SchemePayment> {
        let (_, now) = self.chain.latest_block().await.unwrap();
        let message = PermitWitnessTransferFrom {
            permitted: TokenPermissions {
                token: self.token,
                amount: U256::from(PRICE),
            },
            spender: EXACT_PROXY,
            nonce,
            deadline: U256::from(now + 300),
            witness: Witness {
                to: PAY_TO.parse().unwrap(),
                validAfter: U256::from(valid_after),
            },
        };
        let mut auth = Permit2Authorization {
            owner: self.payer.address(),
            message,
            signature: vec![],
        };
        let hash = auth.signing_hash(CHAIN_ID);
        auth.signature = self
            .payer
            .sign_hash_sync(&hash)
            .unwrap()
            .as_bytes()
            .to_vec();
        // The stored form keeps the wire payload: parse exactly what a client would send.
        let wire: Value = auth.stored().payload.expect("permit2 keeps its payload");
        ExactPermit2.parse(&wire).unwrap()
    }

    async fn preflight(&self, p: &dyn SchemePayment) -> String {
        let relayer = self.relayer.address();
        match p.preflight(&self.chain, &self.terms(), relayer).await {
            Ok(()) => "ok".into(),
            Err(e) => e.code().to_string(),
        }
    }
}

#[tokio::test]
async fn a_plain_erc20_is_paid_through_permit2_and_the_proxy() {
    let rig = Rig::start().await;
    let terms = rig.terms();
    let pay_to: Address = PAY_TO.parse().unwrap();
    // A nonce in a high bitmap word, as the official client's random uint256 nonces are.
    let nonce = (U256::from(1u8) << 200) + U256::from(77u8);
    let p = rig.permit(nonce, 0).await;
    let (_, now) = rig.chain.latest_block().await.unwrap();
    p.check(&terms, now).expect("the local checks pass");

    // No allowance to Permit2 yet: the answer names what the buyer must do.
    assert_eq!(
        rig.preflight(p.as_ref()).await,
        "permit2_allowance_required"
    );
    rig.approve_permit2().await;
    assert_eq!(rig.preflight(p.as_ref()).await, "ok");
    assert!(!p.used(&rig.chain, &terms).await.unwrap());
    assert_eq!(p.landed(&rig.chain, &terms, None).await.unwrap(), None);

    let (payer_before, seller_before) = (
        rig.balance(rig.payer.address()).await,
        rig.balance(pay_to).await,
    );
    let tx = match rig
        .relayer
        .submit(p.settle_call(&terms), &NoRecord)
        .await
        .unwrap()
    {
        Submitted::Mined {
            landed,
            success: true,
        } => landed.tx,
        other => panic!("settlement did not land: {other:?}"),
    };
    assert_eq!(rig.balance(pay_to).await, seller_before + U256::from(PRICE));
    assert_eq!(
        rig.balance(rig.payer.address()).await,
        payer_before - U256::from(PRICE)
    );

    // The nonce is spent, the settlement is found and proven, and a replay is refused.
    assert!(p.used(&rig.chain, &terms).await.unwrap());
    assert_eq!(p.landed(&rig.chain, &terms, None).await.unwrap(), Some(tx));
    assert_eq!(rig.preflight(p.as_ref()).await, "permit2_invalid_nonce");
    let ev = OnChain {
        chain: &rig.chain,
        payment: p.as_ref(),
        terms: &terms,
    };
    assert_eq!(
        resolve::open_payment(&ev, None, p.valid_before())
            .await
            .unwrap(),
        Resolution::Landed(format!("{tx:#x}"))
    );
    // A second settlement of the same permit is refused, and the refusal is resolved as paid
    // (it was us who landed it): the front-running path counts the money once.
    match rig
        .relayer
        .submit(p.settle_call(&terms), &NoRecord)
        .await
        .unwrap()
    {
        Submitted::Refused(_) | Submitted::Mined { success: false, .. } => {}
        other => panic!("a replayed permit settled again: {other:?}"),
    }
    assert_eq!(
        resolve::refusal(&ev, "replayed".into(), None)
            .await
            .unwrap(),
        format!("{tx:#x}")
    );
    assert_eq!(rig.balance(pay_to).await, seller_before + U256::from(PRICE));
}

#[tokio::test]
async fn the_chain_refuses_what_the_local_checks_cannot_see() {
    let rig = Rig::start().await;
    rig.approve_permit2().await;
    let terms = rig.terms();
    let (_, now) = rig.chain.latest_block().await.unwrap();
    // Not yet valid by chain time: the proxy refuses it in the simulation.
    let early = rig.permit(U256::from(1u8), now + 3_600).await;
    assert_eq!(
        rig.preflight(early.as_ref()).await,
        "permit2_simulation_failed"
    );
    // A permit the payer cannot cover.
    rig.node
        .send_tx(json!({
            "from": format!("{:#x}", rig.payer.address()), "to": format!("{:#x}", rig.token),
            "data": hex_data(&sol_transfer_all(rig.balance(rig.payer.address()).await)),
        }))
        .await;
    let poor = rig.permit(U256::from(2u8), 0).await;
    assert_eq!(
        rig.preflight(poor.as_ref()).await,
        "permit2_insufficient_balance"
    );
    // Never settled and unused: the reconciler leaves it open until its deadline passes.
    let ev = OnChain {
        chain: &rig.chain,
        payment: poor.as_ref(),
        terms: &terms,
    };
    assert_eq!(
        resolve::open_payment(&ev, None, poor.valid_before())
            .await
            .unwrap(),
        Resolution::Open
    );
    assert_eq!(
        resolve::open_payment(&ev, None, now).await.unwrap(),
        Resolution::Expired
    );
    // An RPC that is down is an outage, never a verdict.
    let down = Chain::connect("http://127.0.0.1:9", CHAIN_ID, Duration::from_millis(300)).unwrap();
    match poor.used(&down, &terms).await {
        Err(PaymentError::Unavailable { reason, .. }) => assert_eq!(reason, "chain_unavailable"),
        other => panic!("{other:?}"),
    }
}

fn sol_transfer_all(amount: U256) -> Vec<u8> {
    sol! { function transfer(address to, uint256 value) external returns (bool); }
    transferCall {
        to: Address::repeat_byte(0x42),
        value: amount,
    }
    .abi_encode()
}

/// A gateway on the rig's chain offering USDC (EIP-3009) and the plain token (Permit2) on the
/// same network, settling locally.
async fn gateway(rig: &Rig, dir: &crate::harness::TempDir) -> TestApp {
    gateway_settling(rig, dir, &[("TARIFF_GAS_KEY", GAS_KEY.to_string())]).await
}

async fn gateway_settling(
    rig: &Rig,
    dir: &crate::harness::TempDir,
    settlement: &[(&'static str, String)],
) -> TestApp {
    let file = dir.path().join("tariff.toml");
    let toml = format!(
        r#"
[[networks]]
network = "eip155:84532"

[[networks]]
network = "eip155:84532"
asset = "{token:#x}"
decimals = 6
transfer_method = "permit2"
"#,
        token = rig.token
    );
    std::fs::write(&file, toml).unwrap();
    let vars = [
        ("TARIFF_CONFIG", file.display().to_string()),
        ("TARIFF_PAY_TO", PAY_TO.to_string()),
        ("TARIFF_RPC_URL", rig.node.rpc_url()),
        ("TARIFF_FINGERPRINT_KEY", FINGERPRINT_KEY.to_string()),
    ];
    let mut vars = vars.to_vec();
    vars.extend(settlement.iter().cloned());
    TestApp::start(&repo_rules(), &vars).await
}

/// The v2 `PAYMENT-SIGNATURE` a client builds for a Permit2 requirement, as the official
/// client does (`validAfter` 0, `deadline` now + maxTimeoutSeconds, a random uint256 nonce).
fn permit2_payment(
    payer: &PrivateKeySigner,
    accepted: &Value,
    tweak: impl Fn(&mut PermitWitnessTransferFrom),
) -> String {
    let mut message = PermitWitnessTransferFrom {
        permitted: TokenPermissions {
            token: accepted["asset"].as_str().unwrap().parse().unwrap(),
            amount: accepted["amount"].as_str().unwrap().parse().unwrap(),
        },
        spender: EXACT_PROXY,
        nonce: U256::from_be_bytes(rand::random::<[u8; 32]>()),
        deadline: U256::from(super::now_secs() + accepted["maxTimeoutSeconds"].as_u64().unwrap()),
        witness: Witness {
            to: accepted["payTo"].as_str().unwrap().parse().unwrap(),
            validAfter: U256::ZERO,
        },
    };
    tweak(&mut message);
    let mut auth = Permit2Authorization {
        owner: payer.address(),
        message,
        signature: vec![],
    };
    auth.signature = payer
        .sign_hash_sync(&auth.signing_hash(CHAIN_ID))
        .unwrap()
        .as_bytes()
        .to_vec();
    super::b64(&json!({
        "x402Version": 2,
        "accepted": accepted,
        "payload": auth.stored().payload.unwrap(),
    }))
}

#[tokio::test]
async fn the_gateway_takes_a_permit2_payment_in_a_plain_erc20() {
    let rig = Rig::start().await;
    let dir = crate::harness::TempDir::new("permit2");
    let app = gateway(&rig, &dir).await;
    let uri = "/search?q=bitcoin+price";
    let r = app.get(uri).await;
    assert_eq!(r.status, 402);
    let required = r.payment_required();
    let accepts = required["accepts"].as_array().unwrap();
    assert_eq!(accepts.len(), 2, "{required}");
    // USDC keeps the EIP-3009 extra (no transfer method named); the plain token says Permit2.
    assert!(accepts[0]["extra"].get("assetTransferMethod").is_none());
    let accepted = accepts[1].clone();
    assert_eq!(accepted["extra"]["assetTransferMethod"], "permit2");
    assert_eq!(accepted["amount"], super::SIMPLE_PRICE.to_string());
    // v1 clients only know EIP-3009: the Permit2 offer is not in the v1 body.
    let v1: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v1["accepts"].as_array().unwrap().len(), 1);

    let pay_to: Address = PAY_TO.parse().unwrap();
    let seller_before = rig.balance(pay_to).await;
    // An honest permit before the buyer approved Permit2: the answer says what to do.
    let header = permit2_payment(&rig.payer, &accepted, |_| {});
    let r = super::get_with(&app, uri, &[("payment-signature", header)]).await;
    assert_eq!(
        (r.status, r.header("tariff-reason")),
        (402, Some("permit2_allowance_required".to_string()))
    );
    rig.approve_permit2().await;
    // Another key's signature over the payer's permit.
    let thief = PrivateKeySigner::random();
    let mut stolen: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            permit2_payment(&thief, &accepted, |_| {}),
        )
        .unwrap(),
    )
    .unwrap();
    stolen["payload"]["permit2Authorization"]["from"] =
        json!(format!("{:#x}", rig.payer.address()));
    let r = super::get_with(&app, uri, &[("payment-signature", super::b64(&stolen))]).await;
    assert_eq!(
        (r.status, r.header("tariff-reason")),
        (402, Some("invalid_permit2_signature".to_string()))
    );
    // A Permit2 payload presented as EIP-3009 (the transfer method dropped from `accepted`):
    // `accepted` no longer equals the requirement of that asset.
    let mut relabelled = stolen.clone();
    relabelled["payload"] = serde_json::from_slice::<Value>(
        &base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            permit2_payment(&rig.payer, &accepted, |_| {}),
        )
        .unwrap(),
    )
    .unwrap()["payload"]
        .clone();
    relabelled["accepted"]["extra"]
        .as_object_mut()
        .unwrap()
        .remove("assetTransferMethod");
    let r = super::get_with(&app, uri, &[("payment-signature", super::b64(&relabelled))]).await;
    assert_eq!(
        (r.status, r.header("tariff-reason")),
        (402, Some("accepted_requirements_mismatch".to_string()))
    );
    // Hostile variants of the permit itself: each refused with its reason, nothing moves.
    type Tweak = fn(&mut PermitWitnessTransferFrom);
    let cases: [(&str, Tweak); 5] = [
        ("permit2_token_mismatch", |m| {
            m.permitted.token = super::USDC.parse().unwrap()
        }),
        ("invalid_permit2_spender", |m| {
            m.spender = Address::repeat_byte(3)
        }),
        ("invalid_permit2_recipient_mismatch", |m| {
            m.witness.to = Address::repeat_byte(4)
        }),
        ("permit2_amount_mismatch", |m| {
            m.permitted.amount -= U256::from(1u8)
        }),
        ("permit2_deadline_expired", |m| {
            m.deadline = U256::from(super::now_secs())
        }),
    ];
    for (reason, tweak) in cases {
        let header = permit2_payment(&rig.payer, &accepted, tweak);
        let r = super::get_with(&app, uri, &[("payment-signature", header)]).await;
        assert_eq!(
            (r.status, r.header("tariff-reason")),
            (402, Some(reason.to_string())),
            "{reason}"
        );
    }
    assert_eq!(rig.balance(pay_to).await, seller_before);
    assert!(
        super::ledger_of(&app, rig.payer.address()).await.is_empty(),
        "nothing booked"
    );

    let header = permit2_payment(&rig.payer, &accepted, |_| {});
    let r = super::get_with(&app, uri, &[("payment-signature", header.clone())]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let settled = super::payment_response(&r, "payment-response");
    assert_eq!(settled["success"], true);
    assert_eq!(settled["network"], "eip155:84532");
    assert_eq!(
        rig.balance(pay_to).await,
        seller_before + U256::from(super::SIMPLE_PRICE)
    );
    // One payment credit and one request debit, in micro-dollars.
    let kinds: Vec<_> = super::ledger_of(&app, rig.payer.address())
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        kinds,
        [TransferKind::RequestDebit, TransferKind::PaymentCredit]
    );
    // The same permit again: its Permit2 nonce is spent, so the preflight refuses it before any
    // claim; nothing moves twice.
    let again = super::get_with(&app, uri, &[("payment-signature", header)]).await;
    assert_eq!(again.status, 402);
    assert_eq!(
        again.header("tariff-reason"),
        Some("permit2_invalid_nonce".to_string())
    );
    assert_eq!(
        rig.balance(pay_to).await,
        seller_before + U256::from(super::SIMPLE_PRICE)
    );
    app.assert_ledger_clean().await;
}

/// The official v2 client (`@x402/fetch` + `@x402/evm`, unmodified; configured through its
/// public API to accept a non-default token and to prefer Permit2) pays a running Tariff in
/// the plain ERC-20, settled locally through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_pays_in_a_plain_erc20_through_permit2() {
    let rig = Rig::start().await;
    rig.approve_permit2().await;
    let dir = crate::harness::TempDir::new("permit2-interop");
    let app = gateway(&rig, &dir).await;
    official_client_pays(&rig, app).await;
}

/// The same through the official facilitator (`@x402/evm` 2.27.0 settles Permit2 through the
/// proxy itself); Multicall3, which it needs for its diagnostics, is placed by chain.mjs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_pays_through_permit2_with_the_official_facilitator() {
    let rig = Rig::start().await;
    rig.approve_permit2().await;
    super::node_script(&[
        "tests/interop/chain.mjs",
        "setup",
        "--rpc",
        &rig.node.rpc_url(),
    ]);
    let facilitator = super::interop::OfficialFacilitator::start_on(&rig.node.rpc_url());
    let dir = crate::harness::TempDir::new("permit2-facilitator");
    let app = gateway_settling(
        &rig,
        &dir,
        &[
            ("TARIFF_SETTLEMENT", "facilitator".to_string()),
            ("TARIFF_FACILITATOR_URL", facilitator.url.clone()),
        ],
    )
    .await;
    official_client_pays(&rig, app).await;
}

async fn official_client_pays(rig: &Rig, app: TestApp) {
    let (base, _server) = crate::harness::serve(tariff::http::app(app.state.clone())).await;
    let pay_to: Address = PAY_TO.parse().unwrap();
    let seller_before = rig.balance(pay_to).await;
    let payer_before = rig.balance(rig.payer.address()).await;
    let url = format!("{base}/search?q=permit2+interop");
    let out = tokio::task::spawn_blocking(move || {
        super::node_script(&[
            "tests/interop/pay.mjs",
            "--client",
            "v2",
            "--key",
            PAYER_KEY,
            "--url",
            &url,
            "--allow-assets",
            "--transfer-method",
            "permit2",
        ])
    })
    .await
    .unwrap();
    assert_eq!(out["status"], json!(200), "{out}");
    use base64::Engine;
    let receipt: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(
                out["headers"]["payment-response"]
                    .as_str()
                    .expect("payment-response"),
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(receipt["success"], json!(true), "{receipt}");
    let price = U256::from(super::SIMPLE_PRICE);
    assert_eq!(rig.balance(pay_to).await, seller_before + price);
    assert_eq!(rig.balance(rig.payer.address()).await, payer_before - price);
    assert_eq!(
        super::ledger_of(&app, rig.payer.address()).await,
        vec![
            (TransferKind::RequestDebit, 20_000),
            (TransferKind::PaymentCredit, 20_000)
        ]
    );
    app.assert_ledger_clean().await;
}
