//! The `exact` scheme with EIP-3009 `transferWithAuthorization` (USDC and other tokens that
//! implement it): the EIP-712 message, the checks that need no chain (signature, payee, amount,
//! time window), the token's nonce state and `AuthorizationUsed` log, and the settling call.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, Signature, U256};
use alloy::rpc::types::{Filter, Log, TransactionRequest};
use alloy::sol;
use alloy::sol_types::{SolCall, SolEvent, SolStruct};
use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{Scheme, SchemePayment, SignatureCheck, Terms, check_eoa_signature};
use crate::payment::PaymentError;
use crate::payment::chain::{Chain, has_transfer};
use crate::payment::record::StoredAuthorization;
use crate::quote::Offer;
use crate::x402::exact_evm::{ExactEvmPayload, ValidatedExactEvm};

/// `extra.assetTransferMethod` of this scheme (the default when absent).
pub const METHOD: &str = "eip3009";

// The generated call builders mirror the contract's 9-argument functions.
sol! {
    #[sol(rpc)]
    #[allow(clippy::too_many_arguments)]
    interface IEIP3009 {
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function transferWithAuthorization(address from, address to, uint256 value,
            uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        function transferWithAuthorization(address from, address to, uint256 value,
            uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature) external;
        event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
    }
}

sol! {
    /// Field names, types and order are the token's TYPEHASH; anything else signs another message.
    #[derive(Debug, PartialEq, Eq)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// Seconds an authorization must stay valid beyond now: the settlement transaction needs a block
/// (the x402 reference facilitators use the same margin).
pub const VALID_BEFORE_MARGIN_SECS: u64 = 6;

/// A payer's authorization in chain types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub message: TransferWithAuthorization,
    pub signature: Vec<u8>,
}

impl Authorization {
    pub fn from_validated(v: &ValidatedExactEvm) -> Authorization {
        Authorization {
            message: TransferWithAuthorization {
                from: Address::from(v.from),
                to: Address::from(v.to),
                value: U256::from(v.value),
                validAfter: U256::from(v.valid_after),
                validBefore: U256::from(v.valid_before),
                nonce: B256::from(v.nonce),
            },
            signature: v.signature.clone(),
        }
    }

    pub fn signing_hash(&self, terms: &Terms) -> B256 {
        self.message.eip712_signing_hash(&terms.token_domain())
    }

    /// An EOA signature split for the `(v, r, s)` overload; `None` for a smart-wallet signature.
    pub fn vrs(&self) -> Option<(u8, B256, B256)> {
        let sig = self.eoa_signature()?;
        Some((27 + u8::from(sig.v()), sig.r().into(), sig.s().into()))
    }

    fn eoa_signature(&self) -> Option<Signature> {
        (self.signature.len() == 65)
            .then(|| Signature::try_from(self.signature.as_slice()).ok())
            .flatten()
    }
}

/// The checks that need no chain, in the order of the x402 reference facilitator, so the first
/// failure is the one a reference implementation would report.
pub fn check(
    auth: &Authorization,
    terms: &Terms,
    now_secs: u64,
) -> Result<SignatureCheck, PaymentError> {
    let m = &auth.message;
    let sig_check = check_signature(auth, terms)?;
    if m.to != terms.pay_to {
        return Err(PaymentError::invalid(
            "invalid_exact_evm_payload_recipient_mismatch",
            format!(
                "authorization pays {}, the quote pays {}",
                m.to, terms.pay_to
            ),
        ));
    }
    if m.validBefore < U256::from(now_secs.saturating_add(VALID_BEFORE_MARGIN_SECS)) {
        return Err(PaymentError::invalid(
            "invalid_exact_evm_payload_authorization_valid_before",
            format!(
                "authorization expires at {}; it must be valid until at least {}",
                m.validBefore,
                now_secs + VALID_BEFORE_MARGIN_SECS
            ),
        ));
    }
    if m.validAfter > U256::from(now_secs) {
        return Err(PaymentError::invalid(
            "invalid_exact_evm_payload_authorization_valid_after",
            format!("authorization is not valid before {}", m.validAfter),
        ));
    }
    if m.value != terms.amount {
        return Err(PaymentError::invalid(
            "invalid_exact_evm_payload_authorization_value_mismatch",
            format!(
                "authorization is for {} base units, the quote is for exactly {}",
                m.value, terms.amount
            ),
        ));
    }
    Ok(sig_check)
}

fn check_signature(auth: &Authorization, terms: &Terms) -> Result<SignatureCheck, PaymentError> {
    check_eoa_signature(
        &auth.signature,
        &auth.signing_hash(terms),
        auth.message.from,
    )
    .map_err(|detail| {
        PaymentError::invalid(
            "invalid_exact_evm_payload_signature",
            format!("signature does not authorize this transfer: {detail}"),
        )
    })
}

/// The `exact` scheme paid with EIP-3009.
#[derive(Debug)]
pub struct ExactEip3009;

impl Scheme for ExactEip3009 {
    fn name(&self) -> &'static str {
        "exact"
    }

    fn transfer_method(&self) -> &'static str {
        METHOD
    }

    /// The token's EIP-712 domain name and version, which the client signs over. The official
    /// TS server omits `assetTransferMethod` for EIP-3009 (it is the default), and so do we:
    /// v2 clients echo `extra` verbatim, so both spellings must not be mixed.
    fn extra(&self, offer: &Offer) -> Map<String, Value> {
        super::token_domain_extra(offer)
    }

    fn parse(&self, payload: &Value) -> Result<Box<dyn SchemePayment>, PaymentError> {
        let exact = ExactEvmPayload::from_value(payload)
            .and_then(|p| p.validate())
            .map_err(|e| PaymentError::Malformed {
                reason: e.code(),
                detail: e.to_string(),
            })?;
        Ok(Box::new(Authorization::from_validated(&exact)))
    }

    fn restore(&self, a: &StoredAuthorization) -> Result<Box<dyn SchemePayment>, PaymentError> {
        let bad = |what: &str| PaymentError::Internal(format!("stored authorization: {what}"));
        let u = |s: &str, what: &str| s.parse::<U256>().map_err(|_| bad(what));
        let signature = a
            .signature
            .strip_prefix("0x")
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| bad("signature"))?;
        Ok(Box::new(Authorization {
            message: TransferWithAuthorization {
                from: a.from.parse().map_err(|_| bad("from"))?,
                to: a.to.parse().map_err(|_| bad("to"))?,
                value: u(&a.value, "value")?,
                validAfter: u(&a.valid_after, "validAfter")?,
                validBefore: u(&a.valid_before, "validBefore")?,
                nonce: a.nonce.parse::<B256>().map_err(|_| bad("nonce"))?,
            },
            signature,
        }))
    }
}

