//! Wallet accounts on a real chain: a wallet linked to an agent account has its on-chain
//! payments credited there (where its agent spends), and a smart-contract wallet signs in
//! through EIP-1271, which only the chain can judge.

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolValue;
use serde_json::json;
use tariff::ledger::{AccountId, TransferKind};

use super::{Chain, Draft, b64, get_with, ledger_of, local_vars, quote};
use crate::credits::{ADMIN, open};
use crate::harness::{TestApp, repo_rules};
use crate::sign_in::{HOST, fund_wallet, send, sign_in, sign_in_as};
use crate::support::contract_artifact;

async fn app(chain: &Chain) -> TestApp {
    app_with(chain, &[]).await
}

async fn app_with(chain: &Chain, extra_vars: &[(&str, String)]) -> TestApp {
    let mut vars = local_vars(chain);
    vars.push(("TARIFF_ADMIN_TOKEN", ADMIN.to_string()));
    vars.extend_from_slice(extra_vars);
    TestApp::start(&repo_rules(), &vars).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_wallets_payments_are_credited_to_the_account_it_was_linked_to() {
    let chain = Chain::start().await;
    let app = app(&chain).await;
    let (account, key) = open(&app).await;
    let payer = chain.payer(1_000_000).await;
    let r = send(
        &app,
        "POST",
        "/accounts/me/wallets",
        &[
            ("authorization", &format!("Bearer {key}")),
            (
                "sign-in-with-x",
                &sign_in(
                    &payer,
                    &format!("http://{HOST}/accounts/me/wallets"),
                    |_| {},
                ),
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let uri = "/search?q=linked+wallet";
    let (_, accepted) = quote(&app, uri).await;
    let payment = Draft::honest(&payer, &accepted).v2(&payer);
    let r = get_with(&app, uri, &[("payment-signature", b64(&payment))]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let ledger = app.state.accounts.as_ref().unwrap().ledger();
    let history = ledger
        .history(&AccountId::new(&account).unwrap(), None, 10)
        .await
        .unwrap();
    let kinds: Vec<(TransferKind, u64)> = history
        .transfers
        .iter()
        .map(|t| (t.kind, t.amount.get()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (TransferKind::RequestDebit, 20_000),
            (TransferKind::PaymentCredit, 20_000)
        ]
    );
    assert!(
        ledger_of(&app, payer.address()).await.is_empty(),
        "nothing lands in the wallet's own account"
    );
    app.assert_ledger_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smart_wallet_signs_in_through_eip1271() {
    let chain = Chain::start().await;
    let app = app(&chain).await;
    let owner = PrivateKeySigner::random();
    let deployer = chain.node.accounts().await[0].clone();
    let receipt = chain
        .node
        .send_tx(json!({
            "from": deployer,
            "data": format!(
                "0x{}{}",
                contract_artifact("TestSmartWallet.bin").trim(),
                hex::encode(owner.address().abi_encode())
            ),
        }))
        .await;
    let wallet: Address = receipt["contractAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let account = fund_wallet(&app, wallet, 100_000).await;
    let uri = "/search?q=smart+wallet";
    let url = format!("http://{HOST}{uri}");

    // The owner's key signs for the contract: the chain says yes.
    let r = send(
        &app,
        "GET",
        uri,
        &[("sign-in-with-x", &sign_in_as(&owner, wallet, &url, |_| {}))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("tariff-wallet"), Some(format!("{wallet:#x}")));
    // Any other key: the contract says no.
    let stranger = PrivateKeySigner::random();
    let r = send(
        &app,
        "GET",
        uri,
        &[(
            "sign-in-with-x",
            &sign_in_as(&stranger, wallet, &url, |_| {}),
        )],
    )
    .await;
    assert_eq!(
        (r.status, r.header("tariff-reason").as_deref()),
        (402, Some("invalid_siwx_signature"))
    );
    let available = app
        .state
        .accounts
        .as_ref()
        .unwrap()
        .ledger()
        .balance(&AccountId::new(&account).unwrap())
        .await
        .unwrap()
        .available();
    assert_eq!(available, 80_000);
    app.assert_ledger_clean().await;
}

/// The official v2 client (`@x402/fetch` with `@x402/extensions`' sign-in-with-x client
/// extension) against a running Tariff settling on anvil: a wallet with credits signs in and
/// spends them (nothing moves on chain); a wallet without credits is refused the sign-in (402)
/// and the client then pays on chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_signs_in_and_spends_wallet_credits() {
    official_client_signs_in(&[]).await;
}

/// The same with `extension_schemas = false`: the official client needs no schema to sign in
/// or to pay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_signs_in_without_extension_schemas() {
    let (_dir, lean_config) = crate::harness::config_file("extension_schemas = false\n");
    official_client_signs_in(&[lean_config]).await;
}

async fn official_client_signs_in(extra_vars: &[(&str, String)]) {
    let chain = Chain::start().await;
    let app = app_with(&chain, extra_vars).await;
    let (base, _server) = crate::harness::serve(tariff::http::app(app.state.clone())).await;
    let pay = |key: &PrivateKeySigner, extra: &'static [&'static str]| {
        let key = format!("0x{}", hex::encode(key.to_bytes()));
        let url = format!("{base}/search?q=bitcoin+price");
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "tests/interop/pay.mjs",
                "--client",
                "v2",
                "--key",
                &key,
                "--url",
                &url,
                "--siwx",
            ];
            args.extend_from_slice(extra);
            super::node_script(&args)
        })
    };
    let price = super::SIMPLE_PRICE;
    let seller_before = chain.balance(super::PAY_TO).await;

    // Credits: signed in, served from them; the chain is untouched.
    let wallet = chain.payer(1_000_000).await;
    let account = fund_wallet(&app, wallet.address(), 100_000).await;
    let out = pay(&wallet, &["--no-pay"]).await.unwrap();
    assert_eq!(
        (out["status"].clone(), out["paid"].clone()),
        (json!(200), json!(false)),
        "{out}"
    );
    let receipt: serde_json::Value =
        serde_json::from_str(out["headers"]["tariff-receipt"].as_str().unwrap()).unwrap();
    assert_eq!(
        (receipt["account"].as_str(), receipt["amount"].as_u64()),
        (Some(account.as_str()), Some(20_000))
    );
    assert_eq!(
        chain.balance(&format!("{:#x}", wallet.address())).await,
        1_000_000
    );
    assert_eq!(
        ledger_of(&app, wallet.address()).await,
        vec![
            (TransferKind::Post, 20_000),
            (TransferKind::Hold, 20_000),
            (TransferKind::Adjustment, 100_000)
        ]
    );

    // No credits: the sign-in is refused with the 402, and the official client pays instead.
    let broke = chain.payer(1_000_000).await;
    let out = pay(&broke, &[]).await.unwrap();
    assert_eq!(out["siwxStatus"], json!(402), "{out}");
    assert_eq!(
        (out["status"].clone(), out["paid"].clone()),
        (json!(200), json!(true)),
        "{out}"
    );
    assert_eq!(
        chain.balance(&format!("{:#x}", broke.address())).await,
        1_000_000 - price
    );
    assert_eq!(chain.balance(super::PAY_TO).await - seller_before, price);
    assert_eq!(
        ledger_of(&app, broke.address()).await,
        vec![
            (TransferKind::RequestDebit, 20_000),
            (TransferKind::PaymentCredit, 20_000)
        ]
    );
    app.assert_ledger_clean().await;
}
