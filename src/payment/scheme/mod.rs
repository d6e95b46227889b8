//! Payment schemes: one file per way of paying (`exact` with EIP-3009 today), each behind
//! [`Scheme`] (what is advertised in a 402, how a payload is parsed and checked) and
//! [`SchemePayment`] (one parsed payment: its claim key, its local checks, its chain reads and the
//! transaction that settles it).
//!
//! Everything above this module (matching, claiming, settling, reconciling) is written once
//! against these two traits, so a new scheme is a new file here and a line in [`registry`].

pub mod exact_eip3009;
pub mod exact_permit2;
pub mod permit2;
pub mod upto_permit2;

use std::fmt::Debug;

use alloy::primitives::{Address, B256, U256};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::Eip712Domain;
use async_trait::async_trait;
use serde_json::{Map, Value};

use super::PaymentError;
use super::chain::Chain;
use super::record::StoredAuthorization;
use crate::quote::{Offer, OfferScheme, TransferMethod};

/// What an offer asks for, decoded into chain types: the asset's EIP-712 domain and the
/// transfer a payment must make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    pub chain_id: u64,
    pub asset: Address,
    pub pay_to: Address,
    pub amount: U256,
    pub eip712_name: String,
    pub eip712_version: String,
    /// `upto`: the one address the witness may let settle.
    pub facilitator: Option<Address>,
}

impl Terms {
    /// The terms of a stored offer. Offers come from validated configuration, so a failure here
    /// is a server fault, not the payer's.
    pub fn of_offer(offer: &Offer) -> Result<Terms, PaymentError> {
        let bad = |what: &str| PaymentError::Internal(format!("offer has an invalid {what}"));
        Ok(Terms {
            chain_id: offer.network.chain_id().ok_or_else(|| bad("network"))?,
            asset: offer.asset.parse().map_err(|_| bad("asset"))?,
            pay_to: offer.pay_to.parse().map_err(|_| bad("payTo"))?,
            amount: offer.amount.parse().map_err(|_| bad("amount"))?,
            eip712_name: offer.eip712_name.clone(),
            eip712_version: offer.eip712_version.clone(),
            facilitator: offer
                .facilitator
                .as_deref()
                .map(|f| f.parse().map_err(|_| bad("facilitator")))
                .transpose()?,
        })
    }

    /// The token's own EIP-712 domain (what EIP-3009 and EIP-2612 signatures are made over).
    pub fn token_domain(&self) -> Eip712Domain {
        Eip712Domain::new(
            Some(self.eip712_name.clone().into()),
            Some(self.eip712_version.clone().into()),
            Some(U256::from(self.chain_id)),
            Some(self.asset),
            None,
        )
    }
}

/// One way of paying, as advertised in a 402 and recognised in a payment.
pub trait Scheme: Send + Sync + Debug {
    /// The x402 scheme name (`exact`, `upto`).
    fn name(&self) -> &'static str;

    /// `extra.assetTransferMethod` of the EVM `exact` scheme (`eip3009`, `permit2`).
    fn transfer_method(&self) -> &'static str;

    /// The scheme's part of a requirement's `extra` for `offer` (the quote id is added by the
    /// caller).
    fn extra(&self, offer: &Offer) -> Map<String, Value>;

    /// Parses the scheme's `payload` strictly. A malformed payload is the payer's fault:
    /// [`PaymentError::Malformed`].
    fn parse(&self, payload: &Value) -> Result<Box<dyn SchemePayment>, PaymentError>;

    /// Rebuilds a payment from its durable record (for the reconciler).
    fn restore(&self, stored: &StoredAuthorization)
    -> Result<Box<dyn SchemePayment>, PaymentError>;
}

/// One parsed payment of some scheme.
#[async_trait]
pub trait SchemePayment: Send + Sync + Debug {
    /// Who pays (the signer).
    fn payer(&self) -> Address;

    /// The single-use nonce in its canonical (lowercase) spelling: with network, asset and
    /// payer it is the claim key, so each authorization is taken once.
    fn nonce(&self) -> String;

    /// The reason a payment whose authorization was already used is refused with, in the
    /// scheme's own x402 vocabulary.
    fn replay_reason(&self) -> &'static str;

    /// Base units this payment moves when settled (for a partial scheme: the most it can).
    fn amount(&self) -> U256;

    /// Whether less than [`SchemePayment::amount`] may be settled (`upto`): the charge is then
    /// fixed after the upstream answered, and `Terms::amount` carries it to the settlement.
    fn partial(&self) -> bool {
        false
    }

    /// Unix seconds from which the chain refuses the authorization.
    fn valid_before(&self) -> u64;

    /// The durable form, enough to find it on chain and to settle it again.
    fn stored(&self) -> StoredAuthorization;

