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

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use crate::payment::scheme;
use crate::pricing::{Generation, Route, RuleSet};
use crate::quote::{Offer, Quote, QuoteId};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::x402::{self, siwx, v2};

mod template;
pub use template::Templates;

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
    v2_json_with(quote, route, resource_url, error, None).0
}

/// The v2 JSON with a fresh `sign-in-with-x` challenge next to the route's extensions (a
/// challenge is single-use, so it is the one part of a 402 that differs per answer).
/// Also returns where the challenge's declaration starts in it.
fn v2_json_with(
    quote: &Quote,
    route: &Route,
    resource_url: &str,
    error: &str,
    sign_in: Option<&siwx::Challenge>,
) -> (Vec<u8>, usize) {
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
    // The route's extensions come first, so the challenge starts past them.
    let challenge_from = out.len() + base.get().len().saturating_sub(1);
    match sign_in {
        None => out.extend_from_slice(base.get().as_bytes()),
        Some(c) => c.append_to(base.get(), &mut out),
    }
    out.push(b'}');
    (out, challenge_from)
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
    Rendered::new(quote, route, resource_url, error, sign_in, None).response(None)
}

/// A 402 rendered to bytes: what [`render`] answers, kept so that a quote answered again costs
/// a copy instead of a render (see [`Repeats`]).
struct Rendered {
    /// The rules it was rendered under (the route's discovery metadata is part of it).
    rules: Generation,
    url: Box<str>,
    v1_body: Bytes,
    v2_json: Bytes,
    v2_base64: Bytes,
    /// Where the sign-in challenge's [`siwx::Challenge::varying_part`] sits in `v2_json` (only
    /// located for a 402 that is kept).
    challenge_at: Option<Range<usize>>,
    quote_id: HeaderValue,
    price: HeaderValue,
}

impl Rendered {
    /// `kept_under`: the rules of a 402 that is kept for its repeats, which then also records
    /// where its challenge's varying part is (a 402 answered once needs neither).
    fn new(
        quote: &Quote,
        route: &Route,
        resource_url: &str,
        error: Option<&str>,
        sign_in: Option<&siwx::Challenge>,
        kept_under: Option<&Arc<RuleSet>>,
    ) -> Rendered {
        let (v2, challenge_from) = v2_json_with(
            quote,
            route,
            resource_url,
            error.unwrap_or(V2_ERROR),
            sign_in,
        );
        let v1_body = v1_json(quote, route, resource_url, error.unwrap_or(V1_ERROR));
        let v2_base64 = x402::codec::encode_base64(&v2);
        // The nonce opens the varying part, a few fields into the declaration.
        let challenge_at = kept_under.zip(sign_in).and_then(|(_, c)| {
            let part = c.varying_part();
            let at = find_from(&v2, challenge_from, part.as_bytes())?;
            Some(at..at + part.len())
        });
        Rendered {
            rules: kept_under.map(Generation::of).unwrap_or_default(),
            url: resource_url.into(),
            v1_body: v1_body.into(),
            v2_json: v2.into(),
            v2_base64: v2_base64.into(),
            challenge_at,
            quote_id: HeaderValue::from_str(quote.id.as_str()).expect("ascii"),
            price: HeaderValue::from_str(&quote.price.to_string()).expect("ascii"),
        }
    }

    /// The 402 with `fresh`'s nonce and timestamps in place of those it was rendered with;
    /// `None` if `fresh` cannot be put in place (this 402 carries no challenge, or the new
    /// one's varying part has another length: then it is rendered anew).
    fn respond_with(&self, fresh: &siwx::Challenge) -> Option<Response> {
        let at = self.challenge_at.clone()?;
        let part = fresh.varying_part();
        (part.len() == at.len()).then(|| self.response(Some(part.as_bytes())))
    }

    /// The 402 as rendered, or with `varying` in place of the challenge's varying part.
    fn response(&self, varying: Option<&[u8]>) -> Response {
        let header = match varying {
            None => self.v2_base64.clone(),
            Some(part) => self.patched_base64(part),
        };
        respond(
            self.v1_body.clone(),
            header,
            self.quote_id.clone(),
            self.price.clone(),
        )
    }

