//! A paid retry, as HTTP: the domain's payment pipeline ([`crate::payment::pipeline`]) does the
//! work; this file picks the payment header, runs the stages in order around the upstream call,
//! and maps each outcome to its answer (a 402 carrying the quote and the reason, a 400/409/503
//! through [`ApiError`], or the upstream's answer with the payment response).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use super::credits::{QuotedRequest, actual_price};
use super::error::ApiError;
use super::metrics::PaymentOutcome;
use super::payment_required::{self, v1_requirement_json, v2_requirement};
use super::{AppState, payments_of};
use crate::payment::idempotency::{StoredAnswer, Taken};
use crate::payment::matching::{self, Advertised};
use crate::payment::pipeline::{Charged, Credited, Summary, Unsettled};
use crate::payment::{PaymentError, crash_point};
use crate::pricing::SettleTiming;
use crate::quote::{Offer, Quote};
use crate::x402::{self, codec, v1, v2};

/// Machine-readable reason of a refused payment (also in the 402's `error`).
pub use super::payment_required::REASON;

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

/// The requirements exactly as this request's 402 advertised them.
struct AsAdvertised<'a> {
    quote: &'a Quote,
    req: &'a QuotedRequest<'a>,
}

impl Advertised for AsAdvertised<'_> {
    fn v2(&self, offer: &Offer) -> v2::PaymentRequirements {
        v2_requirement(offer, self.quote)
    }

    fn v1(&self, offer: &Offer) -> Value {
        v1_requirement_json(offer, self.quote, self.req.route, self.req.resource_url)
    }
}

/// The 402 for a refused payment: the request's quote again, with the reason, and after a
/// settlement attempt the failed payment response.
fn refused(
    req: &QuotedRequest<'_>,
    quote: &Quote,
    e: &PaymentError,
    settled: Option<&Summary>,
) -> Response {
    tracing::info!(reason = e.code(), detail = %e, quote = %quote.id, "payment refused");
    let mut resp = payment_required::render_refused(
        quote,
        req.route,
        req.resource_url,
        e.code(),
        e.code(),
        None,
    );
    if let Some(s) = settled {
        let mut failed =
            v2::SettleResponse::failed(e.code(), &s.network, Some(s.payer.to_string()));
        failed.error_message = Some(e.to_string());
        insert_payment_response(resp.headers_mut(), s.version, failed);
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

pub(super) fn insert_success(h: &mut HeaderMap, c: &Credited) {
    let s = c.summary();
    let mut settled = v2::SettleResponse::succeeded(c.tx(), &s.network, Some(s.payer));
    settled.amount = c.settled_amount();
    insert_payment_response(h, s.version, settled);
}

/// An `upto` payment charged nothing: success, no transaction, amount 0.
fn insert_nothing_settled(h: &mut HeaderMap, s: Summary) {
    let mut settled = v2::SettleResponse::succeeded("", &s.network, Some(s.payer));
    settled.amount = Some("0".into());
    insert_payment_response(h, s.version, settled);
}

/// Pays for a quoted request with the payment in `header` and serves it. A route with the
/// `payment-identifier` extension keeps the answer under the buyer's payment id: a retry with
/// the same id and payment gets it back instead of paying again.
pub async fn serve_paid(
    state: &AppState,
    header: &str,
    quote: &Arc<Quote>,
    fresh: bool,
    req: QuotedRequest<'_>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let decoded = matching::decode(header, state.config.payments.max_header_bytes)?;
    let Some(policy) = req.route.payment_identifier else {
        return pay(state, decoded, quote, fresh, req, bytes).await;
    };
    let Some(id) = decoded.payment_identifier()? else {
        if policy.required {
            return Err(ApiError::bad_request(
                "payment_identifier_required",
                "this route requires the payment-identifier extension: name the payment with extensions[\"payment-identifier\"].info.id",
            ));
        }
        return pay(state, decoded, quote, fresh, req, bytes).await;
    };
    let payments = payments_of(state)?.clone();
    let key = format!("{}:{id}", req.route.id);
    let fingerprint = decoded.fingerprint(&quote.request_hash);
    let now = state.quotes.clock.now();
    let expires = now.plus_secs(state.config.payments.payment_id_ttl_seconds);
    let ids = payments.ids();
    match ids
        .take(&key, &fingerprint, now, expires)
        .await
        .map_err(PaymentError::from)?
    {
        Taken::Fresh => {}
        Taken::Replay(answer) => return Ok(replayed(answer)),
        Taken::InProgress => return Err(PaymentError::InProgress.into()),
        Taken::Conflict => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "payment_identifier_conflict",
                "this payment id was used with another payment or for another request",
            ));
        }
    }
    let out = pay(state, decoded, quote, fresh, req, bytes).await;
    // A refused payment (402) or an error moved no money: the id is free for the next try.
    let resp = match out {
        Ok(resp) if resp.status() != StatusCode::PAYMENT_REQUIRED => resp,
        other => {
            if let Err(e) = ids.release(&key).await {
                tracing::warn!(error = %e, key, "releasing a payment id failed; it expires on its own");
            }
            return other;
        }
    };
    let (parts, body) = match buffer(resp).await {
        Ok(held) => held,
        Err(unreadable) => {
            tracing::error!(
                key,
                "a paid answer could not be read; it is not kept for retries"
            );
            return Ok(unreadable);
        }
    };
    if body.len() <= policy.max_answer_bytes {
        let answer = StoredAnswer {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "content-length" | "transfer-encoding" | "connection"
                    )
                })
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: body.to_vec(),
        };
        if let Err(e) = ids.store(&key, &answer).await {
            tracing::error!(error = %e, key, "storing a paid answer failed; a retry will not find it");
        }
    } else {
        tracing::error!(
            key,
            len = body.len(),
            max = policy.max_answer_bytes,
            "a paid answer is larger than the route declared; it is not kept for retries"
        );
        if let Err(e) = ids.release(&key).await {
            tracing::warn!(error = %e, key, "releasing a payment id failed");
        }
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// A stored answer, served again for a retry (marked as such).
fn replayed(a: StoredAnswer) -> Response {
    let mut resp = Response::new(Body::from(a.body));
    *resp.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    for (k, v) in a.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            h.append(k, v);
        }
    }
    h.insert(
        HeaderName::from_static("tariff-replay"),
        HeaderValue::from_static("payment-identifier"),
    );
    resp
}

