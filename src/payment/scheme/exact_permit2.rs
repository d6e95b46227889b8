//! The `exact` scheme with Permit2 (`extra.assetTransferMethod = "permit2"`): any ERC-20 the
//! payer has approved to the canonical Permit2 contract. The payer signs a
//! `PermitWitnessTransferFrom` whose spender is the x402 exact Permit2 proxy and whose witness
//! binds the recipient and a start time; anyone may submit it through the proxy, which can only
//! pay `witness.to` the permitted amount.
//!
//! Claims, settlement and reconciliation are the shared pipeline's; this file knows the
//! message, its checks, Permit2's unordered nonces and the proxy call.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256, address};
use alloy::rpc::types::TransactionRequest;
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolCall, SolEvent, SolStruct};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::permit2::{self, PermitTerms, malformed, parse_signature, parse_u256};
pub use super::permit2::{DEADLINE_MARGIN_SECS, PERMIT2};
use super::{Scheme, SchemePayment, Terms, check_eoa_signature};
use crate::payment::PaymentError;
use crate::payment::chain::Chain;
use crate::payment::record::StoredAuthorization;
use crate::quote::Offer;
use crate::x402::exact_evm::parse_address;

/// `extra.assetTransferMethod` of this scheme.
pub const METHOD: &str = "permit2";

/// `x402ExactPermit2Proxy`, deployed with CREATE2 at the same address on every chain: the
/// spender every exact Permit2 payment names.
pub const EXACT_PROXY: Address = address!("0x402085c248EeA27D92E8b30b2C58ed07f9E20001");

