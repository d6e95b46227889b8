//! Paying for a quote on chain: verify the authorization, claim it, settle it, credit the
//! ledger. Local settlement (alloy, Tariff's gas key) and facilitator settlement (HTTP) sit
//! behind one [`Settler`]; the HTTP layer decides *what* is being paid, this module makes sure
//! it is paid once.
//!
//! Money safety rests on three things:
//! * the claim row (`payments`, unique on network/asset/payer/nonce) is written before anything
//!   is broadcast, so a replay cannot pass twice and a crash leaves a record;
//! * the ledger write is one linked group with ids derived from the payment, so it lands once;
//! * the [`reconcile`] pass resolves every record whose outcome is unknown against the chain.

pub mod chain;
pub mod eip3009;
pub mod facilitator;
pub mod reconcile;
pub mod record;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use alloy::primitives::Address;
use serde_json::Value;

use crate::accounts::REVENUE;
use crate::db::{Db, DbError};
use crate::ledger::{
    AccountId, AccountKind, Ledger, LedgerError, NewAccount, NewTransfer, References, TransferId,
    TransferKind,
};
use crate::money::UsdMicros;
use crate::quote::Quote;
use crate::time::Clock;
use crate::x402::Network;
use chain::{Chain, Relayer, Submitted};
use eip3009::{Authorization, Terms};
use facilitator::Facilitator;
use record::{Claim, NewPayment, PaymentRow, PaymentStore, StoredAuthorization};

/// Why a payment was not taken. [`PaymentError::code`] is the machine-readable reason.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
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
            PaymentError::InProgress => "payment_in_progress",
            PaymentError::Unavailable { reason, .. } => reason,
            PaymentError::Pending(_) => "settlement_pending",
            PaymentError::Internal(_) => "unexpected_settle_error",
        }
    }
}

impl From<DbError> for PaymentError {
    fn from(e: DbError) -> Self {
        PaymentError::unavailable("database_unavailable", format!("payments database: {e}"))
    }
}

fn ledger_down(e: LedgerError) -> PaymentError {
    PaymentError::unavailable("ledger_unavailable", format!("ledger: {e}"))
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

/// How one network's payments are verified and settled.
#[derive(Debug)]
pub enum Settler {
    Local {
        chain: Chain,
        relayer: Relayer,
    },
    Facilitator {
        facilitator: Facilitator,
        /// For reconciliation and front-running checks; optional in this mode.
        chain: Option<Chain>,
    },
}

impl Settler {
    pub fn mode(&self) -> &'static str {
        match self {
            Settler::Local { .. } => "local",
            Settler::Facilitator { .. } => "facilitator",
        }
    }

    pub fn chain(&self) -> Option<&Chain> {
        match self {
            Settler::Local { chain, .. } => Some(chain),
            Settler::Facilitator { chain, .. } => chain.as_ref(),
        }
    }
}

/// One payment as the HTTP layer matched it to its quote.
pub struct Attempt {
    pub version: u32,
    pub network: Network,
    pub terms: Terms,
    pub auth: Authorization,
    pub stored: StoredAuthorization,
    /// The `PaymentPayload` exactly as decoded (what a facilitator must see).
    pub payload: Value,
    /// Our requirements for the matched offer, in the wire form of `version`.
    pub requirements: Value,
    pub quote: Arc<Quote>,
}

impl Attempt {
    /// The payment's id: derived from the money (network, asset, payer, nonce), so every
    /// instance names the same authorization alike.
    pub fn payment_id(&self) -> String {
        payment_id(
            self.network.as_str(),
            &self.terms.asset,
            &self.auth.payer(),
            &self.stored.nonce,
        )
    }
}

