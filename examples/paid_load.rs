//! Load generator for `scripts/bench-paid`: unpaid 402s or full x402 v2 paid requests against a
//! running `tariff serve` that settles locally on an anvil chain.
//!
//!   cargo run --release --example paid_load -- --url http://127.0.0.1:8402 \
//!       --rpc http://127.0.0.1:8545 --mode paid --requests 300 --concurrency 16
//!
//! `--mode baseline`: N GETs of distinct `/search?q=load+<tag>+<i>`, each expected to be a 402
//! (the unpaid quote path). `--mode paid`: for each i, the same GET, then the `PAYMENT-REQUIRED`
//! header is decoded and an honest v2 payment for `accepts[0]` is signed and sent back as
//! `PAYMENT-SIGNATURE`; a 200 counts as ok. Nothing is pre-signed: each timed request is the 402
//! plus the signed retry. In paid mode a fresh payer key is minted TestUSDC first (open `mint`,
//! sent from anvil's first unlocked account), outside the timing.
//!
//! Prints one JSON line on stdout: {mode, requests, ok, failed, seconds, rps, p50_ms, p99_ms,
//! max_ms}, where rps = ok / seconds and the latencies are over the ok requests. The first three
//! failures (status and body) go to stderr.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{SolCall, SolStruct};
use anyhow::{Context, anyhow, bail};
use base64::Engine;
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use tariff::payment::scheme::Terms;
use tariff::payment::scheme::exact_eip3009::TransferWithAuthorization;
use tariff::x402::codec::decode_header;

sol! {
    function mint(address to, uint256 amount);
}

/// TestUSDC at the Base Sepolia USDC address (`node tests/interop/chain.mjs setup`).
const USDC: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Baseline,
    Paid,
}

#[derive(Parser, Debug)]
#[command(about = "x402 load generator for scripts/bench-paid")]
struct Args {
    /// Base URL of the gateway, e.g. http://127.0.0.1:8402
    #[arg(long)]
    url: String,
    /// anvil JSON-RPC URL (paid mode: the payer is minted TestUSDC there)
    #[arg(long)]
    rpc: Option<String>,
    #[arg(long, default_value_t = 300)]
    requests: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, value_enum)]
    mode: Mode,
    /// Makes this run's queries distinct from other runs' (default: random).
    #[arg(long)]
    tag: Option<String>,
    /// TestUSDC base units minted to the payer in paid mode.
    #[arg(long, default_value_t = 1_000_000_000_000)]
    mint: u128,
    /// Per HTTP request timeout in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Also writes every ok request's latency (ms, sorted) to this file, one per line.
    #[arg(long)]
    dump: Option<std::path::PathBuf>,
}

struct Shared {
    http: reqwest::Client,
    base: String,
    tag: String,
    mode: Mode,
    payer: PrivateKeySigner,
    requests: usize,
    next: AtomicUsize,
    failed: AtomicUsize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.requests == 0 || args.concurrency == 0 {
        bail!("--requests and --concurrency must be positive");
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let payer = PrivateKeySigner::random();
    if args.mode == Mode::Paid && args.mint > 0 {
        let rpc = args
            .rpc
            .as_deref()
            .context("--rpc is required in paid mode")?;
        mint_to(&http, rpc, payer.address(), args.mint).await?;
    }
    let shared = Arc::new(Shared {
        http,
        base: args.url.trim_end_matches('/').to_string(),
        tag: args
            .tag
            .clone()
            .unwrap_or_else(|| format!("{:08x}", rand::random::<u32>())),
        mode: args.mode,
        payer,
        requests: args.requests,
        next: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });

    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.min(args.requests))
        .map(|_| tokio::spawn(worker(shared.clone())))
        .collect();
    let mut latencies = Vec::with_capacity(args.requests);
    for w in workers {
        latencies.extend(w.await?);
    }
    let seconds = started.elapsed().as_secs_f64();

    latencies.sort_by(f64::total_cmp);
    let ok = latencies.len();
    let pct = |p: f64| -> Option<f64> {
        let n = latencies.len();
        (n > 0).then(|| latencies[((p * n as f64).ceil() as usize).clamp(1, n) - 1])
    };
    if let Some(path) = &args.dump {
        let text: String = latencies.iter().map(|l| format!("{l:.3}\n")).collect();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let line = json!({
        "mode": match args.mode { Mode::Baseline => "baseline", Mode::Paid => "paid" },
        "requests": args.requests,
        "ok": ok,
        "failed": shared.failed.load(Ordering::Relaxed),
        "seconds": round(seconds),
        "rps": round(ok as f64 / seconds),
        "p50_ms": pct(0.50).map(round),
        "p99_ms": pct(0.99).map(round),
        "max_ms": latencies.last().copied().map(round),
    });
    println!("{line}");
    Ok(())
}

/// Takes request numbers until all are done; returns the latencies (ms) of the ok ones.
async fn worker(s: Arc<Shared>) -> Vec<f64> {
    let mut latencies = Vec::new();
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= s.requests {
            return latencies;
        }
        let url = format!("{}/search?q=load+{}+{i}", s.base, s.tag);
        let t0 = Instant::now();
        let result = match s.mode {
            Mode::Baseline => unpaid(&s, &url).await.map(|_| ()),
            Mode::Paid => paid(&s, &url).await,
        };
        match result {
            Ok(()) => latencies.push(t0.elapsed().as_secs_f64() * 1000.0),
            Err(e) => {
                let n = s.failed.fetch_add(1, Ordering::Relaxed);
                if n < 3 {
                    eprintln!("[paid_load] request {i} failed: {e:#}");
                }
            }
        }
    }
}

