//! The `upto` scheme (EVM: Permit2 only): the payer signs a `PermitWitnessTransferFrom` for a
//! maximum, spent by the x402 upto Permit2 proxy, whose witness binds the recipient, the one
//! address allowed to settle (`facilitator`) and a start time. The seller settles what the
//! request actually cost, anything from nothing to the maximum, once the answer is known.
//!
//! The amount is phase-dependent, as in the specification: verification checks the permit
//! against the ceiling (`Terms::amount` = the quoted amount); once the charge is fixed the
//! pipeline sets `Terms::amount` to it, and the settle call, the landed proof and the
//! reconciler all work on that.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256, address};
use alloy::rpc::types::TransactionRequest;
use alloy::sol;
use alloy::sol_types::{SolCall, SolEvent, SolStruct};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::exact_permit2::WirePermitted;
use super::permit2::{self, PermitTerms, malformed, parse_signature, parse_u256};
use super::{Scheme, SchemePayment, Terms, check_eoa_signature};
use crate::payment::PaymentError;
use crate::payment::chain::Chain;
use crate::payment::record::StoredAuthorization;
use crate::quote::Offer;
use crate::x402::exact_evm::parse_address;

/// The x402 scheme name.
pub const SCHEME: &str = "upto";

/// `extra.assetTransferMethod`: `upto` on EVM is Permit2 only.
pub const METHOD: &str = "permit2";

/// `x402UptoPermit2Proxy`, deployed with CREATE2 at the same address on every chain.
pub const UPTO_PROXY: Address = address!("0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002");

sol! {
    /// Permit2's witness typehash with the upto proxy's
    /// `Witness(address to,address facilitator,uint256 validAfter)`.
    #[derive(Debug, PartialEq, Eq)]
    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Witness {
        address to;
        address facilitator;
        uint256 validAfter;
    }

    #[derive(Debug, PartialEq, Eq)]
    struct PermitWitnessTransferFrom {
        TokenPermissions permitted;
        address spender;
        uint256 nonce;
        uint256 deadline;
        Witness witness;
    }

    struct PermitTransferFrom {
        TokenPermissions permitted;
        uint256 nonce;
        uint256 deadline;
    }

    interface IX402UptoPermit2Proxy {
        function settle(PermitTransferFrom permit, uint256 amount, address owner, Witness witness, bytes signature) external;
        event Settled();
    }
}

/// The wire payload, exactly (all numbers decimal strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UptoPayload {
    pub signature: String,
    pub permit2_authorization: WireUptoPermit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireUptoPermit {
    pub from: String,
    pub permitted: WirePermitted,
    pub spender: String,
    pub nonce: String,
    pub deadline: String,
    pub witness: WireUptoWitness,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireUptoWitness {
    pub to: String,
    pub facilitator: String,
    pub valid_after: String,
}

/// A payer's upto authorization in chain types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UptoAuthorization {
    pub owner: Address,
    pub message: PermitWitnessTransferFrom,
    pub signature: Vec<u8>,
}

impl UptoAuthorization {
    pub fn from_wire(p: &UptoPayload) -> Result<Self, PaymentError> {
        let a = &p.permit2_authorization;
        let addr = |s: &str, f: &str| {
            parse_address(s)
                .map(Address::from)
                .ok_or_else(|| malformed(f))
        };
        let num = |s: &str, f: &str| parse_u256(s).ok_or_else(|| malformed(f));
        Ok(UptoAuthorization {
            owner: addr(&a.from, "from")?,
            message: PermitWitnessTransferFrom {
                permitted: TokenPermissions {
                    token: addr(&a.permitted.token, "permitted.token")?,
                    amount: num(&a.permitted.amount, "permitted.amount")?,
                },
                spender: addr(&a.spender, "spender")?,
                nonce: num(&a.nonce, "nonce")?,
                deadline: num(&a.deadline, "deadline")?,
                witness: Witness {
                    to: addr(&a.witness.to, "witness.to")?,
                    facilitator: addr(&a.witness.facilitator, "witness.facilitator")?,
                    validAfter: num(&a.witness.valid_after, "witness.validAfter")?,
                },
            },
            signature: parse_signature(&p.signature).ok_or_else(|| malformed("signature"))?,
        })
    }

