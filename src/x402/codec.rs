//! Header codec: base64 (standard alphabet, `=` padding) of compact UTF-8 JSON.
//!
//! This is how every x402 header (`PAYMENT-REQUIRED`, `PAYMENT-SIGNATURE`, `PAYMENT-RESPONSE`,
//! `X-PAYMENT`, `X-PAYMENT-RESPONSE`) carries its JSON. The TS reference checks input against
//! `^[A-Za-z0-9+/]*={0,2}$` before decoding; decoding here is at least as strict, so anything
//! accepted here is accepted by every reference implementation.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// Why a header value could not be decoded. Checked in this order, cheapest first, so a huge
/// value is refused before any work is done on it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderDecodeError {
    #[error("header value is {len} bytes; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("header value is not standard base64")]
    NotBase64,
    #[error("decoded header is not valid UTF-8")]
    NotUtf8,
    #[error("decoded header is not the expected JSON: {0}")]
    NotJson(String),
}

impl HeaderDecodeError {
    /// Stable machine-readable reason, for error bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            HeaderDecodeError::TooLong { .. } => "payment_header_too_large",
            HeaderDecodeError::NotBase64 => "invalid_base64",
            HeaderDecodeError::NotUtf8 => "invalid_utf8",
            HeaderDecodeError::NotJson(_) => "invalid_payload",
        }
    }
}

/// Encodes `value` as compact JSON, then standard padded base64.
pub fn encode_header<T: Serialize + ?Sized>(value: &T) -> String {
    // serde_json only fails for a Serialize impl that itself errors, or a map with keys that
    // cannot be strings; no wire type in this module does either, so a failure is a
    // programming error worth a loud panic rather than a silently empty header.
    let json = serde_json::to_vec(value).expect("x402 wire types always serialize to JSON");
    encode_base64(&json)
}

/// Standard padded base64 of `bytes` (the alphabet and padding of [`STANDARD`], which decodes
/// it), through SIMD: the 402's header is kilobytes, encoded once per new quote.
pub fn encode_base64(bytes: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(bytes)
}

