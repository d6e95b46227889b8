//! Many callers at once. PostgreSQL is the backend that matters (real row locks, many
//! connections); SQLite runs the same tests to prove its writers queue instead of failing with
//! SQLITE_BUSY.

use std::sync::Arc;

use tariff::ledger::{Ledger, LedgerError, NewHold, References, Transfer, TransferKind};
use tariff::money::UsdMicros;
use tariff::time::UnixMillis;

use super::{T0, acct, assert_clean, fixtures, tid, tr};

use TransferKind::{RequestDebit, Topup};

/// Runs `tasks` copies of `f(i)` at once and returns their results in task order.
async fn all_at_once<T, F, Fut>(ledger: &Ledger, tasks: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Ledger, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let start = Arc::new(tokio::sync::Barrier::new(tasks));
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let fut = f(ledger.clone(), i);
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks);
    for h in handles {
        out.push(h.await.expect("task panicked"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_accounts_in_both_directions_neither_deadlock_nor_lose_updates() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        let agents = ["agent:a", "agent:b", "agent:c", "agent:d"];
        for a in &agents[2..] {
            l.create_account(tariff::ledger::NewAccount {
                id: acct(a),
                kind: tariff::ledger::AccountKind::Agent,
                owner: None,
                allow_negative: false,
            })
            .await
            .unwrap();
        }
        for a in agents {
            l.transfer(tr(&format!("fund-{a}"), Topup, "sys:inflow", a, 1_000_000))
                .await
                .unwrap();
        }
        const TASKS: usize = 16;
        const EACH: usize = 25;
        let results = all_at_once(l, TASKS, |l, task| async move {
            let mut outcomes = Vec::new();
            for n in 0..EACH {
                // Every pair, in both directions, plus linked pairs that lock three accounts.
                let from_ix = (task + n) % 4;
                let to_ix = (from_ix + 1 + n % 3) % 4;
                let (from, to) = (agents[from_ix], agents[to_ix]);
                let id = format!("x-{task}-{n}");
                let amount = 1 + ((task * 31 + n * 17) % 500) as u64;
                let r = if n % 5 == 4 {
                    // Never `to` itself; may be `from` (a round trip).
                    let third = agents[(to_ix + 1 + task % 3) % 4];
                    l.transfer_linked(&[
                        tr(&id, RequestDebit, from, to, amount),
                        tr(&format!("{id}-b"), RequestDebit, to, third, amount),
                    ])
                    .await
                    .map(|_| ())
                } else {
                    l.transfer(tr(&id, RequestDebit, from, to, amount))
                        .await
                        .map(|_| ())
                };
                outcomes.push(r);
            }
            outcomes
        })
        .await;
        let mut ok = 0;
        for r in results.into_iter().flatten() {
            match r {
                Ok(()) => ok += 1,
                Err(e) => panic!("{name}: only success is possible here, got {e:?}"),
            }
        }
        assert_eq!(ok, TASKS * EACH, "{name}");
        let mut total = 0;
        for a in agents {
            total += l.balance(&acct(a)).await.unwrap().posted();
        }
        assert_eq!(total, 4_000_000, "{name}: money is conserved");
        assert_clean(l, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_for_the_last_credits_exactly_the_affordable_number_win() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        l.transfer(tr("fund", Topup, "sys:inflow", "agent:a", 10_000))
            .await
            .unwrap();
        // 40 spends of 300 against 10,000: 33 fit, 100 remains.
        let results = all_at_once(l, 40, |l, i| async move {
            l.transfer(tr(
                &format!("spend-{i}"),
                RequestDebit,
                "agent:a",
                "sys:revenue",
                300,
            ))
            .await
        })
        .await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        for r in &results {
            if let Err(e) = r {
                assert_eq!(e.code(), "insufficient_funds", "{name}: {e}");
            }
        }
        assert_eq!(won, 33, "{name}");
        if name == "postgres" {
            // The race ran through the group commit (the funding is one fast write): batches
            // mixing spends that fit and spends refused by the balance bound.
            assert!(l.one_statement_writes() > 1, "{name}");
        }
        let a = l.balance(&acct("agent:a")).await.unwrap();
        assert_eq!(a.posted(), 100, "{name}");

        // The same with holds: 100 left, 30 holds of 10 race for it.
        let exp = UnixMillis(T0.0 + 60_000);
        let results = all_at_once(l, 30, |l, i| async move {
            l.hold(NewHold {
                id: tid(&format!("hold-{i}")),
                debit: acct("agent:a"),
                credit: acct("sys:revenue"),
                amount: UsdMicros(10),
                expires_at: exp,
                refs: References::default(),
            })
            .await
        })
        .await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 10, "{name}");
        let a = l.balance(&acct("agent:a")).await.unwrap();
        assert_eq!((a.available(), a.held()), (0, UsdMicros(100)), "{name}");
        assert_clean(l, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_id_submitted_by_many_at_once_lands_once() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        l.transfer(tr("fund", Topup, "sys:inflow", "agent:a", 10_000))
            .await
            .unwrap();
        let results = all_at_once(l, 20, |l, _| async move {
            l.transfer(tr("pay-once", RequestDebit, "agent:a", "sys:revenue", 500))
                .await
        })
        .await;
        let first: Transfer = results[0].clone().unwrap();
        assert!(
            results.iter().all(|r| r.as_ref() == Ok(&first)),
            "{name}: every caller gets the one original: {results:?}"
        );
        assert_eq!(
            l.balance(&acct("agent:a")).await.unwrap().posted(),
            9_500,
            "{name}"
        );

        // Same id, two different payloads: one payload lands, the other is a conflict.
        let results = all_at_once(l, 20, |l, i| async move {
            let amount = if i % 2 == 0 { 100 } else { 200 };
            l.transfer(tr(
                "pay-race",
                RequestDebit,
                "agent:a",
                "sys:revenue",
                amount,
            ))
            .await
        })
        .await;
        let landed: Vec<&Transfer> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert!(!landed.is_empty(), "{name}");
        let amount = landed[0].amount;
        assert!(landed.iter().all(|t| **t == *landed[0]), "{name}");
        for r in &results {
            if let Err(e) = r {
                assert_eq!(
                    *e,
                    LedgerError::Conflict {
                        id: "pay-race".into(),
                        field: "amount"
                    },
                    "{name}"
                );
            }
        }
        assert_eq!(
            landed.len(),
            10,
            "{name}: exactly the callers with the winning payload"
        );
        assert_eq!(
            l.balance(&acct("agent:a")).await.unwrap().posted(),
            9_500 - amount.0 as i64,
            "{name}"
        );
        assert_clean(l, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_resolves_once_however_many_try_at_once() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        l.transfer(tr("fund", Topup, "sys:inflow", "agent:a", 10_000))
            .await
            .unwrap();
        let exp = UnixMillis(T0.0 + 1_000);
        for i in 0..20 {
            l.hold(NewHold {
                id: tid(&format!("h-{i}")),
                debit: acct("agent:a"),
                credit: acct("sys:revenue"),
                amount: UsdMicros(100),
                expires_at: exp,
                refs: References::default(),
            })
            .await
            .unwrap();
        }
        // Posts and voids with different ids race for h-0.
        let results = all_at_once(l, 16, |l, i| async move {
            if i % 2 == 0 {
                l.post(tid(&format!("p-{i}")), &tid("h-0"), UsdMicros(60))
                    .await
            } else {
                l.void(tid(&format!("v-{i}")), &tid("h-0")).await
            }
        })
        .await;
        let winners: Vec<&Transfer> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "{name}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert_eq!(
                    *e,
                    LedgerError::HoldAlreadyResolved {
                        hold: tid("h-0"),
                        by: winners[0].id.clone()
                    },
                    "{name}"
                );
            }
        }
        // Four sweepers at once void the other 19 holds exactly once between them.
        f.clock.advance_ms(1_000);
        let swept = all_at_once(l, 4, |l, _| async move { l.sweep_expired_holds().await }).await;
        let total: u64 = swept.into_iter().map(|r| r.unwrap()).sum();
        assert_eq!(total, 19, "{name}");
        let a = l.balance(&acct("agent:a")).await.unwrap();
        assert_eq!(a.held(), UsdMicros(0), "{name}");
        let posted = if winners[0].kind == TransferKind::Post {
            60
        } else {
            0
        };
        assert_eq!(a.posted(), 10_000 - posted, "{name}");
        assert_clean(l, name).await;
    }
}

