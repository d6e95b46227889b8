//! The ledger's contract, operation by operation and error by error, on SQLite and PostgreSQL.
//! After every refused call the balances are asserted unchanged: a failed call changes nothing.

use tariff::ledger::{
    AccountKind, HistoryCursor, LedgerError, NewAccount, NewHold, References, TransferKind,
};
use tariff::money::UsdMicros;
use tariff::time::UnixMillis;

use super::{T0, acct, assert_clean, balances, fixtures, raw, tid, tr};

use TransferKind::{Adjustment, PaymentCredit, RequestDebit, Topup};

const ALL: [&str; 4] = ["sys:inflow", "sys:revenue", "agent:a", "agent:b"];

fn hold(id: &str, debit: &str, credit: &str, amount: u64, expires_at: UnixMillis) -> NewHold {
    NewHold {
        id: tid(id),
        debit: acct(debit),
        credit: acct(credit),
        amount: UsdMicros(amount),
        expires_at,
        refs: References::default(),
    }
}

#[tokio::test]
async fn accounts_are_created_idempotently_and_refuse_conflicts() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        let wallet = NewAccount {
            id: acct("agent:w"),
            kind: AccountKind::Agent,
            owner: Some("eip155:8453:0xabc".into()),
            allow_negative: false,
        };
        let first = l.create_account(wallet.clone()).await.unwrap();
        f.clock.advance_ms(5);
        let again = l.create_account(wallet.clone()).await.unwrap();
        assert_eq!(first, again, "{name}: a repeat returns the original");
        assert_eq!(
            l.account_by_owner("eip155:8453:0xabc").await.unwrap(),
            Some(first.clone()),
            "{name}"
        );
        assert_eq!(l.account_by_owner("nobody").await.unwrap(), None, "{name}");

        let other_kind = NewAccount {
            kind: AccountKind::System,
            ..wallet.clone()
        };
        let e = l.create_account(other_kind).await.unwrap_err();
        assert_eq!(
            e,
            LedgerError::Conflict {
                id: "agent:w".into(),
                field: "kind"
            },
            "{name}"
        );
        let other_owner = NewAccount {
            owner: None,
            ..wallet.clone()
        };
        assert_eq!(
            l.create_account(other_owner).await.unwrap_err().code(),
            "conflict",
            "{name}"
        );
        // The wallet already belongs to agent:w.
        let squatter = NewAccount {
            id: acct("agent:x"),
            ..wallet.clone()
        };
        assert_eq!(
            l.create_account(squatter).await.unwrap_err(),
            LedgerError::OwnerTaken {
                owner: "eip155:8453:0xabc".into(),
                account: acct("agent:w")
            },
            "{name}"
        );
        assert_eq!(
            l.account(&acct("agent:x")).await.unwrap_err().code(),
            "unknown_account",
            "{name}"
        );
        // Agents never go negative, not even by configuration.
        let e = l
            .create_account(NewAccount {
                id: acct("agent:neg"),
                kind: AccountKind::Agent,
                owner: None,
                allow_negative: true,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_request", "{name}");
        // ...and the schema agrees, should anything try behind the ledger's back.
        let sql = "INSERT INTO ledger_accounts (id, kind, allow_negative, created_at_ms) \
                   VALUES ('agent:rogue', 'agent', TRUE, 0)";
        assert!(raw(l.db(), sql).await.is_err(), "{name}");
    }
}

#[test]
fn ids_are_validated() {
    use tariff::ledger::{AccountId, TransferId};
    let too_long = "x".repeat(129);
    for bad in [
        "",
        "has space",
        "quote\"",
        "é",
        "hash#tag",
        too_long.as_str(),
    ] {
        assert_eq!(
            AccountId::new(bad).unwrap_err().code(),
            "invalid_id",
            "{bad:?}"
        );
        assert_eq!(
            TransferId::new(bad).unwrap_err().code(),
            "invalid_id",
            "{bad:?}"
        );
    }
    let longest = "x".repeat(128);
    for good in [
        "agent:42",
        "sys:inflow:eip155:8453:0xAbC",
        "pay.1_2-3",
        longest.as_str(),
    ] {
        assert!(AccountId::new(good).is_ok(), "{good:?}");
        assert!(TransferId::new(good).is_ok(), "{good:?}");
    }
    // Deserialising validates too.
    assert!(serde_json::from_str::<AccountId>("\"bad id\"").is_err());
    assert_eq!(
        serde_json::from_str::<TransferId>("\"t-1\"").unwrap(),
        TransferId::new("t-1").unwrap()
    );
}

