//! Model-based property test (the "auditor" of TigerBeetle's workload tests): random sequences of
//! operations run against the ledger and against a plain in-memory model. After every step the
//! outcome (success, or the exact error) must match the model, every balance must equal the
//! model's, replays must change nothing, and `check()` must find the whole ledger consistent.
//!
//! Each case uses fresh accounts (a per-case prefix) in one shared database per backend, so the
//! global checks also cover every earlier case's leftovers.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tariff::db::Db;
use tariff::ledger::{
    AccountId, AccountKind, Ledger, LedgerError, NewAccount, NewHold, NewTransfer, References,
    Transfer, TransferId, TransferKind,
};
use tariff::money::UsdMicros;
use tariff::time::{Clock, UnixMillis};

use super::T0;

/// Names in sorted order, so an index order is also the ledger's lock and check order. The
/// last one is never created: transfers naming it must fail as unknown.
const ACCOUNTS: [&str; 6] = [
    "agent:a",
    "agent:b",
    "agent:c",
    "sys:inflow",
    "sys:revenue",
    "zz:ghost",
];
const REAL: usize = 5;
const GHOST: usize = 5;
const INFLOW: usize = 3;
const KINDS: [TransferKind; 5] = [
    TransferKind::Topup,
    TransferKind::PaymentCredit,
    TransferKind::RequestDebit,
    TransferKind::Refund,
    TransferKind::Adjustment,
];
const INITIAL: u64 = 5_000;

#[derive(Clone, Debug)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        amount: u64,
        kind: usize,
    },
    Linked(Vec<(usize, usize, u64)>),
    Hold {
        from: usize,
        to: usize,
        amount: u64,
        ttl_ms: u64,
    },
    /// Posts `percent` of the chosen hold (0 is a zero post, above 100 exceeds it).
    Post {
        hold: usize,
        percent: u64,
    },
    Void {
        hold: usize,
    },
    Advance(u64),
    Sweep,
    /// Resubmits an earlier successful call unchanged.
    Replay(usize),
    /// Resubmits an earlier successful call with a different amount.
    Conflicting(usize),
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0u64), 10 => 1..2_000u64, 2 => 1..20_000u64]
}

/// Two account indices, nearly always distinct (a same-account transfer is just one refusal).
fn pair() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        24 => (0..5usize, 1..5usize).prop_map(|(from, k)| (from, (from + k) % 5)),
        2 => (0..5usize).prop_map(|a| (a, a)),
        1 => (0..5usize).prop_map(|a| (a, GHOST)),
        1 => (0..5usize).prop_map(|a| (GHOST, a)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (pair(), amount(), 0..KINDS.len()).prop_map(|((from, to), amount, kind)| {
            Op::Transfer { from, to, amount, kind }
        }),
        2 => prop::collection::vec((pair(), amount()), 2..=3)
            .prop_map(|legs| Op::Linked(legs.into_iter().map(|((f, t), a)| (f, t, a)).collect())),
        3 => (pair(), amount(), 0..3_000u64).prop_map(|((from, to), amount, ttl_ms)| {
            Op::Hold { from, to, amount, ttl_ms }
        }),
        3 => (any::<usize>(), 0..=110u64).prop_map(|(hold, percent)| Op::Post { hold, percent }),
        1 => any::<usize>().prop_map(|hold| Op::Void { hold }),
        // Mostly small steps; large ones expire holds (whose TTLs are under 3 s).
        3 => prop_oneof![0..200u64, 500..3_000u64].prop_map(Op::Advance),
        2 => Just(Op::Sweep),
        2 => any::<usize>().prop_map(Op::Replay),
        1 => any::<usize>().prop_map(Op::Conflicting),
    ]
}

/// A successful client call, kept so it can be replayed.
#[derive(Clone, Debug)]
enum Call {
    Transfer(NewTransfer),
    Linked(Vec<NewTransfer>),
    Hold(NewHold),
    Post(TransferId, TransferId, UsdMicros),
    Void(TransferId, TransferId),
}

#[derive(Clone, Debug)]
struct HoldM {
    id: TransferId,
    debit: usize,
    credit: usize,
    amount: u64,
    expires_at: u64,
    /// The resolving transfer's id (expiry voids have ids no client may use, hence a string).
    resolved_by: Option<String>,
}

