//! Wallets as accounts (`sign-in-with-x`): a 402 carries a fresh challenge; a wallet that signs
//! it spends its credits like an API key (hold → post, receipt); every check of the message has
//! its own refusal and changes nothing; a wallet obtains an API key for its account, and an
//! API-key account links a wallet. PostgreSQL-backed; the official v2 client signs in.

use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use serde_json::{Value, json};
use tariff::x402::siwx::{self, SignIn};

use crate::credits::{ADMIN, app_with, grant, me, open};
use crate::harness::{Reply, TestApp, repo_rules};

pub(crate) const HOST: &str = "api.example.test";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A sign-in for `uri` on `HOST`, signed by `key` as the official client would (our message
/// builder is pinned to the official client's text in `x402::siwx`), after `tweak`.
pub(crate) fn sign_in(key: &PrivateKeySigner, uri: &str, tweak: impl Fn(&mut SignIn)) -> String {
    sign_in_as(key, key.address(), uri, tweak)
}

/// A sign-in for `address` (a smart wallet's, say) signed by `key`.
pub(crate) fn sign_in_as(
    key: &PrivateKeySigner,
    address: alloy::primitives::Address,
    uri: &str,
    tweak: impl Fn(&mut SignIn),
) -> String {
    let mut s = SignIn {
        domain: HOST.into(),
        address: address.to_checksum(None),
        statement: Some("Sign in".into()),
        uri: uri.into(),
        version: "1".into(),
        chain_id: "eip155:84532".into(),
        kind: "eip191".into(),
        nonce: format!("{:032x}", rand::random::<u128>()),
        issued_at: siwx::format_rfc3339(now_ms() - 1_000),
        expiration_time: Some(siwx::format_rfc3339(now_ms() + 300_000)),
        not_before: None,
        request_id: None,
        resources: Some(vec![uri.into()]),
        signature_scheme: None,
        signature: String::new(),
    };
    tweak(&mut s);
    let msg = s.message(&address.to_checksum(None), 84532);
    s.signature = format!(
        "0x{}",
        hex::encode(key.sign_message_sync(msg.as_bytes()).unwrap().as_bytes())
    );
    encode(&serde_json::to_value(&s).unwrap())
}

fn encode(v: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

pub(crate) async fn send(
    app: &TestApp,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", HOST);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Reply::read(app.send(req.body(Body::empty()).unwrap()).await).await
}

/// Opens `wallet`'s own account and grants it `amount` micro-dollars.
pub(crate) async fn fund_wallet(
    app: &TestApp,
    wallet: alloy::primitives::Address,
    amount: i64,
) -> String {
    let accounts = app.state.accounts.as_ref().unwrap();
    let account = accounts
        .wallet_spends_from(&format!("{wallet:#x}"))
        .await
        .unwrap();
    let r = grant(
        app,
        &format!("w-{}", rand::random::<u32>()),
        account.as_str(),
        amount,
        ADMIN,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    account.to_string()
}

async fn available(app: &TestApp, account: &str) -> i64 {
    let ledger = app.state.accounts.as_ref().unwrap().ledger();
    let id = tariff::ledger::AccountId::new(account).unwrap();
    ledger.balance(&id).await.unwrap().available()
}

#[tokio::test]
async fn a_402_carries_a_fresh_sign_in_challenge() {
    let app = app_with(&repo_rules(), &[]).await;
    let a = send(&app, "GET", "/search?q=bitcoin+price", &[]).await;
    let b = send(&app, "GET", "/search?q=bitcoin+price", &[]).await;
    let (ca, cb) = (
        a.payment_required()["extensions"]["sign-in-with-x"].clone(),
        b.payment_required()["extensions"]["sign-in-with-x"].clone(),
    );
    assert_eq!(ca["info"]["domain"], json!(HOST));
    assert_eq!(
        ca["info"]["uri"],
        json!(format!("http://{HOST}/search?q=bitcoin+price"))
    );
    assert_eq!(ca["info"]["version"], json!("1"));
    assert_eq!(
        ca["supportedChains"],
        json!([{"chainId": "eip155:84532", "type": "eip191"}])
    );
    let issued = siwx::parse_rfc3339(ca["info"]["issuedAt"].as_str().unwrap()).unwrap();
    let expires = siwx::parse_rfc3339(ca["info"]["expirationTime"].as_str().unwrap()).unwrap();
    assert_eq!(expires - issued, 300_000);
    assert_ne!(
        ca["info"]["nonce"], cb["info"]["nonce"],
        "a nonce per challenge"
    );
    // Everything else of the quote's 402 is the same.
    let strip = |r: &Reply| {
        let mut v = r.payment_required();
        v["extensions"]
            .as_object_mut()
            .unwrap()
            .remove("sign-in-with-x");
        v
    };
    assert_eq!(strip(&a), strip(&b));
    assert!(a.payment_required()["extensions"]["bazaar"].is_object());
}

#[tokio::test]
async fn a_signed_in_wallet_spends_its_credits_and_every_bad_sign_in_is_refused_with_its_reason() {
    let app = app_with(&repo_rules(), &[]).await;
    let wallet = PrivateKeySigner::random();
    let account = fund_wallet(&app, wallet.address(), 100_000).await;
    let uri = "/search?q=bitcoin+price";
    let url = format!("http://{HOST}{uri}");

    let header = sign_in(&wallet, &url, |_| {});
    let r = send(&app, "GET", uri, &[("sign-in-with-x", &header)]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let receipt: Value = serde_json::from_str(&r.header("tariff-receipt").unwrap()).unwrap();
    assert_eq!(
        (receipt["account"].as_str(), receipt["amount"].as_u64()),
        (Some(account.as_str()), Some(20_000))
    );
    assert_eq!(
        r.header("tariff-wallet"),
        Some(format!("{:#x}", wallet.address()))
    );
    assert_eq!(available(&app, &account).await, 80_000);

    let thief = PrivateKeySigner::random();
    let stolen = {
        let mut v: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(sign_in(&thief, &url, |_| {}))
                .unwrap(),
        )
        .unwrap();
        v["address"] = json!(wallet.address().to_checksum(None));
        encode(&v)
    };
    let hostile: Vec<(&str, String)> = vec![
        ("siwx_nonce_reused", header.clone()),
        (
            "invalid_siwx_domain_mismatch",
            sign_in(&wallet, &url, |s| s.domain = "evil.example".into()),
        ),
        (
            "invalid_siwx_uri_mismatch",
            sign_in(&wallet, &format!("http://{HOST}/about"), |_| {}),
        ),
        (
            "invalid_siwx_expired",
            sign_in(&wallet, &url, |s| {
                s.expiration_time = Some(siwx::format_rfc3339(now_ms() - 1))
            }),
        ),
        (
            "invalid_siwx_issued_at_too_old",
            sign_in(&wallet, &url, |s| {
                s.issued_at = siwx::format_rfc3339(now_ms() - 301_000)
            }),
        ),
        (
            "invalid_siwx_not_yet_valid",
            sign_in(&wallet, &url, |s| {
                s.not_before = Some(siwx::format_rfc3339(now_ms() + 120_000))
            }),
        ),
        (
            "invalid_siwx_unsupported_chain",
            sign_in(&wallet, &url, |s| s.chain_id = "eip155:1".into()),
        ),
        ("invalid_siwx_signature", stolen),
    ];
    for (want, h) in hostile {
        let r = send(&app, "GET", uri, &[("sign-in-with-x", &h)]).await;
        assert_eq!(
            (r.status, r.header("tariff-reason").as_deref()),
            (402, Some(want)),
            "{want}"
        );
        assert!(
            r.payment_required()["extensions"]["sign-in-with-x"].is_object(),
            "a fresh challenge"
        );
    }
    for (bad, why) in [
        ("%%%", "not base64"),
        (&*encode(&json!({"address": "0x1"})), "not a payload"),
    ] {
        let r = send(&app, "GET", uri, &[("sign-in-with-x", bad)]).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_siwx_header"),
            "{why}"
        );
    }
    assert_eq!(
        available(&app, &account).await,
        80_000,
        "nothing charged for a refused sign-in"
    );

    // A wallet without credits: the normal 402.
    let broke = PrivateKeySigner::random();
    let r = send(
        &app,
        "GET",
        uri,
        &[("sign-in-with-x", &sign_in(&broke, &url, |_| {}))],
    )
    .await;
    assert_eq!(
        (r.status, r.header("tariff-reason").as_deref()),
        (402, Some("insufficient_credits"))
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_wallet_gets_an_api_key_and_an_account_links_a_wallet() {
    let app = app_with(&repo_rules(), &[]).await;
    // A wallet obtains a key for its own account.
    let wallet = PrivateKeySigner::random();
    let key_url = format!("http://{HOST}/accounts/wallet");
    let r = send(
        &app,
        "POST",
        "/accounts/wallet",
        &[("sign-in-with-x", &sign_in(&wallet, &key_url, |_| {}))],
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let key = r.json()["api_key"].as_str().unwrap().to_string();
    let own = format!("agent:wallet:{:#x}", wallet.address());
    assert_eq!(me(&app, &key).await["account"], json!(own));
    // Unsigned, or signed for another endpoint: 401.
    let r = send(&app, "POST", "/accounts/wallet", &[]).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "missing_sign_in")
    );
    let r = send(
        &app,
        "POST",
        "/accounts/wallet",
        &[(
            "sign-in-with-x",
            &sign_in(&wallet, &format!("http://{HOST}/search"), |_| {}),
        )],
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_siwx_uri_mismatch")
    );

    // An API-key account links another wallet; that wallet's sign-ins then spend from it.
    let (account, api_key) = open(&app).await;
    assert_eq!(
        grant(&app, "g-link", &account, 50_000, ADMIN).await.status,
        200
    );
    let linked = PrivateKeySigner::random();
    let link_url = format!("http://{HOST}/accounts/me/wallets");
    let bearer = format!("Bearer {api_key}");
    let r = send(
        &app,
        "POST",
        "/accounts/me/wallets",
        &[
            ("authorization", &bearer),
            ("sign-in-with-x", &sign_in(&linked, &link_url, |_| {})),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        json!({"account": account, "wallet": format!("{:#x}", linked.address())})
    );
    let uri = "/search?q=bitcoin+price";
    let r = send(
        &app,
        "GET",
        uri,
        &[(
            "sign-in-with-x",
            &sign_in(&linked, &format!("http://{HOST}{uri}"), |_| {}),
        )],
    )
    .await;
    assert_eq!(r.status, 200);
    let receipt: Value = serde_json::from_str(&r.header("tariff-receipt").unwrap()).unwrap();
    assert_eq!(receipt["account"], json!(account));
    assert_eq!(me(&app, &api_key).await["available"], 30_000);
    // The same wallet cannot be linked to another account.
    let (_, other_key) = open(&app).await;
    let r = send(
        &app,
        "POST",
        "/accounts/me/wallets",
        &[
            ("authorization", &format!("Bearer {other_key}")),
            ("sign-in-with-x", &sign_in(&linked, &link_url, |_| {})),
        ],
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "wallet_already_linked")
    );
    // Linking needs the key too.
    let r = send(
        &app,
        "POST",
        "/accounts/me/wallets",
        &[("sign-in-with-x", &sign_in(&linked, &link_url, |_| {}))],
    )
    .await;
    assert_eq!(r.status, 401);
    app.assert_ledger_clean().await;
}

/// Wallet links, sign-in nonces and wallet keys follow one contract on SQLite and PostgreSQL:
/// a nonce is taken once under concurrency, old nonces are forgotten, a link is idempotent and
/// exclusive, and a wallet's key authenticates as its account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_accounts_follow_one_contract_on_every_backend() {
    use tariff::accounts::{Accounts, AccountsError};
    use tariff::ledger::Ledger;
    use tariff::time::Clock;
    for backend in crate::db::backends().await {
        let name = backend.db.backend_name();
        let clock = Clock::Manual(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
            1_000_000,
        )));
        let accounts = Accounts::new(
            backend.db.clone(),
            Ledger::new(backend.db.clone(), clock.clone()),
            clock.clone(),
        );
        accounts.ensure_system_accounts().await.unwrap();
        let wallet = format!("0x{}", "ab".repeat(20));
        let mut tasks = vec![];
        for _ in 0..8 {
            let (a, w) = (accounts.clone(), wallet.clone());
            tasks.push(tokio::spawn(async move {
                a.use_nonce("n0nce0001", &w, 0).await.is_ok()
            }));
        }
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1, "{name}: a nonce is taken once");
        assert!(
            matches!(
                accounts.use_nonce("n0nce0001", &wallet, 0).await,
                Err(AccountsError::NonceUsed(_))
            ),
            "{name}"
        );
        // Nonces older than the cut-off are forgotten (no message that old is accepted).
        assert!(
            accounts
                .use_nonce("n0nce0001", &wallet, 1_000_001)
                .await
                .is_ok(),
            "{name}"
        );

        // Any spelling of the address names the same account.
        let own = accounts
            .wallet_spends_from(&wallet.replace("ab", "AB"))
            .await
            .unwrap();
        assert_eq!(own.as_str(), format!("agent:wallet:{wallet}"), "{name}");
        let key = accounts.issue_key(&own).await.unwrap();
        assert_eq!(
            accounts.authenticate(key.expose()).await.unwrap(),
            own,
            "{name}"
        );

        let (agent, _) = accounts.open().await.unwrap();
        accounts.link_wallet(&wallet, &agent).await.unwrap();
        accounts.link_wallet(&wallet, &agent).await.unwrap();
        assert_eq!(
            accounts.links().account_of(&wallet).await.unwrap(),
            agent.as_str(),
            "{name}"
        );
        assert_eq!(
            accounts.wallet_spends_from(&wallet).await.unwrap(),
            agent,
            "{name}"
        );
        let (other, _) = accounts.open().await.unwrap();
        assert!(
            matches!(
                accounts.link_wallet(&wallet, &other).await,
                Err(AccountsError::WalletLinked { .. })
            ),
            "{name}"
        );
    }
}
