//! A paid request as a straight line of types:
//!
//! ```text
//! Decoded ─match─► Matched ─verify─► Verified ─claim─► Claimed ─settle+credit─► Credited
//!                                                        ├─release─► (nothing owed)
//!                                                        └─charge─► Claimed (upto: the actual
//!                                                                   amount, or nothing owed)
//! ```
//! Each stage is made only by the step before it (the fields are private to `payment`), so no
//! caller can claim an unverified payment or credit an unsettled one.

use std::sync::Arc;

use alloy::primitives::{B256, U256};
use async_trait::async_trait;
use serde_json::Value;

use super::chain::Broadcast;
use super::record::{Claim, NewPayment, Status};
use super::scheme::{Scheme, SchemePayment, Terms};
use super::settler::Settlement;
use super::{CreditTarget, PaymentError, PaymentId, Payments, crash_point, resolve};
use crate::money::UsdMicros;
use crate::quote::Quote;
use crate::x402::Network;

/// A payment matched to this request's quote and parsed by its scheme.
#[derive(Debug)]
pub struct Matched {
    pub(super) version: u32,
    pub(super) network: Network,
    pub(super) scheme: &'static dyn Scheme,
    pub(super) terms: Terms,
    pub(super) payment: Box<dyn SchemePayment>,
    /// The `PaymentPayload` exactly as decoded (what a facilitator must see).
    pub(super) payload: Value,
    /// Our requirements for the matched offer, in the wire form of `version`.
    pub(super) requirements: Value,
    pub(super) quote: Arc<Quote>,
    /// What the ledger books: the quote's price, or an `upto` payment's charge.
    pub(super) price: UsdMicros,
}

/// Passed the local checks and the settler's.
#[derive(Debug)]
pub struct Verified {
    matched: Matched,
    from_block: Option<u64>,
}

/// Claimed for this request: no other request can settle the same authorization.
#[derive(Debug)]
pub struct Claimed {
    matched: Matched,
    id: PaymentId,
}

/// Settled on chain and recorded in the ledger.
#[derive(Debug)]
pub struct Credited {
    matched: Matched,
    id: PaymentId,
    tx: String,
}

/// What the answer to a payment names, at any stage.
#[derive(Clone, Debug)]
pub struct Summary {
    pub version: u32,
    pub network: Network,
    pub payer: String,
}

impl Matched {
    pub fn summary(&self) -> Summary {
        Summary {
            version: self.version,
            network: self.network.clone(),
            payer: format!("{:#x}", self.payment.payer()),
        }
    }

    pub fn scheme(&self) -> &'static dyn Scheme {
        self.scheme
    }

    /// The payment's id: derived from the money (network, asset, payer, nonce), so every
    /// instance names the same authorization alike.
    pub fn payment_id(&self) -> PaymentId {
        PaymentId::of(
            self.network.as_str(),
            &self.terms.asset,
            &self.payment.payer(),
            &self.payment.nonce(),
        )
    }
}

impl Claimed {
    pub fn id(&self) -> &PaymentId {
        &self.id
    }

    /// Whether the charge is fixed after the answer (`upto`): such a payment always settles
    /// after the upstream answered, whatever the route's timing.
    pub fn partial(&self) -> bool {
        self.matched.payment.partial()
    }

    pub fn summary(&self) -> Summary {
        self.matched.summary()
    }
}

impl Credited {
    pub fn id(&self) -> &PaymentId {
        &self.id
    }

    pub fn tx(&self) -> &str {
        &self.tx
    }

    /// What the ledger booked for it: the quote's price, or an `upto` payment's charge.
    pub fn price(&self) -> UsdMicros {
        self.matched.price
    }

    /// Base units settled, for a partial (`upto`) payment: what its payment response names.
    pub fn settled_amount(&self) -> Option<String> {
        self.matched
            .payment
            .partial()
            .then(|| self.matched.terms.amount.to_string())
    }

    pub fn summary(&self) -> Summary {
        self.matched.summary()
    }

    pub(super) fn target(&self) -> CreditTarget {
        CreditTarget::of_matched(&self.matched, &self.id, &self.tx)
    }
}