/// What the ledger should hold: counters per account [dp, cp, dq, cq].
#[derive(Clone, Debug, Default)]
struct Model {
    counters: [[i128; 4]; REAL],
    holds: Vec<HoldM>,
}

/// An expected failure: the error code plus the detail the model can predict.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    code: &'static str,
    detail: Option<String>,
}

fn refusal(code: &'static str) -> Refusal {
    Refusal { code, detail: None }
}

fn refusal_of(e: &LedgerError) -> Refusal {
    let detail = match e {
        LedgerError::InsufficientFunds { account, .. } => Some(account.to_string()),
        LedgerError::Conflict { field, .. } => Some((*field).to_string()),
        LedgerError::HoldAlreadyResolved { by, .. } => Some(by.to_string()),
        _ => None,
    };
    Refusal {
        code: e.code(),
        detail,
    }
}

impl Model {
    fn allow_negative(i: usize) -> bool {
        i == INFLOW
    }

    /// Applies per-account deltas if every bounded account stays within its bound, checking in
    /// account order (the ledger's order).
    fn apply(&mut self, deltas: &BTreeMap<usize, [i128; 4]>, prefix: &str) -> Result<(), Refusal> {
        // The ledger locks (and so finds missing) accounts before it moves anything.
        if deltas.contains_key(&GHOST) {
            return Err(refusal("unknown_account"));
        }
        let mut next = self.counters;
        for (&i, d) in deltas {
            for k in 0..4 {
                next[i][k] += d[k];
            }
            let c = next[i];
            if !Self::allow_negative(i) && c[1] - c[0] - c[2] < 0 {
                return Err(Refusal {
                    code: "insufficient_funds",
                    detail: Some(format!("{prefix}{}", ACCOUNTS[i])),
                });
            }
        }
        self.counters = next;
        Ok(())
    }
}

struct Case<'a> {
    ledger: &'a Ledger,
    clock: &'a Clock,
    prefix: String,
    model: Model,
    calls: Vec<(Call, Vec<Transfer>)>,
    next_id: u64,
}

