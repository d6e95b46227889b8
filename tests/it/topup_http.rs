//! Top-ups end to end on real Uniswap v2/v3 (tests/interop/uniswap.mjs on anvil), a real
//! PostgreSQL ledger and Tariff settling locally:
//! - the quote endpoint and `tariff topup quote`: a healthy token valued within the haircut of
//!   what the pools' own quoter/router say (asked independently, from JavaScript), a two-hop
//!   token through WETH, and a specific refusal for each guard (thin pool, pushed spot, price
//!   impact, denied token, no pool, caps);
//! - an agent tops up both ways: the official v2 client pays the 402 of `POST /top-up` in a
//!   non-USDC token through Permit2, and plain transfers from its linked wallet are credited
//!   once each (twice or concurrently posted), only once confirmed, never from an unlinked
//!   wallet or to another address, and a fee-on-transfer token on what arrived; the credits
//!   then pay for requests and the ledger stays balanced.

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolCall;
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tariff::ledger::{AccountId, TransferKind};
use tariff::payment::scheme::exact_permit2::{EXACT_PROXY, PERMIT2};

use crate::credits::{ADMIN, open};
use crate::harness::{Reply, TempDir, TestApp, repo_rules};
use crate::payments::{FINGERPRINT_KEY, GAS_KEY, PAY_TO, node_script};
use crate::sign_in::{HOST, send, sign_in};
use crate::support::contract_artifact;
use crate::topup::Rig;

sol! {
    function transfer(address to, uint256 value) external returns (bool);
    function approve(address spender, uint256 value) external returns (bool);
    function balanceOf(address account) external view returns (uint256);
    function getAmountsOut(uint256 amountIn, address[] path) external view returns (uint256[] amounts);
}

/// anvil dev account 5: the agent's wallet (unlocked on anvil, and its key signs x402).
const AGENT_KEY: &str = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba";
/// anvil dev account 6: a wallet nobody linked.
const STRANGER_KEY: &str = "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e";
/// anvil dev account 7's address: the treasury (not the seller's usual payee).
const TREASURY_KEY: &str = "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356";
const DENIED: &str = "0x000000000000000000000000000000000000dEaD";
const WINDOW: u64 = 600;

fn address_of(key: &str) -> Address {
    key.parse::<PrivateKeySigner>().unwrap().address()
}

fn tokens(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18u8))
}

