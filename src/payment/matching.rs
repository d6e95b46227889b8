//! The first two stages of a paid request: decode the payment header strictly, then match it to
//! this request's quote.
//!
//! Binding: v2 clients echo the quote id in `accepted.extra.quoteId` and `accepted` must equal
//! the stored requirement; v1 clients echo nothing, so the quote is the one open for this
//! request's fingerprint and the signed amount must equal it. Either way a payment for a cheap
//! quote cannot buy an expensive request.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::PaymentError;
use super::pipeline::Matched;
use super::scheme::{self, Terms};
use crate::quote::{Offer, Quote, QuoteId};
use crate::x402::{self, codec, v1, v2};

/// A payment header decoded into its protocol version's shape.
#[derive(Debug)]
pub struct Decoded {
    raw: Value,
    payload: x402::AnyPaymentPayload,
}

impl Decoded {
    pub fn version(&self) -> u32 {
        match self.payload {
            x402::AnyPaymentPayload::V1(_) => 1,
            x402::AnyPaymentPayload::V2(_) => 2,
        }
    }

    /// The buyer's `payment-identifier` id, if the payment carries one (v2 only). A malformed
    /// id is the payer's fault: 400.
    pub fn payment_identifier(&self) -> Result<Option<&str>, PaymentError> {
        crate::x402::payment_identifier::payment_id(&self.raw).map_err(|detail| {
            PaymentError::Malformed {
                reason: "invalid_payment_identifier",
                detail: detail.into(),
            }
        })
    }

    /// What a payment id is bound to: this request and exactly this payment (a retry of both
    /// is the same; anything else under the same id is a conflict).
    pub fn fingerprint(&self, request: &crate::quote::RequestHash) -> String {
        let mut h = blake3::Hasher::new();
        h.update(&request.0);
        h.update(&serde_json::to_vec(&self.raw).expect("JSON value serialises"));
        h.finalize().to_hex().to_string()
    }

    /// The network the payment says it pays on (for metrics; matching checks it).
    pub fn network(&self) -> String {
        match &self.payload {
            x402::AnyPaymentPayload::V1(p) => p.network.to_string(),
            x402::AnyPaymentPayload::V2(p) => p.accepted.network.to_string(),
        }
    }

    /// The scheme-specific `payload` as sent.
    pub fn scheme_payload(&self) -> &Value {
        match &self.payload {
            x402::AnyPaymentPayload::V1(p) => &p.payload,
            x402::AnyPaymentPayload::V2(p) => &p.payload,
        }
    }
}

/// Strict decoding: bounded, standard base64, JSON of the exact shape of its `x402Version`.
pub fn decode(value: &str, max_len: usize) -> Result<Decoded, PaymentError> {
    let raw: Value = codec::decode_header(value, max_len).map_err(|e| PaymentError::Malformed {
        reason: e.code(),
        detail: format!("payment header: {e}"),
    })?;
    let version = raw.get("x402Version").and_then(Value::as_u64);
    let payload = match version {
        // Deserialised from the borrowed value: `raw` itself is kept for the facilitator.
        Some(1) => v1::PaymentPayload::deserialize(&raw).map(x402::AnyPaymentPayload::V1),
        Some(2) => {
            v2::PaymentPayload::deserialize(&raw).map(|p| x402::AnyPaymentPayload::V2(Box::new(p)))
        }
        _ => {
            return Err(PaymentError::Malformed {
                reason: "invalid_x402_version",
                detail: "x402Version must be 1 or 2".into(),
            });
        }
    }
    .map_err(|e| PaymentError::Malformed {
        reason: "invalid_payload",
        detail: format!("payment payload: {e}"),
    })?;
    Ok(Decoded { raw, payload })
}

/// The requirements a quote's offers were advertised with, in each protocol's wire form (the
/// HTTP layer renders them; the match compares against exactly what was sent).
pub trait Advertised {
    fn v2(&self, offer: &Offer) -> v2::PaymentRequirements;
    fn v1(&self, offer: &Offer) -> Value;
}

fn refuse(reason: &str, detail: impl Into<String>) -> PaymentError {
    PaymentError::invalid(reason, detail)
}