#[tokio::test]
async fn transfers_move_money_and_replays_change_nothing() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        let mut pay = tr("pay-1", PaymentCredit, "sys:inflow", "agent:a", 1_000_000);
        pay.refs = References {
            chain_tx: Some("0xtx".into()),
            payer: Some("eip155:8453:0xabc".into()),
            nonce: Some("0x01".into()),
            ..References::default()
        };
        let t = l.transfer(pay.clone()).await.unwrap();
        assert_eq!(t.amount, UsdMicros(1_000_000), "{name}");
        assert_eq!(t.kind, PaymentCredit, "{name}");
        assert_eq!(t.refs, pay.refs, "{name}");
        assert_eq!(t.created_at, T0, "{name}");
        let debit = l
            .transfer(tr("req-1", RequestDebit, "agent:a", "sys:revenue", 20_000))
            .await
            .unwrap();
        assert!(debit.seq > t.seq, "{name}: seq grows");

        let [inflow, revenue, a, b] = balances(l, &ALL).await.try_into().unwrap();
        assert_eq!(inflow.posted(), -1_000_000, "{name}");
        assert_eq!(revenue.posted(), 20_000, "{name}");
        assert_eq!(a.posted(), 980_000, "{name}");
        assert_eq!(a.available(), 980_000, "{name}");
        assert_eq!(a.held(), UsdMicros(0), "{name}");
        assert_eq!(b.posted(), 0, "{name}");
        let before = balances(l, &ALL).await;

        // A retry, even later, returns the original and changes nothing.
        f.clock.advance_ms(60_000);
        assert_eq!(l.transfer(pay.clone()).await.unwrap(), t, "{name}");
        assert_eq!(balances(l, &ALL).await, before, "{name}");

        // The same id with any other field is a conflict naming the field.
        let cases: Vec<(tariff::ledger::NewTransfer, &str)> = vec![
            (
                tr("pay-1", PaymentCredit, "sys:inflow", "agent:a", 1_000_001),
                "amount",
            ),
            (
                tr("pay-1", Topup, "sys:inflow", "agent:a", 1_000_000),
                "kind",
            ),
            (
                tr("pay-1", PaymentCredit, "sys:inflow", "agent:b", 1_000_000),
                "credit_account",
            ),
            (
                {
                    let mut p = pay.clone();
                    p.refs.nonce = Some("0x02".into());
                    p
                },
                "nonce",
            ),
            (
                {
                    let mut p = pay.clone();
                    p.refs.quote_id = Some("q".into());
                    p
                },
                "quote_id",
            ),
        ];
        for (changed, field) in cases {
            assert_eq!(
                l.transfer(changed).await.unwrap_err(),
                LedgerError::Conflict {
                    id: "pay-1".into(),
                    field
                },
                "{name}"
            );
        }
        assert_eq!(balances(l, &ALL).await, before, "{name}");
        assert_clean(l, name).await;
    }
}