    /// The checks that need no chain: signature, payee, amount, time window. Cheap (about one
    /// ECDSA recovery), so they run before anything costs a round trip.
    fn check(&self, terms: &Terms, now_secs: u64) -> Result<(), PaymentError>;

    /// The transaction a local relayer sends to settle it.
    fn settle_call(&self, terms: &Terms) -> TransactionRequest;

    /// Whether [`SchemePayment::settle_call`] may be sent by anyone, so that it can ride in a
    /// batch of calls made by a multicall contract (EIP-3009 `transferWithAuthorization`).
    /// Schemes whose contract checks the caller (the `upto` proxy takes settlements from its
    /// facilitator only) say no.
    fn batchable(&self) -> bool {
        false
    }

    /// Whether the logs of a mined transaction show this payment settled: its own
    /// authorization consumed and exactly its amount moved to `terms.pay_to`. For a batch the
    /// transaction's status says only that the batch ran; this says whether this call did.
    fn settled_in(&self, _terms: &Terms, _logs: &[alloy::rpc::types::Log]) -> bool {
        false
    }

    /// Chain checks before claiming (balance, nonce state, a simulated settlement), run as
    /// `caller` (the relayer).
    async fn preflight(
        &self,
        chain: &Chain,
        terms: &Terms,
        caller: Address,
    ) -> Result<(), PaymentError>;

    /// Whether the chain has consumed (or cancelled) this authorization.
    async fn used(&self, chain: &Chain, terms: &Terms) -> Result<bool, PaymentError>;

    /// The transaction that consumed the authorization, if it moved exactly this payment to
    /// `terms.pay_to`; searching logs from `from_block` (or the recent past).
    async fn landed(
        &self,
        chain: &Chain,
        terms: &Terms,
        from_block: Option<u64>,
    ) -> Result<Option<B256>, PaymentError>;
}

/// `{"name", "version"}`: the token's EIP-712 domain as a requirement's `extra` carries it.
pub fn token_domain_extra(offer: &Offer) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("name".into(), Value::String(offer.eip712_name.clone()));
    extra.insert(
        "version".into(),
        Value::String(offer.eip712_version.clone()),
    );
    extra
}

/// What a payer's signature over `hash` proves, for every EVM scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    /// An EOA signature recovered to the claimed signer.
    Recovered,
    /// A smart-wallet (ERC-1271) signature: only the contract that verifies it on chain can
    /// judge it, so the `eth_call` simulation is what verifies it.
    ContractWallet,
}

/// Recovers an EOA signature over `hash` and requires it to be `signer`'s. High-s twins are
/// refused: USDC and OpenZeppelin's ECDSA refuse them (they would never settle), and for
/// Permit2, which would accept one, refusing keeps one spelling per authorization. `Err` is the
/// detail of the refusal.
pub fn check_eoa_signature(
    signature: &[u8],
    hash: &B256,
    signer: Address,
) -> Result<SignatureCheck, &'static str> {
    if signature.len() > 65 {
        return Ok(SignatureCheck::ContractWallet);
    }
    let sig = (signature.len() == 65)
        .then(|| alloy::primitives::Signature::try_from(signature).ok())
        .flatten()
        .ok_or("not a 65-byte signature")?;
    if sig.normalize_s().is_some() {
        return Err("high-s signature");
    }
    if !matches!(signature[64], 0 | 1 | 27 | 28) {
        return Err("invalid recovery byte");
    }
    let recovered =
        recover_signer(&signature[..64], sig.v(), hash).ok_or("no signer can be recovered")?;
    if recovered == Address::ZERO {
        return Err("recovers to the zero address");
    }
    if recovered != signer {
        return Err("signed by another key, or for another token, chain or domain");
    }
    Ok(SignatureCheck::Recovered)
}

/// The address whose key made the compact signature `rs` (r ‖ s, 64 bytes) with parity
/// `y_odd` over `hash`, if any. Through libsecp256k1: recovery is nearly all of a payment's
/// local verification cost, and the C library does it several times faster than k256 (the
/// `payment_verify` bench compares both; a property test checks they always agree).
pub fn recover_signer(rs: &[u8], y_odd: bool, hash: &B256) -> Option<Address> {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
    static CONTEXT: std::sync::LazyLock<secp256k1::Secp256k1<secp256k1::VerifyOnly>> =
        std::sync::LazyLock::new(secp256k1::Secp256k1::verification_only);
    let id = if y_odd {
        RecoveryId::One
    } else {
        RecoveryId::Zero
    };
    let sig = RecoverableSignature::from_compact(rs, id).ok()?;
    let key = CONTEXT
        .recover_ecdsa(secp256k1::Message::from_digest(hash.0), &sig)
        .ok()?;
    Some(Address::from_raw_public_key(
        &key.serialize_uncompressed()[1..],
    ))
}