/// Matches a decoded payment to `quote`, the open quote of this very request (`fresh`: it was
/// created just now, so no client can have seen it). [`PaymentError::Invalid`] refusals are
/// answered with the quote's 402; [`PaymentError::Malformed`] with a 400.
pub fn match_quote(
    d: Decoded,
    quote: &Arc<Quote>,
    fresh: bool,
    advertised: &dyn Advertised,
) -> Result<Matched, PaymentError> {
    let (version, network, scheme, offer, requirements) = match &d.payload {
        x402::AnyPaymentPayload::V2(p) => {
            let accepted = &p.accepted;
            let method = accepted
                .extra
                .get("assetTransferMethod")
                .and_then(Value::as_str);
            let Some(scheme) = scheme::by_wire(&accepted.scheme, method) else {
                return Err(refuse(
                    "unsupported_scheme",
                    format!(
                        "scheme `{}` ({}) is not offered; pay one of this request's requirements",
                        accepted.scheme,
                        method.unwrap_or(scheme::exact_eip3009::METHOD)
                    ),
                ));
            };
            let Some(id) = accepted.extra.get("quoteId").and_then(Value::as_str) else {
                return Err(refuse(
                    "quote_id_missing",
                    "accepted.extra.quoteId is absent: pay one of the requirements of this request's 402",
                ));
            };
            let Ok(id) = QuoteId::try_from(id.to_string()) else {
                return Err(refuse(
                    "quote_id_invalid",
                    "accepted.extra.quoteId is not a quote id",
                ));
            };
            if !id.names_request(&quote.request_hash) {
                return Err(refuse(
                    "quote_for_other_request",
                    "this payment is for another request's quote",
                ));
            }
            if fresh || id != quote.id {
                return Err(refuse(
                    "quote_expired",
                    "the quote this payment answers has expired; pay the fresh quote",
                ));
            }
            // A network may offer several assets: the one paid is named by asset and method;
            // failing that, the offer in that asset or the network's first, whose comparison
            // below names the field that differs.
            let on_network = || {
                quote
                    .offers
                    .iter()
                    .filter(|o| o.network == accepted.network)
            };
            let Some(offer) = on_network()
                .find(|o| {
                    o.asset.eq_ignore_ascii_case(&accepted.asset)
                        && scheme::same(scheme::for_offer(o), scheme)
                })
                .or_else(|| on_network().find(|o| o.asset.eq_ignore_ascii_case(&accepted.asset)))
                .or_else(|| on_network().next())
            else {
                return Err(refuse(
                    "invalid_network",
                    format!("no offer on {}", accepted.network),
                ));
            };
            let expected = advertised.v2(offer);
            let mismatch = if accepted.asset != expected.asset {
                Some(("asset_mismatch", "asset"))
            } else if accepted.pay_to != expected.pay_to {
                Some(("pay_to_mismatch", "payTo"))
            } else if accepted.amount != expected.amount {
                Some(("amount_mismatch", "amount"))
            } else if serde_json::to_value(accepted).ok() != serde_json::to_value(&expected).ok() {
                Some(("accepted_requirements_mismatch", "requirements"))
            } else {
                None
            };
            if let Some((reason, field)) = mismatch {
                return Err(refuse(
                    reason,
                    format!("accepted {field} differs from the quote's requirement"),
                ));
            }
            let requirements = serde_json::to_value(&expected).expect("requirement serialises");
            (2, accepted.network.clone(), scheme, offer, requirements)
        }
        x402::AnyPaymentPayload::V1(p) => {
            // v1 has no `extra` in the payment: only the default transfer method exists.
            let Some(scheme) = scheme::by_wire(&p.scheme, None) else {
                return Err(refuse(
                    "unsupported_scheme",
                    format!("scheme `{}` is not offered; pay with `exact`", p.scheme),
                ));
            };
            if fresh {
                return Err(refuse(
                    "quote_expired",
                    "this request has no open quote (it expired or was never issued); pay the fresh quote",
                ));
            }
            let Some(offer) = quote.offers.iter().find(|o| {
                o.network == p.network && o.transfer_method.is_default() && o.scheme.is_default()
            }) else {
                return Err(refuse(
                    "invalid_network",
                    format!("no offer on {}", p.network),
                ));
            };
            (1, p.network.clone(), scheme, offer, advertised.v1(offer))
        }
    };
    let payment = scheme.parse(d.scheme_payload())?;
    let terms = Terms::of_offer(offer)?;
    Ok(Matched {
        version,
        network,
        scheme,
        terms,
        payment,
        payload: d.raw,
        requirements,
        price: quote.price,
        quote: quote.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use proptest::prelude::*;

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(v).unwrap())
    }

    fn valid_v2() -> Value {
        serde_json::json!({
            "x402Version": 2,
            "accepted": {
                "scheme": "exact", "network": "eip155:84532", "amount": "20000",
                "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                "maxTimeoutSeconds": 300,
                "extra": { "name": "USDC", "version": "2", "quoteId": format!("q_{}", "0".repeat(32)) }
            },
            "payload": {
                "signature": format!("0x{}1b", "ab".repeat(64)),
                "authorization": {
                    "from": "0x857b06519E91e3A54538791bDbb0E22373e36b66",
                    "to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                    "value": "20000", "validAfter": "0", "validBefore": "1740672154",
                    "nonce": format!("0x{}", "f3".repeat(32))
                }
            }
        })
    }

    /// Every JSON value reachable by replacing one node of `v` with `with`.
    fn mutate(v: &Value, pick: usize, with: &Value) -> Value {
        fn walk(v: &mut Value, n: &mut usize, with: &Value) -> bool {
            if *n == 0 {
                *v = with.clone();
                return true;
            }
            *n -= 1;
            match v {
                Value::Object(m) => m.values_mut().any(|c| walk(c, n, with)),
                Value::Array(a) => a.iter_mut().any(|c| walk(c, n, with)),
                _ => false,
            }
        }
        let mut out = v.clone();
        let mut n = pick;
        walk(&mut out, &mut n, with);
        out
    }

    #[test]
    fn a_valid_payload_decodes_and_parses() {
        let d = decode(&b64(&valid_v2()), 16 * 1024).unwrap();
        assert_eq!(d.version(), 2);
        let scheme = scheme::by_wire("exact", None).unwrap();
        let p = scheme.parse(d.scheme_payload()).unwrap();
        assert_eq!(
            p.payer(),
            "0x857b06519E91e3A54538791bDbb0E22373e36b66"
                .parse::<alloy::primitives::Address>()
                .unwrap()
        );
        assert!(scheme::by_wire("upto", None).is_none());
        assert!(scheme::by_wire("exact", Some("erc7710")).is_none());
    }

    proptest! {
        /// Arbitrary header values never panic and never decode to a payment by accident.
        #[test]
        fn arbitrary_headers_are_refused_cleanly(s in "\\PC{0,300}") {
            if let Err(e) = decode(&s, 16 * 1024) {
                prop_assert!(matches!(e, PaymentError::Malformed { .. }), "{e:?}");
            }
        }

        /// Any one field of a valid payload replaced by another JSON value: decoding and the
        /// scheme's parse either succeed or fail as malformed with a reason, never a panic.
        #[test]
        fn mutated_payloads_fail_with_a_reason(
            pick in 0usize..40,
            with in prop_oneof![
                Just(Value::Null), Just(serde_json::json!(-1)), Just(serde_json::json!(1e300)),
                Just(serde_json::json!("")), Just(serde_json::json!("0x")), Just(serde_json::json!([])),
                Just(serde_json::json!({})), Just(serde_json::json!(u64::MAX)),
                "\\PC{0,80}".prop_map(Value::String),
            ],
        ) {
            let v = mutate(&valid_v2(), pick, &with);
            match decode(&b64(&v), 16 * 1024) {
                Ok(d) => {
                    if let Err(e) = scheme::by_wire("exact", None).unwrap().parse(d.scheme_payload()) {
                        prop_assert!(e.code().starts_with("invalid_exact_evm_payload"), "{}", e.code());
                        prop_assert!(matches!(e, PaymentError::Malformed { .. }), "{:?}", e);
                    }
                }
                Err(e) => {
                    prop_assert!(matches!(e, PaymentError::Malformed { .. }), "{:?}", e);
                    prop_assert!(!e.code().is_empty());
                }
            }
        }
    }
}
