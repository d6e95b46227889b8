//! The gateway: every request that is not one of Tariff's own endpoints comes here.
//!
//! route match → read and parse (bounded) → price → free: forward | priced: fingerprint,
//! quote, 402. Nothing reaches the upstream on a priced route without payment.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use super::AppState;
use super::credits;
use super::error::ApiError;
use super::paid;
use super::payment_required::Asked;
use super::request::{
    ParsedBody, canonical_path, check_content_length, declared_headers, parse_body, parse_query,
};
use super::sign_in;
use crate::config::UnpricedPolicy;
use crate::money::UsdMicros;
use crate::pricing::Decision;
use crate::pricing::expr::{EvalInput, RequestView};
use crate::pricing::external::{PricerRequest, external_price};
use crate::quote::{CanonicalBody, CanonicalRequest, QuoteRequest, RuleRef, fingerprint};

pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    match gateway(&state, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// The branches a 402 never takes (unpriced, free, the seller's pricer, paid, credits, signed
/// in) are awaited boxed: inline, their state made this future ~4× larger, and every request,
/// a slow upload's included, holds it for its whole life (`tests/it/hardening.rs`).
async fn gateway(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let path = canonical_path(&parts.uri)?;
    let rules = state.rules.current();
    let method = parts.method.as_str();
    let Some((route, params)) = rules.match_route(method, &path) else {
        let allowed = rules.methods_for(&path);
        if !allowed.is_empty() && state.config.unpriced == UnpricedPolicy::Deny {
            return Err(ApiError::method_not_allowed(method, &path, &allowed));
        }
        return Box::pin(unpriced(state, parts, body, &path)).await;
    };

    check_content_length(&parts.headers, state.config.max_body_bytes)?;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let (query_pairs, query) = parse_query(&parts.uri)?;
    let headers = declared_headers(&parts.headers, &route.headers)?;
    let parsed = parse_body(&parts.headers, &bytes)?;

    let empty = Value::Object(Default::default());
    let body_value = match &parsed {
        ParsedBody::Json(v) => v,
        _ => &empty,
    };
    let view = RequestView {
        method: method.to_string(),
        path: path.clone(),
        params,
        query,
        headers: headers.iter().cloned().collect(),
        body_size: bytes.len() as u64,
    };
    let input = EvalInput {
        request: &view,
        body: body_value,
        response: None,
    };
    let canonical_body = match &parsed {
        ParsedBody::None => CanonicalBody::None,
        ParsedBody::Json(v) => CanonicalBody::Json(v),
        ParsedBody::Bytes => CanonicalBody::Bytes(&bytes),
    };
    let hash = fingerprint(
        state.config.fingerprint_key.expose(),
        &CanonicalRequest {
            method,
            path: &path,
            query: &query_pairs,
            headers: &headers,
            body: canonical_body,
        },
    );
    // A repeat of a request these rules priced before is not priced again (see `decisions`).
    let remembered = state.decisions.get(&rules, &hash, view.body_size);
    let decided_now = remembered.is_none();
    let decision = match remembered {
        Some(d) => d,
        None => route.decide(state.rules.env(), &input).map_err(|e| {
            state.metrics.pricing_error(&route.id);
            ApiError::internal("pricing_failed", e.to_string(), &e)
        })?,
    };
    let fixed_rule = matches!(decision, Decision::Priced { .. });
    // Backtests re-price what rules may read of past requests (when the operator records it).
    if let Some(log) = &state.pricing_inputs {
        log.record(
            state.quotes.clock.now(),
            &crate::pricing::backtest::StoredInput::of(&view, body_value),
        );
    }
    // A price experiment: the candidate prices the same request, never charged.
    if let Some(shadow) = state.rules.shadow() {
        let current = match &decision {
            Decision::Free { rule } => Some((rule, UsdMicros::ZERO)),
            Decision::Priced { rule, price } => Some((rule, *price)),
            // The seller's pricer is not called twice for an experiment.
            Decision::External { .. } => None,
        };
        if let Some((rule, price)) = current {
            shadow.observe(
                state.rules.env(),
                crate::pricing::shadow::Observed {
                    method,
                    path: &path,
                    input: &input,
                    route: &route.id,
                    rule,
                    price,
                },
            );
        }
    }
    let (rule, price) = match decision {
        Decision::Free { rule } => {
            state.metrics.free_served(&route.id);
            tracing::debug!(route = %route.id, %rule, "free rule");
            return Box::pin(forward(state, &parts, &path, &query_pairs, bytes, &parsed)).await;
        }
        Decision::Priced { rule, price } => (rule, price),
        Decision::External {
            rule,
            pricer,
            clamp,
        } => {
            // The seller's pricer is asked once per quote, not once per repeat of the request:
            // an open quote already fixes the price (and `issue` below returns it).
            let open = state
                .quotes
                .open_quote(&hash)
                .await
                .map_err(|e| store_unavailable(state, e))?;
            match open {
                Some(open) => (rule, open.price),
                None => {
                    let req = PricerRequest::new(&route.id, &rule, &view, body_value);
                    let (price, _source) =
                        Box::pin(external_price(&state.http_client, &pricer, &clamp, &req)).await;
                    (rule, price)
                }
            }
        }
    };
    if price == UsdMicros::ZERO {
        // A rule that computes zero for this request makes it free; an x402 offer of 0 is
        // meaningless and some clients reject it.
        state.metrics.free_served(&route.id);
        return Box::pin(forward(state, &parts, &path, &query_pairs, bytes, &parsed)).await;
    }

    let metered = route
        .rules
        .iter()
        .any(|r| r.id == rule && r.actual.is_some());
    // Kept when this quote turns out to be a repeat (fixed-rule prices only).
    let keep = (decided_now && fixed_rule).then(|| rule.clone());
    let issued = state
        .quotes
        .issue(QuoteRequest {
            hash,
            price,
            rule: RuleRef {
                route: route.id.clone(),
                rule,
            },
            method,
            path: &path,
            metered,
        })
        .await
        .map_err(|e| match e {
            crate::quote::IssueError::Store(e) => store_unavailable(state, e),
            other => ApiError::internal("quote_failed", other.to_string(), &other),
        })?;
    if let (false, Some(rule)) = (issued.created, keep) {
        state
            .decisions
            .keep(&rules, hash, view.body_size, &rule, price);
    }
    state
        .metrics
        .quote(&route.id, &issued.quote.rule.rule, issued.created);
    if issued.created
        && let Some(stats) = &state.quote_stats
    {
        stats.record(&issued.quote);
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = absolute_url(state, &parts.headers, path_and_query);
    let req = credits::QuotedRequest {
        quote: &issued.quote,
        route,
        resource_url: &url,
        parts: &parts,
        path: &path,
        query: &query_pairs,
        parsed: &parsed,
        view: &view,
        body: body_value,
    };
    if let Some(payment) = paid::payment_header(&parts.headers)? {
        return Box::pin(paid::serve_paid(
            state,
            payment,
            &issued.quote,
            issued.created,
            req,
            bytes,
        ))
        .await;
    }
    if let Some(key) = credits::tariff_key(&parts.headers) {
        let account = Box::pin(credits::accounts(state)?.authenticate(key)).await?;
        return Box::pin(credits::serve_with_credits(state, account, req, bytes)).await;
    }
    if let Some(signed) = parts.headers.get(crate::x402::siwx::HEADER) {
        return Box::pin(sign_in::serve_signed_in(state, signed, req, bytes)).await;
    }
    let challenge = sign_in::challenge(state, &issued.quote, &url);
    Ok(state.repeats.answer(&Asked {
        rules: &rules,
        quote: &issued.quote,
        created: issued.created,
        route,
        resource_url: &url,
        path_and_query,
        sign_in: challenge.as_ref(),
    }))
}

/// The quote store failed: fail closed, nothing is served unpriced.
pub(super) fn store_unavailable(state: &AppState, e: crate::quote::StoreError) -> ApiError {
    state.metrics.store_error();
    tracing::error!(error = %e, "quote store failed");
    ApiError::unavailable(
        "quote_store_unavailable",
        "quotes cannot be stored right now; retry shortly",
    )
}

/// Requests no route prices: forwarded unpaid, or refused, as the operator configured.
async fn unpriced(
    state: &AppState,
    parts: Parts,
    body: Body,
    path: &str,
) -> Result<Response, ApiError> {
    match state.config.unpriced {
        UnpricedPolicy::Deny => Err(ApiError::not_found(
            "no_route",
            format!("no priced route for {} {path}", parts.method),
        )),
        UnpricedPolicy::Pass => {
            let bytes = read_body(body, state.config.max_body_bytes).await?;
            let (pairs, _) = parse_query(&parts.uri)?;
            // Only the in-process demo reads a parsed body; a proxied request goes on as bytes.
            let parsed = match state.upstream {
                super::Upstream::Demo => {
                    parse_body(&parts.headers, &bytes).unwrap_or(ParsedBody::Bytes)
                }
                super::Upstream::Proxy { .. } => ParsedBody::Bytes,
            };
            forward(state, &parts, path, &pairs, bytes, &parsed).await
        }
    }
}

async fn forward(
    state: &AppState,
    parts: &Parts,
    path: &str,
    query: &[(String, String)],
    bytes: Bytes,
    parsed: &ParsedBody,
) -> Result<Response, ApiError> {
    state
        .upstream
        .forward(parts, path, query, bytes, parsed.json())
        .await
}

/// `path_and_query` as an absolute URL on this server, as the request's client sees it (the
/// 402's `resource`): the configured public base, else the Host the client used.
pub(super) fn absolute_url(state: &AppState, headers: &HeaderMap, path_and_query: &str) -> String {
    if let Some(base) = &state.config.public_url {
        return format!("{base}{path_and_query}");
    }
    let host = host(headers).unwrap_or_else(|| state.config.listen.to_string());
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}{path_and_query}")
}

fn host(headers: &HeaderMap) -> Option<String> {
    let h = headers.get(header::HOST)?.to_str().ok()?;
    // Only a plausible host[:port] goes into a URL we hand to clients.
    let ok = !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    ok.then(|| h.to_string())
}

/// A request body of at most `max` bytes: 413 beyond it, 408 when the client stopped sending
/// it within the listener's body-read timeout, 400 when the connection broke off.
async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, ApiError> {
    let e = match axum::body::to_bytes(body, max).await {
        Ok(b) => return Ok(b),
        Err(e) => e,
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return Err(ApiError::too_large(format!(
                "priced requests accept at most {max} bytes"
            )));
        }
        if c.is::<tower_http::timeout::TimeoutError>() {
            return Err(ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body was not sent in time",
            ));
        }
        cause = c.source();
    }
    Err(ApiError::bad_request(
        "body_unreadable",
        format!("the request body could not be read: {e}"),
    ))
}
