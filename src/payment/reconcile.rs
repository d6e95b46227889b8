//! The reconciler: resolves payments whose request went away (crash, timeout, lost answer)
//! against the chain. Runs at start-up and periodically; safe to run on every instance at once,
//! because every step is a forward-only state transition or an idempotent ledger write.
//!
//! For each open payment older than the grace period:
//! * `settled` → write the ledger credit (it landed; the request that settled it is gone).
//! * `claimed`/`submitted` → ask the chain. Authorization used and an `AuthorizationUsed` log
//!   whose transaction paid us → settled, then credited (credit only: the request was never
//!   served, so the payer keeps the credits). Used without such a log → the payer cancelled
//!   it → failed. Unused and expired by chain time → it can never move → failed. Unused and
//!   still valid → left for the next pass.

use alloy::primitives::{Address, B256, U256};
use serde::Serialize;

use super::eip3009::{Authorization, TransferWithAuthorization};
use super::record::{PaymentRow, Status};
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
        let token: Address = row
            .asset
            .parse()
            .map_err(|_| PaymentError::Internal("stored asset".into()))?;
        let auth = stored_authorization(row)?;
        let now = self.clock.now();
        if chain.authorization_used(token, &auth).await? {
            if let Some(landed) = chain.find_landed(token, &auth, row.from_block).await?
                && chain.transfer_in_tx(token, &auth, landed.tx).await?
            {
                let tx = format!("{:#x}", landed.tx);
                self.store.settled(&row.id, &tx, now).await?;
                self.credit(&CreditTarget::of_row(row, tx), false).await?;
                return Ok(Outcome::Credited);
            }
            self.store
                .failed(&row.id, "authorization_canceled", now)
                .await?;
            return Ok(Outcome::Failed);
        }
        let (_, chain_time) = chain.latest_block().await?;
        // The token accepts the transfer only while block.timestamp < validBefore.
        if chain_time >= row.valid_before {
            self.store
                .failed(&row.id, "authorization_expired", now)
                .await?;
            return Ok(Outcome::Failed);
        }
        Ok(Outcome::Open)
    }
}

fn stored_authorization(row: &PaymentRow) -> Result<Authorization, PaymentError> {
    let a = &row.authorization;
    let bad = |what: &str| PaymentError::Internal(format!("payment {}: stored {what}", row.id));
    let u = |s: &str, what: &str| s.parse::<U256>().map_err(|_| bad(what));
    let signature = a
        .signature
        .strip_prefix("0x")
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| bad("signature"))?;
    Ok(Authorization {
        message: TransferWithAuthorization {
            from: a.from.parse().map_err(|_| bad("from"))?,
            to: a.to.parse().map_err(|_| bad("to"))?,
            value: u(&a.value, "value")?,
            validAfter: u(&a.valid_after, "validAfter")?,
            validBefore: u(&a.valid_before, "validBefore")?,
            nonce: a.nonce.parse::<B256>().map_err(|_| bad("nonce"))?,
        },
        signature,
    })
}
