//! The 402: one response for both protocol generations.
//!
//! - v2: the `PAYMENT-REQUIRED` header, base64 of a `PaymentRequired` with the `resource` object,
//!   one requirement per offer, and the route's Bazaar discovery extension.
//! - v1: the JSON body `{x402Version: 1, error, accepts}` with `maxAmountRequired`, `resource`,
//!   `description`, `mimeType`, `outputSchema` on each requirement.
//!
//! The quote id rides in `extra.quoteId` next to the EIP-712 `name`/`version`: v2 clients copy
//! the requirement verbatim into `accepted`, so it comes back with the payment. Rendering is a
//! pure function of the stored quote, so a repeated request gets a byte-identical 402.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::payment::scheme;
use crate::pricing::Route;
use crate::quote::{Offer, Quote};
use base64::Engine;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::x402::{self, siwx, v2};

pub const V2_ERROR: &str = "PAYMENT-SIGNATURE header is required";
pub const V1_ERROR: &str = "X-PAYMENT header is required";

/// `extra` of a requirement: what the offer's scheme needs (the token's EIP-712 domain for
/// EIP-3009) and our quote id.
pub fn offer_extra(offer: &Offer, quote: &Quote) -> Map<String, Value> {
    let mut extra = scheme::for_offer(offer).extra(offer);
    extra.insert("quoteId".into(), Value::String(quote.id.to_string()));
    extra
}

/// The v2 requirement for one offer of a quote: what a v2 client must echo in `accepted`.
pub fn v2_requirement(offer: &Offer, quote: &Quote) -> v2::PaymentRequirements {
    v2::PaymentRequirements {
        scheme: scheme::for_offer(offer).name().into(),
        network: offer.network.clone(),
        amount: offer.amount.clone(),
        asset: offer.asset.clone(),
        pay_to: offer.pay_to.clone(),
        max_timeout_seconds: offer.max_timeout_seconds,
        extra: offer_extra(offer, quote),
    }
}

fn description(route: &Route) -> String {
    route
        .description
        .clone()
        .unwrap_or_else(|| format!("{} (priced per request by Tariff)", route.id))
}

/// `{}`: the v2 `extensions` of a route without discovery metadata.
fn empty_object() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| RawValue::from_string("{}".into()).expect("valid JSON"))
}

// The two bodies below have the exact wire shape of `x402::v2::PaymentRequired` and
// `x402::v1::PaymentRequirementsResponse` (tests/it/payment_required.rs reads them back with an
// independent decoder), but borrow the route's discovery JSON, rendered once at load, instead
// of rebuilding it per request.

/// The v2 body up to its `extensions`, which are spliced in after it (they are JSON text
/// already: the route's, rendered at load, and maybe a fresh sign-in challenge).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct V2Head<'a> {
    x402_version: u32,
    error: &'a str,
    resource: ResourceRef<'a>,
    accepts: Vec<v2::PaymentRequirements>,
}

/// [`v2::ResourceInfo`]'s wire shape, borrowing the route's fields instead of copying them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceRef<'a> {
    url: &'a str,
    description: &'a str,
    mime_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icon_url: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct V1Body<'a> {
    x402_version: u32,
    error: &'a str,
    accepts: Vec<V1Requirement<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct V1Requirement<'a> {
    scheme: &'static str,
    #[serde(serialize_with = "x402::network::v1_serde::serialize")]
    network: &'a x402::Network,
    max_amount_required: &'a str,
    resource: &'a str,
    description: &'a str,
    mime_type: &'a str,
    /// Left out when absent: the legacy v1 client rejects `"outputSchema": null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    output_schema: Option<&'a RawValue>,
    pay_to: &'a str,
    max_timeout_seconds: u64,
    asset: &'a str,
    extra: Map<String, Value>,
}

/// The v2 `PaymentRequired` JSON for a quote.
pub fn v2_json(quote: &Quote, route: &Route, resource_url: &str, error: &str) -> Vec<u8> {
    v2_json_with(quote, route, resource_url, error, None)
}

/// The v2 JSON with a fresh `sign-in-with-x` challenge next to the route's extensions (a
/// challenge is single-use, so it is the one part of a 402 that differs per answer).
fn v2_json_with(
    quote: &Quote,
    route: &Route,
    resource_url: &str,
    error: &str,
    sign_in: Option<&siwx::Challenge>,
) -> Vec<u8> {
    let base = route
        .v2_extensions
        .get(&quote.method)
        .map_or(empty_object(), |e| &**e);
    let described;
    let description = match &route.description {
        Some(d) => d.as_str(),
        None => {
            described = description(route);
            &described
        }
    };
    let discovery = route.discovery.as_ref();
    let head = V2Head {
        x402_version: x402::X402_VERSION_V2,
        error,
        resource: ResourceRef {
            url: resource_url,
            description,
            mime_type: &route.mime_type,
            service_name: discovery.and_then(|d| d.service_name.as_deref()),
            tags: discovery
                .map(|d| d.tags.as_slice())
                .filter(|t| !t.is_empty()),
            icon_url: discovery.and_then(|d| d.icon_url.as_deref()),
        },
        accepts: quote
            .offers
            .iter()
            .map(|o| v2_requirement(o, quote))
            .collect(),
    };
    let mut out = Vec::with_capacity(2048 + base.get().len());
    serde_json::to_writer(&mut out, &head).expect("402 body serialises");
    // `{…}` → `{…,"extensions":…}`.
    out.pop();
    out.extend_from_slice(b",\"extensions\":");
    match sign_in {
        None => out.extend_from_slice(base.get().as_bytes()),
        Some(c) => c.append_to(base.get(), &mut out),
    }
    out.push(b'}');
    out
}