#[tokio::test]
async fn refused_transfers_change_nothing() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        l.transfer(tr("fund", Topup, "sys:inflow", "agent:a", 500))
            .await
            .unwrap();
        let before = balances(l, &ALL).await;
        let refused = [
            (
                tr("t1", RequestDebit, "agent:a", "sys:revenue", 501),
                LedgerError::InsufficientFunds {
                    account: acct("agent:a"),
                    available: 500,
                    needed: 501,
                },
            ),
            (
                tr("t2", RequestDebit, "agent:b", "sys:revenue", 1),
                LedgerError::InsufficientFunds {
                    account: acct("agent:b"),
                    available: 0,
                    needed: 1,
                },
            ),
            // System accounts without allow_negative are bounded too.
            (
                tr("t3", Adjustment, "sys:revenue", "agent:a", 1),
                LedgerError::InsufficientFunds {
                    account: acct("sys:revenue"),
                    available: 0,
                    needed: 1,
                },
            ),
            (
                tr("t4", Topup, "sys:nowhere", "agent:a", 1),
                LedgerError::UnknownAccount(acct("sys:nowhere")),
            ),
            (
                tr("t5", RequestDebit, "agent:a", "agent:ghost", 1),
                LedgerError::UnknownAccount(acct("agent:ghost")),
            ),
            (
                tr("t6", Topup, "agent:a", "agent:a", 1),
                LedgerError::SameAccount,
            ),
            (
                tr("t7", Topup, "sys:inflow", "agent:a", 0),
                LedgerError::ZeroAmount,
            ),
            (
                tr("t8", Topup, "sys:inflow", "agent:a", i64::MAX as u64 + 1),
                LedgerError::AmountTooLarge(i64::MAX as u64 + 1),
            ),
            (
                tr("t9", Topup, "sys:inflow", "agent:a", u64::MAX),
                LedgerError::AmountTooLarge(u64::MAX),
            ),
        ];
        for (t, expected) in refused {
            assert_eq!(l.transfer(t).await.unwrap_err(), expected, "{name}");
            assert_eq!(balances(l, &ALL).await, before, "{name}: {expected}");
        }
        // Two-phase kinds are not plain transfers.
        for kind in [TransferKind::Hold, TransferKind::Post, TransferKind::Void] {
            let e = l
                .transfer(tr("t10", kind, "sys:inflow", "agent:a", 1))
                .await
                .unwrap_err();
            assert_eq!(e.code(), "invalid_request", "{name}");
        }
        // Refused ids are not remembered: once affordable, the same id goes through.
        l.transfer(tr("fund-2", Topup, "sys:inflow", "agent:a", 1))
            .await
            .unwrap();
        l.transfer(tr("t1", RequestDebit, "agent:a", "sys:revenue", 501))
            .await
            .unwrap();
        assert_eq!(
            l.balance(&acct("agent:a")).await.unwrap().posted(),
            0,
            "{name}"
        );
        // Overflowing a counter is refused, not wrapped: take sys:inflow's debits to the limit.
        let debited = l
            .balance(&acct("sys:inflow"))
            .await
            .unwrap()
            .counters
            .debits_posted;
        assert_eq!(debited, 501, "{name}");
        l.transfer(tr(
            "big",
            Topup,
            "sys:inflow",
            "agent:b",
            i64::MAX as u64 - debited,
        ))
        .await
        .unwrap();
        let before = balances(l, &ALL).await;
        assert_eq!(
            l.transfer(tr("big-2", Topup, "sys:inflow", "agent:b", 1))
                .await
                .unwrap_err(),
            LedgerError::Overflow(acct("sys:inflow")),
            "{name}"
        );
        assert_eq!(balances(l, &ALL).await, before, "{name}");
        assert_clean(l, name).await;
    }
}

#[tokio::test]
async fn linked_transfers_commit_all_or_none_and_replay_as_a_group() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        // Pay-per-request: the payment credit and the request debit land together. The debit
        // comes first: bounds apply to the net effect of the group.
        let group = [
            tr("req-7", RequestDebit, "agent:a", "sys:revenue", 30_000),
            tr("pay-7", PaymentCredit, "sys:inflow", "agent:a", 30_000),
        ];
        let written = l.transfer_linked(&group).await.unwrap();
        assert_eq!(written.len(), 2, "{name}");
        assert!(
            written.iter().all(|t| t.group_id == Some(tid("req-7"))),
            "{name}"
        );
        let after = balances(l, &ALL).await;
        assert_eq!(after[1].posted(), 30_000, "{name}");
        assert_eq!(after[2].posted(), 0, "{name}");

        // Replaying the group returns the originals.
        assert_eq!(l.transfer_linked(&group).await.unwrap(), written, "{name}");
        // A changed, shortened or extended group is a conflict, and nothing moves.
        let mut changed = group.clone();
        changed[1].amount = UsdMicros(30_001);
        assert_eq!(
            l.transfer_linked(&changed).await.unwrap_err(),
            LedgerError::Conflict {
                id: "pay-7".into(),
                field: "amount"
            },
            "{name}"
        );
        let extended = [
            group[0].clone(),
            group[1].clone(),
            tr("fee-7", RequestDebit, "agent:a", "sys:revenue", 1),
        ];
        assert_eq!(
            l.transfer_linked(&extended).await.unwrap_err().code(),
            "conflict",
            "{name}"
        );
        assert_eq!(
            l.transfer(group[0].clone()).await.unwrap_err(),
            LedgerError::Conflict {
                id: "req-7".into(),
                field: "group_id"
            },
            "{name}"
        );
        let mut dropped_member = group.clone();
        dropped_member[1] = tr("pay-8", PaymentCredit, "sys:inflow", "agent:a", 30_000);
        assert_eq!(
            l.transfer_linked(&dropped_member).await.unwrap_err().code(),
            "conflict",
            "{name}"
        );
        assert_eq!(balances(l, &ALL).await, after, "{name}");

        // One failing leg refuses the whole group.
        let failing = [
            tr("g2-a", PaymentCredit, "sys:inflow", "agent:b", 10),
            tr("g2-b", RequestDebit, "agent:b", "sys:revenue", 5),
            tr("g2-c", RequestDebit, "agent:a", "sys:revenue", 1),
        ];
        assert_eq!(
            l.transfer_linked(&failing).await.unwrap_err(),
            LedgerError::InsufficientFunds {
                account: acct("agent:a"),
                available: 0,
                needed: 1
            },
            "{name}"
        );
        let failing_late = [
            tr("g3-a", PaymentCredit, "sys:inflow", "agent:b", 10),
            tr("g3-b", Topup, "sys:inflow", "sys:ghost", 5),
        ];
        assert_eq!(
            l.transfer_linked(&failing_late).await.unwrap_err().code(),
            "unknown_account",
            "{name}"
        );
        assert_eq!(balances(l, &ALL).await, after, "{name}");
        assert!(
            l.history(&acct("agent:b"), None, 10)
                .await
                .unwrap()
                .transfers
                .is_empty(),
            "{name}: no trace of refused groups"
        );
        // Malformed groups.
        assert_eq!(
            l.transfer_linked(&[]).await.unwrap_err().code(),
            "invalid_request"
        );
        let twice = [group[0].clone(), group[0].clone()];
        assert_eq!(
            l.transfer_linked(&twice).await.unwrap_err().code(),
            "invalid_request"
        );
        assert_clean(l, name).await;
    }
}

