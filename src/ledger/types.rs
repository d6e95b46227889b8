//! The ledger's vocabulary: validated ids, transfer kinds, requests and what queries return.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::LedgerError;
use crate::money::UsdMicros;
use crate::time::UnixMillis;

/// Longest account id; the schema's CHECK says the same.
const ACCOUNT_ID_MAX: usize = 128;
/// Longest client-chosen transfer id. The schema allows 200 so that system-derived ids (an
/// expiry void is `<hold id>#expired`) always fit.
const TRANSFER_ID_MAX: usize = 128;

/// Ids are restricted to a conservative ASCII set: they end up in logs, URLs and audit exports,
/// and must never contain whitespace, quotes or look-alike Unicode. `#` is deliberately absent:
/// it marks ids the ledger derives itself, which therefore can never collide with a client's.
fn validate_id(what: &'static str, value: &str, max: usize) -> Result<(), LedgerError> {
    let reason = if value.is_empty() {
        Some("is empty")
    } else if value.len() > max {
        Some("is too long")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-'))
    {
        Some("may only contain A-Z a-z 0-9 : . _ -")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LedgerError::InvalidId {
            what,
            value: value.chars().take(max + 8).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// An account id such as `agent:42`, `sys:revenue` or `sys:inflow:eip155:8453:0xabc…`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    pub fn new(value: impl Into<String>) -> Result<Self, LedgerError> {
        let value = value.into();
        validate_id("account id", &value, ACCOUNT_ID_MAX)?;
        Ok(AccountId(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A value read back from the database, which only ever stored validated ids.
    pub(super) fn from_db(value: String) -> Self {
        AccountId(value)
    }
}

/// A transfer id, chosen by the client *before* it submits (and persisted with its own record),
/// so that a retry after a timeout carries the same id and cannot apply twice.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TransferId(String);

impl TransferId {
    pub fn new(value: impl Into<String>) -> Result<Self, LedgerError> {
        let value = value.into();
        validate_id("transfer id", &value, TRANSFER_ID_MAX)?;
        Ok(TransferId(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the void that the expiry sweep writes for `hold`: derived, so that every
    /// sweeper (another instance, a rerun) computes the same id and the void lands once.
    pub(super) fn expiry_void_of(hold: &TransferId) -> Self {
        TransferId(format!("{}#expired", hold.0))
    }

    pub(super) fn from_db(value: String) -> Self {
        TransferId(value)
    }
}

macro_rules! string_newtype_impls {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<String> for $t {
            type Error = LedgerError;
            fn try_from(value: String) -> Result<Self, LedgerError> {
                $t::new(value)
            }
        }
        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.0
            }
        }
        impl std::str::FromStr for $t {
            type Err = LedgerError;
            fn from_str(s: &str) -> Result<Self, LedgerError> {
                $t::new(s)
            }
        }
    };
}
string_newtype_impls!(AccountId);
string_newtype_impls!(TransferId);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A customer's credits; never negative.
    Agent,
    /// The operator's books: revenue, on-chain inflow, adjustments.
    System,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Agent => "agent",
            AccountKind::System => "system",
        }
    }

    pub(super) fn from_db(s: &str) -> Result<Self, LedgerError> {
        match s {
            "agent" => Ok(AccountKind::Agent),
            "system" => Ok(AccountKind::System),
            other => Err(LedgerError::Database(format!(
                "unknown account kind {other:?}"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// An on-chain payment credited to an agent (inflow → agent).
    PaymentCredit,
    /// A request paid from credits (agent → revenue).
    RequestDebit,
    Topup,
    /// Reserves funds (pending); resolved by exactly one `Post` or `Void`.
    Hold,
    Post,
    Void,
    Refund,
    /// An operator's correction; always a new transfer, never an edit.
    Adjustment,
}

impl TransferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::PaymentCredit => "payment_credit",
            TransferKind::RequestDebit => "request_debit",
            TransferKind::Topup => "topup",
            TransferKind::Hold => "hold",
            TransferKind::Post => "post",
            TransferKind::Void => "void",
            TransferKind::Refund => "refund",
            TransferKind::Adjustment => "adjustment",
        }
    }

    /// Kinds that move posted money in one step (what `transfer` and `transfer_linked`
    /// accept); holds, posts and voids have their own calls.
    pub fn is_single_phase(self) -> bool {
        !matches!(
            self,
            TransferKind::Hold | TransferKind::Post | TransferKind::Void
        )
    }

    /// The kind named `s` (as stored and as serialized), if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::from_db(s).ok()
    }

    pub const ALL: [TransferKind; 8] = [
        TransferKind::PaymentCredit,
        TransferKind::RequestDebit,
        TransferKind::Topup,
        TransferKind::Hold,
        TransferKind::Post,
        TransferKind::Void,
        TransferKind::Refund,
        TransferKind::Adjustment,
    ];

    pub(super) fn from_db(s: &str) -> Result<Self, LedgerError> {
        Ok(match s {
            "payment_credit" => TransferKind::PaymentCredit,
            "request_debit" => TransferKind::RequestDebit,
            "topup" => TransferKind::Topup,
            "hold" => TransferKind::Hold,
            "post" => TransferKind::Post,
            "void" => TransferKind::Void,
            "refund" => TransferKind::Refund,
            "adjustment" => TransferKind::Adjustment,
            other => {
                return Err(LedgerError::Database(format!(
                    "unknown transfer kind {other:?}"
                )));
            }
        })
    }
}

/// Pointers from a transfer back to the business event it records. All optional; all part of
/// the transfer's identity (a retry with a different reference is a conflict, not a replay).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct References {
    pub quote_id: Option<String>,
    pub request_hash: Option<String>,
    pub chain_tx: Option<String>,
    pub payer: Option<String>,
    pub nonce: Option<String>,
    pub reason: Option<String>,
}

impl References {
    const MAX_LEN: usize = 512;

    pub(super) fn validate(&self) -> Result<(), LedgerError> {
        for (field, value) in self.fields() {
            if let Some(v) = value
                && (v.is_empty() || v.len() > Self::MAX_LEN)
            {
                return Err(LedgerError::InvalidRequest {
                    field,
                    reason: "must be 1 to 512 bytes",
                });
            }
        }
        Ok(())
    }

    pub(super) fn fields(&self) -> [(&'static str, &Option<String>); 6] {
        [
            ("quote_id", &self.quote_id),
            ("request_hash", &self.request_hash),
            ("chain_tx", &self.chain_tx),
            ("payer", &self.payer),
            ("nonce", &self.nonce),
            ("reason", &self.reason),
        ]
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccount {
    pub id: AccountId,
    pub kind: AccountKind,
    pub owner: Option<String>,
    /// Only system source accounts (inflow, adjustments) may go negative.
    pub allow_negative: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: AccountId,
    pub kind: AccountKind,
    pub owner: Option<String>,
    pub allow_negative: bool,
    pub created_at: UnixMillis,
}

/// A single-phase transfer: `amount` moves from `debit` to `credit` at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTransfer {
    pub id: TransferId,
    pub kind: TransferKind,
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: UsdMicros,
    pub refs: References,
}

/// Reserves `amount` of `debit`'s available balance for `credit` until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewHold {
    pub id: TransferId,
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: UsdMicros,
    /// Absolute, so that a retry of the same hold is identical (a relative timeout would not be).
    pub expires_at: UnixMillis,
    pub refs: References,
}

/// A stored transfer, exactly as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transfer {
    pub id: TransferId,
    /// Position in the ledger's history (assigned by the database); the history cursor.
    pub seq: i64,
    pub kind: TransferKind,
    pub debit: AccountId,
    pub credit: AccountId,
    /// For a post: the amount posted. For a void: the amount released (the whole hold).
    pub amount: UsdMicros,
    pub refs: References,
    pub group_id: Option<TransferId>,
    /// The hold a post or void resolves.
    pub pending_id: Option<TransferId>,
    pub expires_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
}

/// An account's four counters, in micro-dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub debits_posted: u64,
    pub credits_posted: u64,
    pub debits_pending: u64,
    pub credits_pending: u64,
}

/// An account's balance, derived from its counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub account: AccountId,
    pub counters: Counters,
}

