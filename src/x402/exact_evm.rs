//! The `exact` scheme on EVM with EIP-3009 `transferWithAuthorization`: payload shape and a
//! strict, crypto-free shape check.
//!
//! The check runs before anything is sent to a facilitator, so malformed payloads are refused
//! locally with a precise reason and never cost a network round trip. Signature validity,
//! balances and nonce freshness are the facilitator's job.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use super::{AmountError, parse_base_units, parse_decimal_u64};

/// Bytes in an EOA (ECDSA r‖s‖v) signature. Longer signatures come from smart wallets
/// (ERC-1271, or ERC-6492-wrapped when the wallet is not deployed yet).
pub const EOA_SIGNATURE_LEN: usize = 65;

/// `payload` of an exact-EVM EIP-3009 payment, exactly as on the wire (all strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExactEvmPayload {
    pub signature: String,
    pub authorization: ExactEvmAuthorization,
}

/// The signed `TransferWithAuthorization` message. Numbers are decimal strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExactEvmAuthorization {
    pub from: String,
    pub to: String,
    pub value: String,
    pub valid_after: String,
    pub valid_before: String,
    pub nonce: String,
}

/// An exact-EVM payload whose every field has the right shape, decoded to fixed-size values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedExactEvm {
    pub from: [u8; 20],
    pub to: [u8; 20],
    /// Base units.
    pub value: u128,
    /// Unix seconds; the transfer is valid strictly after this.
    pub valid_after: u64,
    /// Unix seconds; the transfer is valid strictly before this.
    pub valid_before: u64,
    pub nonce: [u8; 32],
    pub signature: Vec<u8>,
}

impl ValidatedExactEvm {
    /// Whether the signature is longer than an EOA's, i.e. from a smart wallet.
    pub fn is_smart_wallet_signature(&self) -> bool {
        self.signature.len() > EOA_SIGNATURE_LEN
    }

    /// `from` as lowercase `0x…` hex: one canonical spelling for replay-lock keys.
    pub fn from_hex(&self) -> String {
        format!("0x{}", hex::encode(self.from))
    }

    /// `to` as lowercase `0x…` hex.
    pub fn to_hex(&self) -> String {
        format!("0x{}", hex::encode(self.to))
    }

    /// `nonce` as lowercase `0x…` hex.
    pub fn nonce_hex(&self) -> String {
        format!("0x{}", hex::encode(self.nonce))
    }
}

/// Why an exact-EVM payload was refused. Each variant names the offending field, and
/// [`ExactEvmError::code`] gives a stable machine-readable reason for API responses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExactEvmError {
    #[error("payload is not an exact-EVM EIP-3009 payload: {0}")]
    Malformed(String),
    #[error("authorization.from is not a 0x-prefixed 20-byte hex address")]
    InvalidFrom,
    #[error("authorization.to is not a 0x-prefixed 20-byte hex address")]
    InvalidTo,
    #[error("authorization.value is not a valid base-units amount: {0}")]
    InvalidValue(AmountError),
    #[error("authorization.validAfter is not a valid unix timestamp: {0}")]
    InvalidValidAfter(AmountError),
    #[error("authorization.validBefore is not a valid unix timestamp: {0}")]
    InvalidValidBefore(AmountError),
    #[error("authorization.validBefore must be greater than validAfter")]
    EmptyValidityWindow,
    #[error("authorization.nonce is not 0x-prefixed 32-byte hex")]
    InvalidNonce,
    #[error("signature is not 0x-prefixed hex with an even number of digits")]
    InvalidSignature,
    #[error("signature is {0} bytes; at least {EOA_SIGNATURE_LEN} are required")]
    SignatureTooShort(usize),
}

impl ExactEvmError {
    /// Stable reason code. Spelled in the `invalid_exact_evm_payload_*` family the x402 spec
    /// uses, naming the field, so a client can tell which part of its payload is wrong.
    pub fn code(&self) -> &'static str {
        match self {
            ExactEvmError::Malformed(_) => "invalid_exact_evm_payload",
            ExactEvmError::InvalidFrom => "invalid_exact_evm_payload_from",
            ExactEvmError::InvalidTo => "invalid_exact_evm_payload_to",
            ExactEvmError::InvalidValue(_) => "invalid_exact_evm_payload_value",
            ExactEvmError::InvalidValidAfter(_) => "invalid_exact_evm_payload_valid_after",
            ExactEvmError::InvalidValidBefore(_) => "invalid_exact_evm_payload_valid_before",
            ExactEvmError::EmptyValidityWindow => "invalid_exact_evm_payload_validity_window",
            ExactEvmError::InvalidNonce => "invalid_exact_evm_payload_nonce",
            ExactEvmError::InvalidSignature | ExactEvmError::SignatureTooShort(_) => {
                "invalid_exact_evm_payload_signature"
            }
        }
    }
}

