//! Ledger throughput: hold + post pairs per second on PostgreSQL. Run by `scripts/bench-ledger`,
//! which also runs pgbench's built-in simple-update workload on the same server as the baseline.
//!
//!   TARIFF_BENCH_DATABASE_URL=postgres://… BENCH_SECONDS=10 BENCH_CLIENTS=8 \
//!     cargo bench --bench ledger_throughput
//!
//! Each client spends from its own agent account (like pgbench's clients touching random rows),
//! so this measures the cost of a two-phase ledger write, not lock contention.

use std::time::{Duration, Instant};

use tariff::db::Db;
use tariff::ledger::{
    AccountId, AccountKind, Ledger, NewAccount, NewHold, NewTransfer, References, TransferId,
    TransferKind,
};
use tariff::money::UsdMicros;
use tariff::time::Clock;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let Ok(url) = std::env::var("TARIFF_BENCH_DATABASE_URL") else {
        // `cargo bench` runs every bench target; this one needs a server (scripts/bench-ledger).
        eprintln!("ledger_throughput: TARIFF_BENCH_DATABASE_URL not set; run scripts/bench-ledger");
        return;
    };
    let seconds = env_u64("BENCH_SECONDS", 10);
    let clients = env_u64("BENCH_CLIENTS", 8);
    let db = Db::connect(&url).await.expect("database");
    let ledger = Ledger::new(db, Clock::System);
    let id = |s: String| AccountId::new(s).unwrap();
    for (name, kind, neg) in [
        ("sys:revenue", AccountKind::System, false),
        ("sys:bench", AccountKind::System, true),
    ] {
        ledger
            .create_account(NewAccount {
                id: id(name.into()),
                kind,
                owner: None,
                allow_negative: neg,
            })
            .await
            .unwrap();
    }
    let run = format!("{:08x}", rand::random::<u32>());
    for c in 0..clients {
        let agent = id(format!("agent:bench-{run}-{c}"));
        ledger
            .create_account(NewAccount {
                id: agent.clone(),
                kind: AccountKind::Agent,
                owner: None,
                allow_negative: false,
            })
            .await
            .unwrap();
        ledger
            .transfer(NewTransfer {
                id: TransferId::new(format!("fund-{run}-{c}")).unwrap(),
                kind: TransferKind::Topup,
                debit: id("sys:bench".into()),
                credit: agent,
                amount: UsdMicros(1_000_000_000_000),
                refs: References::default(),
            })
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let ledger = ledger.clone();
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let agent = AccountId::new(format!("agent:bench-{run}-{c}")).unwrap();
            let revenue = AccountId::new("sys:revenue").unwrap();
            let mut done = 0u64;
            let mut latencies_us = Vec::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let hold = TransferId::new(format!("h-{run}-{c}-{done}")).unwrap();
                ledger
                    .hold(NewHold {
                        id: hold.clone(),
                        debit: agent.clone(),
                        credit: revenue.clone(),
                        amount: UsdMicros(20_000),
                        expires_at: Clock::System.now().plus_secs(60),
                        refs: References::default(),
                    })
                    .await
                    .unwrap();
                latencies_us.push(t0.elapsed().as_micros() as u64);
                let t1 = Instant::now();
                ledger
                    .post(
                        TransferId::new(format!("p-{run}-{c}-{done}")).unwrap(),
                        &hold,
                        UsdMicros(20_000),
                    )
                    .await
                    .unwrap();
                latencies_us.push(t1.elapsed().as_micros() as u64);
                done += 1;
            }
            (done, latencies_us)
        }));
    }
    let started = Instant::now();
    let mut total = 0;
    let mut latencies_us = Vec::new();
    for t in tasks {
        let (done, l) = t.await.unwrap();
        total += done;
        latencies_us.extend(l);
    }
    latencies_us.sort_unstable();
    let p99_ms = latencies_us
        .get(latencies_us.len() * 99 / 100)
        .map_or(0.0, |us| *us as f64 / 1000.0);
    let secs = started.elapsed().as_secs_f64();
    let report = ledger.check().await.unwrap();
    assert!(
        report.is_clean(),
        "ledger not clean after the bench: {report:?}"
    );
    // One parseable line for scripts/bench-ledger.
    println!(
        "LEDGER pairs={total} seconds={secs:.2} pairs_per_s={:.1} clients={clients} write_p99_ms={p99_ms:.2}",
        total as f64 / secs
    );
}
