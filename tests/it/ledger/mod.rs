//! The credits ledger against real PostgreSQL and SQLite: the same contract on both backends,
//! a model-based property test, and concurrency tests on PostgreSQL.

mod concurrency;
mod contract;
mod model;

use tariff::db::Db;
use tariff::ledger::{
    AccountId, AccountKind, Balance, Ledger, NewAccount, NewTransfer, References, TransferId,
    TransferKind,
};
use tariff::money::UsdMicros;
use tariff::time::{Clock, UnixMillis};

use crate::db::{Backend, backends};

pub const T0: UnixMillis = UnixMillis(1_800_000_000_000);

pub fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

pub fn tid(s: &str) -> TransferId {
    TransferId::new(s).unwrap()
}

pub fn tr(id: &str, kind: TransferKind, debit: &str, credit: &str, amount: u64) -> NewTransfer {
    NewTransfer {
        id: tid(id),
        kind,
        debit: acct(debit),
        credit: acct(credit),
        amount: UsdMicros(amount),
        refs: References::default(),
    }
}

/// A ledger on one backend, with a manual clock at `T0`.
pub struct Fixture {
    pub ledger: Ledger,
    pub clock: Clock,
    pub name: &'static str,
    _backend: Backend,
}

/// One fixture per backend (SQLite, PostgreSQL), each with the standard accounts:
/// `sys:inflow` (may go negative), `sys:revenue`, `agent:a`, `agent:b`.
pub async fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for b in backends().await {
        let clock = Clock::manual(T0);
        let ledger = Ledger::new(b.db.clone(), clock.clone());
        standard_accounts(&ledger, "").await;
        out.push(Fixture {
            name: b.db.backend_name(),
            ledger,
            clock,
            _backend: b,
        });
    }
    out
}

/// Creates `{prefix}sys:inflow`, `{prefix}sys:revenue`, `{prefix}agent:a`, `{prefix}agent:b`.
pub async fn standard_accounts(ledger: &Ledger, prefix: &str) {
    for (id, kind, neg) in [
        ("sys:inflow", AccountKind::System, true),
        ("sys:revenue", AccountKind::System, false),
        ("agent:a", AccountKind::Agent, false),
        ("agent:b", AccountKind::Agent, false),
    ] {
        ledger
            .create_account(NewAccount {
                id: acct(&format!("{prefix}{id}")),
                kind,
                owner: None,
                allow_negative: neg,
            })
            .await
            .unwrap();
    }
}

pub async fn balances(ledger: &Ledger, accounts: &[&str]) -> Vec<Balance> {
    let mut out = Vec::new();
    for a in accounts {
        out.push(ledger.balance(&acct(a)).await.unwrap());
    }
    out
}

pub async fn assert_clean(ledger: &Ledger, name: &str) {
    let report = ledger.check().await.unwrap();
    assert!(
        report.is_clean(),
        "{name}: ledger check failed: {report:#?}"
    );
}

/// Runs a raw statement (for tests that play a rogue operator).
pub async fn raw(db: &Db, sql: &str) -> Result<(), sqlx::Error> {
    match db {
        Db::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(p)
            .await
            .map(|_| ()),
        Db::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(p)
            .await
            .map(|_| ()),
    }
}
