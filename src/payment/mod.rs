//! Paying for a quote on chain: match the payment to its quote, verify it, claim it, settle it,
//! credit the ledger. The stages are types ([`pipeline`]); each way of paying is one file under
//! [`scheme`] and each way of settling one file under [`settler`], and what the chain says when a
//! settlement goes wrong is decided once ([`resolve`]) for all of them.
//!
//! Money safety rests on three things:
//! * the claim row (`payments`, unique on network/asset/payer/nonce) is written before anything
//!   is broadcast, so a replay cannot pass twice and a crash leaves a record;
//! * the ledger write is one linked group with ids derived from the payment, so it lands once;
//! * the [`reconcile`] pass resolves every record whose outcome is unknown against the chain.

pub mod booking;
pub mod chain;
pub mod facilitator;
pub mod idempotency;
pub mod matching;
pub mod pipeline;
pub mod reconcile;
pub mod record;
pub mod resolve;
pub mod scheme;
pub mod settler;

use std::collections::HashMap;
use std::sync::OnceLock;

use alloy::primitives::Address;

use crate::db::{Db, DbError};
use crate::ledger::Ledger;
use crate::time::Clock;
use crate::x402::Network;
pub use booking::{CreditTarget, inflow_account, payer_account};
use record::PaymentStore;
use settler::Settler;

/// Why a payment was not taken. [`PaymentError::code`] is the machine-readable reason.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The payment header or the scheme's payload is not well-formed: 400, nothing looked up.
    #[error("{detail}")]
    Malformed {
        reason: &'static str,
        detail: String,
    },
    /// The payment does not pay this quote (or the chain/facilitator refused it before any
    /// money moved): answered 402, nothing charged.
    #[error("{reason}: {detail}")]
    Invalid { reason: String, detail: String },
    /// Settlement was attempted and definitively failed: 402 with a failed payment response.
    #[error("settlement failed ({reason}): {detail}")]
    SettlementFailed { reason: String, detail: String },
    /// The same authorization is being settled by another request right now.
    #[error("this authorization is already being settled by another request")]
    InProgress,
    /// A dependency is down and nothing was sent: 503, retry later.
    #[error("{detail}")]
    Unavailable {
        reason: &'static str,
        detail: String,
    },
    /// Money may have moved but the outcome is not known yet: 503; the reconciler resolves it
    /// against the chain and credits the payer if it landed.
    #[error("settlement outcome unknown: {0}")]
    Pending(String),
    #[error("internal payment error: {0}")]
    Internal(String),
}

impl PaymentError {
    pub fn invalid(reason: &str, detail: impl Into<String>) -> Self {
        PaymentError::Invalid {
            reason: reason.to_string(),
            detail: detail.into(),
        }
    }

    pub fn unavailable(reason: &'static str, detail: impl Into<String>) -> Self {
        PaymentError::Unavailable {
            reason,
            detail: detail.into(),
        }
    }

    pub fn code(&self) -> &str {
        match self {
            PaymentError::Invalid { reason, .. }
            | PaymentError::SettlementFailed { reason, .. } => reason,
            PaymentError::Malformed { reason, .. } | PaymentError::Unavailable { reason, .. } => {
                reason
            }
            PaymentError::InProgress => "payment_in_progress",
            PaymentError::Pending(_) => "settlement_pending",
            PaymentError::Internal(_) => "unexpected_settle_error",
        }
    }

    /// The payer's fault, answered with the quote's 402 (and the reason).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            PaymentError::Invalid { .. } | PaymentError::SettlementFailed { .. }
        )
    }
}

impl From<DbError> for PaymentError {
    fn from(e: DbError) -> Self {
        PaymentError::unavailable("database_unavailable", format!("payments database: {e}"))
    }
}

/// A payment's id: `pay_` and 32 hex characters of a hash of the money it moves (network,
/// asset, payer, nonce), so every instance names the same authorization alike.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PaymentId(String);

impl PaymentId {
    pub fn of(network: &str, asset: &Address, payer: &Address, nonce: &str) -> PaymentId {
        let mut h = blake3::Hasher::new();
        for part in [
            network,
            &format!("{asset:#x}"),
            &format!("{payer:#x}"),
            &nonce.to_ascii_lowercase(),
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        PaymentId(format!("pay_{}", &h.finalize().to_hex()[..32]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PaymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Test hook: `TARIFF_CRASH_AT=<stage>` aborts the process at that stage of a payment, so the
/// crash-recovery tests can kill it at every point that matters. Unset in any real deployment.
pub fn crash_point(stage: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    if AT
        .get_or_init(|| std::env::var("TARIFF_CRASH_AT").ok())
        .as_deref()
        == Some(stage)
    {
        eprintln!("TARIFF_CRASH_AT={stage}: aborting");
        std::process::abort();
    }
}

pub struct Payments {
    store: PaymentStore,
    ledger: Ledger,
    settlers: HashMap<Network, Box<dyn Settler>>,
    clock: Clock,
    /// A payment untouched this long is the reconciler's (the request handling it is gone).
    pub reconcile_after_ms: u64,
    /// Which account a paying wallet is credited to.
    links: crate::accounts::WalletLinks,
    /// Answers kept under buyers' payment ids.
    ids: idempotency::PaymentIds,
    /// Ledger accounts known to exist: creating them is idempotent but costs two writes.
    known_accounts: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Where top-up payments are booked.
    topups: crate::topup::record::Topups,
}

impl Payments {
    pub fn new(
        db: Db,
        ledger: Ledger,
        settlers: HashMap<Network, Box<dyn Settler>>,
        clock: Clock,
        reconcile_after_ms: u64,
    ) -> Payments {
        Payments {
            ids: idempotency::PaymentIds::new(db.clone()),
            links: crate::accounts::WalletLinks::new(db.clone()),
            topups: crate::topup::record::Topups::new(db.clone(), ledger.clone()),
            store: PaymentStore::new(db),
            ledger,
            settlers,
            clock,
            reconcile_after_ms,
            known_accounts: Default::default(),
        }
    }

    pub fn store(&self) -> &PaymentStore {
        &self.store
    }

    pub fn topups(&self) -> &crate::topup::record::Topups {
        &self.topups
    }

    pub fn ids(&self) -> &idempotency::PaymentIds {
        &self.ids
    }

    pub fn settler(&self, network: &Network) -> Result<&dyn Settler, PaymentError> {
        self.settlers
            .get(network)
            .map(|s| s.as_ref())
            .ok_or_else(|| {
                PaymentError::unavailable(
                    "settlement_unconfigured",
                    format!("this server cannot settle payments on {network}"),
                )
            })
    }

    pub fn settlers(&self) -> impl Iterator<Item = (&Network, &dyn Settler)> {
        self.settlers.iter().map(|(n, s)| (n, s.as_ref()))
    }

    fn now_secs(&self) -> u64 {
        self.clock.now().as_secs()
    }
}