sol! {
    /// Field names, types and order are Permit2's witness typehash with the proxy's
    /// `Witness(address to,uint256 validAfter)`; anything else signs another message.
    #[derive(Debug, PartialEq, Eq)]
    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Witness {
        address to;
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

    interface IX402ExactPermit2Proxy {
        function settle(PermitTransferFrom permit, address owner, Witness witness, bytes signature) external;
        event Settled();
    }
}

/// The wire payload, exactly (all numbers decimal strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Permit2Payload {
    pub signature: String,
    pub permit2_authorization: WirePermit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WirePermit {
    pub from: String,
    pub permitted: WirePermitted,
    pub spender: String,
    pub nonce: String,
    pub deadline: String,
    pub witness: WireWitness,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WirePermitted {
    pub token: String,
    pub amount: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireWitness {
    pub to: String,
    pub valid_after: String,
}

/// A payer's Permit2 authorization in chain types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permit2Authorization {
    pub owner: Address,
    pub message: PermitWitnessTransferFrom,
    pub signature: Vec<u8>,
}

impl Permit2Authorization {
    pub fn from_wire(p: &Permit2Payload) -> Result<Self, PaymentError> {
        let a = &p.permit2_authorization;
        let addr = |s: &str, f: &str| {
            parse_address(s)
                .map(Address::from)
                .ok_or_else(|| malformed(f))
        };
        let num = |s: &str, f: &str| parse_u256(s).ok_or_else(|| malformed(f));
        let signature = parse_signature(&p.signature).ok_or_else(|| malformed("signature"))?;
        Ok(Permit2Authorization {
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
                    validAfter: num(&a.witness.valid_after, "witness.validAfter")?,
                },
            },
            signature,
        })
    }

    /// Permit2's own EIP-712 domain: name "Permit2", no version.
    pub fn domain(chain_id: u64) -> Eip712Domain {
        permit2::domain(chain_id)
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

    pub fn signing_hash(&self, chain_id: u64) -> B256 {
        self.message.eip712_signing_hash(&Self::domain(chain_id))
    }

    fn permit_call(&self) -> IX402ExactPermit2Proxy::settleCall {
        let m = &self.message;
        IX402ExactPermit2Proxy::settleCall {
            permit: PermitTransferFrom {
                permitted: TokenPermissions {
                    token: m.permitted.token,
                    amount: m.permitted.amount,
                },
                nonce: m.nonce,
                deadline: m.deadline,
            },
            owner: self.owner,
            witness: Witness {
                to: m.witness.to,
                validAfter: m.witness.validAfter,
            },
            signature: Bytes::from(self.signature.clone()),
        }
    }

    /// A smart wallet's (ERC-1271) signature is left to Permit2, which asks the wallet, in the
    /// simulation.
    fn check_signature(&self, chain_id: u64) -> Result<(), PaymentError> {
        check_eoa_signature(&self.signature, &self.signing_hash(chain_id), self.owner)
            .map(|_| ())
            .map_err(|detail| {
                PaymentError::invalid(
                    "invalid_permit2_signature",
                    format!("signature does not authorize this permit: {detail}"),
                )
            })
    }
}

/// The `exact` scheme paid through Permit2.
#[derive(Debug)]
pub struct ExactPermit2;

impl Scheme for ExactPermit2 {
    fn name(&self) -> &'static str {
        "exact"
    }

    fn transfer_method(&self) -> &'static str {
        METHOD
    }

    /// `assetTransferMethod` tells the client to sign a Permit2 witness transfer; the token's
    /// EIP-712 name and version are only needed for EIP-2612 tokens and are sent when known.
    fn extra(&self, offer: &Offer) -> Map<String, Value> {
        let mut extra = if offer.eip712_name.is_empty() {
            Map::new()
        } else {
            super::token_domain_extra(offer)
        };
        extra.insert("assetTransferMethod".into(), Value::String(METHOD.into()));
        extra
    }

    fn parse(&self, payload: &Value) -> Result<Box<dyn SchemePayment>, PaymentError> {
        let wire = Permit2Payload::deserialize(payload).map_err(|e| PaymentError::Malformed {
            reason: permit2::MALFORMED,
            detail: format!("permit2 payload: {e}"),
        })?;
        Ok(Box::new(Permit2Authorization::from_wire(&wire)?))
    }

    fn restore(
        &self,
        stored: &StoredAuthorization,
    ) -> Result<Box<dyn SchemePayment>, PaymentError> {
        let wire = stored
            .payload
            .as_ref()
            .and_then(|v| Permit2Payload::deserialize(v).ok())
            .ok_or_else(|| PaymentError::Internal("stored permit2 authorization".into()))?;
        Ok(Box::new(Permit2Authorization::from_wire(&wire).map_err(
            |e| PaymentError::Internal(format!("stored permit2 authorization: {e}")),
        )?))
    }
}

impl Permit2Authorization {
    fn wire(&self) -> Permit2Payload {
        let m = &self.message;
        Permit2Payload {
            signature: format!("0x{}", hex::encode(&self.signature)),
            permit2_authorization: WirePermit {
                from: format!("{:#x}", self.owner),
                permitted: WirePermitted {
                    token: format!("{:#x}", m.permitted.token),
                    amount: m.permitted.amount.to_string(),
                },
                spender: format!("{:#x}", m.spender),
                nonce: m.nonce.to_string(),
                deadline: m.deadline.to_string(),
                witness: WireWitness {
                    to: format!("{:#x}", m.witness.to),
                    valid_after: m.witness.validAfter.to_string(),
                },
            },
        }
    }
}

#[async_trait]
impl SchemePayment for Permit2Authorization {
    fn payer(&self) -> Address {
        self.owner
    }

    /// The uint256 nonce as 32-byte hex, the claim key's one spelling for every scheme. Permit2
    /// nonces are per owner across every token; the claim key adds the asset, which only makes
    /// it stricter than Permit2 itself for the same token.
    fn nonce(&self) -> String {
        format!("{:#x}", B256::from(self.message.nonce))
    }

    fn amount(&self) -> U256 {
        self.message.permitted.amount
    }