impl Case<'_> {
    fn acct(&self, i: usize) -> AccountId {
        AccountId::new(format!("{}{}", self.prefix, ACCOUNTS[i])).unwrap()
    }

    fn fresh_id(&mut self) -> TransferId {
        self.next_id += 1;
        TransferId::new(format!("{}t{}", self.prefix, self.next_id)).unwrap()
    }

    fn now(&self) -> u64 {
        self.clock.now().0
    }

    fn new_transfer(
        &mut self,
        from: usize,
        to: usize,
        amount: u64,
        kind: TransferKind,
    ) -> NewTransfer {
        NewTransfer {
            id: self.fresh_id(),
            kind,
            debit: self.acct(from),
            credit: self.acct(to),
            amount: UsdMicros(amount),
            refs: References {
                reason: Some("model".into()),
                ..References::default()
            },
        }
    }

    /// Model of a (linked) posted transfer; legs are (from, to, amount).
    fn expect_posted(&mut self, legs: &[(usize, usize, u64)]) -> Result<(), Refusal> {
        let mut deltas = BTreeMap::<usize, [i128; 4]>::new();
        for &(from, to, amount) in legs {
            if amount == 0 {
                return Err(refusal("zero_amount"));
            }
            if from == to {
                return Err(refusal("same_account"));
            }
            deltas.entry(from).or_default()[0] += i128::from(amount);
            deltas.entry(to).or_default()[1] += i128::from(amount);
        }
        self.model.apply(&deltas, &self.prefix)
    }

    async fn step(&mut self, op: &Op) {
        let ctx = format!("{op:?}");
        match op.clone() {
            Op::Transfer {
                from,
                to,
                amount,
                kind,
            } => {
                let t = self.new_transfer(from, to, amount, KINDS[kind]);
                let before = self.model.clone();
                let expected = self.expect_posted(&[(from, to, amount)]);
                let got = self.ledger.transfer(t.clone()).await;
                self.settle(
                    expected,
                    got.map(|t| vec![t]),
                    Call::Transfer(t),
                    before,
                    &ctx,
                );
            }
            Op::Linked(legs) => {
                let group: Vec<NewTransfer> = legs
                    .iter()
                    .map(|&(f, t, a)| self.new_transfer(f, t, a, TransferKind::PaymentCredit))
                    .collect();
                let before = self.model.clone();
                let expected = self.expect_posted(&legs);
                let got = self.ledger.transfer_linked(&group).await;
                self.settle(expected, got, Call::Linked(group), before, &ctx);
            }
            Op::Hold {
                from,
                to,
                amount,
                ttl_ms,
            } => {
                let h = NewHold {
                    id: self.fresh_id(),
                    debit: self.acct(from),
                    credit: self.acct(to),
                    amount: UsdMicros(amount),
                    expires_at: UnixMillis(self.now() + ttl_ms),
                    refs: References::default(),
                };
                let before = self.model.clone();
                let expected = if amount == 0 {
                    Err(refusal("zero_amount"))
                } else if from == to {
                    Err(refusal("same_account"))
                } else if ttl_ms == 0 {
                    Err(refusal("invalid_expiry"))
                } else {
                    let a = i128::from(amount);
                    let deltas = BTreeMap::from([(from, [0, 0, a, 0]), (to, [0, 0, 0, a])]);
                    self.model.apply(&deltas, &self.prefix)
                };
                if expected.is_ok() {
                    self.model.holds.push(HoldM {
                        id: h.id.clone(),
                        debit: from,
                        credit: to,
                        amount,
                        expires_at: h.expires_at.0,
                        resolved_by: None,
                    });
                }
                let got = self.ledger.hold(h.clone()).await;
                self.settle(expected, got.map(|t| vec![t]), Call::Hold(h), before, &ctx);
            }
            Op::Post { hold, percent } => {
                let id = self.fresh_id();
                let before = self.model.clone();
                let (hold_id, amount, expected) = match self.pick_hold(hold) {
                    None => (
                        TransferId::new(format!("{}nohold", self.prefix)).unwrap(),
                        1,
                        Err(refusal("unknown_hold")),
                    ),
                    Some(h) => {
                        let amount = self.model.holds[h].amount * percent / 100;
                        let expected = self.expect_resolve(h, Some(amount), id.as_str());
                        (self.model.holds[h].id.clone(), amount, expected)
                    }
                };
                let got = self
                    .ledger
                    .post(id.clone(), &hold_id, UsdMicros(amount))
                    .await;
                let call = Call::Post(id, hold_id, UsdMicros(amount));
                self.settle(expected, got.map(|t| vec![t]), call, before, &ctx);
            }
            Op::Void { hold } => {
                let id = self.fresh_id();
                let before = self.model.clone();
                let (hold_id, expected) = match self.pick_hold(hold) {
                    None => (
                        TransferId::new(format!("{}nohold", self.prefix)).unwrap(),
                        Err(refusal("unknown_hold")),
                    ),
                    Some(h) => {
                        let expected = self.expect_resolve(h, None, id.as_str());
                        (self.model.holds[h].id.clone(), expected)
                    }
                };
                let got = self.ledger.void(id.clone(), &hold_id).await;
                self.settle(
                    expected,
                    got.map(|t| vec![t]),
                    Call::Void(id, hold_id),
                    before,
                    &ctx,
                );
            }
            Op::Advance(ms) => self.clock.advance_ms(ms),
            Op::Sweep => {
                let now = self.now();
                // Only this case's holds are predicted; earlier cases' expired holds were swept
                // at the end of their case.
                let mut expected = 0;
                for h in 0..self.model.holds.len() {
                    let m = &self.model.holds[h];
                    if m.resolved_by.is_none() && m.expires_at <= now {
                        let void_id = format!("{}#expired", m.id);
                        self.expect_resolve(h, None, &void_id)
                            .expect("voiding an open hold cannot fail");
                        expected += 1;
                    }
                }
                let voided = self.ledger.sweep_expired_holds().await.unwrap();
                assert_eq!(voided, expected, "{ctx}");
                covered("swept", voided);
            }
            Op::Replay(i) => {
                if self.calls.is_empty() {
                    return;
                }
                let (call, original) = self.calls[i % self.calls.len()].clone();
                let got = self.submit(&call).await;
                assert_eq!(got, Ok(original), "{ctx}: a replay returns the original");
                covered("replayed", 1);
            }
            Op::Conflicting(i) => {
                if self.calls.is_empty() {
                    return;
                }
                let (call, _) = self.calls[i % self.calls.len()].clone();
                let changed = match call {
                    Call::Transfer(mut t) => {
                        t.amount.0 += 1;
                        Call::Transfer(t)
                    }
                    Call::Linked(mut g) => {
                        g[0].amount.0 += 1;
                        Call::Linked(g)
                    }
                    Call::Hold(mut h) => {
                        h.amount.0 += 1;
                        Call::Hold(h)
                    }
                    Call::Post(id, hold, a) => Call::Post(id, hold, UsdMicros(a.0 + 1)),
                    // A void has no amount of its own: aim it at another hold instead.
                    Call::Void(id, _) => {
                        Call::Void(id, TransferId::new(format!("{}t1", self.prefix)).unwrap())
                    }
                };
                let got = self.submit(&changed).await.map(|_| ());
                let field = match changed {
                    Call::Void(..) => None,
                    _ => Some("amount".to_string()),
                };
                match field {
                    Some(_) => assert_eq!(
                        got.map_err(|e| refusal_of(&e)),
                        Err(Refusal {
                            code: "conflict",
                            detail: field
                        }),
                        "{ctx}"
                    ),
                    // The void's target may not be a hold at all; either way it must fail.
                    None => assert!(got.is_err(), "{ctx}"),
                }
                covered("conflicting", 1);
            }
        }
    }

    fn pick_hold(&self, i: usize) -> Option<usize> {
        (!self.model.holds.is_empty()).then(|| i % self.model.holds.len())
    }

    /// Model of a post (`Some(amount)`) or void of hold `h`, in the ledger's order of checks.
    fn expect_resolve(&mut self, h: usize, post: Option<u64>, id: &str) -> Result<(), Refusal> {
        let m = self.model.holds[h].clone();
        if post == Some(0) {
            return Err(refusal("zero_amount"));
        }
        if let Some(by) = &m.resolved_by {
            return Err(Refusal {
                code: "hold_already_resolved",
                detail: Some(by.clone()),
            });
        }
        if let Some(amount) = post {
            if self.now() >= m.expires_at {
                return Err(refusal("hold_expired"));
            }
            if amount > m.amount {
                return Err(refusal("post_exceeds_hold"));
            }
        }
        let held = i128::from(m.amount);
        let posted = i128::from(post.unwrap_or(0));
        let deltas = BTreeMap::from([
            (m.debit, [posted, 0, -held, 0]),
            (m.credit, [0, posted, 0, -held]),
        ]);
        self.model.apply(&deltas, &self.prefix)?;
        self.model.holds[h].resolved_by = Some(id.to_owned());
        Ok(())
    }

    async fn submit(&self, call: &Call) -> Result<Vec<Transfer>, LedgerError> {
        let l = self.ledger;
        match call.clone() {
            Call::Transfer(t) => l.transfer(t).await.map(|t| vec![t]),
            Call::Linked(g) => l.transfer_linked(&g).await,
            Call::Hold(h) => l.hold(h).await.map(|t| vec![t]),
            Call::Post(id, hold, a) => l.post(id, &hold, a).await.map(|t| vec![t]),
            Call::Void(id, hold) => l.void(id, &hold).await.map(|t| vec![t]),
        }
    }

    /// Compares the outcome with the model's; on a mismatch the model state is irrelevant (the
    /// case fails). A refused call must leave the model (and so the ledger) as it was.
    fn settle(
        &mut self,
        expected: Result<(), Refusal>,
        got: Result<Vec<Transfer>, LedgerError>,
        call: Call,
        before: Model,
        ctx: &str,
    ) {
        match (expected, got) {
            (Ok(()), Ok(written)) => {
                covered("ok", 1);
                self.calls.push((call, written));
            }
            (Err(want), Err(e)) => {
                covered(e.code(), 1);
                let got = refusal_of(&e);
                if want.detail.is_some() {
                    assert_eq!(got, want, "{ctx}: {e}");
                } else {
                    assert_eq!(got.code, want.code, "{ctx}: {e}");
                }
                self.model = before;
            }
            (Ok(()), Err(e)) => panic!("{ctx}: model accepts, ledger refused: {e}"),
            (Err(want), Ok(t)) => panic!("{ctx}: model refuses ({want:?}), ledger wrote {t:?}"),
        }
    }

    async fn assert_matches_model(&self, ctx: &str) {
        for (i, c) in self.model.counters.iter().enumerate() {
            let b = self.ledger.balance(&self.acct(i)).await.unwrap();
            let got = [
                b.counters.debits_posted,
                b.counters.credits_posted,
                b.counters.debits_pending,
                b.counters.credits_pending,
            ]
            .map(i128::from);
            assert_eq!(&got, c, "{ctx}: {} counters", ACCOUNTS[i]);
            if !Model::allow_negative(i) {
                assert!(b.available() >= 0, "{ctx}: {} below zero", ACCOUNTS[i]);
            }
        }
        let report = self.ledger.check().await.unwrap();
        assert!(report.is_clean(), "{ctx}: {report:#?}");
    }
}

