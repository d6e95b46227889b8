//! The x402 wire protocol, as pure data: serde types, header codec and shape validation.
//!
//! This module is the bottom of the dependency stack (`http → domain → x402`). It does no I/O
//! and knows nothing about axum, redis, sqlx or reqwest, so every type here can be tested from
//! JSON strings alone and reused by the facilitator client, the middleware and the tests.
//!
//! Two protocol versions are spoken:
//! - [`v2`]: requirements travel base64-encoded in the `PAYMENT-REQUIRED` header, the client pays
//!   with `PAYMENT-SIGNATURE`, networks are CAIP-2 ids.
//! - [`v1`]: requirements travel in the 402 JSON body, the client pays with `X-PAYMENT`, networks
//!   are legacy names such as `base-sepolia`.
//!
//! Money on the wire is always a decimal string of token base units; [`parse_base_units`] is
//! the one strict way to turn such a string into an integer. Nothing here uses floats.

pub mod assets;
pub mod bazaar;
pub mod codec;
pub mod exact_evm;
pub mod network;
pub mod payment_identifier;
pub mod siwx;
pub mod v1;
pub mod v2;

use serde::{Deserialize, Deserializer};
use thiserror::Error;

pub use assets::{KNOWN_USDC, KnownAsset, usdc_for, usdc_for_chain_id};
pub use bazaar::{
    BAZAAR, BodyType, DiscoveryBody, DiscoveryError, DiscoveryInput, DiscoveryMethod,
    DiscoveryOutput, RouteTemplateError, bazaar_extension, bazaar_extension_with_route,
    v1_output_schema,
};
pub use codec::{HeaderDecodeError, decode_header, encode_header};
pub use exact_evm::{
    ExactEvmAuthorization, ExactEvmError, ExactEvmPayload, ValidatedExactEvm, parse_address,
};
pub use network::{Network, NetworkError};

// Header names are lowercase because HTTP/2 and HTTP/3 require lowercase field names on the
// wire, and `http::HeaderName::from_static` rejects uppercase. HTTP/1.1 matching is
// case-insensitive, so the spec's `PAYMENT-REQUIRED` spelling is the same header.

/// v2: base64 `PaymentRequired` sent by the server with a 402.
pub const PAYMENT_REQUIRED: &str = "payment-required";
/// v2: base64 `PaymentPayload` sent by the client on the paid retry.
pub const PAYMENT_SIGNATURE: &str = "payment-signature";
/// v2: base64 `SettleResponse` sent by the server after settlement (success or failure).
pub const PAYMENT_RESPONSE: &str = "payment-response";
/// v1: base64 `PaymentPayload` sent by the client on the paid retry.
pub const X_PAYMENT: &str = "x-payment";
/// v1: base64 `SettleResponse` sent by the server after settlement.
pub const X_PAYMENT_RESPONSE: &str = "x-payment-response";

/// Response headers a browser client must be allowed to read (`Access-Control-Expose-Headers`).
/// Without this, fetch() in a browser sees the 402 but not the requirements or the receipt.
pub const CORS_EXPOSE_HEADERS: &[&str] = &[PAYMENT_REQUIRED, PAYMENT_RESPONSE, X_PAYMENT_RESPONSE];

/// [`CORS_EXPOSE_HEADERS`] joined for direct use as a header value.
pub const CORS_EXPOSE_HEADERS_VALUE: &str =
    "payment-required, payment-response, x-payment-response";

/// Request headers a browser client must be allowed to send (`Access-Control-Allow-Headers`).
/// `access-control-expose-headers` is listed because the reference Python client sends it as a
/// *request* header, and a preflight that does not allow it fails the whole request.
pub const CORS_ALLOW_HEADERS: &[&str] = &[
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    "access-control-expose-headers",
];

/// `x402Version` of the legacy protocol.
pub const X402_VERSION_V1: u32 = 1;
/// `x402Version` of the current protocol.
pub const X402_VERSION_V2: u32 = 2;

/// Largest number of decimal digits a base-units amount may have: uint256 max has 78 digits,
/// and no EVM token amount can be larger.
pub const MAX_AMOUNT_DIGITS: usize = 78;

