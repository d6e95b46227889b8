//! `upto`: a route whose price is known only after the upstream answered (a rule with
//! `actual`) is quoted at its ceiling and offered as `upto` (Permit2) next to `exact`; the payer
//! signs for the ceiling and is charged, on chain, what the answer actually cost. On anvil with
//! our Permit2, the x402 upto proxy at its canonical address and a plain ERC-20.

use alloy::primitives::{Address, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tariff::ledger::TransferKind;
use tariff::payment::chain::Submitted;
use tariff::payment::pipeline::charge_units;
use tariff::payment::resolve::{self, OnChain, Resolution};
use tariff::payment::scheme::exact_permit2::EXACT_PROXY;
use tariff::payment::scheme::upto_permit2::{
    PermitWitnessTransferFrom, TokenPermissions, UPTO_PROXY, UptoAuthorization, UptoPermit2,
    Witness,
};
use tariff::payment::scheme::{Scheme, SchemePayment, Terms};

use super::permit2::{NoRecord, PAYER_KEY, Rig};
use super::{CHAIN_ID, FINGERPRINT_KEY, GAS_KEY, PAY_TO};
use crate::credits::{USAGE_RULES, usage_upstream};
use crate::harness::{Reply, TempDir, TestApp};
use tariff::money::UsdMicros;

/// The usage rules' ceiling ($0.50) in the 6-decimal token.
const CEILING: u64 = 500_000;

/// A gateway selling the usage-priced route in the rig's plain token (Permit2), settling as
/// `settlement` says (locally by default).
async fn gateway(rig: &Rig, dir: &TempDir, settlement: &[(&'static str, String)]) -> TestApp {
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    dir.write("rules/usage.toml", USAGE_RULES);
    let toml = format!(
        r#"
[[networks]]
network = "eip155:84532"
asset = "{token:#x}"
decimals = 6
transfer_method = "permit2"
"#,
        token = rig.token
    );
    dir.write("tariff.toml", &toml);
    let mut vars = vec![
        (
            "TARIFF_CONFIG",
            dir.path().join("tariff.toml").display().to_string(),
        ),
        ("TARIFF_PAY_TO", PAY_TO.to_string()),
        ("TARIFF_RPC_URL", rig.node.rpc_url()),
        ("TARIFF_FINGERPRINT_KEY", FINGERPRINT_KEY.to_string()),
        ("TARIFF_UPSTREAM", usage_upstream().await),
    ];
    if settlement.is_empty() {
        vars.push(("TARIFF_GAS_KEY", GAS_KEY.to_string()));
    }
    vars.extend(settlement.iter().cloned());
    TestApp::start(&dir.path().join("rules"), &vars).await
}

async fn post(app: &TestApp, path: &str, payment: Option<&str>) -> Reply {
    let mut req = Request::post(path).header("content-type", "application/json");
    if let Some(p) = payment {
        req = req.header("payment-signature", p);
    }
    Reply::read(
        app.send(req.body(Body::from(r#"{"prompt":"hi"}"#)).unwrap())
            .await,
    )
    .await
}

/// The 402 of `path` and its `upto` requirement.
async fn upto_offer(app: &TestApp, path: &str) -> Value {
    let r = post(app, path, None).await;
    assert_eq!(r.status, 402, "{}", String::from_utf8_lossy(&r.body));
    let accepts = r.payment_required()["accepts"].clone();
    let schemes: Vec<&str> = accepts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["scheme"].as_str().unwrap())
        .collect();
    assert_eq!(schemes, ["exact", "upto"], "exact first, then upto");
    accepts[1].clone()
}

/// What the official client signs for an upto requirement, with a tweak.
fn upto_payment(
    payer: &PrivateKeySigner,
    accepted: &Value,
    tweak: impl Fn(&mut PermitWitnessTransferFrom),
) -> String {
    let mut message = PermitWitnessTransferFrom {
        permitted: TokenPermissions {
            token: accepted["asset"].as_str().unwrap().parse().unwrap(),
            amount: accepted["amount"].as_str().unwrap().parse().unwrap(),
        },
        spender: UPTO_PROXY,
        nonce: U256::from_be_bytes(rand::random::<[u8; 32]>()),
        deadline: U256::from(super::now_secs() + accepted["maxTimeoutSeconds"].as_u64().unwrap()),
        witness: Witness {
            to: accepted["payTo"].as_str().unwrap().parse().unwrap(),
            facilitator: accepted["extra"]["facilitatorAddress"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            validAfter: U256::ZERO,
        },
    };
    tweak(&mut message);
    let mut auth = UptoAuthorization {
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

#[test]
fn a_charge_in_base_units_is_the_ceiling_scaled_down_never_up() {
    let quoted = U256::from(CEILING);
    let ceiling = UsdMicros(500_000);
    assert_eq!(
        charge_units(quoted, ceiling, UsdMicros(120_000)),
        U256::from(120_000u64)
    );
    assert_eq!(charge_units(quoted, ceiling, UsdMicros(0)), U256::ZERO);
    assert_eq!(charge_units(quoted, ceiling, UsdMicros(900_000)), quoted);
    // 18 decimals: $0.12 of a $0.50 ceiling, exactly.
    let wei = U256::from(500_000u64) * U256::from(10u64).pow(U256::from(12u8));
    assert_eq!(
        charge_units(wei, ceiling, UsdMicros(120_000)),
        U256::from(120_000u64) * U256::from(10u64).pow(U256::from(12u8))
    );
    // Rounding goes the payer's way.
    assert_eq!(
        charge_units(U256::from(3u8), UsdMicros(3), UsdMicros(2)),
        U256::from(2u8)
    );
    assert_eq!(
        charge_units(U256::from(2u8), UsdMicros(3), UsdMicros(2)),
        U256::from(1u8)
    );
}

/// The proxy itself refuses to settle more than the permit allows, and a settlement sent by
/// anyone but the facilitator the witness names: what the pipeline's own checks stand on.
#[tokio::test]
async fn the_upto_proxy_settles_at_most_the_maximum_and_only_for_its_facilitator() {
    let rig = Rig::start().await;
    rig.approve_permit2().await;
    let relayer = rig.relayer.address();
    let sign = |facilitator: Address, nonce: u8| {
        let mut a = UptoAuthorization {
            owner: rig.payer.address(),
            message: PermitWitnessTransferFrom {
                permitted: TokenPermissions {
                    token: rig.token,
                    amount: U256::from(1_000u64),
                },
                spender: UPTO_PROXY,
                nonce: U256::from(nonce),
                deadline: U256::from(super::now_secs() + 300),
                witness: Witness {
                    to: PAY_TO.parse().unwrap(),
                    facilitator,
                    validAfter: U256::ZERO,
                },
            },
            signature: vec![],
        };
        a.signature = rig
            .payer
            .sign_hash_sync(&a.signing_hash(CHAIN_ID))
            .unwrap()
            .as_bytes()
            .to_vec();
        a
    };
    let submit = |a: &UptoAuthorization, amount: u64| {
        let call = alloy::rpc::types::TransactionRequest::default();
        let call = alloy::network::TransactionBuilder::with_input(
            alloy::network::TransactionBuilder::with_to(call, UPTO_PROXY),
            a.settle_call_for(U256::from(amount)).abi_encode(),
        );
        let relayer = &rig.relayer;
        async move { relayer.submit(call, &NoRecord).await.unwrap() }
    };
    let mined_ok = |s: &Submitted| matches!(s, Submitted::Mined { success: true, .. });
    let pay_to: Address = PAY_TO.parse().unwrap();
    let before = rig.balance(pay_to).await;
    // Above the maximum: refused (no money moves).
    let ours = sign(relayer, 1);
    assert!(!mined_ok(&submit(&ours, 1_001).await));
    // Naming another facilitator: our relayer cannot settle it.
    let theirs = sign(Address::repeat_byte(0x77), 2);
    assert!(!mined_ok(&submit(&theirs, 400).await));
    assert_eq!(rig.balance(pay_to).await, before);
    // At most the maximum, by the named facilitator: exactly that much moves, once.
    assert!(mined_ok(&submit(&ours, 400).await));
    assert_eq!(rig.balance(pay_to).await, before + U256::from(400u64));
    assert!(!mined_ok(&submit(&ours, 400).await), "the nonce is spent");
    assert_eq!(rig.balance(pay_to).await, before + U256::from(400u64));

    // The reconciler's view of it, from the stored record: landed at the recorded charge
    // (the amount the claim row carries once charged), and not at the ceiling, which is why
    // the charge is recorded before the broadcast.
    let restored = UptoPermit2.restore(&ours.stored()).unwrap();
    let at = |amount: u64| Terms {
        chain_id: CHAIN_ID,
        asset: rig.token,
        pay_to,
        amount: U256::from(amount),
        eip712_name: String::new(),
        eip712_version: String::new(),
        facilitator: None,
    };
    let verdict = |terms: Terms| {
        let chain = &rig.chain;
        let payment = restored.as_ref();
        async move {
            let ev = OnChain {
                chain,
                payment,
                terms: &terms,
            };
            resolve::open_payment(&ev, None, ours_valid_before())
                .await
                .unwrap()
        }
    };
    assert!(matches!(verdict(at(400)).await, Resolution::Landed(_)));
    assert_eq!(verdict(at(1_000)).await, Resolution::Cancelled);
}

fn ours_valid_before() -> u64 {
    super::now_secs() + 300
}

/// Hand-signed upto payments at the gateway: each hostile one refused with its reason and
/// nothing moved or booked; an honest one charged the actual amount; a zero charge settles
/// nothing; a replay is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_charges_an_upto_payment_what_the_answer_cost() {
    let rig = Rig::start().await;
    rig.approve_permit2().await;
    let dir = TempDir::new("upto-gateway");
    let app = gateway(&rig, &dir, &[]).await;
    let pay_to: Address = PAY_TO.parse().unwrap();
    let payer = rig.payer.address();
    let seller_before = rig.balance(pay_to).await;

    let accepted = upto_offer(&app, "/v1/1200").await;
    assert_eq!(accepted["amount"], json!(CEILING.to_string()));
    assert_eq!(accepted["extra"]["assetTransferMethod"], json!("permit2"));
    assert_eq!(
        accepted["extra"]["facilitatorAddress"],
        json!(rig.relayer.address().to_checksum(None)),
        "local mode: our relayer settles"
    );
    // v1 knows exact/EIP-3009 only: no upto there.
    let v1 = post(&app, "/v1/1200", None).await.json();
    assert!(
        v1["accepts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["scheme"] == "exact")
    );

    type Tweak = fn(&mut PermitWitnessTransferFrom);
    let hostile: [(&str, Tweak); 5] = [
        ("upto_facilitator_mismatch", |m| {
            m.witness.facilitator = Address::repeat_byte(0x77)
        }),
        ("invalid_permit2_spender", |m| m.spender = EXACT_PROXY),
        ("invalid_permit2_recipient_mismatch", |m| {
            m.witness.to = Address::repeat_byte(0x66)
        }),
        ("permit2_amount_mismatch", |m| {
            m.permitted.amount += U256::from(1u8)
        }),
        ("permit2_deadline_expired", |m| {
            m.deadline = U256::from(super::now_secs())
        }),
    ];
    for (want, tweak) in hostile {
        let r = post(
            &app,
            "/v1/1200",
            Some(&upto_payment(&rig.payer, &accepted, tweak)),
        )
        .await;
        assert_eq!(
            (r.status, r.header("tariff-reason").as_deref()),
            (402, Some(want))
        );
    }
    // Another key's signature for this payer.
    let thief = PrivateKeySigner::random();
    let mut stolen: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            upto_payment(&thief, &accepted, |_| {}),
        )
        .unwrap(),
    )
    .unwrap();
    stolen["payload"]["permit2Authorization"]["from"] = json!(format!("{payer:#x}"));
    let r = post(&app, "/v1/1200", Some(&super::b64(&stolen))).await;
    assert_eq!(
        r.header("tariff-reason").as_deref(),
        Some("invalid_permit2_signature")
    );
    // An exact-shaped payload on the upto offer is malformed for it.
    let mut exact_shaped = stolen.clone();
    exact_shaped["payload"]["permit2Authorization"]["witness"]
        .as_object_mut()
        .unwrap()
        .remove("facilitator");
    let r = post(&app, "/v1/1200", Some(&super::b64(&exact_shaped))).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "invalid_permit2_payload")
    );
    assert_eq!(rig.balance(pay_to).await, seller_before, "nothing moved");
    assert!(
        super::ledger_of(&app, payer).await.is_empty(),
        "nothing booked"
    );

    // Honest: 1,200 tokens at 100 micro-dollars = $0.12 of the $0.50 ceiling.
    let honest = upto_payment(&rig.payer, &accepted, |_| {});
    let r = post(&app, "/v1/1200", Some(&honest)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["usage"]["total_tokens"],
        1200,
        "the answer is served intact"
    );
    let receipt = super::payment_response(&r, "payment-response");
    assert_eq!(receipt["success"], json!(true), "{receipt}");
    assert_eq!(receipt["amount"], json!("120000"), "{receipt}");
    assert_eq!(
        rig.balance(pay_to).await,
        seller_before + U256::from(120_000u64)
    );
    assert_eq!(
        super::ledger_of(&app, payer).await,
        vec![
            (TransferKind::RequestDebit, 120_000),
            (TransferKind::PaymentCredit, 120_000)
        ]
    );
    // The same permit again: its nonce is taken.
    let r = post(&app, "/v1/1200", Some(&honest)).await;
    assert_eq!(
        (r.status, r.header("tariff-reason").as_deref()),
        (402, Some("permit2_invalid_nonce"))
    );

    // Zero tokens: served, nothing settled, nothing booked, the permit left to expire.
    let accepted = upto_offer(&app, "/v1/0").await;
    let r = post(
        &app,
        "/v1/0",
        Some(&upto_payment(&rig.payer, &accepted, |_| {})),
    )
    .await;
    assert_eq!(r.status, 200);
    let receipt = super::payment_response(&r, "payment-response");
    assert_eq!(
        (
            receipt["success"].clone(),
            receipt["amount"].clone(),
            receipt["transaction"].clone()
        ),
        (json!(true), json!("0"), json!(""))
    );
    assert_eq!(
        rig.balance(pay_to).await,
        seller_before + U256::from(120_000u64)
    );
    assert_eq!(super::ledger_of(&app, payer).await.len(), 2);
    app.assert_ledger_clean().await;
}

/// The official v2 client (`@x402/fetch` + `@x402/evm`'s upto client, unmodified, told by its
/// policy API to prefer `upto`) pays the ceiling-quoted route and is charged the actual amount
/// on chain; local settlement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_pays_an_upto_route_the_actual_amount() {
    let rig = Rig::start().await;
    rig.approve_permit2().await;
    let dir = TempDir::new("upto-interop");
    let app = gateway(&rig, &dir, &[]).await;
    official_client_pays_upto(&rig, app).await;
}

/// The same through the official facilitator, whose `/supported` names the signer every upto
/// witness must let settle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_pays_upto_through_the_official_facilitator() {
    let rig = Rig::start().await;
    rig.approve_permit2().await;
    super::node_script(&[
        "tests/interop/chain.mjs",
        "setup",
        "--rpc",
        &rig.node.rpc_url(),
    ]);
    let facilitator = super::interop::OfficialFacilitator::start_on(&rig.node.rpc_url());
    let dir = TempDir::new("upto-facilitator");
    let app = gateway(
        &rig,
        &dir,
        &[
            ("TARIFF_SETTLEMENT", "facilitator".to_string()),
            ("TARIFF_FACILITATOR_URL", facilitator.url.clone()),
        ],
    )
    .await;
    let accepted = upto_offer(&app, "/v1/1200").await;
    let facilitator_key: PrivateKeySigner = super::FACILITATOR_KEY.parse().unwrap();
    assert_eq!(
        accepted["extra"]["facilitatorAddress"],
        json!(facilitator_key.address().to_checksum(None)),
        "the facilitator's signer, from its /supported"
    );
    official_client_pays_upto(&rig, app).await;
}

async fn official_client_pays_upto(rig: &Rig, app: TestApp) {
    let (base, _server) = crate::harness::serve(tariff::http::app(app.state.clone())).await;
    let pay_to: Address = PAY_TO.parse().unwrap();
    let seller_before = rig.balance(pay_to).await;
    let payer_before = rig.balance(rig.payer.address()).await;
    let url = format!("{base}/v1/1200");
    let out = tokio::task::spawn_blocking(move || {
        super::node_script(&[
            "tests/interop/pay.mjs",
            "--client",
            "v2",
            "--key",
            PAYER_KEY,
            "--url",
            &url,
            "--body",
            r#"{"prompt":"hi"}"#,
            "--allow-assets",
            "--upto",
            "--scheme",
            "upto",
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
    assert_eq!(receipt["amount"], json!("120000"), "{receipt}");
    let actual = U256::from(120_000u64);
    assert_eq!(rig.balance(pay_to).await, seller_before + actual);
    assert_eq!(
        rig.balance(rig.payer.address()).await,
        payer_before - actual
    );
    assert_eq!(
        super::ledger_of(&app, rig.payer.address()).await,
        vec![
            (TransferKind::RequestDebit, 120_000),
            (TransferKind::PaymentCredit, 120_000)
        ]
    );
    app.assert_ledger_clean().await;
}

/// The upto scheme is registered, so a stored upto payment is reconciled as one.
#[test]
fn the_upto_scheme_is_found_by_its_wire_name() {
    let s = tariff::payment::scheme::by_wire("upto", Some("permit2")).unwrap();
    assert_eq!(s.name(), UptoPermit2.name());
    assert!(
        tariff::payment::scheme::by_wire("upto", None).is_none(),
        "upto is Permit2 only"
    );
}