#[async_trait]
impl SchemePayment for Authorization {
    fn payer(&self) -> Address {
        self.message.from
    }

    fn nonce(&self) -> String {
        format!("{:#x}", self.message.nonce)
    }

    fn amount(&self) -> U256 {
        self.message.value
    }

    fn replay_reason(&self) -> &'static str {
        "invalid_exact_evm_nonce_already_used"
    }

    fn valid_before(&self) -> u64 {
        self.message.validBefore.saturating_to()
    }

    fn stored(&self) -> StoredAuthorization {
        let m = &self.message;
        StoredAuthorization {
            from: format!("{:#x}", m.from),
            to: format!("{:#x}", m.to),
            value: m.value.to_string(),
            valid_after: m.validAfter.to_string(),
            valid_before: m.validBefore.to_string(),
            nonce: format!("{:#x}", m.nonce),
            signature: format!("0x{}", hex::encode(&self.signature)),
            method: None,
            scheme: None,
            payload: None,
        }
    }

    fn check(&self, terms: &Terms, now_secs: u64) -> Result<(), PaymentError> {
        check(self, terms, now_secs).map(|_| ())
    }

    /// The `(v, r, s)` overload for an EOA signature, the `bytes` one (ERC-1271 wallets)
    /// otherwise.
    fn settle_call(&self, terms: &Terms) -> TransactionRequest {
        let m = &self.message;
        let data = match self.vrs() {
            Some((v, r, s)) => IEIP3009::transferWithAuthorization_0Call {
                from: m.from,
                to: m.to,
                value: m.value,
                validAfter: m.validAfter,
                validBefore: m.validBefore,
                nonce: m.nonce,
                v,
                r,
                s,
            }
            .abi_encode(),
            None => IEIP3009::transferWithAuthorization_1Call {
                from: m.from,
                to: m.to,
                value: m.value,
                validAfter: m.validAfter,
                validBefore: m.validBefore,
                nonce: m.nonce,
                signature: Bytes::from(self.signature.clone()),
            }
            .abi_encode(),
        };
        TransactionRequest::default()
            .with_to(terms.asset)
            .with_input(data)
    }

    /// Balance, nonce state and a simulated transfer, in one parallel round trip. The token
    /// itself judges the signature in the simulation, which is what verifies ERC-1271 wallets.
    async fn preflight(
        &self,
        chain: &Chain,
        terms: &Terms,
        caller: Address,
    ) -> Result<(), PaymentError> {
        let (sim, used, balance) = tokio::join!(
            chain.simulate(self.settle_call(terms).with_from(caller)),
            self.used(chain, terms),
            chain.balance_of(terms.asset, self.payer()),
        );
        if used? {
            return Err(PaymentError::invalid(
                "invalid_exact_evm_nonce_already_used",
                format!(
                    "authorization nonce {} of {} was already used or cancelled on chain",
                    self.message.nonce,
                    self.payer()
                ),
            ));
        }
        if balance? < self.message.value {
            return Err(PaymentError::invalid(
                "insufficient_funds",
                format!("{} holds less than {}", self.payer(), self.message.value),
            ));
        }
        if let Err(reason) = sim? {
            return Err(PaymentError::invalid(
                "invalid_exact_evm_transaction_simulation_failed",
                format!("the token refuses the transfer: {reason}"),
            ));
        }
        Ok(())
    }

    fn batchable(&self) -> bool {
        true
    }

    /// This authorization's own `AuthorizationUsed(from, nonce)` from the token, and the
    /// token's `Transfer` of exactly `value` from the payer to payTo (as [`Self::landed`]
    /// requires of a transaction found by its log).
    fn settled_in(&self, terms: &Terms, logs: &[Log]) -> bool {
        let used = logs.iter().any(|log| {
            log.address() == terms.asset
                && IEIP3009::AuthorizationUsed::decode_log(&log.inner)
                    .is_ok_and(|e| e.authorizer == self.payer() && e.nonce == self.message.nonce)
        });
        used && has_transfer(
            logs,
            terms.asset,
            self.payer(),
            terms.pay_to,
            self.message.value,
        )
    }

    async fn used(&self, chain: &Chain, terms: &Terms) -> Result<bool, PaymentError> {
        chain
            .read(
                terms.asset,
                IEIP3009::authorizationStateCall {
                    authorizer: self.payer(),
                    nonce: self.message.nonce,
                },
            )
            .await
    }

    /// The `AuthorizationUsed(from, nonce)` log names the transaction; its receipt must show the
    /// token moving exactly `value` from the payer to payTo (a cancellation emits a different
    /// event, and a used authorization with no such log was cancelled, not spent).
    async fn landed(
        &self,
        chain: &Chain,
        terms: &Terms,
        from_block: Option<u64>,
    ) -> Result<Option<B256>, PaymentError> {
        let filter = Filter::new()
            .address(terms.asset)
            .event_signature(IEIP3009::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(self.payer().into_word())
            .topic2(self.message.nonce);
        let Some(tx) = chain.first_log_tx(filter, from_block).await? else {
            return Ok(None);
        };
        let paid = chain
            .transfer_in_tx(
                terms.asset,
                self.payer(),
                terms.pay_to,
                self.message.value,
                tx,
            )
            .await?;
        Ok(paid.then_some(tx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    fn terms() -> Terms {
        Terms {
            chain_id: 84532,
            asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
                .parse()
                .unwrap(),
            pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
                .parse()
                .unwrap(),
            amount: U256::from(20_000u64),
            eip712_name: "USDC".into(),
            eip712_version: "2".into(),
            facilitator: None,
        }
    }

    fn signed(
        payer: &PrivateKeySigner,
        terms: &Terms,
        tweak: impl Fn(&mut Authorization),
    ) -> Authorization {
        let mut auth = Authorization {
            message: TransferWithAuthorization {
                from: payer.address(),
                to: terms.pay_to,
                value: terms.amount,
                validAfter: U256::from(1_000u64),
                validBefore: U256::from(2_000u64),
                nonce: B256::repeat_byte(7),
            },
            signature: vec![],
        };
        let sig = payer.sign_hash_sync(&auth.signing_hash(terms)).unwrap();
        auth.signature = sig.as_bytes().to_vec();
        tweak(&mut auth);
        auth
    }

    fn code(r: Result<SignatureCheck, PaymentError>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => e.code().to_string(),
        }
    }

    /// A log as a receipt carries it.
    fn log(emitter: Address, data: alloy::primitives::LogData) -> Log {
        Log {
            inner: alloy::primitives::Log {
                address: emitter,
                data,
            },
            ..Log::default()
        }
    }

    #[test]
    fn a_batch_receipt_proves_a_payment_only_by_its_own_authorization_and_transfer() {
        use crate::payment::chain::Erc20Transfer;
        let payer = PrivateKeySigner::random();
        let t = terms();
        let auth = signed(&payer, &t, |_| {});
        let used = |who: Address, nonce: B256| {
            let event = IEIP3009::AuthorizationUsed {
                authorizer: who,
                nonce,
            };
            log(t.asset, event.encode_log_data())
        };
        let transfer = |from: Address, to: Address, value: u64| {
            let event = Erc20Transfer {
                from,
                to,
                value: U256::from(value),
            };
            log(t.asset, event.encode_log_data())
        };
        let ours = used(payer.address(), auth.message.nonce);
        let paid = transfer(payer.address(), t.pay_to, 20_000);
        assert!(auth.settled_in(&t, &[ours.clone(), paid.clone()]));
        // Another payment of the same batch: another nonce, or another payer with our amount.
        let other = PrivateKeySigner::random().address();
        assert!(!auth.settled_in(
            &t,
            &[used(payer.address(), B256::repeat_byte(8)), paid.clone()]
        ));
        assert!(!auth.settled_in(&t, &[used(other, auth.message.nonce), paid.clone()]));
        // Our authorization with no transfer to payTo of exactly our amount.
        assert!(!auth.settled_in(&t, std::slice::from_ref(&ours)));
        assert!(!auth.settled_in(
            &t,
            &[ours.clone(), transfer(payer.address(), t.pay_to, 19_999)]
        ));
        assert!(!auth.settled_in(&t, &[ours.clone(), transfer(other, t.pay_to, 20_000)]));
        // The same events emitted by another contract prove nothing.
        let mut elsewhere = ours.clone();
        elsewhere.inner.address = Address::repeat_byte(0x11);
        assert!(!auth.settled_in(&t, &[elsewhere, paid]));
    }

    #[test]
    fn a_correct_authorization_passes_and_each_field_is_checked() {
        let payer = PrivateKeySigner::random();
        let t = terms();
        let now = 1_500;
        assert_eq!(code(check(&signed(&payer, &t, |_| {}), &t, now)), "ok");
        // A field changed after signing breaks the signature.
        let changed = signed(&payer, &t, |a| a.message.value += U256::from(1u8));
        assert_eq!(
            code(check(&changed, &t, now)),
            "invalid_exact_evm_payload_signature"
        );
        // Signed for the wrong payee/amount: the signature is fine, the terms are not.
        let mut other = t.clone();
        other.pay_to = Address::repeat_byte(9);
        assert_eq!(
            code(check(&signed(&payer, &other, |_| {}), &t, now)),
            "invalid_exact_evm_payload_recipient_mismatch"
        );
        let mut cheaper = t.clone();
        cheaper.amount = U256::from(19_999u64);
        let a = signed(&payer, &cheaper, |_| {});
        assert_eq!(code(check(&a, &cheaper, now)), "ok");
        assert_eq!(
            code(check(&a, &t, now)),
            "invalid_exact_evm_payload_authorization_value_mismatch"
        );
        // Time window: validBefore needs the margin, validAfter must have passed.
        let a = signed(&payer, &t, |_| {});
        assert_eq!(code(check(&a, &t, 2_000 - VALID_BEFORE_MARGIN_SECS)), "ok");
        assert_eq!(
            code(check(&a, &t, 2_000 - VALID_BEFORE_MARGIN_SECS + 1)),
            "invalid_exact_evm_payload_authorization_valid_before"
        );
        assert_eq!(code(check(&a, &t, 1_000)), "ok");
        assert_eq!(
            code(check(&a, &t, 999)),
            "invalid_exact_evm_payload_authorization_valid_after"
        );
    }

    #[test]
    fn wrong_domain_high_s_and_garbage_signatures_are_refused() {
        let payer = PrivateKeySigner::random();
        let t = terms();
        for wrong in [
            Terms {
                eip712_name: "USD Coin".into(),
                ..t.clone()
            },
            Terms {
                eip712_version: "1".into(),
                ..t.clone()
            },
            Terms {
                chain_id: 8453,
                ..t.clone()
            },
            Terms {
                asset: Address::repeat_byte(1),
                ..t.clone()
            },
        ] {
            let a = signed(&payer, &wrong, |_| {});
            assert_eq!(
                code(check(&a, &t, 1_500)),
                "invalid_exact_evm_payload_signature"
            );
        }
        // The malleable twin (n - s, flipped v) recovers the same signer but must be refused.
        let a = signed(&payer, &t, |a| {
            let sig = Signature::try_from(a.signature.as_slice()).unwrap();
            let n = U256::from_str_radix(
                "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
                16,
            )
            .unwrap();
            let twin = Signature::new(sig.r(), n - sig.s(), !sig.v());
            a.signature = twin.as_bytes().to_vec();
        });
        assert_eq!(
            code(check(&a, &t, 1_500)),
            "invalid_exact_evm_payload_signature"
        );
        let a = signed(&payer, &t, |a| a.signature = vec![0; 65]);
        assert_eq!(
            code(check(&a, &t, 1_500)),
            "invalid_exact_evm_payload_signature"
        );
        let a = signed(&payer, &t, |a| a.signature[64] = 5);
        assert_eq!(
            code(check(&a, &t, 1_500)),
            "invalid_exact_evm_payload_signature"
        );
        let a = signed(&payer, &t, |a| a.signature.push(0));
        assert_eq!(
            check(&a, &t, 1_500).unwrap(),
            SignatureCheck::ContractWallet
        );
    }
}