    fn wire(&self) -> UptoPayload {
        let m = &self.message;
        UptoPayload {
            signature: format!("0x{}", hex::encode(&self.signature)),
            permit2_authorization: WireUptoPermit {
                from: format!("{:#x}", self.owner),
                permitted: WirePermitted {
                    token: format!("{:#x}", m.permitted.token),
                    amount: m.permitted.amount.to_string(),
                },
                spender: format!("{:#x}", m.spender),
                nonce: m.nonce.to_string(),
                deadline: m.deadline.to_string(),
                witness: WireUptoWitness {
                    to: format!("{:#x}", m.witness.to),
                    facilitator: format!("{:#x}", m.witness.facilitator),
                    valid_after: m.witness.validAfter.to_string(),
                },
            },
        }
    }

    pub fn signing_hash(&self, chain_id: u64) -> B256 {
        self.message.eip712_signing_hash(&permit2::domain(chain_id))
    }

    fn permit_terms(&self) -> PermitTerms {
        let m = &self.message;
        PermitTerms {
            token: m.permitted.token,
            amount: m.permitted.amount,
            spender: m.spender,
            deadline: m.deadline,
            to: m.witness.to,
            valid_after: m.witness.validAfter,
        }
    }

    /// The proxy call that moves `amount` (at most the permitted maximum: the proxy refuses
    /// more, and so does [`crate::payment::pipeline`] before it gets here).
    pub fn settle_call_for(&self, amount: U256) -> IX402UptoPermit2Proxy::settleCall {
        let m = &self.message;
        IX402UptoPermit2Proxy::settleCall {
            permit: PermitTransferFrom {
                permitted: TokenPermissions {
                    token: m.permitted.token,
                    amount: m.permitted.amount,
                },
                nonce: m.nonce,
                deadline: m.deadline,
            },
            amount,
            owner: self.owner,
            witness: Witness {
                to: m.witness.to,
                facilitator: m.witness.facilitator,
                validAfter: m.witness.validAfter,
            },
            signature: Bytes::from(self.signature.clone()),
        }
    }
}

/// The `upto` scheme, paid through Permit2.
#[derive(Debug)]
pub struct UptoPermit2;

impl Scheme for UptoPermit2 {
    fn name(&self) -> &'static str {
        SCHEME
    }

    fn transfer_method(&self) -> &'static str {
        METHOD
    }

    /// `assetTransferMethod` and `facilitatorAddress` (checksummed, as the TS server writes
    /// it), with the token's EIP-712 domain when known.
    fn extra(&self, offer: &Offer) -> Map<String, Value> {
        let mut extra = if offer.eip712_name.is_empty() {
            Map::new()
        } else {
            super::token_domain_extra(offer)
        };
        extra.insert("assetTransferMethod".into(), Value::String(METHOD.into()));
        if let Some(f) = offer
            .facilitator
            .as_deref()
            .and_then(|f| f.parse::<Address>().ok())
        {
            extra.insert(
                "facilitatorAddress".into(),
                Value::String(f.to_checksum(None)),
            );
        }
        extra
    }

    fn parse(&self, payload: &Value) -> Result<Box<dyn SchemePayment>, PaymentError> {
        let wire = UptoPayload::deserialize(payload).map_err(|e| PaymentError::Malformed {
            reason: permit2::MALFORMED,
            detail: format!("upto permit2 payload: {e}"),
        })?;
        Ok(Box::new(UptoAuthorization::from_wire(&wire)?))
    }

    fn restore(
        &self,
        stored: &StoredAuthorization,
    ) -> Result<Box<dyn SchemePayment>, PaymentError> {
        let wire = stored
            .payload
            .as_ref()
            .and_then(|v| UptoPayload::deserialize(v).ok())
            .ok_or_else(|| PaymentError::Internal("stored upto authorization".into()))?;
        Ok(Box::new(UptoAuthorization::from_wire(&wire).map_err(
            |e| PaymentError::Internal(format!("stored upto authorization: {e}")),
        )?))
    }
}

#[async_trait]
impl SchemePayment for UptoAuthorization {
    fn payer(&self) -> Address {
        self.owner
    }

    /// Permit2 nonces are shared by every Permit2 scheme: the same 32-byte hex spelling as
    /// `exact`, so one permit nonce is claimed once whichever proxy it names.
    fn nonce(&self) -> String {
        format!("{:#x}", B256::from(self.message.nonce))
    }