fn payment_id(network: &str, asset: &Address, payer: &Address, nonce: &str) -> String {
    let mut h = blake3::Hasher::new();
    for part in [
        network,
        &lower(asset),
        &lower(payer),
        &nonce.to_ascii_lowercase(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    format!("pay_{}", &h.finalize().to_hex()[..32])
}

fn lower(a: &Address) -> String {
    format!("{a:#x}")
}

/// Settled money, as the success `PAYMENT-RESPONSE` reports it.
#[derive(Clone, Debug)]
pub struct Settled {
    pub payment_id: String,
    pub tx: String,
    pub payer: String,
}

/// What the ledger needs to record a settled payment.
#[derive(Clone, Debug)]
pub struct CreditTarget {
    pub payment_id: String,
    pub network: String,
    pub asset: String,
    pub payer: String,
    pub nonce: String,
    pub price: UsdMicros,
    pub quote_id: String,
    pub request_hash: String,
    pub tx: String,
}

impl CreditTarget {
    fn of_row(row: &PaymentRow, tx: String) -> CreditTarget {
        CreditTarget {
            payment_id: row.id.clone(),
            network: row.network.clone(),
            asset: row.asset.clone(),
            payer: row.payer.clone(),
            nonce: row.nonce.clone(),
            price: UsdMicros(row.price_micros),
            quote_id: row.quote_id.clone(),
            request_hash: row.request_hash.clone(),
            tx,
        }
    }

    fn of_attempt(a: &Attempt, s: &Settled) -> CreditTarget {
        CreditTarget {
            payment_id: s.payment_id.clone(),
            network: a.network.to_string(),
            asset: lower(&a.terms.asset),
            payer: lower(&a.auth.payer()),
            nonce: a.stored.nonce.to_ascii_lowercase(),
            price: a.quote.price,
            quote_id: a.quote.id.to_string(),
            request_hash: a.quote.request_hash.to_hex(),
            tx: s.tx.clone(),
        }
    }
}

/// The agent account an on-chain payer's credits live in.
pub fn payer_account(payer: &str) -> String {
    format!("agent:wallet:{}", payer.to_ascii_lowercase())
}

/// Where on-chain money enters the books (may go negative: it mirrors money outside).
pub fn inflow_account(network: &str, asset: &str) -> String {
    format!("sys:inflow:{network}:{}", asset.to_ascii_lowercase())
}

pub struct Payments {
    store: PaymentStore,
    ledger: Ledger,
    settlers: HashMap<Network, Settler>,
    clock: Clock,
    /// A payment untouched this long is the reconciler's (the request handling it is gone).
    pub reconcile_after_ms: u64,
    /// Ledger accounts known to exist: creating them is idempotent but costs two writes.
    known_accounts: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Payments {
    pub fn new(
        db: Db,
        ledger: Ledger,
        settlers: HashMap<Network, Settler>,
        clock: Clock,
        reconcile_after_ms: u64,
    ) -> Payments {
        Payments {
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

    pub fn settler(&self, network: &Network) -> Result<&Settler, PaymentError> {
        self.settlers.get(network).ok_or_else(|| {
            PaymentError::unavailable(
                "settlement_unconfigured",
                format!("this server cannot settle payments on {network}"),
            )
        })
    }

    pub fn settlers(&self) -> impl Iterator<Item = (&Network, &Settler)> {
        self.settlers.iter()
    }

    fn now_secs(&self) -> u64 {
        self.clock.now().as_secs()
    }

    /// Checks the payment fully before claiming it: the local checks, then the chain (local
    /// mode: balance, nonce state and a simulated transfer, in one round trip) or the
    /// facilitator's `/verify`. Returns the chain head, where a later log search starts.
    pub async fn verify(&self, a: &Attempt) -> Result<Option<u64>, PaymentError> {
        let settler = self.settler(&a.network)?;
        eip3009::check(&a.auth, &a.terms, self.now_secs())?;
        match settler {
            Settler::Local { chain, relayer } => {
                let token = a.terms.asset;
                let (sim, used, balance, head) = tokio::join!(
                    chain.simulate(token, &a.auth, Some(relayer.address())),
                    chain.authorization_used(token, &a.auth),
                    chain.balance_of(token, a.auth.payer()),
                    chain.latest_block(),
                );
                if used? {
                    return Err(nonce_used(&a.auth));
                }
                if balance? < a.auth.message.value {
                    return Err(PaymentError::invalid(
                        "insufficient_funds",
                        format!(
                            "{} holds less than {}",
                            a.auth.payer(),
                            a.auth.message.value
                        ),
                    ));
                }
                if let Err(reason) = sim? {
                    return Err(PaymentError::invalid(
                        "invalid_exact_evm_transaction_simulation_failed",
                        format!("the token refuses the transfer: {reason}"),
                    ));
                }
                Ok(Some(head?.0))
            }
            Settler::Facilitator { facilitator, chain } => {
                let verdict = facilitator
                    .verify(a.version, &a.payload, &a.requirements)
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
                Ok(match chain {
                    Some(c) => c.latest_block().await.ok().map(|(n, _)| n),
                    None => None,
                })
            }
        }
    }

    /// Claims the authorization for this request. The loser of a race, or a replay, is
    /// refused here, before anything is broadcast.
    pub async fn claim(
        &self,
        a: &Attempt,
        from_block: Option<u64>,
    ) -> Result<String, PaymentError> {
        let settler = self.settler(&a.network)?;
        let id = a.payment_id();
        let new = NewPayment {
            id: id.clone(),
            network: a.network.to_string(),
            asset: lower(&a.terms.asset),
            payer: lower(&a.auth.payer()),
            nonce: a.stored.nonce.to_ascii_lowercase(),
            pay_to: lower(&a.terms.pay_to),
            amount: a.auth.message.value.to_string(),
            price_micros: a.quote.price.get(),
            quote_id: a.quote.id.to_string(),
            request_hash: a.quote.request_hash.to_hex(),
            x402_version: a.version,
            mode: settler.mode(),
            authorization: a.stored.clone(),
            valid_before: a.auth.valid_before(),
            from_block,
        };
        match self.store.claim(&new, self.clock.now()).await? {
            Claim::Taken => Ok(id),
            Claim::Held(row)
                if row.status.money_moved() || row.status == record::Status::Failed =>
            {
                Err(PaymentError::invalid(
                    "invalid_exact_evm_nonce_already_used",
                    format!(
                        "this authorization was already presented (payment {})",
                        row.id
                    ),
                ))
            }
            Claim::Held(_) => Err(PaymentError::InProgress),
        }
    }

    /// Settles a claimed payment and records the outcome. On `Pending` the record stays open
    /// for the reconciler; on a definitive failure it is marked failed.
    pub async fn settle(&self, a: &Attempt, id: &str) -> Result<Settled, PaymentError> {
        let settler = self.settler(&a.network)?;
        let token = a.terms.asset;
        let payer = lower(&a.auth.payer());
        let settled = |tx: String| Settled {
            payment_id: id.to_string(),
            tx,
            payer: payer.clone(),
        };
        let outcome: Result<String, PaymentError> = match settler {
            Settler::Local { chain, relayer } => {
                let submitted = relayer
                    .submit(token, &a.auth, |tx| async move {
                        if let Err(e) = self.store.submitted(id, &format!("{tx:#x}"), self.clock.now()).await {
                            // The claim row is enough for the reconciler to find it on chain.
                            tracing::warn!(error = %e, payment = id, "recording the broadcast failed");
                        }
                        crash_point("after_broadcast");
                        Ok(())
                    })
                    .await;
                match submitted {
                    Ok(Submitted::Mined {
                        landed,
                        success: true,
                    }) => Ok(format!("{:#x}", landed.tx)),
                    Ok(Submitted::Mined { success: false, .. }) => {
                        self.refused(chain, a, "the settlement transaction reverted".into(), None)
                            .await
                    }
                    Ok(Submitted::Refused(reason)) => self.refused(chain, a, reason, None).await,
                    Err(PaymentError::Unavailable { reason, detail }) => {
                        // Nothing was broadcast (the relayer failed before sending).
                        self.store.failed(id, reason, self.clock.now()).await?;
                        Err(PaymentError::Unavailable { reason, detail })
                    }
                    Err(e) => Err(e),
                }
            }
            Settler::Facilitator { facilitator, chain } => {
                match facilitator
                    .settle(a.version, &a.payload, &a.requirements)
                    .await
                {
                    Ok(s) if s.success && !s.transaction.is_empty() => Ok(s.transaction),
                    Ok(s) => {
                        let reason = s
                            .error_reason
                            .unwrap_or_else(|| "unexpected_settle_error".into());
                        let detail = s.error_message.unwrap_or_else(|| {
                            format!("the facilitator could not settle: {reason}")
                        });
                        match chain {
                            // The facilitator may have lost a race to someone who submitted the
                            // same authorization: if the money reached payTo, it counts.
                            Some(chain) => self.refused(chain, a, detail, Some(reason)).await,
                            None => Err(PaymentError::SettlementFailed { reason, detail }),
                        }
                    }
                    Err(PaymentError::Unavailable { reason, detail }) => {
                        self.store.failed(id, reason, self.clock.now()).await?;
                        Err(PaymentError::Unavailable { reason, detail })
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Ok(tx) => {
                if !self.store.settled(id, &tx, self.clock.now()).await? {
                    tracing::warn!(payment = id, "payment was already settled or resolved");
                }
                crash_point("after_settle");
                Ok(settled(tx))
            }
            Err(e @ PaymentError::SettlementFailed { .. }) => {
                self.store.failed(id, e.code(), self.clock.now()).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Our settlement was refused: either someone else submitted the same authorization first
    /// (then the money reached payTo and the payment counts), or it really failed.
    async fn refused(
        &self,
        chain: &Chain,
        a: &Attempt,
        detail: String,
        reason: Option<String>,
    ) -> Result<String, PaymentError> {
        let token = a.terms.asset;
        if chain.authorization_used(token, &a.auth).await? {
            if let Some(landed) = chain.find_landed(token, &a.auth, None).await?
                && chain.transfer_in_tx(token, &a.auth, landed.tx).await?
            {
                tracing::info!(tx = %landed.tx, "authorization was submitted by someone else; it paid us");
                return Ok(format!("{:#x}", landed.tx));
            }
            return Err(PaymentError::SettlementFailed {
                reason: "invalid_exact_evm_nonce_already_used".into(),
                detail: format!("the authorization was used or cancelled elsewhere: {detail}"),
            });
        }
        let reason = match reason {
            Some(r) => r,
            None if chain.balance_of(token, a.auth.payer()).await? < a.auth.message.value => {
                "insufficient_funds".into()
            }
            None => "invalid_exact_evm_transaction_failed".into(),
        };
        Err(PaymentError::SettlementFailed { reason, detail })
    }

    /// Gives up a claim whose settlement was never attempted (a settle-after request whose
    /// upstream failed): the authorization was not used and nothing is owed.
    pub async fn release(&self, id: &str, reason: &str) -> Result<(), PaymentError> {
        self.store.failed(id, reason, self.clock.now()).await?;
        Ok(())
    }

    async fn ensure_accounts(
        &self,
        t: &CreditTarget,
    ) -> Result<(AccountId, AccountId), PaymentError> {
        let agent = AccountId::new(payer_account(&t.payer)).map_err(ledger_down)?;
        let inflow = AccountId::new(inflow_account(&t.network, &t.asset)).map_err(ledger_down)?;
        let known = |id: &AccountId| {
            self.known_accounts
                .lock()
                .expect("not poisoned")
                .contains(id.as_str())
        };
        if known(&agent) && known(&inflow) {
            return Ok((agent, inflow));
        }
        self.ledger
            .create_account(NewAccount {
                id: agent.clone(),
                kind: AccountKind::Agent,
                owner: Some(format!("wallet:{}", t.payer.to_ascii_lowercase())),
                allow_negative: false,
            })
            .await
            .map_err(ledger_down)?;
        self.ledger
            .create_account(NewAccount {
                id: inflow.clone(),
                kind: AccountKind::System,
                owner: None,
                allow_negative: true,
            })
            .await
            .map_err(ledger_down)?;
        let mut known = self.known_accounts.lock().expect("not poisoned");
        if known.len() >= 100_000 {
            // A bound on memory: forgetting only costs the idempotent creates again.
            known.clear();
        }
        known.insert(agent.to_string());
        known.insert(inflow.to_string());
        Ok((agent, inflow))
    }

    /// Records a settled payment: the payment credited to the payer's account, and (`charge`)
    /// the price debited to revenue, as one linked group whose ids derive from the payment.
    /// Without `charge` (the request was never served) the payer keeps the credits.
    pub async fn credit(&self, t: &CreditTarget, charge: bool) -> Result<(), PaymentError> {
        let (agent, inflow) = self.ensure_accounts(t).await?;
        let revenue = AccountId::new(REVENUE).map_err(ledger_down)?;
        let id = |suffix: &str| {
            TransferId::new(format!("pay:{}:{suffix}", t.payment_id)).map_err(ledger_down)
        };
        let credit = NewTransfer {
            id: id("credit")?,
            kind: TransferKind::PaymentCredit,
            debit: inflow,
            credit: agent.clone(),
            amount: t.price,
            refs: References {
                quote_id: Some(t.quote_id.clone()),
                request_hash: Some(t.request_hash.clone()),
                chain_tx: Some(t.tx.clone()),
                payer: Some(t.payer.clone()),
                nonce: Some(t.nonce.clone()),
                reason: None,
            },
        };
        let debit = NewTransfer {
            id: id("debit")?,
            kind: TransferKind::RequestDebit,
            debit: agent,
            credit: revenue,
            amount: t.price,
            refs: References {
                quote_id: Some(t.quote_id.clone()),
                request_hash: Some(t.request_hash.clone()),
                ..References::default()
            },
        };
        let group = if charge {
            vec![credit, debit.clone()]
        } else {
            vec![credit]
        };
        match self.ledger.transfer_linked(&group).await {
            Ok(_) => {}
            // The credit id is taken by a different group: the reconciler credited the payment
            // alone (this request was thought gone) or the request's group landed before a
            // crash. Either way the payment is in the ledger once; a charge still owed is a
            // separate debit from the payer's credits.
            Err(LedgerError::Conflict { .. }) => {
                if charge {
                    self.ledger.transfer(debit).await.map_err(ledger_down)?;
                }
            }
            Err(e) => return Err(ledger_down(e)),
        }
        crash_point("after_credit");
        self.store.credited(&t.payment_id, self.clock.now()).await?;
        Ok(())
    }

    pub async fn credit_attempt(
        &self,
        a: &Attempt,
        s: &Settled,
        charge: bool,
    ) -> Result<(), PaymentError> {
        self.credit(&CreditTarget::of_attempt(a, s), charge).await
    }

    /// Gives a paid request's price back as credits (the upstream failed after settlement).
    pub async fn refund(&self, a: &Attempt, s: &Settled, why: &str) -> Result<(), PaymentError> {
        let t = CreditTarget::of_attempt(a, s);
        self.ledger
            .transfer(NewTransfer {
                id: TransferId::new(format!("pay:{}:refund", t.payment_id)).map_err(ledger_down)?,
                kind: TransferKind::Refund,
                debit: AccountId::new(REVENUE).map_err(ledger_down)?,
                credit: AccountId::new(payer_account(&t.payer)).map_err(ledger_down)?,
                amount: t.price,
                refs: References {
                    quote_id: Some(t.quote_id),
                    chain_tx: Some(t.tx),
                    reason: Some(why.to_string()),
                    ..References::default()
                },
            })
            .await
            .map_err(ledger_down)?;
        Ok(())
    }
}

fn nonce_used(auth: &Authorization) -> PaymentError {
    PaymentError::invalid(
        "invalid_exact_evm_nonce_already_used",
        format!(
            "authorization nonce {} of {} was already used or cancelled on chain",
            auth.message.nonce,
            auth.payer()
        ),
    )
}
