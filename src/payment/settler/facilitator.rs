//! Facilitator settlement: an x402 facilitator's `/verify` and `/settle` decide; an optional RPC
//! lets Tariff check a refused settlement against the chain and reconcile lost answers.

use async_trait::async_trait;

use super::{Settlement, Settler};
use crate::payment::PaymentError;
use crate::payment::chain::{Broadcast, Chain};
use crate::payment::facilitator::Facilitator;
use crate::payment::pipeline::Matched;

#[derive(Debug)]
pub struct FacilitatorSettler {
    pub facilitator: Facilitator,
    pub chain: Option<Chain>,
    /// The facilitator's `upto` signer on this network, from its `/supported` at start-up.
    pub upto_facilitator: Option<alloy::primitives::Address>,
}

#[async_trait]
impl Settler for FacilitatorSettler {
    fn mode(&self) -> &'static str {
        "facilitator"
    }

    fn upto_facilitator(&self) -> Option<alloy::primitives::Address> {
        self.upto_facilitator
    }

    fn chain(&self) -> Option<&Chain> {
        self.chain.as_ref()
    }

    async fn verify(&self, m: &Matched) -> Result<Option<u64>, PaymentError> {
        let verdict = self
            .facilitator
            .verify(m.version, &m.payload, &m.requirements)
            .await?;
        if !verdict.is_valid {
            let reason = verdict
                .invalid_reason
                .unwrap_or_else(|| "invalid_payload".into());
            return Err(PaymentError::Invalid {
                detail: verdict
                    .invalid_message
                    .unwrap_or_else(|| format!("the facilitator refused: {reason}")),
                reason,
            });
        }
        // The head is only a search hint for the reconciler.
        Ok(match &self.chain {
            Some(c) => c.latest_block().await.ok().map(|(n, _)| n),
            None => None,
        })
    }

    async fn settle(
        &self,
        m: &Matched,
        _on_broadcast: &dyn Broadcast,
    ) -> Result<Settlement, PaymentError> {
        let s = self
            .facilitator
            .settle(m.version, &m.payload, &m.requirements)
            .await?;
        if s.success && !s.transaction.is_empty() {
            return Ok(Settlement::Landed { tx: s.transaction });
        }
        let reason = s
            .error_reason
            .unwrap_or_else(|| "unexpected_settle_error".into());
        Ok(Settlement::Refused {
            detail: s
                .error_message
                .unwrap_or_else(|| format!("the facilitator could not settle: {reason}")),
            reason: Some(reason),
        })
    }
}