/// A partial payment once its charge is fixed.
#[derive(Debug)]
pub enum Charged {
    /// Settle this (its terms now carry the charge).
    Settle(Box<Claimed>),
    /// The charge is zero: nothing is settled, the authorization is left to expire.
    Nothing(Summary),
}

/// Base units of a charge: the quoted amount scaled by `charge / ceiling`, rounded down (the
/// payer never pays more than the price computed), never above the quoted amount.
pub fn charge_units(quoted: U256, ceiling: UsdMicros, charge: UsdMicros) -> U256 {
    if ceiling.0 == 0 || charge.0 >= ceiling.0 {
        return quoted;
    }
    quoted.saturating_mul(U256::from(charge.0)) / U256::from(ceiling.0)
}

/// A settlement that did not end credited, with what its answer must name.
#[derive(Debug)]
pub struct Unsettled {
    pub summary: Summary,
    pub error: PaymentError,
}

/// Records a broadcast on the claim row as soon as the node accepted it.
struct RecordBroadcast<'a> {
    payments: &'a Payments,
    id: &'a PaymentId,
}

#[async_trait]
impl Broadcast for RecordBroadcast<'_> {
    async fn broadcast(&self, tx: B256) {
        let p = self.payments;
        if let Err(e) = p
            .store
            .submitted(self.id.as_str(), &format!("{tx:#x}"), p.clock.now())
            .await
        {
            // The claim row is enough for the reconciler to find it on chain.
            tracing::warn!(error = %e, payment = %self.id, "recording the broadcast failed");
        }
        crash_point("after_broadcast");
    }
}

impl Payments {
    /// The local checks, then the settler's (chain reads or the facilitator's `/verify`).
    pub async fn verify(&self, m: Matched) -> Result<Verified, PaymentError> {
        let settler = self.settler(&m.network)?;
        m.payment.check(&m.terms, self.now_secs())?;
        let from_block = settler.verify(&m).await?;
        Ok(Verified {
            matched: m,
            from_block,
        })
    }

    /// Claims the authorization for this request. The loser of a race, or a replay, is
    /// refused here, before anything is broadcast.
    pub async fn claim(&self, v: Verified) -> Result<Claimed, PaymentError> {
        let Verified {
            matched: m,
            from_block,
        } = v;
        let settler = self.settler(&m.network)?;
        let id = m.payment_id();
        let p = &m.payment;
        let new = NewPayment {
            id: id.to_string(),
            network: m.network.to_string(),
            asset: format!("{:#x}", m.terms.asset),
            payer: format!("{:#x}", p.payer()),
            nonce: p.nonce(),
            pay_to: format!("{:#x}", m.terms.pay_to),
            amount: p.amount().to_string(),
            price_micros: m.price.get(),
            quote_id: m.quote.id.to_string(),
            request_hash: m.quote.request_hash.to_hex(),
            x402_version: m.version,
            mode: settler.mode(),
            authorization: p.stored(),
            valid_before: p.valid_before(),
            from_block,
            topup: m
                .quote
                .topup
                .as_ref()
                .map(|t| t.claim_record(&format!("{:#x}", m.terms.asset))),
        };
        match self.store.claim(&new, self.clock.now()).await? {
            Claim::Taken => Ok(Claimed { matched: m, id }),
            Claim::Held(row) if row.status.money_moved() || row.status == Status::Failed => {
                Err(PaymentError::invalid(
                    m.payment.replay_reason(),
                    format!(
                        "this authorization was already presented (payment {})",
                        row.id
                    ),
                ))
            }
            Claim::Held(_) => Err(PaymentError::InProgress),
        }
    }