/// The database connection dies at random moments, including between COMMIT and its
/// acknowledgement: the caller sees an error although the transfer landed. Retrying with the
/// same id must then return the original, so every transfer applies exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_lost_connections_apply_each_transfer_exactly_once() {
    let url = crate::db::fresh_postgres().await;
    let db = tariff::db::Db::connect(&url).await.unwrap();
    let clock = tariff::time::Clock::manual(T0);
    let l = Ledger::new(db, clock);
    super::standard_accounts(&l, "").await;
    l.transfer(tr("fund", Topup, "sys:inflow", "agent:a", 1_000_000))
        .await
        .unwrap();

    // Terminates every other backend of this database, over and over. It pauses a random
    // 2-20 ms between rounds so transfers (several round trips each) can also complete on a
    // loaded machine: the point is to hit every moment of a transfer, not to starve it.
    let killer_pool = sqlx::PgPool::connect(&url).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut kills = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let killed: Vec<(bool,)> = sqlx::query_as(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .fetch_all(&killer_pool)
                .await
                .unwrap();
                kills += killed.len() as u64;
                let pause = 2 + rand::random::<u64>() % 19;
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            kills
        })
    };

    const TASKS: usize = 8;
    const EACH: usize = 25;
    let failures = all_at_once(&l, TASKS, |l, task| async move {
        let mut failures = Vec::new();
        for n in 0..EACH {
            let t = tr(
                &format!("c-{task}-{n}"),
                RequestDebit,
                "agent:a",
                "sys:revenue",
                7,
            );
            // Bounded by time, not attempts: how often a retry is cut off depends on the
            // machine's load, but a correct ledger always gets through once the killer pauses.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                match l.transfer(t.clone()).await {
                    Ok(done) => {
                        assert_eq!(done.amount, UsdMicros(7));
                        break;
                    }
                    Err(e) => {
                        failures.push(e);
                        assert!(
                            std::time::Instant::now() < deadline,
                            "no success within 60 s of retries"
                        );
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    }
                }
            }
        }
        failures
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let kills = killer.await.unwrap();
    let failures: Vec<LedgerError> = failures.into_iter().flatten().collect();
    for e in &failures {
        assert!(
            e.is_transient(),
            "a lost connection is reported as unavailable: {e:?}"
        );
    }
    assert!(kills > 0, "the chaos never hit");
    eprintln!(
        "{kills} connections killed, {} failed calls retried",
        failures.len()
    );
    let spent = (TASKS * EACH * 7) as i64;
    assert_eq!(
        l.balance(&acct("agent:a")).await.unwrap().posted(),
        1_000_000 - spent,
        "every transfer applied exactly once"
    );
    assert_eq!(
        l.balance(&acct("sys:revenue")).await.unwrap().posted(),
        spent
    );
    assert_clean(&l, "postgres").await;
}

/// A→B and B→A from empty accounts: no serial order lets either through, so however the
/// writes are batched together (the group commit sums a batch's deltas), every one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opposite_spends_between_empty_accounts_are_refused_however_they_are_batched() {
    for f in fixtures().await {
        let (l, name) = (&f.ledger, f.name);
        for round in 0..10 {
            let results = all_at_once(l, 16, |l, i| async move {
                let (from, to) = if i % 2 == 0 {
                    ("agent:a", "agent:b")
                } else {
                    ("agent:b", "agent:a")
                };
                l.transfer(tr(&format!("swap-{round}-{i}"), RequestDebit, from, to, 10))
                    .await
            })
            .await;
            for r in &results {
                assert_eq!(
                    r.as_ref().map_err(|e| e.code()).unwrap_err(),
                    "insufficient_funds",
                    "{name}"
                );
            }
        }
        for a in ["agent:a", "agent:b"] {
            assert_eq!(l.balance(&acct(a)).await.unwrap().posted(), 0, "{name}");
        }
        assert_clean(l, name).await;
    }
}
