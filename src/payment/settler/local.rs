//! Local settlement: Tariff verifies against its own RPC and submits the scheme's settling
//! transaction with its own gas key.

use async_trait::async_trait;

use super::{Settlement, Settler};
use crate::payment::PaymentError;
use crate::payment::chain::{Broadcast, Chain, Relayer, Submitted};
use crate::payment::pipeline::Matched;

#[derive(Debug)]
pub struct LocalSettler {
    pub chain: Chain,
    pub relayer: Relayer,
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