#[tokio::test]
async fn holds_reserve_then_post_part_and_release_the_rest() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        let exp = UnixMillis(T0.0 + 60_000);
        l.transfer(tr("fund", Topup, "sys:inflow", "agent:a", 1_000))
            .await
            .unwrap();
        let h = l
            .hold(hold("h1", "agent:a", "sys:revenue", 700, exp))
            .await
            .unwrap();
        assert_eq!(h.kind, TransferKind::Hold, "{name}");
        assert_eq!(h.expires_at, Some(exp), "{name}");
        let a = l.balance(&acct("agent:a")).await.unwrap();
        assert_eq!(
            (a.posted(), a.held(), a.available()),
            (1_000, UsdMicros(700), 300),
            "{name}"
        );
        // Held money cannot be spent or held again.
        let before = balances(l, &ALL).await;
        assert_eq!(
            l.transfer(tr("spend", RequestDebit, "agent:a", "sys:revenue", 301))
                .await
                .unwrap_err(),
            LedgerError::InsufficientFunds {
                account: acct("agent:a"),
                available: 300,
                needed: 301
            },
            "{name}"
        );
        assert_eq!(
            l.hold(hold("h2", "agent:a", "sys:revenue", 301, exp))
                .await
                .unwrap_err()
                .code(),
            "insufficient_funds",
            "{name}"
        );
        // Post errors.
        assert_eq!(
            l.post(tid("p0"), &tid("h1"), UsdMicros(701))
                .await
                .unwrap_err(),
            LedgerError::PostExceedsHold {
                hold: tid("h1"),
                held: 700,
                requested: 701
            },
            "{name}"
        );
        assert_eq!(
            l.post(tid("p0"), &tid("h1"), UsdMicros(0))
                .await
                .unwrap_err(),
            LedgerError::ZeroAmount,
            "{name}: a zero post is a void"
        );
        assert_eq!(
            l.post(tid("p0"), &tid("nope"), UsdMicros(1))
                .await
                .unwrap_err(),
            LedgerError::UnknownHold(tid("nope")),
            "{name}"
        );
        assert_eq!(
            l.post(tid("p0"), &tid("fund"), UsdMicros(1))
                .await
                .unwrap_err(),
            LedgerError::UnknownHold(tid("fund")),
            "{name}: only holds can be posted"
        );
        assert_eq!(balances(l, &ALL).await, before, "{name}");

        let p = l.post(tid("p1"), &tid("h1"), UsdMicros(450)).await.unwrap();
        assert_eq!(p.kind, TransferKind::Post, "{name}");
        assert_eq!(p.pending_id, Some(tid("h1")), "{name}");
        let [_, revenue, a, _] = balances(l, &ALL).await.try_into().unwrap();
        assert_eq!(
            (a.posted(), a.held(), a.available()),
            (550, UsdMicros(0), 550),
            "{name}"
        );
        assert_eq!(revenue.posted(), 450, "{name}");
        assert_eq!(revenue.counters.credits_pending, 0, "{name}");
        let after = balances(l, &ALL).await;

        // The post replays; any other resolution is refused, naming the winner.
        assert_eq!(
            l.post(tid("p1"), &tid("h1"), UsdMicros(450)).await.unwrap(),
            p,
            "{name}"
        );
        assert_eq!(
            l.post(tid("p1"), &tid("h1"), UsdMicros(451))
                .await
                .unwrap_err(),
            LedgerError::Conflict {
                id: "p1".into(),
                field: "amount"
            },
            "{name}"
        );
        for e in [
            l.post(tid("p2"), &tid("h1"), UsdMicros(1))
                .await
                .unwrap_err(),
            l.void(tid("v2"), &tid("h1")).await.unwrap_err(),
        ] {
            assert_eq!(
                e,
                LedgerError::HoldAlreadyResolved {
                    hold: tid("h1"),
                    by: tid("p1")
                },
                "{name}"
            );
        }
        assert_eq!(balances(l, &ALL).await, after, "{name}");
        assert_clean(l, name).await;
    }
}

