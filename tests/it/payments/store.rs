//! The payment record's contract, on every database backend: one claim per authorization
//! (also under concurrency), forward-only transitions, the reconciler's work list.

use tariff::payment::record::{Claim, NewPayment, PaymentStore, Status, StoredAuthorization};
use tariff::time::UnixMillis;

use crate::db::backends;

fn payment(id: &str, nonce: u8) -> NewPayment {
    NewPayment {
        id: id.into(),
        network: "eip155:84532".into(),
        asset: "0x036cbd53842c5426634e7929541ec2318f3dcf7e".into(),
        payer: format!("0x{}", "ab".repeat(20)),
        nonce: format!("0x{}", format!("{nonce:02x}").repeat(32)),
        pay_to: format!("0x{}", "cd".repeat(20)),
        amount: "20000".into(),
        price_micros: 20_000,
        quote_id: format!("q_{}", "0".repeat(32)),
        request_hash: "11".repeat(32),
        x402_version: 2,
        mode: "local",
        authorization: StoredAuthorization {
            from: format!("0x{}", "ab".repeat(20)),
            to: format!("0x{}", "cd".repeat(20)),
            value: "20000".into(),
            valid_after: "0".into(),
            valid_before: "2000000000".into(),
            nonce: format!("0x{}", format!("{nonce:02x}").repeat(32)),
            signature: format!("0x{}", "ee".repeat(65)),
            // Every other row carries a scheme's own payload, which must round-trip too.
            method: nonce.is_multiple_of(2).then(|| "permit2".to_string()),
            scheme: nonce.is_multiple_of(4).then(|| "upto".to_string()),
            payload: nonce
                .is_multiple_of(2)
                .then(|| serde_json::json!({"nonce": nonce.to_string()})),
        },
        valid_before: 2_000_000_000,
        from_block: Some(7),
        topup: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_records_follow_one_contract_on_every_backend() {
    for backend in backends().await {
        let name = backend.db.backend_name();
        let store = PaymentStore::new(backend.db.clone());
        let t = UnixMillis(1_000);

        // One claim per (network, asset, payer, nonce), whatever the payment id.
        assert!(
            matches!(
                store.claim(&payment("pay_a", 1), t).await.unwrap(),
                Claim::Taken
            ),
            "{name}"
        );
        match store.claim(&payment("pay_other_id", 1), t).await.unwrap() {
            Claim::Held(row) => assert_eq!(
                (row.id.as_str(), row.status),
                ("pay_a", Status::Claimed),
                "{name}"
            ),
            Claim::Taken => panic!("{name}: the same authorization was claimed twice"),
        }
        // Many concurrent claims of one new authorization: exactly one wins.
        let mut tasks = vec![];
        for i in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                matches!(
                    store
                        .claim(&payment(&format!("pay_race_{i}"), 2), t)
                        .await
                        .unwrap(),
                    Claim::Taken
                )
            }));
        }
        let mut won = 0;
        for task in tasks {
            won += usize::from(task.await.unwrap());
        }
        assert_eq!(won, 1, "{name}");

        // Forward only: settled cannot fail, credited needs settled first.
        assert!(!store.credited("pay_a", t).await.unwrap(), "{name}");
        // An `upto` charge: only down from what was claimed, only before a broadcast.
        let claimed = payment("pay_a", 1).price_micros;
        assert!(
            !store.charge("pay_a", "1", claimed + 1, t).await.unwrap(),
            "{name}: a charge above the claim"
        );
        assert!(
            store
                .charge("pay_a", "12000", claimed - 1, t)
                .await
                .unwrap(),
            "{name}"
        );
        let row = store.get("pay_a").await.unwrap().unwrap();
        assert_eq!(
            (row.amount.as_str(), row.price_micros),
            ("12000", claimed - 1),
            "{name}"
        );
        assert!(store.submitted("pay_a", "0xtx", t).await.unwrap(), "{name}");
        assert!(
            !store.charge("pay_a", "1", 1, t).await.unwrap(),
            "{name}: no charge after a broadcast"
        );
        assert!(
            store
                .settled("pay_a", "0xtx", UnixMillis(2_000))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !store.failed("pay_a", "late", t).await.unwrap(),
            "{name}: money that moved never fails"
        );
        let row = store.get("pay_a").await.unwrap().unwrap();
        assert_eq!(
            (row.status, row.tx_hash.as_deref()),
            (Status::Settled, Some("0xtx")),
            "{name}"
        );
        assert_eq!(
            row.authorization,
            payment("pay_a", 1).authorization,
            "{name}"
        );
        assert_eq!(row.from_block, Some(7), "{name}");

        // The work list holds open payments untouched since the cut-off.
        let open: Vec<String> = store
            .open_since(UnixMillis(1_500), 100)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(open.len(), 1, "{name}: {open:?}");
        assert!(open[0].starts_with("pay_race_"), "{name}: {open:?}");
        assert!(store.credited("pay_a", t).await.unwrap(), "{name}");
        assert!(
            !store.settled("pay_a", "0xother", t).await.unwrap(),
            "{name}: final"
        );
        let counts = store.counts().await.unwrap();
        assert_eq!(
            counts,
            vec![("claimed".to_string(), 1), ("credited".to_string(), 1)],
            "{name}"
        );
    }
}
