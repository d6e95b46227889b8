//! A paid retry: decode the payment header, match it to this request's quote, then verify,
//! claim, settle, credit and serve.
//!
//! Binding: v2 clients echo the quote id in `accepted.extra.quoteId` and `accepted` must equal
//! the stored requirement; v1 clients echo nothing, so the quote is the one open for this
//! request's fingerprint and the signed amount must equal it. Either way a payment for a cheap
//! quote cannot buy an expensive request.
//!
//! The settle-and-credit section runs in its own task: if the client disconnects, the handler
//! future is dropped, but money that is moving is still recorded.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::credits::QuotedRequest;
use super::error::ApiError;
use super::payment_required::{self, v1_requirement_json, v2_requirement};
use crate::config::SettleTiming;
use crate::payment::eip3009::{Authorization, Terms};
use crate::payment::record::StoredAuthorization;
use crate::payment::{Attempt, PaymentError, Payments, Settled, crash_point};
use crate::quote::{Quote, QuoteId};
use crate::x402::exact_evm::ExactEvmPayload;
use crate::x402::{self, Network, codec, v1, v2};

/// Machine-readable reason of a refused payment (also in the 402's `error`).
pub const REASON: &str = "tariff-reason";

/// The payment header of a request, if any: `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1).
pub fn payment_header(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut found = None;
    for name in [x402::PAYMENT_SIGNATURE, x402::X_PAYMENT] {
        let mut values = headers.get_all(name).iter();
        let Some(v) = values.next() else { continue };
        if values.next().is_some() || found.is_some() {
            return Err(ApiError::bad_request(
                "ambiguous_payment",
                "send exactly one payment header (PAYMENT-SIGNATURE or X-PAYMENT), once",
            ));
        }
        found = Some(v.to_str().map_err(|_| {
            ApiError::bad_request("invalid_base64", "the payment header is not base64")
        })?);
    }
    Ok(found)
}

/// A payment header decoded into its protocol version's shape.
pub struct Decoded {
    raw: Value,
    payload: x402::AnyPaymentPayload,
}

/// Strict decoding: bounded, standard base64, JSON of the exact shape of its `x402Version`.
pub fn decode(value: &str, max_len: usize) -> Result<Decoded, ApiError> {
    let raw: Value = codec::decode_header(value, max_len)
        .map_err(|e| ApiError::bad_request(e.code(), format!("payment header: {e}")))?;
    let version = raw.get("x402Version").and_then(Value::as_u64);
    let payload = match version {
        // Deserialised from the borrowed value: `raw` itself is kept for the facilitator.
        Some(1) => v1::PaymentPayload::deserialize(&raw).map(x402::AnyPaymentPayload::V1),
        Some(2) => {
            v2::PaymentPayload::deserialize(&raw).map(|p| x402::AnyPaymentPayload::V2(Box::new(p)))
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_x402_version",
                "x402Version must be 1 or 2",
            ));
        }
    }
    .map_err(|e| ApiError::bad_request("invalid_payload", format!("payment payload: {e}")))?;
    Ok(Decoded { raw, payload })
}

fn refuse(reason: &str, detail: impl Into<String>) -> PaymentError {
    PaymentError::invalid(reason, detail)
}

