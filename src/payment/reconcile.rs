//! The reconciler: resolves payments whose request went away (crash, timeout, lost answer)
//! against the chain. Runs at start-up and periodically; safe to run on every instance at once,
//! because every step is a forward-only state transition or an idempotent ledger write.
//!
//! For each open payment older than the grace period:
//! * `settled` → write the ledger credit (it landed; the request that settled it is gone).
//! * `claimed`/`submitted` → ask the chain ([`resolve::open_payment`], through the payment's
//!   scheme). Authorization used by a transaction that paid us → settled, then credited (credit only: the request was never
//!   served, so the payer keeps the credits). Used without such a log → the payer cancelled
//!   it → failed. Unused and expired by chain time → it can never move → failed. Unused and
//!   still valid → left for the next pass.

use serde::Serialize;

use super::record::{PaymentRow, Status};
use super::resolve::{self, OnChain, Resolution};
use super::scheme::{self, Terms};
use super::{CreditTarget, PaymentError, Payments};
use crate::x402::Network;

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub examined: u64,
    pub credited: u64,
    pub failed: u64,
    pub still_open: u64,
    pub errors: u64,
}

/// The outcome for one payment.
enum Outcome {
    Credited,
    Failed,
    Open,
}

const BATCH: i64 = 200;

impl Payments {
    /// One reconciliation pass over payments untouched for `reconcile_after_ms`.
    pub async fn reconcile_once(&self) -> Result<Report, PaymentError> {
        let now = self.clock.now();
        let before = crate::time::UnixMillis(now.0.saturating_sub(self.reconcile_after_ms));
        let rows = self.store.open_since(before, BATCH).await?;
        let mut report = Report::default();
        for row in rows {
            report.examined += 1;
            match self.reconcile_row(&row).await {
                Ok(Outcome::Credited) => report.credited += 1,
                Ok(Outcome::Failed) => report.failed += 1,
                Ok(Outcome::Open) => report.still_open += 1,
                Err(e) => {
                    report.errors += 1;
                    tracing::warn!(payment = %row.id, error = %e, "reconciling a payment failed; will retry");
                }
            }
        }
        if report.examined > 0 {
            tracing::info!(?report, "payments reconciled");
        }
        Ok(report)
    }

    async fn reconcile_row(&self, row: &PaymentRow) -> Result<Outcome, PaymentError> {
        if row.status == Status::Settled {
            let tx = row
                .tx_hash
                .clone()
                .ok_or_else(|| PaymentError::Internal("settled payment without tx".into()))?;
            self.credit(&CreditTarget::of_row(row, tx), false).await?;
            return Ok(Outcome::Credited);
        }
        let network = Network::parse(&row.network)
            .map_err(|e| PaymentError::Internal(format!("stored network: {e}")))?;
        let Some(chain) = self.settler(&network)?.chain() else {
            // Facilitator mode without an RPC: nothing to ask. Operators see it in the counts.
            return Ok(Outcome::Open);
        };
        let payment = scheme::for_record(&row.authorization)?.restore(&row.authorization)?;
        let terms = row_terms(row, chain.chain_id)?;
        let ev = OnChain {
            chain,
            payment: payment.as_ref(),
            terms: &terms,
        };
        let now = self.clock.now();
        match resolve::open_payment(&ev, row.from_block, row.valid_before).await? {
            Resolution::Landed(tx) => {
                self.store.settled(&row.id, &tx, now).await?;
                self.credit(&CreditTarget::of_row(row, tx), false).await?;
                Ok(Outcome::Credited)
            }
            Resolution::Cancelled => {
                self.store
                    .failed(&row.id, "authorization_canceled", now)
                    .await?;
                Ok(Outcome::Failed)
            }
            Resolution::Expired => {
                self.store
                    .failed(&row.id, "authorization_expired", now)
                    .await?;
                Ok(Outcome::Failed)
            }
            Resolution::Open => Ok(Outcome::Open),
        }
    }
}

/// The terms a stored payment was made on, as far as the chain reads need them: the token, the
/// payee and the amount (the EIP-712 domain was checked when it was claimed).
fn row_terms(row: &PaymentRow, chain_id: u64) -> Result<Terms, PaymentError> {
    let bad = |what: &str| PaymentError::Internal(format!("payment {}: stored {what}", row.id));
    Ok(Terms {
        chain_id,
        asset: row.asset.parse().map_err(|_| bad("asset"))?,
        pay_to: row.pay_to.parse().map_err(|_| bad("payTo"))?,
        amount: row.amount.parse().map_err(|_| bad("amount"))?,
        eip712_name: String::new(),
        eip712_version: String::new(),
        facilitator: None,
    })
}
