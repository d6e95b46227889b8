//! The credits ledger: double-entry bookkeeping in integer micro-dollars, on PostgreSQL or
//! SQLite, modelled on TigerBeetle.
//!
//! * Accounts carry four counters (debits/credits, posted/pending); balances derive from them.
//! * Transfers are immutable rows moving an amount from a debit to a credit account. Their id is
//!   chosen by the client, so a retry is recognised: the same id with the same fields returns the
//!   original transfer, the same id with any other field is a [`LedgerError::Conflict`].
//! * Holds reserve funds (pending) until posted (in full or part) or voided, exactly once; expired
//!   holds can only be voided, and [`Ledger::sweep_expired_holds`] does that.
//! * Linked groups commit all or none.
//!
//! Every call is one database transaction. The invariants that must never break are enforced by
//! the schema itself (see `migrations/*/0002_ledger.sql`): the balance bound is a CHECK evaluated
//! by the UPDATE that moves the money, a hold resolves once by a UNIQUE index, and transfer rows
//! cannot be updated or deleted. This module maps those refusals to typed errors.
//!
//! Concurrency: within a transaction accounts are locked (PostgreSQL) in sorted id order and new
//! transfer rows are inserted in sorted id order, so transactions never wait on each other in a
//! cycle; SQLite transactions take the write lock when they begin.
//!
//! A failed call leaves no trace, and its id is not remembered: retrying it re-evaluates it
//! (unlike TigerBeetle's `id_already_failed`), so a transfer refused for insufficient funds may
//! succeed later under the same id.

mod error;
mod group_commit;
mod store;
mod types;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

pub use error::LedgerError;
pub use types::{
    Account, AccountId, AccountKind, Balance, CheckReport, CounterMismatch, Counters,
    HistoryCursor, HistoryPage, NewAccount, NewHold, NewTransfer, References, Transfer, TransferId,
    TransferKind,
};

use error::violates;
use sqlx::error::ErrorKind;
use store::Tx;

use crate::db::Db;
use crate::money::UsdMicros;
use crate::time::{Clock, UnixMillis};

/// Largest history page.
pub const MAX_HISTORY_PAGE: u32 = 1000;
/// Holds voided per `sweep_expired_holds` call; the caller runs it periodically.
const SWEEP_BATCH: i64 = 500;
/// The reason written on the voids the expiry sweep creates.
const EXPIRED: &str = "expired";

#[derive(Clone, Debug)]
pub struct Ledger {
    db: Db,
    clock: Clock,
    /// Writes done by the one-statement fast path, shared by clones: the fast path falls back
    /// silently by design, so this is how a test (and an operator) sees that it is taken.
    one_statement_writes: Arc<AtomicU64>,
    /// PostgreSQL's group commit, started on first use (it needs a runtime).
    group: Arc<OnceLock<group_commit::GroupCommit>>,
}

/// What a write did: wrote new rows, or found the identical rows already there.
enum Applied {
    Fresh(Vec<Transfer>),
    Replayed(Vec<Transfer>),
}

impl Applied {
    fn into_transfers(self) -> Vec<Transfer> {
        match self {
            Applied::Fresh(t) | Applied::Replayed(t) => t,
        }
    }

    fn into_one(self) -> Transfer {
        self.into_transfers()
            .pop()
            .expect("a single-row write returns its row")
    }
}

/// Per-account counter deltas of a write: [debits_posted, credits_posted, debits_pending,
/// credits_pending]. i128 so that summing many legs cannot overflow before it is range-checked.
type Deltas = BTreeMap<AccountId, [i128; 4]>;
const DP: usize = 0;
const CP: usize = 1;
const DQ: usize = 2;
const CQ: usize = 3;

impl Ledger {
    pub fn new(db: Db, clock: Clock) -> Self {
        Ledger {
            db,
            clock,
            one_statement_writes: Arc::default(),
            group: Arc::default(),
        }
    }