fn hex_data(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

impl Rig {
    fn a(&self, pointer: &str) -> String {
        format!("{:#x}", self.addr(pointer))
    }

    /// The `[[topup]]` of the test network on this rig.
    fn topup_toml(&self) -> String {
        format!(
            r#"
[[topup]]
network = "eip155:84532"
treasury = "{treasury:#x}"
weth = "{weth}"
v2_factory = "{v2}"
v3_factory = "{v3}"
quoter = "{quoter}"
fee_tiers = [500, 3000, 10000]
min_liquidity = "$10000"
max_price_impact_bps = 300
max_twap_deviation_bps = 500
twap_window_seconds = {WINDOW}
haircut_bps = 100
confirmations = 2
max_per_topup = "$500"
min_per_topup = "$1"
max_per_account_day = "$600"
accept = "any"
deny = ["{DENIED}"]
offer = ["{tkn}", "{hop}"]
quote_ttl_seconds = 120
"#,
            treasury = address_of(TREASURY_KEY),
            weth = self.a("/tokens/WETH"),
            v2 = self.a("/v2/factory"),
            v3 = self.a("/v3/factory"),
            quoter = self.a("/v3/quoterV2"),
            tkn = self.a("/tokens/TKN"),
            hop = self.a("/tokens/HOP"),
        )
    }

    fn vars(&self, dir: &TempDir) -> Vec<(&'static str, String)> {
        let file = dir.write("tariff.toml", &self.topup_toml());
        vec![
            ("TARIFF_CONFIG", file.display().to_string()),
            ("TARIFF_NETWORK", "eip155:84532".into()),
            ("TARIFF_PAY_TO", PAY_TO.into()),
            ("TARIFF_RPC_URL", self.node.rpc_url()),
            ("TARIFF_GAS_KEY", GAS_KEY.into()),
            ("TARIFF_FINGERPRINT_KEY", FINGERPRINT_KEY.into()),
            ("TARIFF_ADMIN_TOKEN", ADMIN.into()),
        ]
    }

    async fn app(&self, dir: &TempDir) -> TestApp {
        let mut vars = self.vars(dir);
        vars.push(("TARIFF_DATABASE_URL", crate::db::fresh_postgres().await));
        TestApp::start(&repo_rules(), &vars).await
    }

    /// Sends `amount` of `token` from the unlocked `from` to `to`; the receipt.
    async fn send_token(&self, from: Address, token: &str, to: Address, amount: U256) -> Value {
        self.node
            .send_tx(json!({
                "from": format!("{from:#x}"),
                "to": token,
                "data": hex_data(&transferCall { to, value: amount }.abi_encode()),
            }))
            .await
    }

    async fn balance(&self, token: &str, who: Address) -> U256 {
        self.chain
            .balance_of(token.parse().unwrap(), who)
            .await
            .unwrap()
    }

    async fn mine(&self, blocks: u64) {
        for _ in 0..blocks {
            self.node.rpc("evm_mine", json!([])).await.unwrap();
        }
    }

    /// What the real pools return for `amount` of `token` (the JS rig asks the v3 quoter and the
    /// v2 router for every route): the best route's USDC out.
    fn independent_quote(&self, token: &str, whole_tokens: &str) -> U256 {
        let q = node_script(&[
            "tests/interop/uniswap.mjs",
            "quote",
            "--rpc",
            &self.node.rpc_url(),
            "--token",
            token,
            "--amount",
            whole_tokens,
        ]);
        q["best"]["amountOut"]
            .as_str()
            .unwrap_or_else(|| panic!("{q}"))
            .parse()
            .unwrap()
    }
}

async fn quote(app: &TestApp, query: &str) -> Reply {
    app.get(&format!("/top-up/quote?network=eip155:84532&{query}"))
        .await
}

fn credit_of(v: &Value) -> U256 {
    U256::from(
        v["credits_micros"]
            .as_u64()
            .unwrap_or_else(|| panic!("{v}")),
    )
}

/// Within the haircut (1%) and a little rounding below `reference`, never above it.
fn within_haircut(credit: U256, reference: U256) {
    assert!(credit <= reference, "{credit} > {reference}");
    assert!(
        credit >= reference * U256::from(9_895u64) / U256::from(10_000u64),
        "{credit} is more than the haircut below {reference}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_follow_the_real_pools_and_every_guard_refuses_specifically() {
    let rig = Rig::start().await;
    let dir = TempDir::new("topup-quotes");
    let app = rig.app(&dir).await;
    let tkn = rig.a("/tokens/TKN");

    // A healthy token: 100 TKN is valued within the haircut of the best real swap (the v3 pool;
    // the v2 pair has no watched history yet), on a direct route.
    let r = quote(&app, &format!("token={tkn}&amount={}", tokens(100))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    within_haircut(credit_of(&v), rig.independent_quote(&tkn, "100"));
    assert_eq!(v["route"]["kind"], "direct", "{v}");
    assert_eq!(v["route"]["pools"][0]["version"], 3, "{v}");
    assert_eq!(v["route"]["pools"][0]["fee"], 3000, "{v}");
    assert!(v["block"].as_u64().unwrap() > 0 && v["expires_at_ms"].as_u64().is_some());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));

    // Two hops: HOP has no USDC pool, only HOP/WETH and WETH/USDC.
    let hop = rig.a("/tokens/HOP");
    let r = quote(&app, &format!("token={hop}&amount={}", tokens(50))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["route"]["kind"], "via_weth", "{v}");
    assert_eq!(v["route"]["pools"].as_array().unwrap().len(), 2, "{v}");
    within_haircut(credit_of(&v), rig.independent_quote(&hop, "50"));

    // What $5.00 of credits costs: the least amount found that is credited at least $5.00.
    let r = quote(&app, &format!("token={tkn}&credits=$5.00")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let credit = v["credits_micros"].as_u64().unwrap();
    assert!((5_000_000..5_010_000).contains(&credit), "{v}");

    // USDC is taken one for one.
    let usdc = rig.a("/tokens/USDC");
    let r = quote(&app, &format!("token={usdc}&amount=7000000")).await;
    assert_eq!(r.json()["credits_micros"], 7_000_000, "{}", r.json());

    // Each guard, with its reason.
    let thin = rig.a("/tokens/THIN");
    for (query, status, code) in [
        (
            format!("token={thin}&amount={}", tokens(1)),
            422,
            "topup_liquidity_too_low",
        ),
        (
            format!("token={tkn}&amount={}", tokens(100_000)),
            422,
            "topup_price_impact_too_high",
        ),
        (
            format!("token={DENIED}&amount=1"),
            422,
            "topup_token_denied",
        ),
        (
            "token=0x00000000000000000000000000000000000b0b00&amount=1".to_string(),
            422,
            "topup_no_pool",
        ),
        (
            format!("token={tkn}&amount={}", tokens(300)),
            422,
            "topup_above_cap",
        ),
        (
            format!("token={usdc}&amount=10"),
            422,
            "topup_below_minimum",
        ),
        (format!("token={tkn}"), 400, "amount_or_credits"),
        ("token=0x12&amount=1".to_string(), 400, "invalid_token"),
        (format!("token={tkn}&amount=-1"), 400, "invalid_amount"),
    ] {
        let r = quote(&app, &query).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (status, code),
            "{query}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let r = app
        .get(&format!(
            "/top-up/quote?network=eip155:8453&token={tkn}&amount=1"
        ))
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "topup_network_unsupported")
    );

    // The command line values the same way, from the config alone.
    let file = dir.path().join("tariff.toml");
    let env = rig.vars(&dir);
    let cli = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tariff"));
        cmd.args(["topup", "quote"]).args(args).env_clear();
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.env("TARIFF_CONFIG", &file);
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (
            out.status.code(),
            serde_json::from_str::<Value>(&text)
                .unwrap_or_else(|_| panic!("{text} {}", String::from_utf8_lossy(&out.stderr))),
        )
    };
    let (code, v) = cli(&["--token", &tkn, "--amount", &tokens(100).to_string()]);
    assert_eq!(code, Some(0), "{v}");
    within_haircut(credit_of(&v), rig.independent_quote(&tkn, "100"));
    let (code, v) = cli(&["--token", &thin, "--amount", &tokens(1).to_string()]);
    assert_eq!(
        (code, v["error"].as_str()),
        (Some(1), Some("topup_liquidity_too_low"))
    );

    // Manipulation: a large sell pushes the v3 spot far from its TWAP within the window; no
    // amount of TKN is credited while it lasts.
    rig.push("v3-TKN-USDC", "200000");
    for amount in [tokens(1), tokens(100)] {
        let r = quote(&app, &format!("token={tkn}&amount={amount}")).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (422, "topup_spot_deviates_from_twap"),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let r = quote(&app, &format!("token={tkn}&credits=$5.00")).await;
    assert_eq!(r.error_code(), "topup_spot_deviates_from_twap");
}

async fn post(app: &TestApp, uri: &str, key: &str, body: &Value) -> Reply {
    post_as(app, uri, ("authorization", &format!("Bearer {key}")), body).await
}

/// `POST /top-up/transfer` of transaction `tx` on the test network, as `key`'s account.
async fn claim(app: &TestApp, key: &str, tx: Value) -> Reply {
    let body = json!({"network": "eip155:84532", "tx_hash": tx});
    post(app, "/top-up/transfer", key, &body).await
}

async fn post_as(app: &TestApp, uri: &str, auth: (&str, &str), body: &Value) -> Reply {
    let req = Request::post(uri)
        .header("host", HOST)
        .header(auth.0, auth.1)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    Reply::read(app.send(req).await).await
}

async fn available(app: &TestApp, account: &str) -> i64 {
    let ledger = app.state.accounts.as_ref().unwrap().ledger();
    ledger
        .balance(&AccountId::new(account).unwrap())
        .await
        .unwrap()
        .available()
}

async fn topups_in_ledger(app: &TestApp, account: &str) -> Vec<u64> {
    let ledger = app.state.accounts.as_ref().unwrap().ledger();
    ledger
        .history(&AccountId::new(account).unwrap(), None, 100)
        .await
        .unwrap()
        .transfers
        .iter()
        .filter(|t| t.kind == TransferKind::Topup)
        .map(|t| t.amount.get())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_tops_up_in_other_tokens_both_ways_and_spends_the_credits() {
    let rig = Rig::start().await;
    for (address, artifact) in [
        (PERMIT2, "TestPermit2.runtime.bin"),
        (EXACT_PROXY, "X402ExactPermit2Proxy.runtime.bin"),
    ] {
        let code = format!("0x{}", contract_artifact(artifact).trim());
        rig.node
            .rpc("anvil_setCode", json!([format!("{address:#x}"), code]))
            .await
            .unwrap();
    }
    let dir = TempDir::new("topup-flow");
    let app = rig.app(&dir).await;
    let (tkn, fee) = (rig.a("/tokens/TKN"), rig.a("/tokens/FEE"));
    let treasury = address_of(TREASURY_KEY);
    let (agent, stranger) = (address_of(AGENT_KEY), address_of(STRANGER_KEY));
    let deployer: Address = rig.node.accounts().await[0].parse().unwrap();
    for who in [agent, stranger] {
        rig.send_token(deployer, &tkn, who, tokens(1_000)).await;
        rig.send_token(deployer, &fee, who, tokens(1_000)).await;
    }
    rig.node
        .send_tx(json!({
            "from": format!("{agent:#x}"), "to": tkn,
            "data": hex_data(&approveCall { spender: PERMIT2, value: U256::MAX }.abi_encode()),
        }))
        .await;
    // The v2 FEE/USDC pair starts being watched now (its TWAP needs the window).
    let r = quote(&app, &format!("token={fee}&amount={}", tokens(10))).await;
    assert_eq!(r.error_code(), "topup_twap_window_too_long");

    // The agent's account, with its wallet linked (proved by a sign-in).
    let (account, key) = open(&app).await;
    let agent_signer: PrivateKeySigner = AGENT_KEY.parse().unwrap();
    let r = send(
        &app,
        "POST",
        "/accounts/me/wallets",
        &[
            ("authorization", &format!("Bearer {key}")),
            (
                "sign-in-with-x",
                &sign_in(
                    &agent_signer,
                    &format!("http://{HOST}/accounts/me/wallets"),
                    |_| {},
                ),
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // 1. The 402 of a $5.00 top-up: USDC by EIP-3009, the offered tokens by Permit2.
    let r = post(&app, "/top-up", &key, &json!({"credits": "$5.00"})).await;
    assert_eq!(r.status, 402, "{}", String::from_utf8_lossy(&r.body));
    let required = r.payment_required();
    let accepts = required["accepts"].as_array().unwrap();
    let by_asset = |a: &str| {
        accepts
            .iter()
            .find(|o| o["asset"].as_str().unwrap().eq_ignore_ascii_case(a))
            .unwrap_or_else(|| panic!("{a} not offered: {required}"))
            .clone()
    };
    let usdc_offer = by_asset(&rig.a("/tokens/USDC"));
    assert_eq!(usdc_offer["amount"], "5000000");
    assert_eq!(usdc_offer["extra"]["name"], "USDC", "{usdc_offer}");
    let tkn_offer = by_asset(&tkn);
    assert_eq!(tkn_offer["extra"]["assetTransferMethod"], "permit2");
    assert_eq!(
        tkn_offer["payTo"].as_str().unwrap().to_lowercase(),
        format!("{treasury:#x}")
    );
    let tkn_amount: U256 = tkn_offer["amount"].as_str().unwrap().parse().unwrap();
    // About $5 at 2 USDC per TKN, plus the haircut and the swap's cost.
    assert!(
        tkn_amount > tokens(25) / U256::from(10u8) && tkn_amount < tokens(26) / U256::from(10u8),
        "{tkn_amount}"
    );
    by_asset(&rig.a("/tokens/HOP"));
    // Without an account there is nothing to credit.
    let r = app.post_json("/top-up", r#"{"credits":"$5.00"}"#).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "missing_api_key")
    );
    let r = post(&app, "/top-up", &key, &json!({"credits": "$5000"})).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "topup_above_cap")
    );
    let r = post(&app, "/top-up", &key, &json!({"credits": "five"})).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "invalid_credits")
    );

    // 2. The official v2 client pays it in TKN (the token it holds) through Permit2.
    let (base, _server) = crate::harness::serve(tariff::http::app(app.state.clone())).await;
    let treasury_before = rig.balance(&tkn, treasury).await;
    let agent_before = rig.balance(&tkn, agent).await;
    let url = format!("{base}/top-up");
    let (tkn2, key2) = (tkn.clone(), key.clone());
    let out = tokio::task::spawn_blocking(move || {
        node_script(&[
            "tests/interop/pay.mjs",
            "--client",
            "v2",
            "--key",
            AGENT_KEY,
            "--url",
            &url,
            "--method",
            "POST",
            "--body",
            r#"{"credits":"$5.00"}"#,
            "--bearer",
            &key2,
            "--allow-assets",
            "--asset",
            &tkn2,
        ])
    })
    .await
    .unwrap();
    assert_eq!(out["status"], json!(200), "{out}");
    let paid: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(paid["topup"]["source"], "x402", "{paid}");
    assert_eq!(paid["topup"]["credit"], 5_000_000, "{paid}");
    assert_eq!(paid["topup"]["token"], tkn.to_lowercase(), "{paid}");
    assert_eq!(
        rig.balance(&tkn, treasury).await,
        treasury_before + tkn_amount
    );
    assert_eq!(rig.balance(&tkn, agent).await, agent_before - tkn_amount);
    assert_eq!(available(&app, &account).await, 5_000_000);

    // 3. Plain transfers from the linked wallet: credited once confirmed, once.
    let receipt = rig.send_token(agent, &tkn, treasury, tokens(10)).await;
    let tx = receipt["transactionHash"].as_str().unwrap().to_string();
    let body = json!({"network": "eip155:84532", "tx_hash": tx});
    let r = post(&app, "/top-up/transfer", &key, &body).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "topup_not_confirmed"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        available(&app, &account).await,
        5_000_000,
        "nothing before confirmation"
    );
    rig.mine(1).await;
    let r = post(&app, "/top-up/transfer", &key, &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let first = r.json();
    assert_eq!(first["topups"][0]["status"], "credited", "{first}");
    let ten_tkn = first["topups"][0]["topup"]["credit"].as_u64().unwrap();
    within_haircut(U256::from(ten_tkn), rig.independent_quote(&tkn, "10"));
    let r = post(&app, "/top-up/transfer", &key, &body).await;
    assert_eq!(
        r.json()["topups"][0]["status"],
        "already_credited",
        "{}",
        r.json()
    );
    assert_eq!(r.json()["topups"][0]["topup"]["credit"], ten_tkn);
    assert_eq!(available(&app, &account).await, 5_000_000 + ten_tkn as i64);

    // The same new transaction posted twice at once: one credit.
    let receipt = rig.send_token(agent, &tkn, treasury, tokens(20)).await;
    rig.mine(1).await;
    let body = json!({"network": "eip155:84532", "tx_hash": receipt["transactionHash"]});
    let (a, b) = tokio::join!(
        post(&app, "/top-up/transfer", &key, &body),
        post(&app, "/top-up/transfer", &key, &body)
    );
    let mut statuses = [
        a.json()["topups"][0]["status"]
            .as_str()
            .unwrap()
            .to_string(),
        b.json()["topups"][0]["status"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    statuses.sort();
    assert_eq!(
        statuses,
        ["already_credited", "credited"],
        "{} {}",
        a.json(),
        b.json()
    );
    let twenty_tkn = a.json()["topups"][0]["topup"]["credit"].as_u64().unwrap();
    assert_eq!(b.json()["topups"][0]["topup"]["credit"], twenty_tkn);
    let after_transfers = 5_000_000 + (ten_tkn + twenty_tkn) as i64;
    assert_eq!(available(&app, &account).await, after_transfers);

    // Credits nothing: a wallet nobody linked, a transfer elsewhere, an unknown transaction.
    let receipt = rig.send_token(stranger, &tkn, treasury, tokens(10)).await;
    rig.mine(1).await;
    let strangers = json!({"network": "eip155:84532", "tx_hash": receipt["transactionHash"]});
    let r = post(&app, "/top-up/transfer", &key, &strangers).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "topup_wallet_not_linked")
    );
    // Its own wallet, signed in for this URL, is credited to the wallet's account instead.
    let stranger_signer: PrivateKeySigner = STRANGER_KEY.parse().unwrap();
    let signed = sign_in(
        &stranger_signer,
        &format!("http://{HOST}/top-up/transfer"),
        |_| {},
    );
    let r = post_as(
        &app,
        "/top-up/transfer",
        ("sign-in-with-x", &signed),
        &strangers,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["account"],
        format!("agent:wallet:{stranger:#x}"),
        "{}",
        r.json()
    );
    let r = post_as(
        &app,
        "/top-up/transfer",
        ("sign-in-with-x", &signed),
        &strangers,
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "siwx_nonce_reused"),
        "a sign-in is good once"
    );
    let receipt = rig.send_token(agent, &tkn, stranger, tokens(10)).await;
    rig.mine(1).await;
    let r = claim(&app, &key, json!(receipt["transactionHash"])).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "topup_no_transfer_to_treasury")
    );
    let r = claim(&app, &key, json!(format!("0x{}", "ab".repeat(32)))).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "topup_transaction_not_found")
    );
    let r = claim(&app, &key, json!("0x12")).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "invalid_tx_hash")
    );
    assert_eq!(available(&app, &account).await, after_transfers);

    // 4. The credits pay for requests.
    let r = send(
        &app,
        "GET",
        "/search?q=bitcoin+price",
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(available(&app, &account).await, after_transfers - 20_000);

    // 5. A fee-on-transfer token (valued on its v2 pair, once watched for the window) is
    // credited on what reached the treasury: 100 sent, 99 arrived.
    rig.node
        .rpc("evm_increaseTime", json!([WINDOW + 5]))
        .await
        .unwrap();
    rig.mine(1).await;
    let receipt = rig.send_token(agent, &fee, treasury, tokens(100)).await;
    rig.mine(1).await;
    let r = claim(&app, &key, json!(receipt["transactionHash"])).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let t = r.json()["topups"][0]["topup"].clone();
    assert_eq!(t["amount"], tokens(99).to_string(), "{t}");
    let router = rig
        .chain
        .read(
            rig.addr("/v2/router"),
            getAmountsOutCall {
                amountIn: tokens(99),
                path: vec![rig.addr("/tokens/FEE"), rig.addr("/tokens/USDC")],
            },
        )
        .await
        .unwrap();
    within_haircut(U256::from(t["credit"].as_u64().unwrap()), router[1]);
    assert_eq!(t["valuation"]["route"]["pools"][0]["version"], 2, "{t}");

    // Past the daily cap ($600: about $160 came in above), a top-up is refused before any
    // valuation.
    let r = post(&app, "/top-up", &key, &json!({"credits": "$500"})).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "topup_daily_cap_reached"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    // Everything is in the account's view and the ledger, which balances.
    let me = crate::credits::me(&app, &key).await;
    let listed = me["topups"].as_array().unwrap();
    assert_eq!(listed.len(), 4, "{me}");
    assert!(
        listed
            .iter()
            .all(|t| t["valuation"]["block"].as_u64().is_some()),
        "{me}"
    );
    let mut credits = topups_in_ledger(&app, &account).await;
    credits.sort();
    let mut expected = vec![
        5_000_000,
        ten_tkn,
        twenty_tkn,
        t["credit"].as_u64().unwrap(),
    ];
    expected.sort();
    assert_eq!(credits, expected);
    app.assert_ledger_clean().await;
}