    /// The base64 of `v2_json` with `part` in place of the bytes at `challenge_at` (same
    /// length), re-encoding only the 3-byte groups that overlap it: base64 maps every whole
    /// group of 3 bytes to 4 characters on its own, so the rest is copied as it is.
    fn patched_base64(&self, part: &[u8]) -> Bytes {
        let at = self.challenge_at.clone().expect("called with a challenge");
        debug_assert_eq!(part.len(), at.len());
        let json = &self.v2_json;
        let from = at.start / 3 * 3;
        let to = (at.end.div_ceil(3) * 3).min(json.len());
        let mut groups = Vec::with_capacity(to - from);
        groups.extend_from_slice(&json[from..at.start]);
        groups.extend_from_slice(part);
        groups.extend_from_slice(&json[at.end..to]);
        // Past the last whole group the encoding ends with its padding, which `encode` writes.
        let end = if to == json.len() {
            self.v2_base64.len()
        } else {
            to / 3 * 4
        };
        let b64 = &self.v2_base64;
        let mut out = BytesMut::with_capacity(b64.len());
        out.extend_from_slice(&b64[..from / 3 * 4]);
        let encoded = x402::codec::encode_base64(&groups);
        out.extend_from_slice(encoded.as_bytes());
        out.extend_from_slice(&b64[end..]);
        out.freeze()
    }
}

/// A 402: the v1 body, the v2 `PAYMENT-REQUIRED` header (base64) and Tariff's own headers.
fn respond(
    v1_body: Bytes,
    v2_base64: Bytes,
    quote_id: HeaderValue,
    price: HeaderValue,
) -> Response {
    let mut resp = (StatusCode::PAYMENT_REQUIRED, v1_body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        HeaderName::from_static(x402::PAYMENT_REQUIRED),
        HeaderValue::from_maybe_shared(v2_base64).expect("base64 is a valid header value"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(x402::CORS_EXPOSE_HEADERS_VALUE),
    );
    h.insert(HeaderName::from_static("x-tariff-quote-id"), quote_id);
    h.insert(HeaderName::from_static("x-tariff-price"), price);
    resp
}

/// The first occurrence of `needle` in `hay` at or after `from`.
fn find_from(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let last = hay.len().checked_sub(needle.len())?;
    (from..=last).find(|&i| hay[i] == first && &hay[i..i + needle.len()] == needle)
}

/// The 402s of quotes that were answered more than once, kept rendered: a client polling an
/// unpaid resource, or many agents asking the same question, get the stored bytes with only
/// the sign-in challenge's nonce and timestamps replaced. A quote is immutable, so its 402
/// changes only with the resource URL the client used and with the rules (the route's
/// discovery metadata); both are checked on every use. Only repeats are kept (a flood of
/// distinct requests never enters), and at most [`REPEATS`] of them. A new quote's 402 comes
/// from its route's [`Templates`].
#[derive(Default)]
pub struct Repeats {
    map: Mutex<HashMap<QuoteId, Arc<Rendered>>>,
    pub templates: Templates,
}

/// What the gateway asks [`Repeats::answer`] for: the 402 of `quote`, priced by `rules` on
/// `route`, for a client that used `resource_url` and, when it may sign in, with the challenge.
pub struct Asked<'a> {
    pub rules: &'a Arc<RuleSet>,
    pub quote: &'a Quote,
    /// Whether this request created the quote (false: a repeat found it open).
    pub created: bool,
    pub route: &'a Route,
    /// The absolute URL the client used; it ends with `path_and_query`.
    pub resource_url: &'a str,
    pub path_and_query: &'a str,
    pub sign_in: Option<&'a siwx::Challenge>,
}

/// How many repeated 402s are kept (each ~7 KB: the v2 JSON, its base64 and the v1 body).
pub const REPEATS: usize = 256;

impl Repeats {
    /// The 402 for a quote from the gateway (no error message): from the stored bytes when the
    /// quote was answered before (`created` false) under the same rules and URL, else rendered
    /// (and kept, for a repeat); a new quote's from its template.
    pub fn answer(&self, asked: &Asked<'_>) -> Response {
        let &Asked {
            rules,
            quote,
            created,
            route,
            resource_url,
            sign_in,
            ..
        } = asked;
        if created {
            return match template::At::new(asked) {
                Some(at) => self.templates.answer(&at),
                None => render(quote, route, resource_url, None, sign_in),
            };
        }
        let kept = self.lock().get(&quote.id).cloned();
        if let Some(r) = kept
            && r.rules.is(rules)
            && *r.url == *resource_url
        {
            let resp = match sign_in {
                None if r.challenge_at.is_none() => Some(r.response(None)),
                None => None,
                Some(c) => r.respond_with(c),
            };
            if let Some(resp) = resp {
                return resp;
            }
        }
        let rendered = Rendered::new(quote, route, resource_url, None, sign_in, Some(rules));
        let resp = rendered.response(None);
        if sign_in.is_some() && rendered.challenge_at.is_none() {
            // Its challenge was not found (it cannot be): not kept.
            return resp;
        }
        let mut map = self.lock();
        if map.len() >= REPEATS
            && let Some(evicted) = map.keys().next().cloned()
        {
            map.remove(&evicted);
        }
        map.insert(quote.id.clone(), Arc::new(rendered));
        resp
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QuoteId, Arc<Rendered>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many are kept (for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