/// Why a base-units amount string was rejected. Each variant is a distinct client mistake, so
/// the error can be reported precisely instead of as a generic parse failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount must contain only ASCII digits 0-9")]
    InvalidCharacter,
    #[error("amount must not have leading zeros")]
    LeadingZero,
    #[error("amount has more than {MAX_AMOUNT_DIGITS} digits")]
    TooLong,
    #[error("amount does not fit in the supported integer range")]
    Overflow,
}

/// Parses a decimal string of token base units, strictly.
///
/// Accepted: ASCII digits only, no sign, no whitespace, no decimal point, no leading zeros
/// except the single string `"0"`, at most 78 digits. Strictness matters because amounts are
/// compared for exact equality against signed authorizations: `"010"` and `"10"` must not be
/// two spellings of one price. Values above `u128::MAX` (but within uint256) are rejected with
/// [`AmountError::Overflow`]; no stablecoin amount comes anywhere near that.
pub fn parse_base_units(s: &str) -> Result<u128, AmountError> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return Err(AmountError::Empty);
    }
    if !bytes.iter().all(u8::is_ascii_digit) {
        return Err(AmountError::InvalidCharacter);
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return Err(AmountError::LeadingZero);
    }
    if bytes.len() > MAX_AMOUNT_DIGITS {
        return Err(AmountError::TooLong);
    }
    bytes.iter().try_fold(0u128, |acc, &b| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(b - b'0')))
            .ok_or(AmountError::Overflow)
    })
}

/// [`parse_base_units`] narrowed to `u64`, for unix timestamps carried as decimal strings.
pub fn parse_decimal_u64(s: &str) -> Result<u64, AmountError> {
    parse_base_units(s).and_then(|v| u64::try_from(v).map_err(|_| AmountError::Overflow))
}

/// Reads a JSON object that may also arrive as `null` or be missing. Go encodes a nil map as
/// `null`, and TS omits optional objects; both mean "no entries" and should not fail a payment.
fn null_as_empty_object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<serde_json::Map<String, serde_json::Value>, D::Error> {
    Option::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// Only the `x402Version` of a JSON document. Lets the HTTP layer pick v1 or v2 types when a
/// header could carry either, without committing to a full shape first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionProbe {
    pub x402_version: u32,
}

/// A client payment payload of either protocol version, dispatched on `x402Version`.
/// (v2 is boxed: it carries a full requirement and is several times the size of v1.)
#[derive(Debug, Clone, PartialEq)]
pub enum AnyPaymentPayload {
    V1(v1::PaymentPayload),
    V2(Box<v2::PaymentPayload>),
}

impl AnyPaymentPayload {
    pub fn x402_version(&self) -> u32 {
        match self {
            AnyPaymentPayload::V1(p) => p.x402_version,
            AnyPaymentPayload::V2(p) => p.x402_version,
        }
    }
}

