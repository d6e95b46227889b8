//! Every way a ledger call can fail. A failed call never changes anything: each call runs in one
//! database transaction that is rolled back on any error.

use super::types::{AccountId, TransferId};
use crate::time::UnixMillis;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("unknown account {0}")]
    UnknownAccount(AccountId),
    #[error("insufficient funds in {account}: {available} available, {needed} needed")]
    InsufficientFunds {
        account: AccountId,
        /// Micro-dollars available before the call.
        available: i64,
        /// Micro-dollars the call needed from this account's available balance.
        needed: i64,
    },
    /// The id exists with different contents: a retry must repeat the original exactly.
    #[error("{id} already exists with a different {field}")]
    Conflict { id: String, field: &'static str },
    #[error("owner {owner} already has account {account}")]
    OwnerTaken { owner: String, account: AccountId },
    #[error("debit and credit account are the same")]
    SameAccount,
    #[error("amount is zero")]
    ZeroAmount,
    #[error("amount {0} is above the ledger's limit (i64::MAX micro-dollars)")]
    AmountTooLarge(u64),
    /// A counter or balance of this account would leave the 64-bit range.
    #[error("account {0} would overflow")]
    Overflow(AccountId),
    #[error("unknown hold {0}")]
    UnknownHold(TransferId),
    #[error("hold {hold} was already resolved by {by}")]
    HoldAlreadyResolved { hold: TransferId, by: TransferId },
    #[error("hold {hold} expired at {expired_at:?}")]
    HoldExpired {
        hold: TransferId,
        expired_at: UnixMillis,
    },
    #[error("post of {requested} exceeds hold {hold} of {held}")]
    PostExceedsHold {
        hold: TransferId,
        held: u64,
        requested: u64,
    },
    #[error("a hold must expire in the future")]
    InvalidExpiry,
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidId {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("invalid {field}: {reason}")]
    InvalidRequest {
        field: &'static str,
        reason: &'static str,
    },
    /// The database could not be reached in time (down, pool exhausted, locked). Nothing was
    /// written; the call may be retried with the same id.
    #[error("ledger database unavailable: {0}")]
    Unavailable(String),
    /// Anything else the database refused; a bug or a broken database, never a client error.
    #[error("ledger database error: {0}")]
    Database(String),
}

impl LedgerError {
    /// Stable, machine-readable code (for API responses, metrics and logs).
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::UnknownAccount(_) => "unknown_account",
            LedgerError::InsufficientFunds { .. } => "insufficient_funds",
            LedgerError::Conflict { .. } => "conflict",
            LedgerError::OwnerTaken { .. } => "owner_taken",
            LedgerError::SameAccount => "same_account",
            LedgerError::ZeroAmount => "zero_amount",
            LedgerError::AmountTooLarge(_) => "amount_too_large",
            LedgerError::Overflow(_) => "overflow",
            LedgerError::UnknownHold(_) => "unknown_hold",
            LedgerError::HoldAlreadyResolved { .. } => "hold_already_resolved",
            LedgerError::HoldExpired { .. } => "hold_expired",
            LedgerError::PostExceedsHold { .. } => "post_exceeds_hold",
            LedgerError::InvalidExpiry => "invalid_expiry",
            LedgerError::InvalidId { .. } => "invalid_id",
            LedgerError::InvalidRequest { .. } => "invalid_request",
            LedgerError::Unavailable(_) => "unavailable",
            LedgerError::Database(_) => "database",
        }
    }

    /// Whether retrying the same call later may succeed without changing it.
    pub fn is_transient(&self) -> bool {
        matches!(self, LedgerError::Unavailable(_))
    }
}

/// SQLite's primary result codes that mean "could not get the database now".
const SQLITE_BUSY: &str = "5";
const SQLITE_LOCKED: &str = "6";

impl From<sqlx::Error> for LedgerError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => LedgerError::Unavailable(e.to_string()),
            sqlx::Error::Database(d) => {
                let code = d.code().unwrap_or_default();
                // SQLite reports extended codes (e.g. 517 = BUSY_SNAPSHOT); the low byte is the
                // primary code. PostgreSQL class 08 is "connection exception", 57P0x "shutdown"
                // (a terminated backend, a restart), class 53 "insufficient resources" (too
                // many connections, disk full), and 55000 is what a connection attempt gets
                // while the database does not allow connections (maintenance, a failover).
                let sqlite_primary = code.parse::<u32>().ok().map(|c| (c & 0xff).to_string());
                let unavailable =
                    matches!(sqlite_primary.as_deref(), Some(SQLITE_BUSY | SQLITE_LOCKED))
                        || code.starts_with("08")
                        || code.starts_with("57P0")
                        || code.starts_with("53")
                        || code == "55000";
                if unavailable {
                    LedgerError::Unavailable(e.to_string())
                } else {
                    LedgerError::Database(e.to_string())
                }
            }
            _ => LedgerError::Database(e.to_string()),
        }
    }
}

/// Whether `e` is the database refusing a write because of the named constraint. PostgreSQL
/// reports the constraint's name; SQLite puts it in the message
/// ("CHECK constraint failed: ledger_balance_bound", "UNIQUE constraint failed: t.col").
pub(super) fn violates(e: &sqlx::Error, kind: sqlx::error::ErrorKind, name: &str) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.kind() == kind && (d.constraint() == Some(name) || d.message().contains(name))
        }
        _ => false,
    }
}