impl ExactEvmPayload {
    /// Reads the scheme payload out of `PaymentPayload.payload`.
    pub fn from_value(payload: &Value) -> Result<Self, ExactEvmError> {
        Self::deserialize(payload).map_err(|e| ExactEvmError::Malformed(e.to_string()))
    }

    /// Checks every field's shape and decodes it. Fields are checked in wire order and the
    /// first problem is reported.
    ///
    /// The validity window must be non-empty (`validBefore > validAfter`): the token only
    /// accepts `validAfter < block.timestamp < validBefore`, so an empty window can never
    /// settle, whatever the clock says. Checks against the current time belong to the caller.
    pub fn validate(&self) -> Result<ValidatedExactEvm, ExactEvmError> {
        let a = &self.authorization;
        let from = parse_address(&a.from).ok_or(ExactEvmError::InvalidFrom)?;
        let to = parse_address(&a.to).ok_or(ExactEvmError::InvalidTo)?;
        let value = parse_base_units(&a.value).map_err(ExactEvmError::InvalidValue)?;
        let valid_after =
            parse_decimal_u64(&a.valid_after).map_err(ExactEvmError::InvalidValidAfter)?;
        let valid_before =
            parse_decimal_u64(&a.valid_before).map_err(ExactEvmError::InvalidValidBefore)?;
        if valid_before <= valid_after {
            return Err(ExactEvmError::EmptyValidityWindow);
        }
        let nonce = parse_fixed_hex::<32>(&a.nonce).ok_or(ExactEvmError::InvalidNonce)?;
        let signature = parse_hex_bytes(&self.signature).ok_or(ExactEvmError::InvalidSignature)?;
        if signature.len() < EOA_SIGNATURE_LEN {
            return Err(ExactEvmError::SignatureTooShort(signature.len()));
        }
        Ok(ValidatedExactEvm {
            from,
            to,
            value,
            valid_after,
            valid_before,
            nonce,
            signature,
        })
    }
}

/// Parses `0x` + 40 hex digits (any case: EIP-55 mixed case is a checksum, which this module
/// cannot verify without keccak, so it is accepted but not checked).
pub fn parse_address(s: &str) -> Option<[u8; 20]> {
    parse_fixed_hex::<20>(s)
}