/// Matches a decoded payment to `quote`, the open quote of this very request (`fresh`: it was
/// created just now, so no client can have seen it).
fn match_quote(
    d: Decoded,
    quote: &Arc<Quote>,
    fresh: bool,
    req: &QuotedRequest<'_>,
) -> Result<Result<Attempt, PaymentError>, ApiError> {
    let (version, network, scheme_payload, offer, requirements) = match &d.payload {
        x402::AnyPaymentPayload::V2(p) => {
            let accepted = &p.accepted;
            if accepted.scheme != "exact" {
                return Ok(Err(refuse(
                    "unsupported_scheme",
                    format!(
                        "scheme `{}` is not offered; pay with `exact`",
                        accepted.scheme
                    ),
                )));
            }
            let Some(id) = accepted.extra.get("quoteId").and_then(Value::as_str) else {
                return Ok(Err(refuse(
                    "quote_id_missing",
                    "accepted.extra.quoteId is absent: pay one of the requirements of this request's 402",
                )));
            };
            let Ok(id) = QuoteId::try_from(id.to_string()) else {
                return Ok(Err(refuse(
                    "quote_id_invalid",
                    "accepted.extra.quoteId is not a quote id",
                )));
            };
            if !id.names_request(&quote.request_hash) {
                return Ok(Err(refuse(
                    "quote_for_other_request",
                    "this payment is for another request's quote",
                )));
            }
            if fresh || id != quote.id {
                return Ok(Err(refuse(
                    "quote_expired",
                    "the quote this payment answers has expired; pay the fresh quote",
                )));
            }
            let Some(offer) = quote.offers.iter().find(|o| o.network == accepted.network) else {
                return Ok(Err(refuse(
                    "invalid_network",
                    format!("no offer on {}", accepted.network),
                )));
            };
            let expected = v2_requirement(offer, quote);
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
                return Ok(Err(refuse(
                    reason,
                    format!("accepted {field} differs from the quote's requirement"),
                )));
            }
            let requirements = serde_json::to_value(&expected).expect("requirement serialises");
            (2, accepted.network.clone(), &p.payload, offer, requirements)
        }
        x402::AnyPaymentPayload::V1(p) => {
            if p.scheme != "exact" {
                return Ok(Err(refuse(
                    "unsupported_scheme",
                    format!("scheme `{}` is not offered; pay with `exact`", p.scheme),
                )));
            }
            if fresh {
                return Ok(Err(refuse(
                    "quote_expired",
                    "this request has no open quote (it expired or was never issued); pay the fresh quote",
                )));
            }
            let Some(offer) = quote.offers.iter().find(|o| o.network == p.network) else {
                return Ok(Err(refuse(
                    "invalid_network",
                    format!("no offer on {}", p.network),
                )));
            };
            let requirements = v1_requirement_json(offer, quote, req.route, req.resource_url);
            (1, p.network.clone(), &p.payload, offer, requirements)
        }
    };
    let exact = ExactEvmPayload::from_value(scheme_payload)
        .and_then(|p| p.validate())
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
    let terms = match Terms::of_offer(offer) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(Attempt {
        version,
        network,
        terms,
        auth: Authorization::from_validated(&exact),
        stored: StoredAuthorization {
            from: exact.from_hex(),
            to: exact.to_hex(),
            value: exact.value.to_string(),
            valid_after: exact.valid_after.to_string(),
            valid_before: exact.valid_before.to_string(),
            nonce: exact.nonce_hex(),
            signature: format!("0x{}", hex::encode(&exact.signature)),
        },
        payload: d.raw,
        requirements,
        quote: quote.clone(),
    }))
}

/// The 402 for a refused payment: the request's quote again, with the reason.
fn refused(
    req: &QuotedRequest<'_>,
    quote: &Quote,
    e: &PaymentError,
    settle: Option<(u32, &Network, &str)>,
) -> Response {
    tracing::info!(reason = e.code(), detail = %e, quote = %quote.id, "payment refused");
    let mut resp = payment_required::render(quote, req.route, req.resource_url, Some(e.code()));
    if let Ok(v) = HeaderValue::from_str(e.code()) {
        resp.headers_mut()
            .insert(HeaderName::from_static(REASON), v);
    }
    if let Some((version, network, payer)) = settle {
        let mut failed = v2::SettleResponse::failed(e.code(), network, Some(payer.to_string()));
        failed.error_message = Some(e.to_string());
        insert_payment_response(resp.headers_mut(), version, failed);
    }
    resp
}

