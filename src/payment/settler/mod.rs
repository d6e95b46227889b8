//! Who verifies and settles a network's payments: Tariff itself with its gas key
//! ([`local::LocalSettler`]) or an x402 facilitator ([`facilitator::FacilitatorSettler`]). One
//! file each; what happens when a settlement is refused is decided once, in
//! [`super::resolve`], for both.

pub mod batch;
pub mod facilitator;
pub mod local;

use std::fmt::Debug;

use async_trait::async_trait;

use super::PaymentError;
use super::chain::{Broadcast, Chain};
use super::pipeline::Matched;

/// The settler's answer to one settlement.
#[derive(Debug, PartialEq, Eq)]
pub enum Settlement {
    /// The money moved in this transaction.
    Landed { tx: String },
    /// The settlement was refused or reverted; whether the money moved anyway (someone else
    /// submitted the same authorization) is for the chain to tell.
    Refused {
        /// The settler's own reason (a facilitator's `errorReason`), if it gave one.
        reason: Option<String>,
        detail: String,
    },
}

#[async_trait]
pub trait Settler: Send + Sync + Debug {
    /// `local` or `facilitator` (stored with each payment).
    fn mode(&self) -> &'static str;

    /// The address an `upto` witness must name for this settler to be able to settle it (the
    /// upto proxy only takes a settlement from that address); `None`: no `upto` here.
    fn upto_facilitator(&self) -> Option<alloy::primitives::Address>;

    /// The chain this settler reads, for front-running checks and reconciliation; optional
    /// for a facilitator.
    fn chain(&self) -> Option<&Chain>;

    /// Settlement transactions and the payments they carried, when this settler batches.
    fn batched(&self) -> Option<(u64, u64)> {
        None
    }

    /// The checks beyond the local ones, before the payment is claimed: the chain (balance,
    /// nonce state, simulation) or the facilitator's `/verify`. Returns the chain head, where a
    /// later log search may start.
    async fn verify(&self, m: &Matched) -> Result<Option<u64>, PaymentError>;

    /// Moves the money. [`PaymentError::Unavailable`] means nothing was sent;
    /// [`PaymentError::Pending`] that the outcome is unknown (the reconciler finds out).
    async fn settle(
        &self,
        m: &Matched,
        on_broadcast: &dyn Broadcast,
    ) -> Result<Settlement, PaymentError>;
}