    /// Fixes what a partial (`upto`) payment settles, once the upstream answered: `charge` in
    /// the ledger's unit, at most the quoted price. Recorded on the claim before anything is
    /// broadcast, so the reconciler looks for exactly this amount. A zero charge settles
    /// nothing and releases the claim.
    pub async fn charge(&self, c: Claimed, charge: UsdMicros) -> Result<Charged, PaymentError> {
        let Claimed { mut matched, id } = c;
        let ceiling = matched.quote.price;
        if !matched.payment.partial() {
            return Err(PaymentError::Internal(format!(
                "payment {id} settles exactly; it has no charge to fix"
            )));
        }
        if charge > ceiling {
            return Err(PaymentError::invalid(
                "invalid_upto_evm_payload_settlement_exceeds_amount",
                format!("a charge of {charge} exceeds what this payment authorizes ({ceiling})"),
            ));
        }
        let units = charge_units(matched.payment.amount(), ceiling, charge);
        if units.is_zero() {
            let summary = matched.summary();
            self.release(Claimed { matched, id }, "upto_nothing_charged")
                .await?;
            return Ok(Charged::Nothing(summary));
        }
        let recorded = self
            .store
            .charge(
                id.as_str(),
                &units.to_string(),
                charge.get(),
                self.clock.now(),
            )
            .await?;
        if !recorded {
            return Err(PaymentError::Internal(format!(
                "payment {id} could not be charged: it is no longer claimed"
            )));
        }
        matched.terms.amount = units;
        matched.price = charge;
        // A facilitator settles `paymentRequirements.amount`: the charge, at settle time.
        if let Some(o) = matched.requirements.as_object_mut() {
            o.insert("amount".into(), Value::String(units.to_string()));
        }
        Ok(Charged::Settle(Box::new(Claimed { matched, id })))
    }

    /// Gives up a claim whose settlement was never attempted (a settle-after request whose
    /// upstream failed): the authorization was not used and nothing is owed.
    pub async fn release(&self, c: Claimed, reason: &str) -> Result<(), PaymentError> {
        self.store
            .failed(c.id.as_str(), reason, self.clock.now())
            .await?;
        Ok(())
    }

    /// Settles and credits in a task of its own, so that a client hanging up mid-request cannot
    /// cancel the recording of money that is already moving. Settled but not credited (ledger
    /// down): the record says `settled`, the reconciler credits it later, and the request is
    /// not served.
    pub async fn settle_and_credit(self: Arc<Self>, c: Claimed) -> Result<Credited, Unsettled> {
        let task = tokio::spawn(async move {
            let summary = c.summary();
            let credited = match self.settle(&c).await {
                Ok(tx) => {
                    let done = Credited {
                        matched: c.matched,
                        id: c.id,
                        tx,
                    };
                    self.credit(&done.target(), true).await.map(|()| done)
                }
                Err(e) => Err(e),
            };
            credited.map_err(|error| Unsettled { summary, error })
        });
        match task.await {
            Ok(out) => out,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Settles a claimed payment and records the outcome. On `Pending` the record stays open
    /// for the reconciler; on a definitive failure it is marked failed.
    async fn settle(&self, c: &Claimed) -> Result<String, PaymentError> {
        let m = &c.matched;
        let id = c.id.as_str();
        let settler = self.settler(&m.network)?;
        let hook = RecordBroadcast {
            payments: self,
            id: &c.id,
        };
        let outcome = match settler.settle(m, &hook).await {
            Ok(Settlement::Landed { tx }) => Ok(tx),
            Ok(Settlement::Refused { reason, detail }) => match settler.chain() {
                Some(chain) => {
                    let ev = resolve::OnChain {
                        chain,
                        payment: m.payment.as_ref(),
                        terms: &m.terms,
                    };
                    resolve::refusal(&ev, detail, reason).await
                }
                None => Err(PaymentError::SettlementFailed {
                    reason: reason.unwrap_or_else(|| "unexpected_settle_error".into()),
                    detail,
                }),
            },
            Err(PaymentError::Unavailable { reason, detail }) => {
                // Nothing was sent (the settler failed before any broadcast).
                self.store.failed(id, reason, self.clock.now()).await?;
                Err(PaymentError::Unavailable { reason, detail })
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(tx) => {
                if !self.store.settled(id, &tx, self.clock.now()).await? {
                    tracing::warn!(payment = id, "payment was already settled or resolved");
                }
                crash_point("after_settle");
                Ok(tx)
            }
            Err(e @ PaymentError::SettlementFailed { .. }) => {
                self.store.failed(id, e.code(), self.clock.now()).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives a paid request's price back as credits (the upstream failed after settlement).
    pub async fn refund(&self, c: &Credited, why: &str) -> Result<(), PaymentError> {
        self.refund_target(&c.target(), why).await
    }
}