fn insert_payment_response(h: &mut HeaderMap, version: u32, s: v2::SettleResponse) {
    let (name, value) = if version == 1 {
        (
            x402::X_PAYMENT_RESPONSE,
            codec::encode_header(&v1::SettleResponse::from(s)),
        )
    } else {
        (x402::PAYMENT_RESPONSE, codec::encode_header(&s))
    };
    h.insert(
        HeaderName::from_static(name),
        HeaderValue::from_str(&value).expect("base64"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(x402::CORS_EXPOSE_HEADERS_VALUE),
    );
}

/// Maps a payment failure that is not the payer's fault to its HTTP answer.
fn unavailable(e: &PaymentError) -> ApiError {
    match e {
        PaymentError::InProgress => {
            ApiError::new(StatusCode::CONFLICT, "payment_in_progress", e.to_string())
        }
        PaymentError::Pending(_) => ApiError::unavailable(
            "settlement_pending",
            "the payment's settlement outcome is not known yet; if it lands it is credited to the payer's account",
        ),
        PaymentError::Unavailable { reason, .. } => ApiError::unavailable(reason, e.to_string()),
        _ => ApiError::internal("unexpected_settle_error", "payment processing failed", e),
    }
}

/// Pays for a quoted request with the payment in `header` and serves it.
pub async fn serve_paid(
    state: &AppState,
    header: &str,
    quote: &Arc<Quote>,
    fresh: bool,
    req: QuotedRequest<'_>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let decoded = decode(header, state.config.payments.max_header_bytes)?;
    let refuse = |e: &PaymentError| {
        state.metrics.payments_refused.inc();
        Ok(refused(&req, quote, e, None))
    };
    let attempt = match match_quote(decoded, quote, fresh, &req)? {
        Ok(a) => a,
        Err(e) => return refuse(&e),
    };
    let payments = state.payments.clone().ok_or_else(|| {
        ApiError::unavailable(
            "payments_unavailable",
            "this server keeps no payment records (no database)",
        )
    })?;
    let from_block = match payments.verify(&attempt).await {
        Ok(b) => b,
        Err(e @ PaymentError::Invalid { .. }) => return refuse(&e),
        Err(e) => return Err(unavailable(&e)),
    };
    let id = match payments.claim(&attempt, from_block).await {
        Ok(id) => id,
        Err(e @ PaymentError::Invalid { .. }) => return refuse(&e),
        Err(e) => return Err(unavailable(&e)),
    };
    crash_point("after_claim");
    let (version, network) = (attempt.version, attempt.network.clone());
    let json = req.parsed.json();
    match req.route.settle {
        SettleTiming::Before => {
            let (attempt, settled) = settle_and_credit(state, payments.clone(), attempt, id).await;
            let settled = match settled {
                Ok(s) => s,
                Err(e) => return settle_failed(&req, quote, &attempt, e),
            };
            let answer = state
                .upstream
                .forward(req.parts, req.path, req.query, bytes, json)
                .await;
            let mut resp = match answer {
                Ok(r) if !r.status().is_server_error() => r,
                failed => {
                    // Paid but not served: the price goes back to the payer as credits.
                    let p = payments.clone();
                    let s = settled.clone();
                    let refund =
                        tokio::spawn(
                            async move { p.refund(&attempt, &s, "upstream failed").await },
                        );
                    if let Ok(Err(e)) = refund.await {
                        tracing::error!(error = %e, payment = %settled.payment_id, "refund failed; needs an operator");
                    }
                    let mut r = failed.unwrap_or_else(IntoResponse::into_response);
                    r.headers_mut().insert(
                        HeaderName::from_static("tariff-refund"),
                        HeaderValue::from_static("credits"),
                    );
                    return Ok(r);
                }
            };
            insert_success(resp.headers_mut(), version, &network, &settled);
            Ok(resp)
        }
        SettleTiming::After => {
            let answer = state
                .upstream
                .forward(req.parts, req.path, req.query, bytes, json)
                .await;
            let held = match answer {
                Ok(r) if !r.status().is_server_error() => buffer(r).await,
                Ok(r) => Err(r),
                Err(e) => Err(e.into_response()),
            };
            let (parts, body) = match held {
                Ok(held) => held,
                Err(upstream_failed) => {
                    // Nothing was settled: the authorization is released, nothing is owed.
                    if let Err(e) = payments.release(&id, "upstream_failed").await {
                        tracing::warn!(error = %e, payment = %id, "releasing a claim failed");
                    }
                    return Ok(upstream_failed);
                }
            };
            let (attempt, settled) = settle_and_credit(state, payments, attempt, id).await;
            let settled = match settled {
                Ok(s) => s,
                // The answer is withheld: it was not paid for.
                Err(e) => return settle_failed(&req, quote, &attempt, e),
            };
            let mut resp = Response::from_parts(parts, Body::from(body));
            insert_success(resp.headers_mut(), version, &network, &settled);
            Ok(resp)
        }
    }
}

fn insert_success(h: &mut HeaderMap, version: u32, network: &Network, s: &Settled) {
    insert_payment_response(
        h,
        version,
        v2::SettleResponse::succeeded(&s.tx, network, Some(s.payer.clone())),
    );
}

/// Settles and credits in a task of its own, so that a client hanging up mid-request cannot
/// cancel the recording of money that is already moving.
async fn settle_and_credit(
    state: &AppState,
    payments: Arc<Payments>,
    attempt: Attempt,
    id: String,
) -> (Attempt, Result<Settled, PaymentError>) {
    let task = tokio::spawn(async move {
        let settled = match payments.settle(&attempt, &id).await {
            Ok(s) => s,
            Err(e) => return (attempt, Err(e)),
        };
        // Settled but not credited (ledger down): the record says `settled`, the reconciler
        // credits it later, and this request is not served.
        let credited = payments.credit_attempt(&attempt, &settled, true).await;
        (attempt, credited.map(|()| settled))
    });
    let (attempt, outcome) = match task.await {
        Ok(out) => out,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    match &outcome {
        Ok(_) => state.metrics.payments_settled.inc(),
        Err(_) => state.metrics.settlement_failures.inc(),
    }
    (attempt, outcome)
}

fn settle_failed(
    req: &QuotedRequest<'_>,
    quote: &Quote,
    a: &Attempt,
    e: PaymentError,
) -> Result<Response, ApiError> {
    match e {
        PaymentError::SettlementFailed { .. } | PaymentError::Invalid { .. } => {
            let payer = format!("{:#x}", a.auth.payer());
            Ok(refused(
                req,
                quote,
                &e,
                Some((a.version, &a.network, &payer)),
            ))
        }
        other => Err(unavailable(&other)),
    }
}

/// The most of an upstream answer held back while a settle-after payment settles.
const HELD_BODY_CAP: usize = 16 << 20;

async fn buffer(r: Response) -> Result<(axum::http::response::Parts, Bytes), Response> {
    let (parts, body) = r.into_parts();
    match axum::body::to_bytes(body, HELD_BODY_CAP).await {
        Ok(b) => Ok((parts, b)),
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unreadable",
            "the upstream answer could not be read",
        )
        .into_response()),
    }
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
    fn a_valid_payload_decodes() {
        let d = decode(&b64(&valid_v2()), 16 * 1024).unwrap();
        assert!(matches!(d.payload, x402::AnyPaymentPayload::V2(_)));
    }

    proptest! {
        /// Arbitrary header values never panic and never decode to a payment by accident.
        #[test]
        fn arbitrary_headers_are_refused_cleanly(s in "\\PC{0,300}") {
            if let Err(e) = decode(&s, 16 * 1024) {
                prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
            }
        }

        /// Any one field of a valid payload replaced by another JSON value: decoding and the
        /// scheme check either succeed or fail with a 400 and a reason, never a panic.
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
                    if let x402::AnyPaymentPayload::V2(p) = &d.payload {
                        let checked = ExactEvmPayload::from_value(&p.payload).and_then(|p| p.validate());
                        if let Err(e) = checked {
                            prop_assert!(e.code().starts_with("invalid_exact_evm_payload"));
                        }
                    }
                }
                Err(e) => {
                    prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                    prop_assert!(!e.code.is_empty());
                }
            }
        }
    }
}
