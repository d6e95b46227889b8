//! What every Permit2 scheme shares (`exact` and `upto` through their x402 proxies): the
//! canonical Permit2 contract, strict number parsing, the checks of a permit against the
//! quote's terms, the chain reads before a claim, the unordered-nonce bitmap and the proof that
//! a settlement landed. Each scheme file keeps only its own witness and its proxy call.

use alloy::primitives::{Address, B256, U256, address};
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolEvent};

use super::Terms;
use crate::payment::PaymentError;
use crate::payment::chain::{Chain, Erc20Transfer, has_event, has_transfer};

/// The canonical Permit2 deployment (the same address on every chain).
pub const PERMIT2: Address = address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");

/// Seconds a permit must stay valid beyond now (as for EIP-3009: settlement needs a block).
pub const DEADLINE_MARGIN_SECS: u64 = 6;

/// The reason every Permit2 payload refusal carries.
pub const MALFORMED: &str = "invalid_permit2_payload";

sol! {
    interface IPermit2 {
        function nonceBitmap(address owner, uint256 wordPos) external view returns (uint256);
    }
}

/// Permit2's own EIP-712 domain: name "Permit2", no version.
pub fn domain(chain_id: u64) -> Eip712Domain {
    Eip712Domain::new(
        Some("Permit2".into()),
        None,
        Some(U256::from(chain_id)),
        Some(PERMIT2),
        None,
    )
}

/// Strict uint256: digits only, no leading zeros, at most 78 digits, within range.
pub fn parse_u256(s: &str) -> Option<U256> {
    let ok = !s.is_empty()
        && s.len() <= 78
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s.len() == 1 || !s.starts_with('0'));
    ok.then(|| U256::from_str_radix(s, 10).ok()).flatten()
}

/// `0x`-prefixed, non-empty, even-length hex.
pub fn parse_signature(s: &str) -> Option<Vec<u8>> {
    s.strip_prefix("0x")
        .filter(|h| !h.is_empty() && h.len() % 2 == 0)
        .and_then(|h| hex::decode(h).ok())
}

pub fn malformed(field: &str) -> PaymentError {
    PaymentError::Malformed {
        reason: MALFORMED,
        detail: format!("permit2 payload: `{field}` is not well-formed"),
    }
}

/// The fields of a permit every Permit2 scheme checks alike.
#[derive(Clone, Copy, Debug)]
pub struct PermitTerms {
    pub token: Address,
    pub amount: U256,
    pub spender: Address,
    pub deadline: U256,
    pub to: Address,
    pub valid_after: U256,
}

impl PermitTerms {
    /// In the reference facilitator's order where it needs no chain (after the signature):
    /// spender, recipient, time window, amount, token. `amount` must equal `terms.amount`: for
    /// `exact` the price, for `upto` the ceiling (the permit's maximum is what is verified).
    pub fn check(
        &self,
        terms: &Terms,
        now_secs: u64,
        proxy: Address,
        proxy_name: &str,
    ) -> Result<(), PaymentError> {
        if self.spender != proxy {
            return Err(PaymentError::invalid(
                "invalid_permit2_spender",
                format!(
                    "the permit's spender is {}, not the {proxy_name} {proxy}",
                    self.spender
                ),
            ));
        }
        if self.to != terms.pay_to {
            return Err(PaymentError::invalid(
                "invalid_permit2_recipient_mismatch",
                format!(
                    "the witness pays {}, the quote pays {}",
                    self.to, terms.pay_to
                ),
            ));
        }
        if self.deadline < U256::from(now_secs.saturating_add(DEADLINE_MARGIN_SECS)) {
            return Err(PaymentError::invalid(
                "permit2_deadline_expired",
                format!("the permit expires at {}", self.deadline),
            ));
        }
        if self.valid_after > U256::from(now_secs) {
            return Err(PaymentError::invalid(
                "permit2_not_yet_valid",
                format!("the permit is not valid before {}", self.valid_after),
            ));
        }
        if self.amount != terms.amount {
            return Err(PaymentError::invalid(
                "permit2_amount_mismatch",
                format!(
                    "the permit is for {} base units, the quote is for exactly {}",
                    self.amount, terms.amount
                ),
            ));
        }
        if self.token != terms.asset {
            return Err(PaymentError::invalid(
                "permit2_token_mismatch",
                format!(
                    "the permit is for token {}, the quote is in {}",
                    self.token, terms.asset
                ),
            ));
        }
        Ok(())
    }