fn v1_requirement<'a>(
    o: &'a Offer,
    quote: &Quote,
    route: &'a Route,
    resource_url: &'a str,
    description: &'a str,
) -> V1Requirement<'a> {
    V1Requirement {
        scheme: scheme::for_offer(o).name(),
        network: &o.network,
        max_amount_required: &o.amount,
        resource: resource_url,
        description,
        mime_type: &route.mime_type,
        output_schema: route
            .discovery_json
            .get(&quote.method)
            .map(|d| &*d.v1_output_schema),
        pay_to: &o.pay_to,
        max_timeout_seconds: o.max_timeout_seconds,
        asset: &o.asset,
        extra: offer_extra(o, quote),
    }
}

/// The v1 requirement for one offer, as JSON: what a facilitator verifies a v1 payment against.
pub fn v1_requirement_json(
    offer: &Offer,
    quote: &Quote,
    route: &Route,
    resource_url: &str,
) -> Value {
    let description = description(route);
    serde_json::to_value(v1_requirement(
        offer,
        quote,
        route,
        resource_url,
        &description,
    ))
    .expect("requirement serialises")
}

/// The v1 `PaymentRequirementsResponse` JSON for a quote.
pub fn v1_json(quote: &Quote, route: &Route, resource_url: &str, error: &str) -> Vec<u8> {
    let description = description(route);
    // v1 clients know networks only by their legacy names and reject the whole answer on an
    // unknown one, so offers on networks without a v1 name are left out of the v1 body.
    let accepts = quote
        .offers
        .iter()
        .filter(|o| o.network.v1_name().is_some())
        // v1 knows only EIP-3009 (`exact` had one transfer method then).
        // v1 knows `exact` with EIP-3009 only.
        .filter(|o| o.transfer_method.is_default() && o.scheme.is_default())
        .map(|o| v1_requirement(o, quote, route, resource_url, &description))
        .collect();
    let body = V1Body {
        x402_version: x402::X402_VERSION_V1,
        error,
        accepts,
    };
    serde_json::to_vec(&body).expect("402 body serialises")
}

/// Machine-readable reason of a refused payment, sign-in or credit spend (also the 402's
/// `error` where no longer message is given).
pub const REASON: &str = "tariff-reason";

/// The 402 for a refusal: the quote again, `message` as its `error`, and `reason` in
/// `Tariff-Reason`.
pub fn render_refused(
    quote: &Quote,
    route: &Route,
    resource_url: &str,
    reason: &str,
    message: &str,
    sign_in: Option<&siwx::Challenge>,
) -> Response {
    let mut resp = render(quote, route, resource_url, Some(message), sign_in);
    if let Ok(v) = HeaderValue::from_str(reason) {
        resp.headers_mut()
            .insert(HeaderName::from_static(REASON), v);
    }
    resp
}

/// The full 402 response. `error` overrides the default "header is required" messages (for a
/// fresh 402 after a rejected payment).
pub fn render(
    quote: &Quote,
    route: &Route,
    resource_url: &str,
    error: Option<&str>,
    sign_in: Option<&siwx::Challenge>,
) -> Response {
    let v2 = v2_json_with(
        quote,
        route,
        resource_url,
        error.unwrap_or(V2_ERROR),
        sign_in,
    );
    let body = v1_json(quote, route, resource_url, error.unwrap_or(V1_ERROR));
    let header_value = base64::engine::general_purpose::STANDARD.encode(&v2);
    let mut resp = (StatusCode::PAYMENT_REQUIRED, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        HeaderName::from_static(x402::PAYMENT_REQUIRED),
        HeaderValue::from_str(&header_value).expect("base64 is a valid header value"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(x402::CORS_EXPOSE_HEADERS_VALUE),
    );
    h.insert(
        HeaderName::from_static("x-tariff-quote-id"),
        HeaderValue::from_str(quote.id.as_str()).expect("ascii"),
    );
    h.insert(
        HeaderName::from_static("x-tariff-price"),
        HeaderValue::from_str(&quote.price.to_string()).expect("ascii"),
    );
    resp
}