impl<'de> Deserialize<'de> for AnyPaymentPayload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        // Buffer as a Value so the version can be read before choosing the shape; an untagged
        // enum would instead report a useless "did not match any variant" error.
        let value = serde_json::Value::deserialize(deserializer)?;
        let version = value
            .get("x402Version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| D::Error::missing_field("x402Version"))?;
        match version {
            1 => serde_json::from_value(value)
                .map(AnyPaymentPayload::V1)
                .map_err(D::Error::custom),
            2 => serde_json::from_value(value)
                .map(|p| AnyPaymentPayload::V2(Box::new(p)))
                .map_err(D::Error::custom),
            other => Err(D::Error::custom(format!("unsupported x402Version {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_lowercase_and_distinct() {
        let all = [
            PAYMENT_REQUIRED,
            PAYMENT_SIGNATURE,
            PAYMENT_RESPONSE,
            X_PAYMENT,
            X_PAYMENT_RESPONSE,
        ];
        for name in all {
            assert_eq!(name, name.to_ascii_lowercase());
        }
        let mut sorted = all.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
        assert_eq!(CORS_EXPOSE_HEADERS.join(", "), CORS_EXPOSE_HEADERS_VALUE);
    }

    #[test]
    fn amount_accepts_canonical_values() {
        assert_eq!(parse_base_units("0"), Ok(0));
        assert_eq!(parse_base_units("1"), Ok(1));
        assert_eq!(parse_base_units("10000"), Ok(10_000));
        assert_eq!(
            parse_base_units("340282366920938463463374607431768211455"),
            Ok(u128::MAX)
        );
    }

    #[test]
    fn amount_rejects_malformed_values() {
        let cases: &[(&str, AmountError)] = &[
            ("", AmountError::Empty),
            ("00", AmountError::LeadingZero),
            ("007", AmountError::LeadingZero),
            ("-1", AmountError::InvalidCharacter),
            ("+1", AmountError::InvalidCharacter),
            ("1.0", AmountError::InvalidCharacter),
            (" 1", AmountError::InvalidCharacter),
            ("1 ", AmountError::InvalidCharacter),
            ("1e6", AmountError::InvalidCharacter),
            ("0x10", AmountError::InvalidCharacter),
            ("１", AmountError::InvalidCharacter), // fullwidth digit: not ASCII
            ("1_000", AmountError::InvalidCharacter),
            (
                "340282366920938463463374607431768211456",
                AmountError::Overflow,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_base_units(input).as_ref(), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn amount_digit_limit_is_uint256_width() {
        // 78 digits fits uint256 but not u128: overflow, not a length error.
        let max_len = "9".repeat(MAX_AMOUNT_DIGITS);
        assert_eq!(parse_base_units(&max_len), Err(AmountError::Overflow));
        let too_long = "1".repeat(MAX_AMOUNT_DIGITS + 1);
        assert_eq!(parse_base_units(&too_long), Err(AmountError::TooLong));
    }

    #[test]
    fn amount_round_trips_every_power_of_ten() {
        // Property-style: every canonical rendering of a u128 parses back to itself.
        let mut v: u128 = 1;
        loop {
            for candidate in [v - 1, v, v + 1, v.saturating_mul(7)] {
                assert_eq!(parse_base_units(&candidate.to_string()), Ok(candidate));
            }
            match v.checked_mul(10) {
                Some(next) if next < u128::MAX - 10 => v = next,
                _ => break,
            }
        }
    }

    #[test]
    fn decimal_u64_bounds() {
        assert_eq!(parse_decimal_u64("1740672154"), Ok(1_740_672_154));
        assert_eq!(parse_decimal_u64(&u64::MAX.to_string()), Ok(u64::MAX));
        let above = (u128::from(u64::MAX) + 1).to_string();
        assert_eq!(parse_decimal_u64(&above), Err(AmountError::Overflow));
    }

    #[test]
    fn any_payload_dispatches_on_version() {
        let v1 = r#"{"x402Version":1,"scheme":"exact","network":"base","payload":{}}"#;
        let parsed: AnyPaymentPayload = serde_json::from_str(v1).unwrap();
        assert_eq!(parsed.x402_version(), 1);
        match parsed {
            AnyPaymentPayload::V1(p) => assert_eq!(p.network, Network::eip155(8453)),
            AnyPaymentPayload::V2(_) => panic!("expected v1"),
        }

        let v2 = r#"{"x402Version":2,"accepted":{"scheme":"exact","network":"eip155:8453",
            "amount":"1","asset":"0x0","payTo":"0x1","maxTimeoutSeconds":60,"extra":{}},
            "payload":{}}"#;
        let parsed: AnyPaymentPayload = serde_json::from_str(v2).unwrap();
        match parsed {
            AnyPaymentPayload::V2(p) => assert_eq!(p.accepted.amount, "1"),
            AnyPaymentPayload::V1(_) => panic!("expected v2"),
        }

        let v3 = r#"{"x402Version":3}"#;
        let err = serde_json::from_str::<AnyPaymentPayload>(v3).unwrap_err();
        assert!(
            err.to_string().contains("unsupported x402Version 3"),
            "{err}"
        );

        let none = r#"{"scheme":"exact"}"#;
        let err = serde_json::from_str::<AnyPaymentPayload>(none).unwrap_err();
        assert!(err.to_string().contains("x402Version"), "{err}");
    }

    #[test]
    fn version_probe_ignores_other_fields() {
        let probe: VersionProbe =
            serde_json::from_str(r#"{"x402Version":2,"anything":[1,2]}"#).unwrap();
        assert_eq!(probe.x402_version, 2);
    }
}
