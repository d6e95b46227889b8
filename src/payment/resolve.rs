//! What the chain says about an authorization whose settlement did not go as planned, decided
//! once for every scheme and settler:
//! * [`refusal`]: our settlement was refused. Someone may have front-run us with the same
//!   authorization (then the money reached payTo and the payment counts), or it really failed.
//! * [`open_payment`]: the reconciler's verdict on a payment whose request went away.
//!
//! Both read the chain only through [`Evidence`], so they are tested here without one.

use alloy::primitives::B256;
use async_trait::async_trait;

use super::PaymentError;
use super::chain::Chain;
use super::scheme::{SchemePayment, Terms};

/// What the chain knows about one authorization.
#[async_trait]
pub trait Evidence: Sync {
    /// The authorization was consumed or cancelled.
    async fn used(&self) -> Result<bool, PaymentError>;
    /// The transaction that consumed it, if that transaction paid us exactly.
    async fn landed(&self, from_block: Option<u64>) -> Result<Option<B256>, PaymentError>;
    /// The payer holds less than the payment.
    async fn short_of_funds(&self) -> Result<bool, PaymentError>;
    /// The latest block's timestamp: expiry is judged by chain time, not ours.
    async fn chain_time(&self) -> Result<u64, PaymentError>;
    /// The scheme's reason for an authorization used elsewhere.
    fn replay_reason(&self) -> &'static str {
        "invalid_exact_evm_nonce_already_used"
    }
}

/// [`Evidence`] read from a chain through a payment's scheme.
pub struct OnChain<'a> {
    pub chain: &'a Chain,
    pub payment: &'a dyn SchemePayment,
    pub terms: &'a Terms,
}

#[async_trait]
impl Evidence for OnChain<'_> {
    async fn used(&self) -> Result<bool, PaymentError> {
        self.payment.used(self.chain, self.terms).await
    }

    async fn landed(&self, from_block: Option<u64>) -> Result<Option<B256>, PaymentError> {
        self.payment
            .landed(self.chain, self.terms, from_block)
            .await
    }

    async fn short_of_funds(&self) -> Result<bool, PaymentError> {
        let balance = self
            .chain
            .balance_of(self.terms.asset, self.payment.payer())
            .await?;
        Ok(balance < self.payment.amount())
    }

    async fn chain_time(&self) -> Result<u64, PaymentError> {
        Ok(self.chain.latest_block().await?.1)
    }

    fn replay_reason(&self) -> &'static str {
        self.payment.replay_reason()
    }
}

/// Our settlement was refused (`reason`: the settler's own, if it gave one). `Ok(tx)` when the
/// authorization was consumed by a transaction that paid us: the payment counts.
pub async fn refusal(
    ev: &dyn Evidence,
    detail: String,
    reason: Option<String>,
) -> Result<String, PaymentError> {
    if ev.used().await? {
        if let Some(tx) = ev.landed(None).await? {
            tracing::info!(%tx, "authorization was submitted by someone else; it paid us");
            return Ok(format!("{tx:#x}"));
        }
        return Err(PaymentError::SettlementFailed {
            reason: ev.replay_reason().into(),
            detail: format!("the authorization was used or cancelled elsewhere: {detail}"),
        });
    }
    let reason = match reason {
        Some(r) => r,
        None if ev.short_of_funds().await? => "insufficient_funds".into(),
        None => "invalid_exact_evm_transaction_failed".into(),
    };
    Err(PaymentError::SettlementFailed { reason, detail })
}

/// The reconciler's verdict on a payment left open.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Consumed by this transaction, which paid us: settled.
    Landed(String),
    /// Consumed without paying us (the payer cancelled it): failed.
    Cancelled,
    /// Unused and past `validBefore` by chain time: it can never move, failed.
    Expired,
    /// Unused and still valid: ask again next pass.
    Open,
}