#[tokio::test]
async fn voids_release_and_expired_holds_can_only_be_voided() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        l.transfer(tr("fund", Topup, "sys:inflow", "agent:a", 1_000))
            .await
            .unwrap();
        let exp = UnixMillis(T0.0 + 1_000);
        let h1 = hold("h1", "agent:a", "sys:revenue", 100, exp);
        l.hold(h1.clone()).await.unwrap();
        l.hold(hold("h2", "agent:a", "sys:revenue", 200, exp))
            .await
            .unwrap();
        l.hold(hold(
            "h3",
            "agent:a",
            "sys:revenue",
            300,
            UnixMillis(exp.0 + 1),
        ))
        .await
        .unwrap();
        let v = l.void(tid("v1"), &tid("h1")).await.unwrap();
        assert_eq!(
            (v.kind, v.amount),
            (TransferKind::Void, UsdMicros(100)),
            "{name}"
        );
        assert_eq!(
            l.void(tid("v1"), &tid("h1")).await.unwrap(),
            v,
            "{name}: replay"
        );
        assert_eq!(
            l.balance(&acct("agent:a")).await.unwrap().available(),
            500,
            "{name}"
        );

        // A hold must expire in the future; replaying an old one still works after expiry.
        assert_eq!(
            l.hold(hold("h4", "agent:a", "sys:revenue", 1, T0))
                .await
                .unwrap_err(),
            LedgerError::InvalidExpiry,
            "{name}"
        );
        assert_eq!(
            l.hold(hold(
                "h5",
                "agent:a",
                "sys:revenue",
                1,
                UnixMillis(u64::MAX)
            ))
            .await
            .unwrap_err(),
            LedgerError::InvalidExpiry,
            "{name}: an expiry the database cannot store"
        );
        f.clock.advance_ms(1_000); // now == expiry of h1, h2
        assert_eq!(l.hold(h1.clone()).await.unwrap().id, tid("h1"), "{name}");
        let before = balances(l, &ALL).await;
        assert_eq!(
            l.post(tid("p2"), &tid("h2"), UsdMicros(1))
                .await
                .unwrap_err(),
            LedgerError::HoldExpired {
                hold: tid("h2"),
                expired_at: exp
            },
            "{name}"
        );
        assert_eq!(balances(l, &ALL).await, before, "{name}");

        // The sweep voids h2 (expired, open) but not h1 (resolved) or h3 (not yet expired).
        assert_eq!(l.sweep_expired_holds().await.unwrap(), 1, "{name}");
        assert_eq!(
            l.sweep_expired_holds().await.unwrap(),
            0,
            "{name}: idempotent"
        );
        // The sweep's void has a derived id that no client can choose (`#` is not allowed).
        match l.void(tid("v2"), &tid("h2")).await.unwrap_err() {
            LedgerError::HoldAlreadyResolved { hold, by } => {
                assert_eq!((hold.as_str(), by.as_str()), ("h2", "h2#expired"), "{name}");
            }
            other => panic!("{name}: {other}"),
        }
        assert_eq!(
            l.balance(&acct("agent:a")).await.unwrap().available(),
            700,
            "{name}"
        );
        // An expired hold can still be voided by hand before the sweep gets to it.
        f.clock.advance_ms(1);
        let v3 = l.void(tid("v3"), &tid("h3")).await.unwrap();
        assert_eq!(v3.amount, UsdMicros(300), "{name}");
        assert_eq!(l.sweep_expired_holds().await.unwrap(), 0, "{name}");
        let a = l.balance(&acct("agent:a")).await.unwrap();
        assert_eq!(
            (a.posted(), a.held(), a.available()),
            (1_000, UsdMicros(0), 1_000),
            "{name}"
        );
        let revenue = l.balance(&acct("sys:revenue")).await.unwrap();
        assert_eq!(revenue.counters.credits_pending, 0, "{name}");
        assert_clean(l, name).await;
    }
}