impl Balance {
    /// credits_posted − debits_posted. Negative only for source accounts that allow it.
    /// (Counters fit in i64, so the difference of two of them fits in i64 too.)
    pub fn posted(&self) -> i64 {
        self.counters.credits_posted as i64 - self.counters.debits_posted as i64
    }

    /// Reserved by open holds.
    pub fn held(&self) -> UsdMicros {
        UsdMicros(self.counters.debits_pending)
    }

    /// What can still be spent or held: posted − held. The ledger keeps it within i64 (a write
    /// that would push it out is refused as an overflow).
    pub fn available(&self) -> i64 {
        i64::try_from(
            i128::from(self.counters.credits_posted)
                - i128::from(self.counters.debits_posted)
                - i128::from(self.counters.debits_pending),
        )
        .unwrap_or(i64::MIN)
    }
}

/// Opaque position in an account's history; pass it back to get the next (older) page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HistoryCursor(pub i64);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// Newest first.
    pub transfers: Vec<Transfer>,
    /// Present when there may be older transfers.
    pub next: Option<HistoryCursor>,
}

/// One account whose stored counters differ from those recomputed from its transfers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CounterMismatch {
    pub account: AccountId,
    pub stored: Counters,
    pub recomputed: Counters,
}

/// The outcome of [`super::Ledger::check`]. Clean means every invariant held.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub accounts: u64,
    pub mismatches: Vec<CounterMismatch>,
    /// Σ (credits_posted − debits_posted) over all accounts; 0 in a balanced ledger.
    pub posted_sum: i128,
    /// Σ (credits_pending − debits_pending) over all accounts; 0 in a balanced ledger.
    pub pending_sum: i128,
    /// Accounts below their bound (should be impossible: the schema refuses it).
    pub below_bound: Vec<AccountId>,
    /// Posts and voids that do not match the hold they name: not a hold, other accounts, a
    /// post above the held amount, or a void not releasing exactly the held amount.
    pub bad_resolutions: Vec<TransferId>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty()
            && self.posted_sum == 0
            && self.pending_sum == 0
            && self.below_bound.is_empty()
            && self.bad_resolutions.is_empty()
    }
}