    /// Permit2's deadline as the exclusive `validBefore` the pipeline stores.
    pub fn valid_before(&self) -> u64 {
        // Permit2 refuses a permit once block.timestamp > deadline.
        self.deadline.saturating_to::<u64>().saturating_add(1)
    }
}

/// Permit2's unordered nonces: bit `nonce & 0xff` of word `nonce >> 8` of the owner's bitmap.
pub async fn nonce_used(chain: &Chain, owner: Address, nonce: U256) -> Result<bool, PaymentError> {
    let word = chain
        .read(
            PERMIT2,
            IPermit2::nonceBitmapCall {
                owner,
                wordPos: nonce >> 8,
            },
        )
        .await?;
    Ok((word >> (nonce & U256::from(0xffu8))) & U256::from(1u8) == U256::from(1u8))
}

/// The chain checks before a claim, in one round trip: allowance to Permit2 first (the answer a
/// buyer can act on: approve Permit2), then the balance, the nonce and the simulated settlement
/// (`settle`, sent from the relayer or the facilitator's address).
pub async fn preflight(
    chain: &Chain,
    asset: Address,
    owner: Address,
    amount: U256,
    nonce: U256,
    settle: TransactionRequest,
) -> Result<(), PaymentError> {
    let (allowance, balance, used, sim) = tokio::join!(
        chain.allowance(asset, owner, PERMIT2),
        chain.balance_of(asset, owner),
        nonce_used(chain, owner, nonce),
        chain.simulate(settle),
    );
    if allowance? < amount {
        return Err(PaymentError::invalid(
            "permit2_allowance_required",
            format!(
                "{owner} has not approved Permit2 ({PERMIT2}) for at least {amount} of {asset}"
            ),
        ));
    }
    if balance? < amount {
        return Err(PaymentError::invalid(
            "permit2_insufficient_balance",
            format!("{owner} holds less than {amount}"),
        ));
    }
    if used? {
        return Err(PaymentError::invalid(
            "permit2_invalid_nonce",
            format!("Permit2 nonce {nonce} of {owner} was already used"),
        ));
    }
    if let Err(reason) = sim? {
        return Err(PaymentError::invalid(
            "permit2_simulation_failed",
            format!("the proxy refuses the settlement: {reason}"),
        ));
    }
    Ok(())
}

/// Permit2 logs nothing for a signature transfer: the proof is a transaction holding both the
/// proxy's `settled` event and the token's `Transfer` of exactly `terms.amount` from `owner` to
/// payTo. (Another payment of the same amount between the same parties in that window would be
/// indistinguishable, which is why this is asked only once the nonce is used.)
pub async fn landed(
    chain: &Chain,
    terms: &Terms,
    owner: Address,
    proxy: Address,
    settled: B256,
    from_block: Option<u64>,
) -> Result<Option<B256>, PaymentError> {
    let filter = Filter::new()
        .address(terms.asset)
        .event_signature(Erc20Transfer::SIGNATURE_HASH)
        .topic1(owner.into_word())
        .topic2(terms.pay_to.into_word());
    for tx in chain.log_txs(filter, from_block).await? {
        let logs = chain.succeeded_logs(tx).await?;
        if has_event(&logs, proxy, settled)
            && has_transfer(&logs, terms.asset, owner, terms.pay_to, terms.amount)
        {
            return Ok(Some(tx));
        }
    }
    Ok(None)
}
