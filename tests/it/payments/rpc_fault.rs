//! The chain RPC cut and restored while paid requests run: every case fails closed with its
//! 503 reason, the gateway recovers by itself, and afterwards (the reconciler having run)
//! every payer's money that moved on chain is credited exactly once and nothing else is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use tariff::ledger::TransferKind;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{Chain, Draft, PAY_TO, b64, get_with, ledger_of, local_vars, quote};
use crate::harness::{TempDir, TestApp, repo_rules};

/// A TCP proxy in front of the RPC that can be cut: while down it closes new connections at
/// once and severs the open ones, as a node restart or a network partition would.
struct Cuttable {
    url: String,
    up: watch::Sender<bool>,
}

impl Cuttable {
    async fn start(target: &str) -> Cuttable {
        let target: SocketAddr = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (up, rx) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut rx = rx.clone();
                if !*rx.borrow() {
                    continue; // dropped: the connection closes
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Cuttable { url, up }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

async fn pay(app: &TestApp, payer: &PrivateKeySigner, uri: &str) -> crate::harness::Reply {
    let (_, accepted) = quote(app, uri).await;
    let header = b64(&Draft::honest(payer, &accepted).v2(payer));
    get_with(app, uri, &[("payment-signature", header)]).await
}

#[derive(Debug, Default)]
struct Tally {
    served: u64,
    chain_down: u64,
    other: Vec<(u16, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_rpc_going_away_under_load_fails_closed_and_recovers_without_double_credits() {
    let chain = Chain::start().await;
    let proxy = Cuttable::start(&chain.rpc()).await;
    let dir = TempDir::new("rpc-fault");
    let config = dir.write(
        "tariff.toml",
        "[payments]\nreconcile_after_seconds = 0\nreconcile_interval_seconds = 3600\n",
    );
    let mut vars: Vec<_> = local_vars(&chain)
        .into_iter()
        .filter(|(k, _)| *k != "TARIFF_RPC_URL")
        .collect();
    vars.push(("TARIFF_RPC_URL", proxy.url.clone()));
    vars.push(("TARIFF_CONFIG", config.display().to_string()));
    let app = Arc::new(TestApp::start(&repo_rules(), &vars).await);

    const FUNDS: u128 = 10_000_000;
    let mut payers = Vec::new();
    for _ in 0..3 {
        payers.push(chain.payer(FUNDS).await);
    }
    let pay_to_before = chain.balance(PAY_TO).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = payers
        .iter()
        .cloned()
        .enumerate()
        .map(|(c, payer)| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let mut t = Tally::default();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let r = pay(&app, &payer, &format!("/search?q=rpc+fault+{c}+{i}")).await;
                    match (r.status, r.error_code().as_str()) {
                        (200, _) => t.served += 1,
                        (503, "chain_unavailable" | "settlement_pending") => t.chain_down += 1,
                        (s, code) => t.other.push((s, code.to_string())),
                    }
                }
                t
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.set(false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.set(true);
    // Back by itself: a paid request is served again.
    let probe = chain.payer(FUNDS).await;
    let mut recovered = false;
    for i in 0..50 {
        if pay(&app, &probe, &format!("/search?q=after+the+rpc+{i}"))
            .await
            .status
            == 200
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "paid requests did not come back after the RPC did"
    );
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for c in clients {
        let t = c.await.unwrap();
        all.served += t.served;
        all.chain_down += t.chain_down;
        all.other.extend(t.other);
    }
    eprintln!("rpc fault tally: {all:?}");
    assert!(all.other.is_empty(), "unexpected answers: {all:?}");
    assert!(all.chain_down > 0, "the outage was not seen: {all:?}");
    assert!(all.served > 0, "{all:?}");

    // The reconciler settles what the outage left open (a settlement sent whose receipt never
    // came back); then money moved on chain and credits match payer by payer.
    let payments = app.state.payments.as_ref().unwrap();
    for _ in 0..3 {
        payments.reconcile_once().await.unwrap();
    }
    payers.push(probe);
    let mut served_by_ledger = 0;
    let mut received = 0;
    for payer in &payers {
        let spent = FUNDS - chain.balance(&format!("{:#x}", payer.address())).await;
        let entries = ledger_of(&app, payer.address()).await;
        let credited: u128 = entries
            .iter()
            .filter(|(k, _)| *k == TransferKind::PaymentCredit)
            .map(|(_, a)| u128::from(*a))
            .sum();
        assert_eq!(credited, spent, "{:#x}: {entries:?}", payer.address());
        served_by_ledger += entries
            .iter()
            .filter(|(k, _)| *k == TransferKind::RequestDebit)
            .count() as u64;
        received += spent;
    }
    // Every answer served was paid for; a payment that landed for an answer not served is
    // credited (spendable), never lost.
    // (the recovery probe was served too)
    assert!(served_by_ledger > all.served, "{all:?}");
    assert_eq!(chain.balance(PAY_TO).await - pay_to_before, received);
    app.assert_ledger_clean().await;
}