#[tokio::test]
async fn history_pages_newest_first_without_repeats_or_gaps() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        for i in 0..25 {
            // Interleave transfers of another account: they must not appear.
            l.transfer(tr(&format!("a-{i:02}"), Topup, "sys:inflow", "agent:a", 1))
                .await
                .unwrap();
            l.transfer(tr(&format!("b-{i:02}"), Topup, "sys:inflow", "agent:b", 1))
                .await
                .unwrap();
        }
        // agent:a also appears as a debit.
        l.transfer(tr("a-out", RequestDebit, "agent:a", "sys:revenue", 5))
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut cursor: Option<HistoryCursor> = None;
        let mut pages = 0;
        loop {
            let page = l.history(&acct("agent:a"), cursor, 10).await.unwrap();
            pages += 1;
            seen.extend(page.transfers.iter().map(|t| t.id.to_string()));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
            // Transfers added meanwhile are newer than the cursor: they do not disturb paging.
            l.transfer(tr(
                &format!("late-{pages}"),
                Topup,
                "sys:inflow",
                "agent:a",
                1,
            ))
            .await
            .unwrap();
        }
        let mut expected: Vec<String> = (0..25).rev().map(|i| format!("a-{i:02}")).collect();
        expected.insert(0, "a-out".into());
        assert_eq!(seen, expected, "{name}");
        assert_eq!(pages, 3, "{name}");
        assert_eq!(
            l.history(&acct("agent:nope"), None, 10)
                .await
                .unwrap_err()
                .code(),
            "unknown_account",
            "{name}"
        );
    }
}

/// The operator's lists: every transfer by kind and account, paged, and the open holds.
#[tokio::test]
async fn transfers_list_by_kind_and_account_and_holds_list_while_open() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        for i in 0..5 {
            l.transfer(tr(&format!("t-a-{i}"), Topup, "sys:inflow", "agent:a", 10))
                .await
                .unwrap();
            l.transfer(tr(&format!("t-b-{i}"), Topup, "sys:inflow", "agent:b", 10))
                .await
                .unwrap();
        }
        l.transfer(tr("spend", RequestDebit, "agent:a", "sys:revenue", 5))
            .await
            .unwrap();
        l.hold(hold(
            "h-1",
            "agent:a",
            "sys:revenue",
            3,
            UnixMillis(T0.0 + 60_000),
        ))
        .await
        .unwrap();
        l.hold(hold(
            "h-2",
            "agent:b",
            "sys:revenue",
            4,
            UnixMillis(T0.0 + 60_000),
        ))
        .await
        .unwrap();
        l.void(tid("h-2:void"), &tid("h-2")).await.unwrap();

        let ids = |p: &tariff::ledger::HistoryPage| -> Vec<String> {
            p.transfers.iter().map(|t| t.id.to_string()).collect()
        };
        let all = l.transfers(None, None, None, 1000).await.unwrap();
        assert_eq!(all.transfers.len(), 14, "{name}");
        assert_eq!(ids(&all)[..2], ["h-2:void", "h-2"], "{name}: newest first");
        let a_topups = l
            .transfers(Some(Topup), Some(&acct("agent:a")), None, 1000)
            .await
            .unwrap();
        assert_eq!(
            ids(&a_topups),
            ["t-a-4", "t-a-3", "t-a-2", "t-a-1", "t-a-0"],
            "{name}"
        );
        // Paged two at a time: the same list, each transfer once.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = l
                .transfers(Some(Topup), Some(&acct("agent:a")), cursor, 2)
                .await
                .unwrap();
            seen.extend(ids(&page));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ids(&a_topups), "{name}");
        let b = l
            .transfers(None, Some(&acct("agent:b")), None, 1000)
            .await
            .unwrap();
        assert_eq!(
            b.transfers.len(),
            7,
            "{name}: five top-ups, a hold and its void"
        );
        let none = l.transfers(Some(Adjustment), None, None, 10).await.unwrap();
        assert!(none.transfers.is_empty() && none.next.is_none(), "{name}");

        let open: Vec<String> = l
            .open_holds(10)
            .await
            .unwrap()
            .iter()
            .map(|t| t.id.to_string())
            .collect();
        assert_eq!(open, ["h-1"], "{name}: the voided hold is not open");
    }
}

