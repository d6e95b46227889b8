//! The quote: what one specific request costs, on which networks, until when.

use super::terms::{OfferScheme, TransferMethod};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::money::UsdMicros;
use crate::time::UnixMillis;
use crate::x402::Network;

/// The keyed blake3 hash of a request's canonical form. It names the request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestHash(pub [u8; 32]);

impl RequestHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<RequestHash> {
        let bytes = hex::decode(s).ok()?;
        Some(RequestHash(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for RequestHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestHash({})", self.to_hex())
    }
}

impl fmt::Display for RequestHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for RequestHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for RequestHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RequestHash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("bad request hash"))
    }
}

/// A quote id: `q_` followed by 32 lowercase hex characters: the first 16 are the start of the
/// request hash it prices, the rest are random. Clients echo it, so parsing is strict; the hash
/// prefix lets a payment for another request's quote be named as such without a lookup.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QuoteId(String);

impl QuoteId {
    const PREFIX: &'static str = "q_";

    /// A fresh id for a quote of the request `hash`.
    pub fn for_request(hash: &RequestHash) -> QuoteId {
        let bits: u64 = rand::random();
        QuoteId(format!(
            "{}{}{bits:016x}",
            Self::PREFIX,
            hex::encode(&hash.0[..8])
        ))
    }

    /// Whether this id was issued for a quote of the request `hash`.
    pub fn names_request(&self, hash: &RequestHash) -> bool {
        self.0[Self::PREFIX.len()..Self::PREFIX.len() + 16] == hex::encode(&hash.0[..8])
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's 128 bits (its 32 hex characters), for stores that keep it compactly.
    pub fn to_bits(&self) -> u128 {
        u128::from_str_radix(&self.0[Self::PREFIX.len()..], 16)
            .expect("a quote id is 32 hex characters")
    }

    /// The id whose bits are `bits` (the inverse of `to_bits`).
    pub fn from_bits(bits: u128) -> QuoteId {
        // One allocation and a table lookup per byte: the memory store rebuilds an id on every
        // reused quote, where `format!` cost a measurable share of the request.
        let mut hex = [0u8; 32];
        hex::encode_to_slice(bits.to_be_bytes(), &mut hex).expect("32 hex digits for 16 bytes");
        let mut id = String::with_capacity(Self::PREFIX.len() + hex.len());
        id.push_str(Self::PREFIX);
        id.push_str(std::str::from_utf8(&hex).expect("hex is ASCII"));
        QuoteId(id)
    }
}

impl TryFrom<String> for QuoteId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = s.len() == Self::PREFIX.len() + 32
            && s.starts_with(Self::PREFIX)
            && s[Self::PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(QuoteId(s))
        } else {
            Err(format!("`{s}` is not a quote id (q_ + 32 hex characters)"))
        }
    }
}

impl From<QuoteId> for String {
    fn from(q: QuoteId) -> String {
        q.0
    }
}

impl fmt::Debug for QuoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for QuoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One way to pay a quote: an amount of one asset on one network, to one address.
/// Everything the x402 `PaymentRequirements` need is here, so the 402 for a stored quote renders
/// identically every time (v2 clients echo it back and it is compared field by field).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// CAIP-2 network id, e.g. `eip155:8453`.
    pub network: Network,
    /// Token contract address.
    pub asset: String,
    /// Base units of `asset`, as a decimal string (the wire form).
    pub amount: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    /// EIP-712 domain name and version of the token (USDC on Base: "USD Coin", "2").
    pub eip712_name: String,
    pub eip712_version: String,
    /// Omitted when it is the default, so quotes stored before Permit2 existed read the same.
    #[serde(default, skip_serializing_if = "TransferMethod::is_default")]
    pub transfer_method: TransferMethod,
    /// `exact` unless the route's price is a ceiling (`upto`); omitted when the default, so
    /// quotes stored before `upto` existed read the same.
    #[serde(default, skip_serializing_if = "OfferScheme::is_default")]
    pub scheme: OfferScheme,
    /// `upto` only: the address the payer's witness binds as the one allowed to settle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facilitator: Option<String>,
}

/// Which route and rule produced a price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub route: String,
    pub rule: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub id: QuoteId,
    pub request_hash: RequestHash,
    pub price: UsdMicros,
    pub rule: RuleRef,
    pub method: String,
    pub path: String,
    /// Shared between the quotes of one price: the offers depend only on the price and the
    /// configured terms, and held once they make a stored quote a few hundred bytes, not ~1.4 KB.
    pub offers: std::sync::Arc<[Offer]>,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    /// A top-up's quote: paying it credits an account instead of buying a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topup: Option<Box<TopupTerms>>,
}

/// What a top-up quote credits: the account, and per offered asset the valuation its amount
/// came from (recorded with the top-up when that asset pays).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopupTerms {
    pub account: String,
    pub valuations: Vec<TopupValuation>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopupValuation {
    /// Lower-case token address.
    pub asset: String,
    /// The valuation's JSON.
    pub valuation: String,
}

impl TopupTerms {
    /// What a claim on this quote records for a payment in `asset`: the account to credit and
    /// the valuation (JSON), so the reconciler books it exactly as the request would.
    pub fn claim_record(&self, asset: &str) -> String {
        let valuation = self
            .valuations
            .iter()
            .find(|v| v.asset.eq_ignore_ascii_case(asset))
            .and_then(|v| serde_json::from_str::<serde_json::Value>(&v.valuation).ok())
            .unwrap_or(serde_json::Value::Null);
        serde_json::json!({ "account": self.account, "valuation": valuation }).to_string()
    }
}

impl Quote {
    pub fn is_open_at(&self, now: UnixMillis) -> bool {
        now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_ids_parse_strictly_and_name_their_request() {
        let hash = RequestHash([0x5a; 32]);
        let id = QuoteId::for_request(&hash);
        assert_eq!(QuoteId::try_from(id.to_string()).unwrap(), id);
        assert!(id.names_request(&hash));
        let mut other = hash;
        other.0[7] ^= 1;
        assert!(!id.names_request(&other));
        assert_ne!(QuoteId::for_request(&hash), id, "the random half differs");
        assert_eq!(QuoteId::from_bits(id.to_bits()), id);
        let edge = QuoteId::try_from(format!("q_{}", "0".repeat(31) + "f")).unwrap();
        assert_eq!((edge.to_bits(), QuoteId::from_bits(15)), (15, edge));
        for bad in [
            "",
            "q_",
            "q_0123",
            "Q_0123456789abcdef0123456789abcdef",
            "q_0123456789ABCDEF0123456789abcdef",
            "q_0123456789abcdef0123456789abcdeg",
            "q_0123456789abcdef0123456789abcdef0",
        ] {
            assert!(QuoteId::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_hash_round_trips_as_hex() {
        let h = RequestHash([0xab; 32]);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<RequestHash>(&json).unwrap(), h);
        assert!(RequestHash::from_hex("abc").is_none());
    }
}
