//! Settled money into the ledger: the payment credited to the payer's account and the price
//! debited to revenue, as one linked group whose ids derive from the payment, so every path
//! (the request, a retry, the reconciler) books it once.

use crate::accounts::REVENUE;
use crate::ledger::{
    AccountId, AccountKind, LedgerError, NewAccount, NewTransfer, References, TransferId,
    TransferKind,
};
use crate::money::UsdMicros;

use super::pipeline::Matched;
use super::record::PaymentRow;
use super::{PaymentError, PaymentId, Payments, crash_point};

/// The agent account an on-chain payer's credits live in.
pub fn payer_account(payer: &str) -> String {
    crate::accounts::wallet_account(payer)
}

/// Where on-chain money enters the books (may go negative: it mirrors money outside).
pub fn inflow_account(network: &str, asset: &str) -> String {
    format!("sys:inflow:{network}:{}", asset.to_ascii_lowercase())
}

fn ledger_down(e: LedgerError) -> PaymentError {
    PaymentError::unavailable("ledger_unavailable", format!("ledger: {e}"))
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
    /// Base units of `asset` the payment moves.
    pub amount: String,
    pub pay_to: String,
    /// A top-up: credited to this account (as a top-up), never charged.
    pub topup: Option<TopupTarget>,
}

/// The account a top-up payment credits and the valuation its amount came from.
#[derive(Clone, Debug)]
pub struct TopupTarget {
    pub account: String,
    pub valuation: serde_json::Value,
}

impl TopupTarget {
    fn parse(stored: Option<&str>) -> Option<TopupTarget> {
        let v: serde_json::Value = serde_json::from_str(stored?).ok()?;
        Some(TopupTarget {
            account: v.get("account")?.as_str()?.to_string(),
            valuation: v.get("valuation").cloned().unwrap_or_default(),
        })
    }
}

impl CreditTarget {
    pub(super) fn of_row(row: &PaymentRow, tx: String) -> CreditTarget {
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
            amount: row.amount.clone(),
            pay_to: row.pay_to.clone(),
            topup: TopupTarget::parse(row.topup.as_deref()),
        }
    }

    pub(super) fn of_matched(m: &Matched, id: &PaymentId, tx: &str) -> CreditTarget {
        CreditTarget {
            payment_id: id.to_string(),
            network: m.network.to_string(),
            asset: format!("{:#x}", m.terms.asset),
            payer: format!("{:#x}", m.payment.payer()),
            nonce: m.payment.nonce(),
            price: m.price,
            quote_id: m.quote.id.to_string(),
            request_hash: m.quote.request_hash.to_hex(),
            tx: tx.to_string(),
            amount: m.terms.amount.to_string(),
            pay_to: format!("{:#x}", m.terms.pay_to),
            topup: m.quote.topup.as_ref().and_then(|t| {
                TopupTarget::parse(Some(&t.claim_record(&format!("{:#x}", m.terms.asset))))
            }),
        }
    }
}

impl Payments {
    pub(super) async fn ensure_accounts(
        &self,
        t: &CreditTarget,
    ) -> Result<(AccountId, AccountId), PaymentError> {
        // A wallet linked to an agent account is credited there, where its agent spends.
        let agent = self.links.account_of(&t.payer).await.map_err(|e| {
            PaymentError::unavailable("database_unavailable", format!("wallet links: {e}"))
        })?;
        let agent = AccountId::new(agent).map_err(ledger_down)?;
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
        // A linked account exists already (it was opened before the link).
        if agent.as_str() == payer_account(&t.payer) {
            self.ledger
                .create_account(NewAccount {
                    id: agent.clone(),
                    kind: AccountKind::Agent,
                    owner: Some(format!("wallet:{}", t.payer.to_ascii_lowercase())),
                    allow_negative: false,
                })
                .await
                .map_err(ledger_down)?;
        }
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
        if let Some(topup) = &t.topup {
            self.book_topup(t, topup).await?;
            crash_point("after_credit");
            self.store.credited(&t.payment_id, self.clock.now()).await?;
            return Ok(());
        }
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

    /// A settled top-up payment: credited to the account that asked for it, on what arrived
    /// (a fee-on-transfer token delivers less than was signed for: the credit is scaled down
    /// to the treasury's receipt, read from the settlement's logs).
    async fn book_topup(&self, t: &CreditTarget, topup: &TopupTarget) -> Result<(), PaymentError> {
        use alloy::primitives::{Address, B256, U256};
        let bad = |what: &str| PaymentError::Internal(format!("top-up {}: {what}", t.payment_id));
        let signed: U256 = t.amount.parse().map_err(|_| bad("amount"))?;
        let mut arrived = signed;
        if let (Ok(settler), Ok(tx), Ok(token), Ok(treasury)) = (
            self.settler(&crate::x402::Network::parse_any(&t.network).map_err(|_| bad("network"))?),
            t.tx.parse::<B256>(),
            t.asset.parse::<Address>(),
            t.pay_to.parse::<Address>(),
        ) && let Some(chain) = settler.chain()
            && let Some(receipt) = chain.receipt(tx).await?
        {
            let received = crate::topup::transfer::arrived(&receipt.logs, token, treasury);
            if !received.is_zero() {
                arrived = received.min(signed);
            }
        }
        let credit = if arrived == signed || signed.is_zero() {
            t.price
        } else {
            let scaled = U256::from(t.price.get()) * arrived / signed;
            UsdMicros(u64::try_from(scaled).map_err(|_| bad("credit"))?)
        };
        let mut valuation = topup.valuation.clone();
        if let Some(o) = valuation.as_object_mut() {
            o.insert("signed".into(), t.amount.clone().into());
            o.insert("arrived".into(), arrived.to_string().into());
            o.insert("credited_micros".into(), credit.get().into());
        }
        if credit.get() == 0 {
            tracing::error!(payment = %t.payment_id, "a top-up delivered nothing creditable");
            return Ok(());
        }
        let row = crate::topup::record::TopupRow {
            id: crate::topup::record::TopupRow::x402_id(&t.payment_id),
            account: topup.account.clone(),
            network: t.network.clone(),
            token: t.asset.clone(),
            amount: arrived.to_string(),
            credit,
            source: crate::topup::record::Source::X402,
            tx_hash: t.tx.clone(),
            payer: t.payer.clone(),
            valuation,
            created_at_ms: 0,
        };
        self.topups
            .book(&row, self.clock.now())
            .await
            .map_err(|e| PaymentError::unavailable("ledger_unavailable", format!("top-up: {e}")))?;
        Ok(())
    }

    /// Gives a paid request's price back as credits.
    pub(super) async fn refund_target(
        &self,
        t: &CreditTarget,
        why: &str,
    ) -> Result<(), PaymentError> {
        self.ledger
            .transfer(NewTransfer {
                id: TransferId::new(format!("pay:{}:refund", t.payment_id)).map_err(ledger_down)?,
                kind: TransferKind::Refund,
                debit: AccountId::new(REVENUE).map_err(ledger_down)?,
                credit: self.ensure_accounts(t).await?.0,
                amount: t.price,
                refs: References {
                    quote_id: Some(t.quote_id.clone()),
                    chain_tx: Some(t.tx.clone()),
                    reason: Some(why.to_string()),
                    ..References::default()
                },
            })
            .await
            .map_err(ledger_down)?;
        Ok(())
    }
}