/// Decodes a header value produced by [`encode_header`] or any x402 client.
///
/// Rules: at most `max_len` bytes (checked before decoding); only `A-Z a-z 0-9 + /` — no
/// URL-safe `-`/`_`, no whitespace; padding is optional, but when present it must be the
/// canonical `=`/`==` that makes the length a multiple of 4; unused trailing bits must be zero.
pub fn decode_header<T: DeserializeOwned>(
    value: &str,
    max_len: usize,
) -> Result<T, HeaderDecodeError> {
    if value.len() > max_len {
        return Err(HeaderDecodeError::TooLong {
            len: value.len(),
            max: max_len,
        });
    }
    let bytes = value.as_bytes();
    let data_len = bytes.iter().position(|&b| b == b'=').unwrap_or(bytes.len());
    let (data, padding) = bytes.split_at(data_len);
    let alphabet_ok = data
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    let padding_ok = padding.len() <= 2
        && padding.iter().all(|&b| b == b'=')
        && (padding.is_empty() || bytes.len().is_multiple_of(4));
    if !alphabet_ok || !padding_ok {
        return Err(HeaderDecodeError::NotBase64);
    }
    // The engines also reject a dangling single character and non-zero trailing bits, so each
    // payload has exactly one accepted spelling per padding choice.
    let engine = if padding.is_empty() {
        &STANDARD_NO_PAD
    } else {
        &STANDARD
    };
    let decoded = engine
        .decode(value)
        .map_err(|_| HeaderDecodeError::NotBase64)?;
    let text = String::from_utf8(decoded).map_err(|_| HeaderDecodeError::NotUtf8)?;
    serde_json::from_str(&text).map_err(|e| HeaderDecodeError::NotJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::network::Network;
    use crate::x402::v2::{PaymentRequired, ResourceInfo, SettleResponse};
    use serde_json::{Value, json};

    const MAX: usize = 16 * 1024;

    #[test]
    fn encodes_compact_json_as_padded_standard_base64() {
        let v = json!({"a": 1});
        // {"a":1} is 7 bytes: one byte of padding.
        assert_eq!(encode_header(&v), "eyJhIjoxfQ==");
        assert_eq!(decode_header::<Value>("eyJhIjoxfQ==", MAX), Ok(v.clone()));
        // Unpadded input is accepted too.
        assert_eq!(decode_header::<Value>("eyJhIjoxfQ", MAX), Ok(v));
    }

    #[test]
    fn round_trips_wire_types() {
        let pr = PaymentRequired::new(
            ResourceInfo::new("https://api.example.com/premium-data"),
            vec![],
        );
        let header = encode_header(&pr);
        assert!(header.starts_with("eyJ4NDAyVmVyc2lvbiI6Mi"), "{header}"); // {"x402Version":2
        assert_eq!(decode_header::<PaymentRequired>(&header, MAX), Ok(pr));

        let settle = SettleResponse::succeeded("0xab", &Network::eip155(84532), None);
        let header = encode_header(&settle);
        assert_eq!(decode_header::<SettleResponse>(&header, MAX), Ok(settle));
    }

    #[test]
    fn round_trips_non_ascii_and_both_plus_and_slash() {
        // "…" is 3 UTF-8 bytes; the chosen strings exercise '+' and '/' in the output.
        for s in ["0x1234…cdef", "?>?>", "~~~ÿ", ""] {
            let header = encode_header(&s);
            assert_eq!(decode_header::<String>(&header, MAX).as_deref(), Ok(s));
        }
        assert!(encode_header(&"?>?>").contains('/') || encode_header(&"~~~ÿ").contains('+'));
    }

    #[test]
    fn length_limit_is_checked_before_decoding() {
        let header = encode_header(&json!({"k": "v"}));
        assert_eq!(
            decode_header::<Value>(&header, header.len()).unwrap()["k"],
            "v"
        );
        let err = decode_header::<Value>(&header, header.len() - 1).unwrap_err();
        assert_eq!(
            err,
            HeaderDecodeError::TooLong {
                len: header.len(),
                max: header.len() - 1
            }
        );
        assert_eq!(err.code(), "payment_header_too_large");
        // Garbage that is too long reports the length, not the garbage.
        assert_eq!(
            decode_header::<Value>("!!!!", 3).unwrap_err().code(),
            "payment_header_too_large"
        );
    }

    #[test]
    fn rejects_non_standard_base64() {
        let good = encode_header(&json!({"a": "??>>"}));
        assert!(good.contains('/') || good.contains('+'), "{good}");
        let url_safe = good.replace('/', "_").replace('+', "-");
        let cases = [
            url_safe.as_str(),
            " eyJhIjoxfQ==",
            "eyJhIjoxfQ== ",
            "eyJh\nIjoxfQ==",
            "eyJhIjoxfQ=",     // partial padding
            "eyJhIjoxfQ===",   // too much padding
            "eyJhIjox=fQ==",   // padding in the middle
            "eyJhIjoxfQ==eyJ", // data after padding
            "eyJhIjoxf",       // dangling single character
            "eyJhIjoxfR==",    // non-zero trailing bits
            "====",
            "e%JhIjoxfQ==",
        ];
        for case in cases {
            let err = decode_header::<Value>(case, MAX).unwrap_err();
            assert_eq!(err, HeaderDecodeError::NotBase64, "{case:?}");
            assert_eq!(err.code(), "invalid_base64");
        }
    }

    #[test]
    fn rejects_invalid_utf8() {
        // 0xff 0xfe is never valid UTF-8.
        let header = STANDARD.encode([0xffu8, 0xfe, b'{', b'}']);
        let err = decode_header::<Value>(&header, MAX).unwrap_err();
        assert_eq!(err, HeaderDecodeError::NotUtf8);
        assert_eq!(err.code(), "invalid_utf8");
    }

    #[test]
    fn rejects_json_that_does_not_fit() {
        let not_json = STANDARD.encode("not json");
        let err = decode_header::<Value>(&not_json, MAX).unwrap_err();
        assert!(matches!(err, HeaderDecodeError::NotJson(_)));
        assert_eq!(err.code(), "invalid_payload");

        // Valid JSON, wrong shape: also invalid_payload, with serde's reason kept.
        let wrong_shape = encode_header(&json!({"x402Version": 2}));
        let err = decode_header::<PaymentRequired>(&wrong_shape, MAX).unwrap_err();
        match &err {
            HeaderDecodeError::NotJson(msg) => assert!(msg.contains("resource"), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.code(), "invalid_payload");

        // The empty string is valid (empty) base64 but not JSON.
        assert!(matches!(
            decode_header::<Value>("", MAX),
            Err(HeaderDecodeError::NotJson(_))
        ));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever a client puts in a payment header, decoding answers Ok or a coded error;
            /// it never panics.
            #[test]
            fn arbitrary_header_values_never_panic(value in "\\PC{0,300}") {
                match decode_header::<serde_json::Value>(&value, 256) {
                    Ok(_) => prop_assert!(value.len() <= 256),
                    Err(e) => prop_assert!(!e.code().is_empty()),
                }
            }

            /// The SIMD encoder writes exactly what the scalar engine writes (alphabet,
            /// padding, every tail length; lengths past the SIMD blocks of 12–48 bytes), so
            /// any client's decoder, and ours, reads it back.
            #[test]
            fn simd_base64_is_standard_base64(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
                let encoded = encode_base64(&bytes);
                prop_assert_eq!(&encoded, &STANDARD.encode(&bytes));
                prop_assert_eq!(STANDARD.decode(&encoded).unwrap(), bytes);
            }

            /// Valid base64 of arbitrary bytes (often not UTF-8, rarely JSON) is also handled.
            #[test]
            fn arbitrary_decoded_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
                use base64::Engine;
                let value = base64::engine::general_purpose::STANDARD.encode(&bytes);
                if let Err(e) = decode_header::<serde_json::Value>(&value, 1024) {
                    prop_assert!(!e.code().is_empty());
                }
            }
        }
    }
}