    fn replay_reason(&self) -> &'static str {
        "permit2_invalid_nonce"
    }

    fn valid_before(&self) -> u64 {
        self.permit_terms().valid_before()
    }

    /// The shared columns keep their meaning (the deadline stands for `validBefore`); the
    /// whole wire payload is kept too, since the permit has fields EIP-3009 has not.
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
            scheme: None,
            payload: Some(serde_json::to_value(self.wire()).expect("payload serialises")),
        }
    }

    /// The signature, then the checks every Permit2 scheme shares.
    fn check(&self, terms: &Terms, now_secs: u64) -> Result<(), PaymentError> {
        self.check_signature(terms.chain_id)?;
        self.permit_terms()
            .check(terms, now_secs, EXACT_PROXY, "x402 exact Permit2 proxy")
    }

    fn settle_call(&self, _terms: &Terms) -> TransactionRequest {
        TransactionRequest::default()
            .with_to(EXACT_PROXY)
            .with_input(self.permit_call().abi_encode())
    }

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
        let settled = IX402ExactPermit2Proxy::Settled::SIGNATURE_HASH;
        permit2::landed(chain, terms, self.owner, EXACT_PROXY, settled, from_block).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    const TOKEN: Address = address!("0x5FbDB2315678afecb367f032d93F642f64180aa3");
    const PAY_TO: Address = address!("0x209693Bc6afc0C5328bA36FaF03C514EF312287C");

    fn terms() -> Terms {
        Terms {
            chain_id: 84532,
            asset: TOKEN,
            pay_to: PAY_TO,
            amount: U256::from(20_000u64),
            eip712_name: String::new(),
            eip712_version: String::new(),
            facilitator: None,
        }
    }

    /// Signed by viem's `signTypedData` (the official client's signer) with anvil's second
    /// key: our EIP-712 hash must recover it, or no real client could pay.
    fn viem_fixture() -> Value {
        serde_json::json!({
            "signature": "0x4a338c779cf3a9ec3ac20a4c4473b8b31d3e6b1b8f334bd0b5e75b6f41d23d4e43cd50c892179c23eac1599c5da12b88b46a93a3813c99619840e6ff8a845fae1c",
            "permit2Authorization": {
                "from": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                "permitted": { "token": "0x5FbDB2315678afecb367f032d93F642f64180aa3", "amount": "20000" },
                "spender": "0x402085c248EeA27D92E8b30b2C58ed07f9E20001",
                "nonce": "115792089237316195423570985008687907853269984665640564039457584007913129627590",
                "deadline": "2000",
                "witness": { "to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "validAfter": "0" }
            }
        })
    }

    fn code(r: Result<(), PaymentError>) -> String {
        r.map_or_else(|e| e.code().to_string(), |()| "ok".into())
    }

    fn signed(
        key: &PrivateKeySigner,
        tweak: impl Fn(&mut PermitWitnessTransferFrom),
    ) -> Permit2Authorization {
        let mut message = PermitWitnessTransferFrom {
            permitted: TokenPermissions {
                token: TOKEN,
                amount: U256::from(20_000u64),
            },
            spender: EXACT_PROXY,
            nonce: U256::from(7u8),
            deadline: U256::from(2_000u64),
            witness: Witness {
                to: PAY_TO,
                validAfter: U256::from(1_000u64),
            },
        };
        tweak(&mut message);
        let mut a = Permit2Authorization {
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
    fn a_viem_signature_is_recovered_and_the_payload_round_trips() {
        let p = ExactPermit2.parse(&viem_fixture()).unwrap();
        assert_eq!(code(p.check(&terms(), 1_500)), "ok");
        assert_eq!(
            p.nonce(),
            format!("0x{}cfc6", "f".repeat(60)),
            "uint256::MAX - 12345 as 32-byte hex"
        );
        let restored = ExactPermit2.restore(&p.stored()).unwrap();
        assert_eq!(restored.stored(), p.stored());
        assert_eq!(code(restored.check(&terms(), 1_500)), "ok");
        // The same permit on another chain is another message.
        let other = Terms {
            chain_id: 8453,
            ..terms()
        };
        assert_eq!(code(p.check(&other, 1_500)), "invalid_permit2_signature");
    }

    #[test]
    fn each_term_is_checked_with_its_reason() {
        let key = PrivateKeySigner::random();
        let t = terms();
        type Tweak = fn(&mut PermitWitnessTransferFrom);
        let cases: [(&str, Tweak); 6] = [
            ("ok", |_| {}),
            ("invalid_permit2_spender", |m| {
                m.spender = Address::repeat_byte(5)
            }),
            ("invalid_permit2_recipient_mismatch", |m| {
                m.witness.to = Address::repeat_byte(6)
            }),
            ("permit2_not_yet_valid", |m| {
                m.witness.validAfter = U256::from(1_501u64)
            }),
            ("permit2_amount_mismatch", |m| {
                m.permitted.amount = U256::from(19_999u64)
            }),
            ("permit2_token_mismatch", |m| {
                m.permitted.token = Address::repeat_byte(7)
            }),
        ];
        for (want, tweak) in cases {
            assert_eq!(code(signed(&key, tweak).check(&t, 1_500)), want, "{want}");
        }
        let a = signed(&key, |_| {});
        assert_eq!(code(a.check(&t, 2_000 - DEADLINE_MARGIN_SECS)), "ok");
        assert_eq!(
            code(a.check(&t, 2_000 - DEADLINE_MARGIN_SECS + 1)),
            "permit2_deadline_expired"
        );
        // A field changed after signing, or another key's signature, is a bad signature.
        let mut changed = signed(&key, |_| {});
        changed.message.nonce = U256::from(8u8);
        assert_eq!(code(changed.check(&t, 1_500)), "invalid_permit2_signature");
        let mut stolen = signed(&key, |_| {});
        stolen.owner = Address::repeat_byte(9);
        assert_eq!(code(stolen.check(&t, 1_500)), "invalid_permit2_signature");
    }

    #[test]
    fn malformed_payloads_are_refused_as_such() {
        let mut cases = Vec::new();
        for (path, bad) in [
            ("/permit2Authorization/nonce", Value::from("01")),
            ("/permit2Authorization/nonce", Value::from("-1")),
            ("/permit2Authorization/deadline", Value::from(2000)),
            ("/permit2Authorization/permitted/amount", Value::from("1e5")),
            ("/permit2Authorization/spender", Value::from("0x1234")),
            ("/signature", Value::from("0x")),
            ("/signature", Value::from("zz")),
            ("/permit2Authorization/witness/extra", Value::from("x")),
            ("/extra", Value::from(1)),
        ] {
            let mut v = viem_fixture();
            let (parent, key) = path.rsplit_once('/').unwrap();
            v.pointer_mut(parent)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert(key.into(), bad);
            cases.push(v);
        }
        let mut missing = viem_fixture();
        missing["permit2Authorization"]
            .as_object_mut()
            .unwrap()
            .remove("witness");
        cases.push(missing);
        let big = format!("{}0", U256::MAX);
        let mut overflow = viem_fixture();
        overflow["permit2Authorization"]["nonce"] = Value::from(big);
        cases.push(overflow);
        for v in cases {
            match ExactPermit2.parse(&v) {
                Err(PaymentError::Malformed { reason, .. }) => {
                    assert_eq!(reason, "invalid_permit2_payload")
                }
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_settle_call_goes_to_the_proxy_with_the_signed_fields() {
        let key = PrivateKeySigner::random();
        let a = signed(&key, |_| {});
        let tx = a.settle_call(&terms());
        assert_eq!(tx.to, Some(EXACT_PROXY.into()));
        let input = tx.input.input().unwrap();
        let call = IX402ExactPermit2Proxy::settleCall::abi_decode(input).unwrap();
        assert_eq!(call.owner, key.address());
        assert_eq!(call.permit.nonce, U256::from(7u8));
        assert_eq!(call.witness.to, PAY_TO);
        assert_eq!(call.signature.as_ref(), a.signature.as_slice());
    }
}