    /// Writes (transfers, holds, posts, voids) the PostgreSQL one-statement path has applied
    /// since this ledger was made; the rest went through the transactional path.
    pub fn one_statement_writes(&self) -> u64 {
        self.one_statement_writes.load(Ordering::Relaxed)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Creates an account, or returns it if it exists with the same kind, owner and bound.
    pub async fn create_account(&self, new: NewAccount) -> Result<Account, LedgerError> {
        if new.kind == AccountKind::Agent && new.allow_negative {
            return Err(LedgerError::InvalidRequest {
                field: "allow_negative",
                reason: "agent accounts can never go negative",
            });
        }
        if let Some(owner) = &new.owner
            && (owner.is_empty() || owner.len() > 256)
        {
            return Err(LedgerError::InvalidRequest {
                field: "owner",
                reason: "must be 1 to 256 bytes",
            });
        }
        match store::insert_account(&self.db, &new, self.clock.now()).await {
            Ok(_) => {}
            // The owner belongs to another account, unless this is a replay of this very one
            // (SQLite may report the owner's uniqueness before noticing the id exists).
            Err(e) if violates(&e, ErrorKind::UniqueViolation, "owner") => {
                if store::account(&self.db, &new.id).await?.is_none() {
                    let owner = new.owner.clone().unwrap_or_default();
                    let holder = store::account_by_owner(&self.db, &owner)
                        .await?
                        .ok_or_else(|| LedgerError::from(e))?;
                    return Err(LedgerError::OwnerTaken {
                        owner,
                        account: AccountId::from_db(holder.id),
                    });
                }
            }
            Err(e) => return Err(e.into()),
        }
        let stored = store::account(&self.db, &new.id)
            .await?
            .ok_or_else(|| LedgerError::Database("account vanished after insert".into()))?
            .account()?;
        let field = if stored.kind != new.kind {
            Some("kind")
        } else if stored.owner != new.owner {
            Some("owner")
        } else if stored.allow_negative != new.allow_negative {
            Some("allow_negative")
        } else {
            None
        };
        match field {
            Some(field) => Err(LedgerError::Conflict {
                id: new.id.to_string(),
                field,
            }),
            None => Ok(stored),
        }
    }

    pub async fn account(&self, id: &AccountId) -> Result<Account, LedgerError> {
        store::account(&self.db, id)
            .await?
            .ok_or_else(|| LedgerError::UnknownAccount(id.clone()))?
            .account()
    }

    pub async fn account_by_owner(&self, owner: &str) -> Result<Option<Account>, LedgerError> {
        store::account_by_owner(&self.db, owner)
            .await?
            .map(|row| row.account())
            .transpose()
    }

    /// A stored transfer by id (`None` when there is none).
    pub async fn transfer_by_id(&self, id: &TransferId) -> Result<Option<Transfer>, LedgerError> {
        store::transfer(&self.db, id).await
    }

    /// Moves `amount` from `debit` to `credit` at once (posted).
    pub async fn transfer(&self, new: NewTransfer) -> Result<Transfer, LedgerError> {
        Ok(self
            .transfer_linked(std::slice::from_ref(&new))
            .await?
            .pop()
            .expect("one transfer in, one out"))
    }

    /// Commits all of `group` or none of it. Balance bounds apply to each account's net effect
    /// across the group (e.g. a payment credit and the request debit it pays for can be linked
    /// in either order). Transfers of a group of two or more record the first one's id as their
    /// `group_id`; replaying the group returns the originals, and any change to it (including
    /// adding or dropping a member) is a conflict.
    pub async fn transfer_linked(
        &self,
        group: &[NewTransfer],
    ) -> Result<Vec<Transfer>, LedgerError> {
        let Some(first) = group.first() else {
            return Err(LedgerError::InvalidRequest {
                field: "group",
                reason: "is empty",
            });
        };
        let group_id = (group.len() > 1).then(|| first.id.clone());
        let now = self.clock.now();
        let mut rows = Vec::with_capacity(group.len());
        for t in group {
            if !t.kind.is_single_phase() {
                return Err(LedgerError::InvalidRequest {
                    field: "kind",
                    reason: "holds, posts and voids have their own calls",
                });
            }
            check_amount(t.amount)?;
            if t.debit == t.credit {
                return Err(LedgerError::SameAccount);
            }
            t.refs.validate()?;
            if rows.iter().any(|r: &Transfer| r.id == t.id) {
                return Err(LedgerError::InvalidRequest {
                    field: "id",
                    reason: "appears twice in the group",
                });
            }
            rows.push(Transfer {
                id: t.id.clone(),
                seq: 0,
                kind: t.kind,
                debit: t.debit.clone(),
                credit: t.credit.clone(),
                amount: t.amount,
                refs: t.refs.clone(),
                group_id: group_id.clone(),
                pending_id: None,
                expires_at: None,
                created_at: now,
            });
        }
        let deltas = deltas_of(&rows, 0);
        if self.try_in_one_statement(&mut rows, &deltas).await {
            return Ok(rows);
        }
        let mut tx = Tx::begin(&self.db).await?;
        if let Some(replayed) = replay(&mut tx, &rows, group_id.as_ref()).await? {
            tx.rollback().await?;
            return Ok(replayed);
        }
        Ok(self
            .apply(tx, rows, group_id.as_ref(), deltas)
            .await?
            .into_transfers())
    }

    /// Reserves funds: `amount` leaves `debit`'s available balance now and reaches `credit`
    /// only when posted.
    pub async fn hold(&self, new: NewHold) -> Result<Transfer, LedgerError> {
        check_amount(new.amount)?;
        if new.debit == new.credit {
            return Err(LedgerError::SameAccount);
        }
        new.refs.validate()?;
        // Stored as BIGINT: a later expiry could not be stored as given (and a retry would then
        // differ from the stored hold).
        if i64::try_from(new.expires_at.0).is_err() {
            return Err(LedgerError::InvalidExpiry);
        }
        let now = self.clock.now();
        let expires_at = new.expires_at;
        let row = Transfer {
            id: new.id,
            seq: 0,
            kind: TransferKind::Hold,
            debit: new.debit,
            credit: new.credit,
            amount: new.amount,
            refs: new.refs,
            group_id: None,
            pending_id: None,
            expires_at: Some(expires_at),
            created_at: now,
        };
        let deltas = deltas_of(std::slice::from_ref(&row), 0);
        let mut rows = vec![row];
        if expires_at > now && self.try_in_one_statement(&mut rows, &deltas).await {
            return Ok(rows.remove(0));
        }
        let mut tx = Tx::begin(&self.db).await?;
        if let Some(mut replayed) = replay(&mut tx, &rows, None).await? {
            tx.rollback().await?;
            return Ok(replayed.remove(0));
        }
        // After the replay check: retrying a hold after its expiry still returns the original.
        if expires_at <= now {
            return Err(LedgerError::InvalidExpiry);
        }
        Ok(self.apply(tx, rows, None, deltas).await?.into_one())
    }

    /// Posts `amount` (at most the held amount) of `hold` to its credit account and releases
    /// the rest. A hold can be posted only before it expires; to release it all, void it.
    pub async fn post(
        &self,
        id: TransferId,
        hold: &TransferId,
        amount: UsdMicros,
    ) -> Result<Transfer, LedgerError> {
        check_amount(amount)?;
        Ok(self
            .resolve(id, hold, Some(amount), References::default())
            .await?
            .into_one())
    }

    /// Releases all of `hold` back to its debit account; allowed after expiry too.
    pub async fn void(&self, id: TransferId, hold: &TransferId) -> Result<Transfer, LedgerError> {
        Ok(self
            .resolve(id, hold, None, References::default())
            .await?
            .into_one())
    }

    /// Posts (`post = Some(amount)`) or voids (`None`) a hold.
    async fn resolve(
        &self,
        id: TransferId,
        hold_id: &TransferId,
        post: Option<UsdMicros>,
        refs: References,
    ) -> Result<Applied, LedgerError> {
        if let Some(done) = self
            .resolve_in_one_statement(&id, hold_id, post, &refs)
            .await?
        {
            return Ok(Applied::Fresh(done));
        }
        let mut tx = Tx::begin(&self.db).await?;
        // Read after BEGIN (which may wait for SQLite's write lock), so expiry is judged as late
        // as possible. A PostgreSQL post can still commit after the instant it was judged (it
        // may wait for account locks); the hold had not expired when it was decided.
        let now = self.clock.now();
        let hold = match tx.transfer(hold_id).await? {
            Some(t) if t.kind == TransferKind::Hold => t,
            _ => return Err(LedgerError::UnknownHold(hold_id.clone())),
        };
        let row = resolution_row(id, &hold, post, refs, now);
        if let Some(replayed) = replay(&mut tx, std::slice::from_ref(&row), None).await? {
            tx.rollback().await?;
            return Ok(Applied::Replayed(replayed));
        }
        if let Some(by) = tx.resolution_of(&hold.id).await? {
            return Err(LedgerError::HoldAlreadyResolved { hold: hold.id, by });
        }
        if let Some(amount) = post {
            let expires_at = hold.expires_at.unwrap_or(UnixMillis(0));
            if now >= expires_at {
                return Err(LedgerError::HoldExpired {
                    hold: hold.id,
                    expired_at: expires_at,
                });
            }
            if amount > hold.amount {
                return Err(LedgerError::PostExceedsHold {
                    hold: hold.id,
                    held: hold.amount.0,
                    requested: amount.0,
                });
            }
        }
        let deltas = deltas_of(std::slice::from_ref(&row), hold.amount.0);
        self.apply(tx, vec![row], None, deltas).await
    }

    /// Voids every unresolved hold whose expiry has passed (up to a batch per call), with the
    /// derived id `<hold id>#expired`, so concurrent or repeated sweeps void each hold once.
    /// Returns how many holds this call voided.
    pub async fn sweep_expired_holds(&self) -> Result<u64, LedgerError> {
        let holds = store::expired_holds(&self.db, self.clock.now(), SWEEP_BATCH).await?;
        let mut voided = 0;
        for hold in holds {
            let refs = References {
                reason: Some(EXPIRED.to_owned()),
                ..References::default()
            };
            match self
                .resolve(TransferId::expiry_void_of(&hold), &hold, None, refs)
                .await
            {
                Ok(Applied::Fresh(_)) => voided += 1,
                // Another sweeper, or the client, got there first.
                Ok(Applied::Replayed(_)) | Err(LedgerError::HoldAlreadyResolved { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(voided)
    }

    /// Accounts and their balances in id order, after `after` (exclusive), `limit` (1..=1000) at
    /// a time: the operator's list.
    pub async fn accounts(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(Account, Balance)>, LedgerError> {
        store::accounts(&self.db, after, limit.clamp(1, 1000))
            .await?
            .into_iter()
            .map(|row| {
                let account = row.account()?;
                let balance = Balance {
                    account: account.id.clone(),
                    counters: row.counters()?,
                };
                Ok((account, balance))
            })
            .collect()
    }

    pub async fn balance(&self, account: &AccountId) -> Result<Balance, LedgerError> {
        let row = store::account(&self.db, account)
            .await?
            .ok_or_else(|| LedgerError::UnknownAccount(account.clone()))?;
        Ok(Balance {
            account: account.clone(),
            counters: row.counters()?,
        })
    }

    /// The transfers touching `account`, newest first, `limit` (1..=1000) at a time. Pass the
    /// returned cursor to continue: pages never repeat a transfer, and every transfer committed
    /// before the first page was read appears exactly once. (On PostgreSQL `seq` is assigned at
    /// insert, not commit, so a transfer still in flight then may commit with a seq below the
    /// cursor and be missed by that walk, as if it were newer than the walk.)
    pub async fn history(
        &self,
        account: &AccountId,
        cursor: Option<HistoryCursor>,
        limit: u32,
    ) -> Result<HistoryPage, LedgerError> {
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        if store::account(&self.db, account).await?.is_none() {
            return Err(LedgerError::UnknownAccount(account.clone()));
        }
        let before = cursor.map_or(i64::MAX, |c| c.0);
        let transfers = store::history(&self.db, account, before, i64::from(limit)).await?;
        let next = (transfers.len() == limit as usize)
            .then(|| transfers.last().map(|t| HistoryCursor(t.seq)))
            .flatten();
        Ok(HistoryPage { transfers, next })
    }

    /// Every transfer newest first, optionally only of `kind` and touching `account`,
    /// `limit` (1..=1000) at a time, continued by the returned cursor (as `history`).
    pub async fn transfers(
        &self,
        kind: Option<TransferKind>,
        account: Option<&AccountId>,
        cursor: Option<HistoryCursor>,
        limit: u32,
    ) -> Result<HistoryPage, LedgerError> {
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        let before = cursor.map_or(i64::MAX, |c| c.0);
        let transfers = store::transfers(&self.db, kind, account, before, i64::from(limit)).await?;
        let next = (transfers.len() == limit as usize)
            .then(|| transfers.last().map(|t| HistoryCursor(t.seq)))
            .flatten();
        Ok(HistoryPage { transfers, next })
    }

    /// Holds not yet posted or voided (expired ones included until the sweep voids them),
    /// newest first, at most `limit` (1..=1000).
    pub async fn open_holds(&self, limit: u32) -> Result<Vec<Transfer>, LedgerError> {
        store::open_holds(&self.db, i64::from(limit.clamp(1, 1000))).await
    }

    /// Audits the whole ledger: recomputes every account's counters from the transfer rows and
    /// compares them with the stored ones, and checks that posted and pending money each sum
    /// to zero over all accounts and that no bounded account is below zero.
    pub async fn check(&self) -> Result<CheckReport, LedgerError> {
        let rows = store::recompute(&self.db).await?;
        let mut report = CheckReport::default();
        for r in rows {
            report.accounts += 1;
            let stored = [
                r.debits_posted,
                r.credits_posted,
                r.debits_pending,
                r.credits_pending,
            ];
            let recomputed = [
                r.r_debits_posted,
                r.r_credits_posted,
                r.r_debits_pending,
                r.r_credits_pending,
            ];
            let id = AccountId::from_db(r.id);
            report.posted_sum += i128::from(stored[CP]) - i128::from(stored[DP]);
            report.pending_sum += i128::from(stored[CQ]) - i128::from(stored[DQ]);
            if !r.allow_negative
                && i128::from(stored[CP]) - i128::from(stored[DP]) - i128::from(stored[DQ]) < 0
            {
                report.below_bound.push(id.clone());
            }
            if stored != recomputed {
                // Negative values (impossible under the schema) show as 0 in the u64 report;
                // the mismatch itself is what matters.
                let c = |v: [i64; 4]| Counters {
                    debits_posted: u64::try_from(v[DP]).unwrap_or(0),
                    credits_posted: u64::try_from(v[CP]).unwrap_or(0),
                    debits_pending: u64::try_from(v[DQ]).unwrap_or(0),
                    credits_pending: u64::try_from(v[CQ]).unwrap_or(0),
                };
                report.mismatches.push(CounterMismatch {
                    account: id,
                    stored: c(stored),
                    recomputed: c(recomputed),
                });
            }
        }
        report.bad_resolutions = store::bad_resolutions(&self.db).await?;
        Ok(report)
    }

    /// PostgreSQL's fast path for a write that succeeds: one statement (`ledger_apply`, shared
    /// with the concurrent writes of the group commit) instead of a transaction of 8–10,
    /// holding the account locks for that statement only. `true` when
    /// it wrote `rows` (their seqs filled in). `false` when it wrote nothing and the
    /// transactional path must decide: a replay, a conflict, an unknown account, insufficient
    /// funds, a concurrently resolved hold, an overflow — so every refusal and every replay
    /// keeps exactly one implementation, the one the model and chaos tests pin down.
    async fn try_in_one_statement(&self, rows: &mut [Transfer], deltas: &Deltas) -> bool {
        let Db::Postgres(pool) = &self.db else {
            // SQLite runs in-process: round trips cost nothing there.
            return false;
        };
        let mut narrowed = Vec::with_capacity(deltas.len());
        for (account, delta) in deltas {
            let mut add = [0i64; 4];
            for (to, from) in add.iter_mut().zip(delta) {
                match i64::try_from(*from) {
                    Ok(v) => *to = v,
                    Err(_) => return false,
                }
            }
            narrowed.push(store::AccountDelta {
                account: account.clone(),
                add,
            });
        }
        let group = self
            .group
            .get_or_init(|| group_commit::GroupCommit::start(pool.clone()));
        let write = store::BatchWrite {
            rows: rows.to_vec(),
            deltas: narrowed,
        };
        match group.apply(write).await {
            Some(seqs) => {
                for (row, seq) in rows.iter_mut().zip(seqs) {
                    row.seq = seq;
                }
                self.one_statement_writes.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The fast path of a post or void: the hold is read once (transfers are immutable) and
    /// checked here; whatever does not plainly succeed goes to the transactional `resolve`.
    async fn resolve_in_one_statement(
        &self,
        id: &TransferId,
        hold_id: &TransferId,
        post: Option<UsdMicros>,
        refs: &References,
    ) -> Result<Option<Vec<Transfer>>, LedgerError> {
        if !matches!(self.db, Db::Postgres(_)) {
            return Ok(None);
        }
        let hold = match store::transfer(&self.db, hold_id).await? {
            Some(t) if t.kind == TransferKind::Hold => t,
            _ => return Ok(None),
        };
        let now = self.clock.now();
        if let Some(amount) = post
            && (now >= hold.expires_at.unwrap_or(UnixMillis(0)) || amount > hold.amount)
        {
            return Ok(None);
        }
        let row = resolution_row(id.clone(), &hold, post, refs.clone(), now);
        let deltas = deltas_of(std::slice::from_ref(&row), hold.amount.0);
        let mut rows = vec![row];
        Ok(self
            .try_in_one_statement(&mut rows, &deltas)
            .await
            .then_some(rows))
    }

    /// Locks the accounts (sorted), inserts the rows (sorted by id), applies the deltas and
    /// commits. Any error rolls everything back (dropping `tx` rolls back).
    async fn apply(
        &self,
        mut tx: Tx,
        mut rows: Vec<Transfer>,
        group: Option<&TransferId>,
        deltas: Deltas,
    ) -> Result<Applied, LedgerError> {
        let mut snapshots = Vec::with_capacity(deltas.len());
        for account in deltas.keys() {
            match tx.lock_account(account).await? {
                Some(row) => snapshots.push(row.counters()?),
                None => return Err(LedgerError::UnknownAccount(account.clone())),
            }
        }
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|&a, &b| rows[a].id.cmp(&rows[b].id));
        for &i in &order {
            match tx.insert_transfer(&rows[i]).await {
                // The stored row is exactly `rows[i]` plus the seq the database assigned (the
                // model test checks that replays, which read the row back, return the same).
                Ok(Some(seq)) => rows[i].seq = seq,
                // A concurrent call with the same id committed between our replay check and
                // this insert (PostgreSQL only: SQLite writers are serialised). Answer as if it
                // had been there all along.
                Ok(None) => {
                    tx.rollback().await?;
                    let mut tx = Tx::begin(&self.db).await?;
                    let found = replay(&mut tx, &rows, group).await;
                    tx.rollback().await?;
                    return match found? {
                        Some(original) => Ok(Applied::Replayed(original)),
                        None => Err(LedgerError::Database(format!(
                            "transfer {} neither inserted nor found",
                            rows[i].id
                        ))),
                    };
                }
                Err(e)
                    if violates(&e, ErrorKind::UniqueViolation, "ledger_hold_resolved_once")
                        || violates(
                            &e,
                            ErrorKind::UniqueViolation,
                            "ledger_transfers.pending_id",
                        ) =>
                {
                    // Someone resolved the hold between our check and this insert.
                    tx.rollback().await?;
                    let hold = rows[i]
                        .pending_id
                        .clone()
                        .unwrap_or_else(|| rows[i].id.clone());
                    let mut tx = Tx::begin(&self.db).await?;
                    let by = tx.resolution_of(&hold).await;
                    tx.rollback().await?;
                    return Err(match by? {
                        Some(by) => LedgerError::HoldAlreadyResolved { hold, by },
                        None => LedgerError::from(e),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        for ((account, delta), before) in deltas.iter().zip(snapshots) {
            let d = checked_deltas(account, &before, delta)?;
            if let Err(e) = tx.add_to_counters(account, d).await {
                if violates(&e, ErrorKind::CheckViolation, "ledger_balance_bound") {
                    let available = Balance {
                        account: account.clone(),
                        counters: before,
                    }
                    .available();
                    let needed = delta[DP] + delta[DQ] - delta[CP];
                    return Err(LedgerError::InsufficientFunds {
                        account: account.clone(),
                        available,
                        needed: i64::try_from(needed).unwrap_or(i64::MAX),
                    });
                }
                return Err(e.into());
            }
        }
        tx.commit().await?;
        Ok(Applied::Fresh(rows))
    }
}

/// The post (`post = Some(amount)`) or void of `hold`, as it will be stored.
fn resolution_row(
    id: TransferId,
    hold: &Transfer,
    post: Option<UsdMicros>,
    refs: References,
    now: UnixMillis,
) -> Transfer {
    Transfer {
        id,
        seq: 0,
        kind: if post.is_some() {
            TransferKind::Post
        } else {
            TransferKind::Void
        },
        debit: hold.debit.clone(),
        credit: hold.credit.clone(),
        amount: post.unwrap_or(hold.amount),
        refs,
        group_id: None,
        pending_id: Some(hold.id.clone()),
        expires_at: None,
        created_at: now,
    }
}

/// Amounts are positive and fit the database's signed 64-bit columns.
fn check_amount(amount: UsdMicros) -> Result<(), LedgerError> {
    if amount.0 == 0 {
        return Err(LedgerError::ZeroAmount);
    }
    if i64::try_from(amount.0).is_err() {
        return Err(LedgerError::AmountTooLarge(amount.0));
    }
    Ok(())
}

/// The counter deltas of `rows`. `released` is the held amount a post releases (a void's row
/// amount already is the whole hold).
fn deltas_of(rows: &[Transfer], released: u64) -> Deltas {
    let mut d = Deltas::new();
    for r in rows {
        let a = i128::from(r.amount.0);
        let (dr, cr) = match r.kind {
            TransferKind::Hold => ([(DQ, a)], [(CQ, a)]),
            TransferKind::Void => ([(DQ, -a)], [(CQ, -a)]),
            TransferKind::Post => {
                let released = i128::from(released);
                d.entry(r.debit.clone()).or_default()[DQ] -= released;
                d.entry(r.credit.clone()).or_default()[CQ] -= released;
                ([(DP, a)], [(CP, a)])
            }
            _ => ([(DP, a)], [(CP, a)]),
        };
        for (i, v) in dr {
            d.entry(r.debit.clone()).or_default()[i] += v;
        }
        for (i, v) in cr {
            d.entry(r.credit.clone()).or_default()[i] += v;
        }
    }
    d
}

/// Narrows `delta` to what the UPDATE adds, refusing anything that would take a counter, or the
/// balance expression the schema's CHECK evaluates, out of i64 (PostgreSQL would raise an
/// overflow error, SQLite would silently switch to floating point).
fn checked_deltas(
    account: &AccountId,
    before: &Counters,
    delta: &[i128; 4],
) -> Result<[i64; 4], LedgerError> {
    let overflow = || LedgerError::Overflow(account.clone());
    let old = [
        before.debits_posted,
        before.credits_posted,
        before.debits_pending,
        before.credits_pending,
    ];
    let mut new = [0i128; 4];
    let mut out = [0i64; 4];
    for i in 0..4 {
        new[i] = i128::from(old[i]) + delta[i];
        if new[i] > i128::from(i64::MAX) {
            return Err(overflow());
        }
        // A negative result is left to the schema's `>= 0` CHECK (it would be a ledger bug).
        out[i] = i64::try_from(delta[i]).map_err(|_| overflow())?;
    }
    if new[CP] - new[DP] - new[DQ] < i128::from(i64::MIN) {
        return Err(overflow());
    }
    Ok(out)
}

/// If every row already exists with identical fields (and, for a group, the stored group has
/// exactly these members), returns the stored rows. If none exists, `None`. Anything else is
/// a conflict.
async fn replay(
    tx: &mut Tx,
    rows: &[Transfer],
    group: Option<&TransferId>,
) -> Result<Option<Vec<Transfer>>, LedgerError> {
    let mut stored = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(s) = tx.transfer(&row.id).await? {
            if let Some(field) = differing_field(&s, row) {
                return Err(LedgerError::Conflict {
                    id: row.id.to_string(),
                    field,
                });
            }
            stored.push(s);
        }
    }
    if stored.is_empty() {
        return Ok(None);
    }
    let partial = stored.len() != rows.len();
    let members_differ = match group {
        Some(g) => {
            let mut ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
            ids.sort_unstable();
            tx.group_members(g).await? != ids
        }
        None => false,
    };
    if partial || members_differ {
        return Err(LedgerError::Conflict {
            id: group.map_or_else(|| rows[0].id.to_string(), ToString::to_string),
            field: "group",
        });
    }
    Ok(Some(stored))
}

/// The first field in which a stored transfer differs from a resubmission (ignoring what the
/// ledger assigns: seq and created_at).
fn differing_field(stored: &Transfer, new: &Transfer) -> Option<&'static str> {
    if stored.kind != new.kind {
        return Some("kind");
    }
    if stored.debit != new.debit {
        return Some("debit_account");
    }
    if stored.credit != new.credit {
        return Some("credit_account");
    }
    if stored.amount != new.amount {
        return Some("amount");
    }
    for ((field, a), (_, b)) in stored.refs.fields().into_iter().zip(new.refs.fields()) {
        if a != b {
            return Some(field);
        }
    }
    if stored.group_id != new.group_id {
        return Some("group_id");
    }
    if stored.pending_id != new.pending_id {
        return Some("pending_id");
    }
    if stored.expires_at != new.expires_at {
        return Some("expires_at");
    }
    None
}