pub async fn open_payment(
    ev: &dyn Evidence,
    from_block: Option<u64>,
    valid_before: u64,
) -> Result<Resolution, PaymentError> {
    if ev.used().await? {
        return Ok(match ev.landed(from_block).await? {
            Some(tx) => Resolution::Landed(format!("{tx:#x}")),
            None => Resolution::Cancelled,
        });
    }
    // Tokens accept the transfer only while block.timestamp < validBefore.
    if ev.chain_time().await? >= valid_before {
        return Ok(Resolution::Expired);
    }
    Ok(Resolution::Open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A chain as a table, recording which questions were asked.
    #[derive(Default)]
    struct Fake {
        used: bool,
        landed: Option<B256>,
        short: bool,
        time: u64,
        down: bool,
        asked: Mutex<Vec<&'static str>>,
    }

    impl Fake {
        fn ask(&self, q: &'static str) -> Result<(), PaymentError> {
            self.asked.lock().unwrap().push(q);
            if self.down {
                return Err(PaymentError::unavailable("chain_unavailable", "down"));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl Evidence for Fake {
        async fn used(&self) -> Result<bool, PaymentError> {
            self.ask("used").map(|()| self.used)
        }
        async fn landed(&self, _: Option<u64>) -> Result<Option<B256>, PaymentError> {
            self.ask("landed").map(|()| self.landed)
        }
        async fn short_of_funds(&self) -> Result<bool, PaymentError> {
            self.ask("short").map(|()| self.short)
        }
        async fn chain_time(&self) -> Result<u64, PaymentError> {
            self.ask("time").map(|()| self.time)
        }
    }

    fn code(r: Result<String, PaymentError>) -> String {
        match r {
            Ok(tx) => format!("ok {tx}"),
            Err(e) => e.code().to_string(),
        }
    }

    #[tokio::test]
    async fn a_front_run_that_paid_us_counts_and_one_that_did_not_fails() {
        let tx = B256::repeat_byte(0xab);
        let paid = Fake {
            used: true,
            landed: Some(tx),
            ..Fake::default()
        };
        assert_eq!(
            code(refusal(&paid, "reverted".into(), None).await),
            format!("ok {tx:#x}")
        );
        let cancelled = Fake {
            used: true,
            ..Fake::default()
        };
        assert_eq!(
            code(refusal(&cancelled, "reverted".into(), Some("x".into())).await),
            "invalid_exact_evm_nonce_already_used"
        );
        // The balance is not asked about when the authorization was used.
        assert_eq!(*cancelled.asked.lock().unwrap(), ["used", "landed"]);
    }

    #[tokio::test]
    async fn an_unused_refusal_keeps_the_settlers_reason_or_names_the_balance() {
        let plain = Fake::default();
        assert_eq!(
            code(refusal(&plain, "d".into(), Some("facilitator_said".into())).await),
            "facilitator_said"
        );
        assert_eq!(*plain.asked.lock().unwrap(), ["used"]);
        assert_eq!(
            code(refusal(&plain, "d".into(), None).await),
            "invalid_exact_evm_transaction_failed"
        );
        let poor = Fake {
            short: true,
            ..Fake::default()
        };
        assert_eq!(
            code(refusal(&poor, "d".into(), None).await),
            "insufficient_funds"
        );
        let down = Fake {
            down: true,
            ..Fake::default()
        };
        // An outage is never a verdict: the caller keeps the payment open.
        assert_eq!(
            code(refusal(&down, "d".into(), None).await),
            "chain_unavailable"
        );
    }

    #[tokio::test]
    async fn open_payments_resolve_by_use_then_by_chain_time() {
        let tx = B256::repeat_byte(1);
        let cases = [
            (true, Some(tx), 0, Resolution::Landed(format!("{tx:#x}"))),
            (true, None, 0, Resolution::Cancelled),
            (false, None, 999, Resolution::Open),
            (false, None, 1_000, Resolution::Expired),
            (false, None, 1_001, Resolution::Expired),
        ];
        for (used, landed, time, want) in cases {
            let f = Fake {
                used,
                landed,
                time,
                ..Fake::default()
            };
            assert_eq!(open_payment(&f, Some(5), 1_000).await.unwrap(), want);
        }
        let down = Fake {
            down: true,
            ..Fake::default()
        };
        assert!(open_payment(&down, None, 1_000).await.is_err());
    }
}