/// The schemes this server takes.
pub fn registry() -> &'static [&'static dyn Scheme] {
    &[
        &exact_eip3009::ExactEip3009,
        &exact_permit2::ExactPermit2,
        &upto_permit2::UptoPermit2,
    ]
}

/// The scheme a payment names (`accepted.scheme` and `accepted.extra.assetTransferMethod` in
/// v2; the scheme alone in v1, where only the default transfer method exists).
pub fn by_wire(name: &str, transfer_method: Option<&str>) -> Option<&'static dyn Scheme> {
    registry().iter().copied().find(|s| {
        s.name() == name && transfer_method.unwrap_or(exact_eip3009::METHOD) == s.transfer_method()
    })
}

/// The scheme an offer is advertised with.
pub fn for_offer(offer: &Offer) -> &'static dyn Scheme {
    match (offer.scheme, offer.transfer_method) {
        (OfferScheme::Upto, _) => &upto_permit2::UptoPermit2,
        (OfferScheme::Exact, TransferMethod::Eip3009) => &exact_eip3009::ExactEip3009,
        (OfferScheme::Exact, TransferMethod::Permit2) => &exact_permit2::ExactPermit2,
    }
}

/// Whether two schemes are the same way of paying (name and transfer method).
pub fn same(a: &dyn Scheme, b: &dyn Scheme) -> bool {
    a.name() == b.name() && a.transfer_method() == b.transfer_method()
}

/// The scheme a stored payment was made with.
pub fn for_record(stored: &StoredAuthorization) -> Result<&'static dyn Scheme, PaymentError> {
    let name = stored.scheme.as_deref().unwrap_or("exact");
    by_wire(name, stored.method.as_deref()).ok_or_else(|| {
        PaymentError::Internal(format!(
            "stored payment of unknown scheme {name} / transfer method {:?}",
            stored.method
        ))
    })
}

#[cfg(test)]
mod tests {
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;
    use proptest::prelude::*;

    use super::*;

    /// What alloy (k256) recovers: the reference the C library must agree with.
    fn k256_recover(rs: &[u8; 64], y_odd: bool, hash: &B256) -> Option<Address> {
        let mut bytes = [0u8; 65];
        bytes[..64].copy_from_slice(rs);
        bytes[64] = u8::from(y_odd);
        alloy::primitives::Signature::try_from(&bytes[..])
            .ok()?
            .recover_address_from_prehash(hash)
            .ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn libsecp256k1_recovers_what_k256_recovers(key in any::<[u8; 32]>(), hash in any::<[u8; 32]>()) {
            let Ok(signer) = PrivateKeySigner::from_bytes(&B256::from(key)) else {
                return Ok(()); // not a valid scalar
            };
            let hash = B256::from(hash);
            let sig = signer.sign_hash_sync(&hash).unwrap();
            let bytes = sig.as_bytes();
            let rs: [u8; 64] = bytes[..64].try_into().unwrap();
            prop_assert_eq!(recover_signer(&rs, sig.v(), &hash), Some(signer.address()));
            prop_assert_eq!(k256_recover(&rs, sig.v(), &hash), Some(signer.address()));
            // The other parity recovers another key (or none), the same on both.
            prop_assert_eq!(recover_signer(&rs, !sig.v(), &hash), k256_recover(&rs, !sig.v(), &hash));
        }

        #[test]
        fn arbitrary_bytes_recover_the_same_on_both(rs in any::<[u8; 64]>(), y_odd: bool, hash in any::<[u8; 32]>()) {
            let hash = B256::from(hash);
            prop_assert_eq!(recover_signer(&rs, y_odd, &hash), k256_recover(&rs, y_odd, &hash));
        }
    }

    #[test]
    fn edge_scalars_recover_nothing_on_both() {
        let n: [u8; 32] =
            hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
                .unwrap()
                .try_into()
                .unwrap();
        let hash = B256::repeat_byte(7);
        for (r, s) in [
            ([0u8; 32], [1u8; 32]),
            ([1u8; 32], [0u8; 32]),
            (n, [1u8; 32]),
            ([1u8; 32], n),
            ([0xff; 32], [1u8; 32]),
        ] {
            let mut rs = [0u8; 64];
            rs[..32].copy_from_slice(&r);
            rs[32..].copy_from_slice(&s);
            for y in [false, true] {
                assert_eq!(recover_signer(&rs, y, &hash), None, "{r:x?} {s:x?}");
                assert_eq!(k256_recover(&rs, y, &hash), None, "{r:x?} {s:x?}");
            }
        }
    }
}