#[tokio::test]
async fn the_schema_refuses_edits_and_check_finds_tampering() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        l.transfer(tr("fund", Topup, "sys:inflow", "agent:a", 100))
            .await
            .unwrap();
        let refused = [
            "UPDATE ledger_transfers SET amount = 1 WHERE id = 'fund'",
            "DELETE FROM ledger_transfers WHERE id = 'fund'",
            "DELETE FROM ledger_accounts WHERE id = 'agent:b'",
            "UPDATE ledger_accounts SET allow_negative = TRUE WHERE id = 'sys:revenue'",
            // Overdraft behind the ledger's back: the bound is the schema's, not just the code's.
            "UPDATE ledger_accounts SET debits_posted = debits_posted + 101 WHERE id = 'agent:a'",
            "UPDATE ledger_accounts SET debits_pending = 101 WHERE id = 'agent:a'",
            "UPDATE ledger_accounts SET credits_pending = -1 WHERE id = 'agent:a'",
            // 64-bit overflow: an error on PostgreSQL; on SQLite the sum becomes a REAL, which
            // only the STRICT table refuses.
            "UPDATE ledger_accounts SET credits_posted = credits_posted + 9223372036854775807 \
             WHERE id = 'agent:a'",
            "INSERT INTO ledger_transfers (id, kind, debit_account, credit_account, amount, \
             created_at_ms) VALUES ('x', 'topup', 'agent:a', 'agent:a', 1, 0)",
            "INSERT INTO ledger_transfers (id, kind, debit_account, credit_account, amount, \
             created_at_ms) VALUES ('x', 'topup', 'sys:inflow', 'agent:a', 0, 0)",
            "INSERT INTO ledger_transfers (id, kind, debit_account, credit_account, amount, \
             created_at_ms) VALUES ('x', 'hold', 'sys:inflow', 'agent:a', 1, 0)",
            "INSERT INTO ledger_transfers (id, kind, debit_account, credit_account, amount, \
             created_at_ms) VALUES ('x', 'topup', 'sys:inflow', 'agent:zz', 1, 0)",
        ];
        for sql in refused {
            assert!(
                raw(l.db(), sql).await.is_err(),
                "{name}: {sql} must be refused"
            );
        }
        assert_clean(l, name).await;
        // Counters edited consistently with the bound but not with the transfers: check() sees it.
        raw(
            l.db(),
            "UPDATE ledger_accounts SET credits_posted = credits_posted + 5 WHERE id = 'agent:b'",
        )
        .await
        .unwrap();
        let report = l.check().await.unwrap();
        assert!(!report.is_clean(), "{name}");
        assert_eq!(report.posted_sum, 5, "{name}");
        assert_eq!(report.mismatches.len(), 1, "{name}");
        assert_eq!(report.mismatches[0].account, acct("agent:b"), "{name}");
        assert_eq!(report.mismatches[0].stored.credits_posted, 5, "{name}");
        assert_eq!(report.mismatches[0].recomputed.credits_posted, 0, "{name}");
        assert!(report.bad_resolutions.is_empty(), "{name}");

        // A post written behind the ledger's back that takes more than its hold held.
        l.hold(hold(
            "h",
            "agent:a",
            "sys:revenue",
            50,
            UnixMillis(T0.0 + 1),
        ))
        .await
        .unwrap();
        raw(
            l.db(),
            "INSERT INTO ledger_transfers (id, kind, debit_account, credit_account, amount, \
             pending_id, created_at_ms) VALUES ('rogue', 'post', 'agent:a', 'sys:revenue', 60, \
             'h', 0)",
        )
        .await
        .unwrap();
        let report = l.check().await.unwrap();
        assert_eq!(report.bad_resolutions, vec![tid("rogue")], "{name}");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_reported_as_unavailable() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        match l.db() {
            tariff::db::Db::Postgres(p) => p.close().await,
            tariff::db::Db::Sqlite(p) => p.close().await,
        }
        let e = l
            .transfer(tr("t", Topup, "sys:inflow", "agent:a", 1))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "unavailable", "{name}: {e}");
        assert!(e.is_transient(), "{name}");
        assert_eq!(
            l.balance(&acct("agent:a")).await.unwrap_err().code(),
            "unavailable",
            "{name}"
        );
    }
}