/// The 402 for `url` and its decoded `PAYMENT-REQUIRED` header.
async fn unpaid(s: &Shared, url: &str) -> anyhow::Result<Value> {
    let resp = s.http.get(url).send().await?;
    let status = resp.status();
    let header = resp
        .headers()
        .get("payment-required")
        .map(|v| v.to_str().map(str::to_string));
    let body = resp.bytes().await?;
    if status.as_u16() != 402 {
        bail!(
            "GET answered {status}, expected 402: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let header = header.context("402 without a PAYMENT-REQUIRED header")??;
    decode_header::<Value>(&header, 64 * 1024).map_err(|e| anyhow!("PAYMENT-REQUIRED: {e}"))
}

/// The 402, then the paid retry; ok only on 200.
async fn paid(s: &Shared, url: &str) -> anyhow::Result<()> {
    let required = unpaid(s, url).await?;
    let accepted = &required["accepts"][0];
    let payment = sign_v2(&s.payer, accepted, url)?;
    let header = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&payment)?);
    let resp = s
        .http
        .get(url)
        .header("payment-signature", header)
        .send()
        .await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if status.as_u16() != 200 {
        bail!(
            "paid retry answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// What an honest v2 client signs for `accepted`: value = amount, to = payTo, a fresh random
/// nonce, valid from 10 minutes ago until `maxTimeoutSeconds` from now.
fn sign_v2(payer: &PrivateKeySigner, accepted: &Value, url: &str) -> anyhow::Result<Value> {
    let s = |k: &str| {
        accepted[k]
            .as_str()
            .with_context(|| format!("accepts[0].{k} is missing"))
    };
    let extra = |k: &str| {
        accepted["extra"][k]
            .as_str()
            .with_context(|| format!("accepts[0].extra.{k} is missing"))
    };
    let network = s("network")?;
    let chain_id: u64 = network
        .strip_prefix("eip155:")
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("network {network} is not eip155:<chain id>"))?;
    let terms = Terms {
        chain_id,
        asset: s("asset")?.parse()?,
        pay_to: s("payTo")?.parse()?,
        amount: s("amount")?.parse()?,
        eip712_name: extra("name")?.to_string(),
        eip712_version: extra("version")?.to_string(),
        facilitator: None,
    };
    let timeout = accepted["maxTimeoutSeconds"]
        .as_u64()
        .context("accepts[0].maxTimeoutSeconds is missing")?;
    let now = now_secs();
    let message = TransferWithAuthorization {
        from: payer.address(),
        to: terms.pay_to,
        value: terms.amount,
        validAfter: U256::from(now - 600),
        validBefore: U256::from(now + timeout),
        nonce: B256::from(rand::random::<[u8; 32]>()),
    };
    let hash = message.eip712_signing_hash(&terms.token_domain());
    let signature = payer.sign_hash_sync(&hash)?;
    Ok(json!({
        "x402Version": 2,
        "resource": { "url": url },
        "accepted": accepted,
        "payload": {
            "signature": format!("0x{}", hex::encode(signature.as_bytes())),
            "authorization": {
                "from": format!("{:#x}", message.from),
                "to": format!("{:#x}", message.to),
                "value": message.value.to_string(),
                "validAfter": message.validAfter.to_string(),
                "validBefore": message.validBefore.to_string(),
                "nonce": format!("{:#x}", message.nonce),
            },
        },
    }))
}

async fn rpc(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    params: Value,
) -> anyhow::Result<Value> {
    let resp: Value = http
        .post(url)
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }))
        .send()
        .await
        .with_context(|| format!("{method}: RPC unreachable"))?
        .json()
        .await
        .with_context(|| format!("{method}: answer is not JSON"))?;
    if let Some(err) = resp.get("error") {
        bail!("{method}: {err}");
    }
    Ok(resp["result"].clone())
}

/// Mints `amount` TestUSDC to `to` from anvil's first (unlocked) account and waits for the
/// receipt.
async fn mint_to(
    http: &reqwest::Client,
    url: &str,
    to: Address,
    amount: u128,
) -> anyhow::Result<()> {
    let accounts = rpc(http, url, "eth_accounts", json!([])).await?;
    let from = accounts[0]
        .as_str()
        .context("anvil has no unlocked account")?
        .to_string();
    let data = mintCall {
        to,
        amount: U256::from(amount),
    }
    .abi_encode();
    let tx = rpc(
        http,
        url,
        "eth_sendTransaction",
        json!([{ "from": from, "to": USDC, "data": format!("0x{}", hex::encode(data)) }]),
    )
    .await?;
    let tx = tx.as_str().context("eth_sendTransaction: no hash")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let receipt = rpc(http, url, "eth_getTransactionReceipt", json!([tx])).await?;
        if !receipt.is_null() {
            if receipt["status"].as_str() != Some("0x1") {
                bail!("mint reverted: {receipt}");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("mint {tx} not mined within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