static CASE: AtomicU64 = AtomicU64::new(0);

/// Outcomes seen across all cases of a run, to show the property is not passing vacuously.
static COVERAGE: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

fn covered(outcome: &'static str, n: u64) {
    *COVERAGE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(outcome)
        .or_default() += n;
}

async fn run_case(ledger: &Ledger, clock: &Clock, ops: &[Op]) {
    let prefix = format!("m{}.", CASE.fetch_add(1, Ordering::SeqCst));
    // Holds left open by an earlier (failed) case would make this case's sweep counts wrong.
    clock.advance_ms(1_000_000);
    ledger.sweep_expired_holds().await.unwrap();
    for (i, name) in ACCOUNTS.iter().enumerate().take(REAL) {
        ledger
            .create_account(NewAccount {
                id: AccountId::new(format!("{prefix}{name}")).unwrap(),
                kind: if name.starts_with("agent:") {
                    AccountKind::Agent
                } else {
                    AccountKind::System
                },
                owner: None,
                allow_negative: Model::allow_negative(i),
            })
            .await
            .unwrap();
    }
    let mut case = Case {
        ledger,
        clock,
        prefix,
        model: Model::default(),
        calls: Vec::new(),
        next_id: 0,
    };
    // Start the agents with some credits so that most operations can succeed.
    for agent in 0..3 {
        let t = case.new_transfer(INFLOW, agent, INITIAL, TransferKind::Topup);
        case.expect_posted(&[(INFLOW, agent, INITIAL)]).unwrap();
        ledger.transfer(t).await.unwrap();
    }
    for (n, op) in ops.iter().enumerate() {
        case.step(op).await;
        case.assert_matches_model(&format!("step {n} {op:?}")).await;
    }
    // Leave no open holds behind for the next case's sweep predictions.
    clock.advance_ms(1_000_000);
    ledger.sweep_expired_holds().await.unwrap();
    ledger.check().await.unwrap();
}