/// On PostgreSQL a write that plainly succeeds takes the one-statement path (one round trip,
/// no transaction held across the network); replays and refusals go to the transactional
/// path, which alone decides them. SQLite always uses the transactional path. Results are the
/// same either way (the rest of this file and the model test run on both).
#[tokio::test]
async fn successful_writes_take_one_statement_on_postgres_and_refusals_do_not() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        let fast = |n: u64| if name == "postgres" { n } else { 0 };
        let start = l.one_statement_writes();
        let exp = UnixMillis(T0.0 + 60_000);
        l.transfer(tr("fund", Topup, "sys:inflow", "agent:a", 1_000))
            .await
            .unwrap();
        l.hold(hold("h1", "agent:a", "sys:revenue", 400, exp))
            .await
            .unwrap();
        l.post(tid("h1:post"), &tid("h1"), UsdMicros(300))
            .await
            .unwrap();
        l.hold(hold("h2", "agent:a", "sys:revenue", 100, exp))
            .await
            .unwrap();
        l.void(tid("h2:void"), &tid("h2")).await.unwrap();
        l.transfer_linked(&[
            tr("req-1", RequestDebit, "agent:a", "sys:revenue", 50),
            tr("pay-1", PaymentCredit, "sys:inflow", "agent:a", 50),
        ])
        .await
        .unwrap();
        assert_eq!(l.one_statement_writes() - start, fast(6), "{name}");

        // Replays, refusals and a write to an unknown account: none of them is a fast write,
        // and each answers exactly as the transactional path decides.
        let before = balances(l, &ALL).await;
        l.transfer(tr("fund", Topup, "sys:inflow", "agent:a", 1_000))
            .await
            .unwrap();
        l.post(tid("h1:post"), &tid("h1"), UsdMicros(300))
            .await
            .unwrap();
        assert_eq!(
            l.transfer(tr("big", RequestDebit, "agent:a", "sys:revenue", 10_000))
                .await
                .unwrap_err()
                .code(),
            "insufficient_funds",
            "{name}"
        );
        assert_eq!(
            l.void(tid("h1:void"), &tid("h1")).await.unwrap_err().code(),
            "hold_already_resolved",
            "{name}"
        );
        assert_eq!(
            l.transfer(tr("lost", Topup, "sys:inflow", "agent:nobody", 1))
                .await
                .unwrap_err()
                .code(),
            "unknown_account",
            "{name}"
        );
        assert_eq!(balances(l, &ALL).await, before, "{name}");
        assert_eq!(l.one_statement_writes() - start, fast(6), "{name}");
        assert_clean(l, name).await;
    }
}

/// Two callers retrying the same write at once can land in one group-commit batch. The batch
/// must store and apply the id once; the copy is not applied, and the transactional path
/// answers it as a replay. (Migration 0010 stored one row and applied the money twice; the
/// concurrency tests caught it only when the race hit, so this calls the function directly.)
#[tokio::test]
async fn an_id_repeated_within_one_batch_moves_money_once() {
    for f in fixtures().await {
        let tariff::db::Db::Postgres(pool) = &f._backend.db else {
            continue;
        };
        let l = &f.ledger;
        l.transfer(tr("fund", Topup, "sys:inflow", "agent:a", 10_000))
            .await
            .unwrap();
        let seqs: Vec<Option<i64>> = sqlx::query_scalar(
            "SELECT ledger_apply('{1,1}', '{dup,dup}', '{request_debit,request_debit}', \
             '{agent:a,agent:a}', '{sys:revenue,sys:revenue}', '{500,500}', \
             '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', \
             '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', $1, \
             '{agent:a,sys:revenue}', '{2,2}', '{agent:a,sys:revenue,agent:a,sys:revenue}', \
             '{500,0,500,0}', '{0,500,0,500}', '{0,0,0,0}', '{0,0,0,0}')",
        )
        .bind(vec![T0.0 as i64; 2])
        .fetch_one(pool)
        .await
        .unwrap();
        assert!(
            matches!(seqs.as_slice(), [Some(_), None]),
            "the first copy is applied, the second is left to the transactional path: {seqs:?}"
        );
        assert_eq!(l.balance(&acct("agent:a")).await.unwrap().posted(), 9_500);
        assert_eq!(l.balance(&acct("sys:revenue")).await.unwrap().posted(), 500);
        assert_clean(l, "postgres").await;
    }
}