    fn replay_reason(&self) -> &'static str {
        "permit2_invalid_nonce"
    }

    /// The maximum: what is claimed and checked; the charge replaces it before settlement.
    fn amount(&self) -> U256 {
        self.message.permitted.amount
    }

    fn partial(&self) -> bool {
        true
    }

    fn valid_before(&self) -> u64 {
        self.permit_terms().valid_before()
    }

    fn stored(&self) -> StoredAuthorization {
        let m = &self.message;
        StoredAuthorization {
            from: format!("{:#x}", self.owner),
            to: format!("{:#x}", m.witness.to),
            value: m.permitted.amount.to_string(),
            valid_after: m.witness.validAfter.to_string(),
            valid_before: m.deadline.to_string(),
            nonce: self.nonce(),
            signature: format!("0x{}", hex::encode(&self.signature)),
            method: Some(METHOD.into()),
            scheme: Some(SCHEME.into()),
            payload: Some(serde_json::to_value(self.wire()).expect("payload serialises")),
        }
    }

    /// The signature, the facilitator the witness binds (only that address can settle: a
    /// permit naming another would never settle here), then the checks every Permit2 scheme
    /// shares, against the ceiling.
    fn check(&self, terms: &Terms, now_secs: u64) -> Result<(), PaymentError> {
        check_eoa_signature(
            &self.signature,
            &self.signing_hash(terms.chain_id),
            self.owner,
        )
        .map_err(|detail| {
            PaymentError::invalid(
                "invalid_permit2_signature",
                format!("signature does not authorize this permit: {detail}"),
            )
        })?;
        let bound = self.message.witness.facilitator;
        if terms.facilitator != Some(bound) {
            return Err(PaymentError::invalid(
                "upto_facilitator_mismatch",
                format!(
                    "the witness lets {bound} settle; this offer is settled by {}",
                    terms
                        .facilitator
                        .map_or_else(|| "nobody".to_string(), |f| f.to_string())
                ),
            ));
        }
        self.permit_terms()
            .check(terms, now_secs, UPTO_PROXY, "x402 upto Permit2 proxy")
    }

    /// Moves `terms.amount`: the ceiling while verifying, the charge once it is fixed.
    fn settle_call(&self, terms: &Terms) -> TransactionRequest {
        TransactionRequest::default()
            .with_to(UPTO_PROXY)
            .with_input(self.settle_call_for(terms.amount).abi_encode())
    }

    /// The payer must be able to pay the whole maximum: the charge is not known yet.
    async fn preflight(
        &self,
        chain: &Chain,
        terms: &Terms,
        caller: Address,
    ) -> Result<(), PaymentError> {
        let m = &self.message;
        let settle = self.settle_call(terms).with_from(caller);
        permit2::preflight(
            chain,
            terms.asset,
            self.owner,
            m.permitted.amount,
            m.nonce,
            settle,
        )
        .await
    }

    async fn used(&self, chain: &Chain, _terms: &Terms) -> Result<bool, PaymentError> {
        permit2::nonce_used(chain, self.owner, self.message.nonce).await
    }

    async fn landed(
        &self,
        chain: &Chain,
        terms: &Terms,
        from_block: Option<u64>,
    ) -> Result<Option<B256>, PaymentError> {
        let settled = IX402UptoPermit2Proxy::Settled::SIGNATURE_HASH;
        permit2::landed(chain, terms, self.owner, UPTO_PROXY, settled, from_block).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    const TOKEN: Address = address!("0x5FbDB2315678afecb367f032d93F642f64180aa3");
    const PAY_TO: Address = address!("0x209693Bc6afc0C5328bA36FaF03C514EF312287C");
    const FACILITATOR: Address = address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8");

    fn terms() -> Terms {
        Terms {
            chain_id: 84532,
            asset: TOKEN,
            pay_to: PAY_TO,
            amount: U256::from(50_000u64),
            eip712_name: String::new(),
            eip712_version: String::new(),
            facilitator: Some(FACILITATOR),
        }
    }

    fn code(r: Result<(), PaymentError>) -> String {
        r.map_or_else(|e| e.code().to_string(), |()| "ok".into())
    }

    fn signed(
        key: &PrivateKeySigner,
        tweak: impl Fn(&mut PermitWitnessTransferFrom),
    ) -> UptoAuthorization {
        let mut message = PermitWitnessTransferFrom {
            permitted: TokenPermissions {
                token: TOKEN,
                amount: U256::from(50_000u64),
            },
            spender: UPTO_PROXY,
            nonce: U256::from(9u8),
            deadline: U256::from(2_000u64),
            witness: Witness {
                to: PAY_TO,
                facilitator: FACILITATOR,
                validAfter: U256::ZERO,
            },
        };
        tweak(&mut message);
        let mut a = UptoAuthorization {
            owner: key.address(),
            message,
            signature: vec![],
        };
        a.signature = key
            .sign_hash_sync(&a.signing_hash(84532))
            .unwrap()
            .as_bytes()
            .to_vec();
        a
    }

    #[test]
    fn the_witness_type_is_the_upto_proxys() {
        // What the official client signs (`uptoPermit2WitnessTypes`): another field order or
        // name would be another message.
        assert_eq!(
            PermitWitnessTransferFrom::eip712_encode_type(),
            "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)"
        );
    }

    #[test]
    fn each_term_is_checked_with_its_reason() {
        let key = PrivateKeySigner::random();
        let t = terms();
        type Tweak = fn(&mut PermitWitnessTransferFrom);
        let cases: [(&str, Tweak); 6] = [
            ("ok", |_| {}),
            ("upto_facilitator_mismatch", |m| {
                m.witness.facilitator = Address::repeat_byte(4)
            }),
            // A permit for the exact proxy is not an upto permit.
            ("invalid_permit2_spender", |m| {
                m.spender = super::super::exact_permit2::EXACT_PROXY
            }),
            ("invalid_permit2_recipient_mismatch", |m| {
                m.witness.to = Address::repeat_byte(6)
            }),
            ("permit2_amount_mismatch", |m| {
                m.permitted.amount = U256::from(49_999u64)
            }),
            ("permit2_token_mismatch", |m| {
                m.permitted.token = Address::repeat_byte(7)
            }),
        ];
        for (want, tweak) in cases {
            assert_eq!(code(signed(&key, tweak).check(&t, 1_500)), want, "{want}");
        }
        let none = Terms {
            facilitator: None,
            ..terms()
        };
        assert_eq!(
            code(signed(&key, |_| {}).check(&none, 1_500)),
            "upto_facilitator_mismatch",
            "an offer nobody can settle takes no upto payment"
        );
        let mut stolen = signed(&key, |_| {});
        stolen.owner = Address::repeat_byte(9);
        assert_eq!(code(stolen.check(&t, 1_500)), "invalid_permit2_signature");
    }

    #[test]
    fn the_settle_call_moves_the_charge_and_the_record_round_trips() {
        let key = PrivateKeySigner::random();
        let a = signed(&key, |_| {});
        let charged = Terms {
            amount: U256::from(12_345u64),
            ..terms()
        };
        let tx = a.settle_call(&charged);
        assert_eq!(tx.to, Some(UPTO_PROXY.into()));
        let call =
            IX402UptoPermit2Proxy::settleCall::abi_decode(tx.input.input().unwrap()).unwrap();
        assert_eq!(call.amount, U256::from(12_345u64));
        assert_eq!(call.permit.permitted.amount, U256::from(50_000u64));
        assert_eq!(call.witness.facilitator, FACILITATOR);
        let stored = a.stored();
        assert_eq!(stored.scheme.as_deref(), Some("upto"));
        assert_eq!(super::super::for_record(&stored).unwrap().name(), "upto");
        let restored = UptoPermit2.restore(&stored).unwrap();
        assert_eq!(restored.stored(), stored);
        assert_eq!(code(restored.check(&terms(), 1_500)), "ok");
    }

    #[test]
    fn malformed_payloads_are_refused_as_such() {
        let key = PrivateKeySigner::random();
        let good = serde_json::to_value(signed(&key, |_| {}).wire()).unwrap();
        assert!(UptoPermit2.parse(&good).is_ok());
        let mut exact_shaped = good.clone();
        exact_shaped["permit2Authorization"]["witness"]
            .as_object_mut()
            .unwrap()
            .remove("facilitator");
        let mut bad_facilitator = good.clone();
        bad_facilitator["permit2Authorization"]["witness"]["facilitator"] = Value::from("0x12");
        for v in [exact_shaped, bad_facilitator] {
            match UptoPermit2.parse(&v) {
                Err(PaymentError::Malformed { reason, .. }) => {
                    assert_eq!(reason, "invalid_permit2_payload")
                }
                other => panic!("{v}: {other:?}"),
            }
        }
    }
}
