//! The top-up record's contract on every database backend: a top-up is credited once whatever
//! is presented again or concurrently (the first record wins and the ledger transfer is rebuilt
//! from it), an unknown account changes nothing, and a top-up paid through x402 whose request
//! died after settlement is booked by the reconciler as a top-up, to the account that asked.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use tariff::ledger::{AccountId, AccountKind, Ledger, NewAccount, TransferKind};
use tariff::money::UsdMicros;
use tariff::payment::Payments;
use tariff::payment::record::{NewPayment, StoredAuthorization};
use tariff::time::{Clock, UnixMillis};
use tariff::topup::record::{Booked, Source, TopupRow, Topups};

use crate::db::backends;

const T0: UnixMillis = UnixMillis(1_800_000_000_000);
const TKN: &str = "0x2279b7a0a67db372996a5fab50d91eaa73d2ebe6";

fn row(id: &str, account: &str, credit: u64) -> TopupRow {
    TopupRow {
        id: id.into(),
        account: account.into(),
        network: "eip155:84532".into(),
        token: TKN.into(),
        amount: "2500000000000000000".into(),
        credit: UsdMicros(credit),
        source: Source::Transfer,
        tx_hash: format!("0x{}", "ab".repeat(32)),
        payer: format!("0x{}", "cd".repeat(20)),
        valuation: json!({"block": 7, "credit": credit}),
        created_at_ms: 0,
    }
}

async fn agent(ledger: &Ledger, id: &str) {
    ledger
        .create_account(NewAccount {
            id: AccountId::new(id).unwrap(),
            kind: AccountKind::Agent,
            owner: None,
            allow_negative: false,
        })
        .await
        .unwrap();
}

