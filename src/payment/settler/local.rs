//! Local settlement: Tariff verifies against its own RPC and submits the scheme's settling
//! transaction with its own gas key.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;

use super::batch::{BatchOutcome, Batcher};

use super::{Settlement, Settler};
use crate::payment::PaymentError;
use crate::payment::chain::{Broadcast, Chain, Relayer, Submitted};
use crate::payment::pipeline::Matched;

#[derive(Debug)]
pub struct LocalSettler {
    pub chain: Chain,
    pub relayer: Arc<Relayer>,
    /// Batches the payments whose settling call anyone may send; `None`: one transaction each.
    pub batcher: Option<Batcher>,
}

#[async_trait]
impl Settler for LocalSettler {
    fn mode(&self) -> &'static str {
        "local"
    }

    /// Our relayer sends the settlement, so it is the one the witness must name.
    fn upto_facilitator(&self) -> Option<alloy::primitives::Address> {
        Some(self.relayer.address())
    }

    fn chain(&self) -> Option<&Chain> {
        Some(&self.chain)
    }

    fn batched(&self) -> Option<(u64, u64)> {
        self.batcher.as_ref().map(|b| {
            let s = b.stats();
            (
                s.transactions.load(Ordering::Relaxed),
                s.payments.load(Ordering::Relaxed),
            )
        })
    }

    async fn verify(&self, m: &Matched) -> Result<Option<u64>, PaymentError> {
        let (checked, head) = tokio::join!(
            m.payment
                .preflight(&self.chain, &m.terms, self.relayer.address()),
            self.chain.latest_block(),
        );
        checked?;
        Ok(Some(head?.0))
    }

    async fn settle(
        &self,
        m: &Matched,
        on_broadcast: &dyn Broadcast,
    ) -> Result<Settlement, PaymentError> {
        let call = m.payment.settle_call(&m.terms);
        if let Some(batcher) = self.batcher.as_ref().filter(|_| m.payment.batchable()) {
            let paid = |logs: &[alloy::rpc::types::Log]| m.payment.settled_in(&m.terms, logs);
            return Ok(match batcher.settle(call, on_broadcast, &paid).await? {
                BatchOutcome::Mined { tx, paid: true, .. } => Settlement::Landed {
                    tx: format!("{tx:#x}"),
                },
                BatchOutcome::Mined {
                    tx, paid: false, ..
                } => Settlement::Refused {
                    reason: None,
                    detail: format!("the payment's call failed inside batch transaction {tx:#x}"),
                },
                BatchOutcome::Refused(detail) => Settlement::Refused {
                    reason: None,
                    detail,
                },
            });
        }
        Ok(match self.relayer.submit(call, on_broadcast).await? {
            Submitted::Mined {
                landed,
                success: true,
            } => Settlement::Landed {
                tx: format!("{:#x}", landed.tx),
            },
            Submitted::Mined { success: false, .. } => Settlement::Refused {
                reason: None,
                detail: "the settlement transaction reverted".into(),
            },
            Submitted::Refused(detail) => Settlement::Refused {
                reason: None,
                detail,
            },
        })
    }
}
