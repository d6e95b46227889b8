//! What a top-up quote costs: pool reads over RPC plus the valuation, against a plain `eth_call`
//! round trip to the same node in the same run (these machines are noisy: compare ratios).
//!
//!   scripts/bench-topup        (installs anvil from npm, then `cargo bench --bench topup_quote`)
//!
//! Starts a private anvil (TARIFF_TEST_ANVIL_BIN), deploys real Uniswap v2/v3 with
//! tests/interop/uniswap.mjs, then measures, in group `topup_quote`:
//!   eth_call_baseline  one `balanceOf` eth_call (the floor of any pool read)
//!   value_direct_v3    100 TKN on its v3 pool (factory lookups, slot0, observe, QuoterV2,
//!                      depth; the v2 pair is read too and refused for its short history)
//!   value_via_weth     50 HOP through HOP/WETH and WETH/USDC (two hops, quoteExactInput)
//!   cost_credits       what $5.00 costs in TKN (a probe and one or two refinements)
//! and prints each median as a multiple of the baseline's.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use criterion::{Criterion, criterion_group};
use serde_json::Value;
use tariff::money::UsdMicros;
use tariff::payment::chain::Chain;
use tariff::topup::config::RawTopup;
use tariff::topup::route::Valuer;

struct Anvil(Child);

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    _anvil: Anvil,
    rt: tokio::runtime::Runtime,
    chain: Chain,
    valuer: Valuer,
    tkn: Address,
    hop: Address,
    usdc: Address,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn setup() -> Setup {
    let bin = std::env::var("TARIFF_TEST_ANVIL_BIN")
        .expect("TARIFF_TEST_ANVIL_BIN: run scripts/bench-topup (it installs anvil)");
    let port = free_port();
    let anvil = Anvil(
        Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--chain-id",
                "84532",
                "--silent",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("anvil starts"),
    );
    let rpc = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let chain = Chain::connect(&rpc, 84532, Duration::from_secs(10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.block_on(chain.latest_block()).is_err() {
        assert!(Instant::now() < deadline, "anvil did not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new("node")
        .args(["tests/interop/uniswap.mjs", "setup", "--rpc", &rpc])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("node runs");
    assert!(out.status.success(), "uniswap.mjs setup failed");
    let rig: Value = serde_json::from_slice(&out.stdout).expect("setup prints JSON");
    let a = |p: &str| -> Address {
        rig.pointer(p)
            .and_then(Value::as_str)
            .unwrap()
            .parse()
            .unwrap()
    };
    let raw: RawTopup = toml::from_str(&format!(
        r#"
network = "eip155:84532"
treasury = "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955"
weth = "{weth:#x}"
v2_factory = "{v2:#x}"
v3_factory = "{v3:#x}"
quoter = "{quoter:#x}"
fee_tiers = [500, 3000, 10000]
min_liquidity = "$10000"
max_price_impact_bps = 300
max_twap_deviation_bps = 500
twap_window_seconds = 600
accept = "any"
"#,
        weth = a("/tokens/WETH"),
        v2 = a("/v2/factory"),
        v3 = a("/v3/factory"),
        quoter = a("/v3/quoterV2"),
    ))
    .unwrap();
    let net = raw.build(0, None).unwrap();
    Setup {
        valuer: Valuer::new(net, chain.clone()),
        chain,
        rt,
        tkn: a("/tokens/TKN"),
        hop: a("/tokens/HOP"),
        usdc: a("/tokens/USDC"),
        _anvil: anvil,
    }
}

fn tokens(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18u8))
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let pool = s.valuer.net.treasury;
    // Each scenario must succeed before it is timed: a refusal would time the wrong path.
    s.rt.block_on(s.valuer.value(s.tkn, tokens(100)))
        .expect("TKN is valued");
    s.rt.block_on(s.valuer.value(s.hop, tokens(50)))
        .expect("HOP is valued");
    s.rt.block_on(s.valuer.cost(s.tkn, UsdMicros(5_000_000)))
        .expect("$5 in TKN");
    let mut g = c.benchmark_group("topup_quote");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    g.bench_function("eth_call_baseline", |b| {
        b.iter(|| s.rt.block_on(s.chain.balance_of(s.usdc, pool)).unwrap())
    });
    g.bench_function("value_direct_v3", |b| {
        b.iter(|| s.rt.block_on(s.valuer.value(s.tkn, tokens(100))).unwrap())
    });
    g.bench_function("value_via_weth", |b| {
        b.iter(|| s.rt.block_on(s.valuer.value(s.hop, tokens(50))).unwrap())
    });
    g.bench_function("cost_credits", |b| {
        b.iter(|| {
            s.rt.block_on(s.valuer.cost(s.tkn, UsdMicros(5_000_000)))
                .unwrap()
        })
    });
    g.finish();

    // The same, as multiples of the baseline measured right here (medians of 50).
    let median = |f: &dyn Fn()| {
        let mut t: Vec<Duration> = (0..50)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect();
        t.sort();
        t[t.len() / 2]
    };
    let base = median(&|| {
        s.rt.block_on(s.chain.balance_of(s.usdc, pool)).unwrap();
    });
    let rows: [(&str, Duration); 3] = [
        (
            "value_direct_v3",
            median(&|| {
                s.rt.block_on(s.valuer.value(s.tkn, tokens(100))).unwrap();
            }),
        ),
        (
            "value_via_weth",
            median(&|| {
                s.rt.block_on(s.valuer.value(s.hop, tokens(50))).unwrap();
            }),
        ),
        (
            "cost_credits",
            median(&|| {
                s.rt.block_on(s.valuer.cost(s.tkn, UsdMicros(5_000_000)))
                    .unwrap();
            }),
        ),
    ];
    println!("\ntopup_quote medians (ratio to one eth_call, {base:?}):");
    for (name, d) in rows {
        println!(
            "  {name:<16} {d:>12?}  {:>6.1}x",
            d.as_secs_f64() / base.as_secs_f64()
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