async fn topup_credits(ledger: &Ledger, account: &str) -> Vec<u64> {
    ledger
        .history(&AccountId::new(account).unwrap(), None, 50)
        .await
        .unwrap()
        .transfers
        .iter()
        .filter(|t| t.kind == TransferKind::Topup)
        .map(|t| t.amount.get())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_up_is_credited_once_at_its_first_valuation() {
    for b in backends().await {
        let name = b.db.backend_name();
        let ledger = Ledger::new(b.db.clone(), Clock::manual(T0));
        let topups = Topups::new(b.db.clone(), ledger.clone());
        agent(&ledger, "agent:a").await;

        let first = topups
            .book(&row("tx:1", "agent:a", 5_000_000), T0)
            .await
            .unwrap();
        assert!(matches!(first, Booked::Credited(_)), "{name}");
        // Presented again with another valuation (the price moved): the first one stands.
        let again = topups
            .book(&row("tx:1", "agent:a", 7_000_000), UnixMillis(T0.0 + 1))
            .await
            .unwrap();
        assert_eq!(again, Booked::Already(first.row().clone()), "{name}");
        assert_eq!(again.row().credit, UsdMicros(5_000_000));
        assert_eq!(
            topup_credits(&ledger, "agent:a").await,
            vec![5_000_000],
            "{name}"
        );

        // Eight at once, each with its own valuation: one credit, the winner's.
        let tasks: Vec<_> = (0..8u64)
            .map(|i| {
                let t = topups.clone();
                tokio::spawn(async move {
                    t.book(&row("tx:2", "agent:a", 1_000_000 + i), T0)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut credited = Vec::new();
        for t in tasks {
            if let Booked::Credited(r) = t.await.unwrap() {
                credited.push(r.credit.get());
            }
        }
        assert_eq!(credited.len(), 1, "{name}: {credited:?}");
        let mut all = topup_credits(&ledger, "agent:a").await;
        all.sort();
        assert_eq!(all, vec![credited[0], 5_000_000], "{name}");
        let balance = ledger
            .balance(&AccountId::new("agent:a").unwrap())
            .await
            .unwrap();
        assert_eq!(balance.available(), (5_000_000 + credited[0]) as i64);

        // An account that does not exist: refused, nothing recorded or moved.
        assert!(
            topups
                .book(&row("tx:3", "agent:nobody", 1_000_000), T0)
                .await
                .is_err()
        );
        assert!(topups.get("tx:3").await.unwrap().is_none(), "{name}");

        // The account's view and its daily sum.
        let listed = topups.of_account("agent:a", 10).await.unwrap();
        assert_eq!(listed.len(), 2, "{name}");
        assert_eq!(listed[0].valuation["block"], 7);
        assert_eq!(
            topups.credited_since("agent:a", T0).await.unwrap(),
            UsdMicros(5_000_000 + credited[0])
        );
        assert_eq!(
            topups
                .credited_since("agent:a", UnixMillis(T0.0 + 1))
                .await
                .unwrap(),
            UsdMicros(0),
            "{name}: both were recorded at T0"
        );
        assert!(ledger.check().await.unwrap().is_clean(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_books_a_settled_top_up_payment_to_the_account_that_asked() {
    for b in backends().await {
        let name = b.db.backend_name();
        let clock = Clock::manual(T0);
        let ledger = Ledger::new(b.db.clone(), clock.clone());
        agent(&ledger, "agent:buyer").await;
        let payments = Arc::new(Payments::new(
            b.db.clone(),
            ledger.clone(),
            HashMap::new(),
            clock.clone(),
            0,
        ));
        let payer = format!("0x{}", "ee".repeat(20));
        let new = NewPayment {
            id: "pay_topup1".into(),
            network: "eip155:84532".into(),
            asset: TKN.into(),
            payer: payer.clone(),
            nonce: format!("0x{}", "01".repeat(32)),
            pay_to: format!("0x{}", "77".repeat(20)),
            amount: "2500000000000000000".into(),
            price_micros: 5_000_000,
            quote_id: format!("q_{}", "0".repeat(32)),
            request_hash: "11".repeat(32),
            x402_version: 2,
            mode: "local",
            authorization: StoredAuthorization {
                from: payer.clone(),
                to: format!("0x{}", "77".repeat(20)),
                value: "2500000000000000000".into(),
                valid_after: "0".into(),
                valid_before: "2000000000".into(),
                nonce: format!("0x{}", "01".repeat(32)),
                signature: format!("0x{}", "ee".repeat(65)),
                method: Some("permit2".into()),
                scheme: None,
                payload: None,
            },
            valid_before: 2_000_000_000,
            from_block: Some(1),
            topup: Some(
                json!({"account": "agent:buyer", "valuation": {"block": 9, "route": {"kind": "direct"}}})
                    .to_string(),
            ),
        };
        payments.store().claim(&new, T0).await.unwrap();
        // The request died after the money moved: the record says settled, nothing is booked.
        let tx = format!("0x{}", "12".repeat(32));
        assert!(
            payments
                .store()
                .settled("pay_topup1", &tx, T0)
                .await
                .unwrap()
        );
        let report = payments.reconcile_once().await.unwrap();
        assert_eq!(report.credited, 1, "{name}: {report:?}");
        let booked = payments
            .topups()
            .get(&TopupRow::x402_id("pay_topup1"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: no top-up row"));
        assert_eq!(
            (booked.account.as_str(), booked.credit, booked.source),
            ("agent:buyer", UsdMicros(5_000_000), Source::X402),
            "{name}"
        );
        assert_eq!(booked.valuation["route"]["kind"], "direct", "{name}");
        assert_eq!(topup_credits(&ledger, "agent:buyer").await, vec![5_000_000]);
        // Not the payer's wallet account, and never charged as a request.
        let wallet = ledger
            .balance(&AccountId::new(format!("agent:wallet:{payer}")).unwrap())
            .await;
        assert!(
            wallet.is_err() || wallet.unwrap().available() == 0,
            "{name}"
        );
        let again = payments.reconcile_once().await.unwrap();
        assert_eq!(again.examined, 0, "{name}: credited is final");
        assert!(ledger.check().await.unwrap().is_clean(), "{name}");
    }
}