/// Runs the property on `db`: 32 cases of up to 40 operations (a second or two per backend).
fn run_model(make_db: impl AsyncFnOnce() -> (Db, Option<crate::harness::TempDir>)) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (db, _dir) = rt.block_on(make_db());
    let clock = Clock::manual(T0);
    let ledger = Ledger::new(db, clock.clone());
    // PROPTEST_CASES overrides the count for a soak run: `PROPTEST_CASES=2000 scripts/test --
    // ledger::model`.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let config = Config {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), 1..=40), |ops| {
        rt.block_on(run_case(&ledger, &clock, &ops));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let coverage = COVERAGE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    eprintln!("model outcomes: {coverage:?}");
    for outcome in ["ok", "insufficient_funds", "replayed", "conflicting"] {
        assert!(
            coverage.get(outcome).copied().unwrap_or(0) > 0,
            "never saw {outcome}: {coverage:?}"
        );
    }
}

#[test]
fn the_ledger_matches_the_model_on_sqlite() {
    run_model(async || {
        let dir = crate::harness::TempDir::new("ledger-model");
        (Db::embedded(dir.path()).await.unwrap(), Some(dir))
    });
}

#[test]
fn the_ledger_matches_the_model_on_postgres() {
    run_model(async || {
        let url = crate::db::fresh_postgres().await;
        (Db::connect(&url).await.unwrap(), None)
    });
}