async fn pay(
    state: &AppState,
    decoded: matching::Decoded,
    quote: &Arc<Quote>,
    fresh: bool,
    req: QuotedRequest<'_>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    // Refusals before any settlement: the quote's 402 with the reason; anything else (a
    // malformed header, an outage, a race) is an ApiError.
    let network = decoded.network();
    let refuse = |e: PaymentError| {
        if e.is_refusal() {
            state
                .metrics
                .payment(&network, PaymentOutcome::Refused, e.code());
            Ok(refused(&req, quote, &e, None))
        } else {
            Err(ApiError::from(e))
        }
    };
    let advertised = AsAdvertised { quote, req: &req };
    let matched = match matching::match_quote(decoded, quote, fresh, &advertised) {
        Ok(m) => m,
        Err(e) => return refuse(e),
    };
    let payments = payments_of(state)?.clone();
    let verified = match payments.verify(matched).await {
        Ok(v) => v,
        Err(e) => return refuse(e),
    };
    let claimed = match payments.claim(verified).await {
        Ok(c) => c,
        Err(e) => return refuse(e),
    };
    crash_point("after_claim");
    let json = req.parsed.json();
    // `upto` settles what the answer cost, so it always settles after the answer.
    let timing = if claimed.partial() {
        SettleTiming::After
    } else {
        req.route.settle
    };
    match timing {
        SettleTiming::Before => {
            let credited = match payments.clone().settle_and_credit(claimed).await {
                Ok(c) => c,
                Err(u) => return settle_failed(state, &req, quote, u),
            };
            settled(state, &credited);
            let answer = state
                .upstream
                .forward(req.parts, req.path, req.query, bytes, json)
                .await;
            let mut resp = match answer {
                Ok(r) if !r.status().is_server_error() => r,
                failed => {
                    // Paid but not served: the price goes back to the payer as credits, in a
                    // task of its own so a hang-up cannot cancel it.
                    let p = payments.clone();
                    let refund = tokio::spawn(async move {
                        let out = p.refund(&credited, "upstream failed").await;
                        (credited, out)
                    });
                    if let Ok((c, Err(e))) = refund.await {
                        tracing::error!(error = %e, payment = %c.id(), "refund failed; needs an operator");
                    }
                    let mut r = failed.unwrap_or_else(IntoResponse::into_response);
                    r.headers_mut().insert(
                        HeaderName::from_static("tariff-refund"),
                        HeaderValue::from_static("credits"),
                    );
                    return Ok(r);
                }
            };
            earned(state, quote, &credited);
            insert_success(resp.headers_mut(), &credited);
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
                    let id = claimed.id().clone();
                    if let Err(e) = payments.release(claimed, "upstream_failed").await {
                        tracing::warn!(error = %e, payment = %id, "releasing a claim failed");
                    }
                    return Ok(upstream_failed);
                }
            };
            let claimed = if claimed.partial() {
                let charge = actual_price(state, &req, &parts, &body);
                match payments.charge(claimed, charge).await {
                    Ok(Charged::Settle(c)) => *c,
                    Ok(Charged::Nothing(summary)) => {
                        let mut resp = Response::from_parts(parts, Body::from(body));
                        insert_nothing_settled(resp.headers_mut(), summary);
                        return Ok(resp);
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                claimed
            };
            let credited = match payments.settle_and_credit(claimed).await {
                Ok(c) => c,
                // The answer is withheld: it was not paid for.
                Err(u) => return settle_failed(state, &req, quote, u),
            };
            settled(state, &credited);
            earned(state, quote, &credited);
            let mut resp = Response::from_parts(parts, Body::from(body));
            insert_success(resp.headers_mut(), &credited);
            Ok(resp)
        }
    }
}

/// A paid request served: what its rule earned, for the operator's figures.
fn earned(state: &AppState, quote: &Quote, c: &Credited) {
    if let Some(stats) = &state.quote_stats {
        stats.record_paid(
            &quote.rule,
            state.quotes.clock.now(),
            c.price(),
            crate::db::PaidVia::OnChain,
        );
    }
}

fn settled(state: &AppState, c: &Credited) {
    state
        .metrics
        .payment(c.summary().network.as_str(), PaymentOutcome::Settled, "");
}

fn settle_failed(
    state: &AppState,
    req: &QuotedRequest<'_>,
    quote: &Quote,
    u: Unsettled,
) -> Result<Response, ApiError> {
    state.metrics.payment(
        u.summary.network.as_str(),
        PaymentOutcome::Failed,
        u.error.code(),
    );
    if u.error.is_refusal() {
        Ok(refused(req, quote, &u.error, Some(&u.summary)))
    } else {
        Err(u.error.into())
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