/// Parses `0x` + exactly `2 * N` hex digits.
fn parse_fixed_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.strip_prefix("0x")?;
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// Parses `0x` + an even, non-zero number of hex digits.
fn parse_hex_bytes(s: &str) -> Option<Vec<u8>> {
    let digits = s.strip_prefix("0x")?;
    if digits.is_empty() {
        return None;
    }
    // hex::decode rejects odd lengths and non-hex characters.
    hex::decode(digits).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FROM: &str = "0x857b06519E91e3A54538791bDbb0E22373e36b66";
    const TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
    const NONCE: &str = "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480";

    fn eoa_signature() -> String {
        format!("0x{}1b", "ab".repeat(64))
    }

    /// The reference §1.3 authorization, with a full-length signature instead of the elided one.
    fn good() -> ExactEvmPayload {
        ExactEvmPayload::from_value(&json!({
            "signature": eoa_signature(),
            "authorization": {
                "from": FROM, "to": TO, "value": "10000",
                "validAfter": "1740672089", "validBefore": "1740672154", "nonce": NONCE
            }
        }))
        .unwrap()
    }

    #[test]
    fn reference_authorization_validates_to_typed_values() {
        let v = good().validate().unwrap();
        assert_eq!(v.from_hex(), FROM.to_ascii_lowercase());
        assert_eq!(v.to_hex(), TO.to_ascii_lowercase());
        assert_eq!(v.from[0], 0x85);
        assert_eq!(v.to[19], 0x7c);
        assert_eq!(v.value, 10_000);
        assert_eq!(v.valid_after, 1_740_672_089);
        assert_eq!(v.valid_before, 1_740_672_154);
        assert_eq!(v.nonce[0], 0xf3);
        assert_eq!(v.nonce[31], 0x80);
        assert_eq!(v.nonce_hex(), NONCE);
        assert_eq!(v.signature.len(), 65);
        assert_eq!(v.signature[64], 0x1b);
        assert!(!v.is_smart_wallet_signature());
    }

    #[test]
    fn wire_shape_round_trips() {
        let p = good();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["authorization"]["validAfter"], "1740672089");
        assert_eq!(v["authorization"]["validBefore"], "1740672154");
        assert_eq!(ExactEvmPayload::from_value(&v).unwrap(), p);
    }

    #[test]
    fn smart_wallet_signatures_are_accepted() {
        let mut p = good();
        p.signature = format!("0x{}", "cd".repeat(300));
        let v = p.validate().unwrap();
        assert_eq!(v.signature.len(), 300);
        assert!(v.is_smart_wallet_signature());
    }

    #[test]
    fn malformed_payloads() {
        let permit2 = json!({"signature": "0x00", "permit2Authorization": {}});
        let err = ExactEvmPayload::from_value(&permit2).unwrap_err();
        assert!(matches!(err, ExactEvmError::Malformed(ref m) if m.contains("authorization")));
        assert_eq!(err.code(), "invalid_exact_evm_payload");

        let numeric_value = json!({"signature": eoa_signature(), "authorization": {
            "from": FROM, "to": TO, "value": 10000, "validAfter": "1", "validBefore": "2",
            "nonce": NONCE}});
        assert!(matches!(
            ExactEvmPayload::from_value(&numeric_value),
            Err(ExactEvmError::Malformed(_))
        ));
    }

    fn check(mutate: impl FnOnce(&mut ExactEvmPayload), expected: ExactEvmError, code: &str) {
        let mut p = good();
        mutate(&mut p);
        let err = p.validate().unwrap_err();
        assert_eq!(err, expected);
        assert_eq!(err.code(), code);
    }

    #[test]
    fn address_errors() {
        let bad_addresses = [
            "857b06519E91e3A54538791bDbb0E22373e36b66",    // no prefix
            "0X857b06519E91e3A54538791bDbb0E22373e36b66",  // uppercase prefix
            "0x857b06519E91e3A54538791bDbb0E22373e36b6",   // 39 digits
            "0x857b06519E91e3A54538791bDbb0E22373e36b666", // 41 digits
            "0x857b06519E91e3A54538791bDbb0E22373e36bZZ",  // non-hex
            "",
        ];
        for bad in bad_addresses {
            check(
                |p| p.authorization.from = bad.into(),
                ExactEvmError::InvalidFrom,
                "invalid_exact_evm_payload_from",
            );
            check(
                |p| p.authorization.to = bad.into(),
                ExactEvmError::InvalidTo,
                "invalid_exact_evm_payload_to",
            );
        }
    }

    #[test]
    fn number_errors() {
        check(
            |p| p.authorization.value = "010000".into(),
            ExactEvmError::InvalidValue(AmountError::LeadingZero),
            "invalid_exact_evm_payload_value",
        );
        check(
            |p| p.authorization.value = "-1".into(),
            ExactEvmError::InvalidValue(AmountError::InvalidCharacter),
            "invalid_exact_evm_payload_value",
        );
        check(
            |p| p.authorization.value = "340282366920938463463374607431768211456".into(),
            ExactEvmError::InvalidValue(AmountError::Overflow),
            "invalid_exact_evm_payload_value",
        );
        check(
            |p| p.authorization.valid_after = "".into(),
            ExactEvmError::InvalidValidAfter(AmountError::Empty),
            "invalid_exact_evm_payload_valid_after",
        );
        check(
            |p| p.authorization.valid_before = "18446744073709551616".into(),
            ExactEvmError::InvalidValidBefore(AmountError::Overflow),
            "invalid_exact_evm_payload_valid_before",
        );
        check(
            |p| p.authorization.valid_before = "1740672089".into(),
            ExactEvmError::EmptyValidityWindow,
            "invalid_exact_evm_payload_validity_window",
        );
    }

    #[test]
    fn nonce_errors() {
        for bad in [
            "f3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480",
            "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f134",
            "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f1348000",
            "0xg3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480",
            "12345",
        ] {
            check(
                |p| p.authorization.nonce = bad.into(),
                ExactEvmError::InvalidNonce,
                "invalid_exact_evm_payload_nonce",
            );
        }
    }

    #[test]
    fn signature_errors() {
        let code = "invalid_exact_evm_payload_signature";
        check(
            |p| p.signature = "0x".into(),
            ExactEvmError::InvalidSignature,
            code,
        );
        check(
            |p| p.signature = "ab".repeat(65),
            ExactEvmError::InvalidSignature,
            code,
        );
        check(
            |p| p.signature = format!("0x{}a", "ab".repeat(65)),
            ExactEvmError::InvalidSignature,
            code,
        );
        check(
            |p| p.signature = format!("0x{}zz", "ab".repeat(64)),
            ExactEvmError::InvalidSignature,
            code,
        );
        // The reference example's elided signature is not hex at all.
        check(
            |p| p.signature = "0x2d6a7588…af148b571c".into(),
            ExactEvmError::InvalidSignature,
            code,
        );
        check(
            |p| p.signature = format!("0x{}", "ab".repeat(64)),
            ExactEvmError::SignatureTooShort(64),
            code,
        );
    }

    #[test]
    fn first_problem_in_wire_order_wins() {
        let mut p = good();
        p.authorization.to = "bad".into();
        p.signature = "bad".into();
        assert_eq!(p.validate(), Err(ExactEvmError::InvalidTo));
    }
}
