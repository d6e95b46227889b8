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

use crate::pricing::Route;
use crate::quote::{Offer, Quote};
use crate::x402::{self, bazaar, v1, v2};

pub const V2_ERROR: &str = "PAYMENT-SIGNATURE header is required";
pub const V1_ERROR: &str = "X-PAYMENT header is required";

/// `extra` of a requirement: the token's EIP-712 domain and our quote id.
pub fn offer_extra(offer: &Offer, quote: &Quote) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("name".into(), Value::String(offer.eip712_name.clone()));
    extra.insert(
        "version".into(),
        Value::String(offer.eip712_version.clone()),
    );
    extra.insert("quoteId".into(), Value::String(quote.id.to_string()));
    extra
}

/// The v2 requirement for one offer of a quote: what a v2 client must echo in `accepted`.
pub fn v2_requirement(offer: &Offer, quote: &Quote) -> v2::PaymentRequirements {
    v2::PaymentRequirements {
        scheme: "exact".into(),
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

/// The discovery input for the method being asked for, from the route's examples.
fn discovery_input(route: &Route, method: &str) -> Option<bazaar::DiscoveryInput> {
    use bazaar::{BodyType, DiscoveryInput, DiscoveryMethod as M};
    let d = route.discovery.as_ref()?;
    let m = match method {
        "GET" => M::Get,
        "HEAD" => M::Head,
        "DELETE" => M::Delete,
        "POST" => M::Post,
        "PUT" => M::Put,
        "PATCH" => M::Patch,
        _ => return None,
    };
    let mut input = DiscoveryInput::new(m);
    if let Some(Value::Object(q)) = &d.query_params {
        input = input.with_query_params(q.clone());
    }
    if let (true, Some(body)) = (m.takes_body(), &d.body) {
        input = input.with_body(BodyType::Json, body.clone()).ok()?;
    }
    Some(input)
}

fn discovery_output(route: &Route) -> Option<bazaar::DiscoveryOutput> {
    let example = route.discovery.as_ref()?.output_example.clone()?;
    Some(bazaar::DiscoveryOutput {
        example: Some(example),
    })
}

pub fn payment_required_v2(
    quote: &Quote,
    route: &Route,
    resource_url: &str,
) -> v2::PaymentRequired {
    let mut resource = v2::ResourceInfo::new(resource_url);
    resource.description = Some(description(route));
    resource.mime_type = Some(route.mime_type.clone());
    if let Some(d) = &route.discovery {
        resource.service_name = d.service_name.clone();
        resource.tags = (!d.tags.is_empty()).then(|| d.tags.clone());
        resource.icon_url = d.icon_url.clone();
    }
    let accepts = quote
        .offers
        .iter()
        .map(|o| v2_requirement(o, quote))
        .collect();
    let mut required = v2::PaymentRequired::new(resource, accepts).with_error(V2_ERROR);
    if let Some(input) = discovery_input(route, &quote.method) {
        let output = discovery_output(route);
        required.extensions.insert(
            bazaar::BAZAAR.into(),
            bazaar::bazaar_extension(&input, output.as_ref()),
        );
    }
    required
}

pub fn payment_required_v1(
    quote: &Quote,
    route: &Route,
    resource_url: &str,
) -> v1::PaymentRequirementsResponse {
    let output_schema = discovery_input(route, &quote.method).map(|input| {
        let output = discovery_output(route);
        bazaar::v1_output_schema(&input, output.as_ref())
    });
    // v1 clients know networks only by their legacy names and reject the whole answer on an
    // unknown one, so offers on networks without a v1 name are left out of the v1 body.
    let accepts = quote
        .offers
        .iter()
        .filter(|o| o.network.v1_name().is_some())
        .map(|o| v1::PaymentRequirements {
            scheme: "exact".into(),
            network: o.network.clone(),
            max_amount_required: o.amount.clone(),
            resource: resource_url.to_string(),
            description: description(route),
            mime_type: route.mime_type.clone(),
            output_schema: output_schema.clone(),
            pay_to: o.pay_to.clone(),
            max_timeout_seconds: o.max_timeout_seconds,
            asset: o.asset.clone(),
            extra: Some(offer_extra(o, quote)),
        })
        .collect();
    v1::PaymentRequirementsResponse::new(V1_ERROR, accepts)
}

/// The full 402 response. `error` overrides the default "header is required" message (for a
/// fresh 402 after a rejected payment).
pub fn render(quote: &Quote, route: &Route, resource_url: &str, error: Option<&str>) -> Response {
    let mut v2_body = payment_required_v2(quote, route, resource_url);
    let mut v1_body = payment_required_v1(quote, route, resource_url);
    if let Some(e) = error {
        v2_body.error = Some(e.to_string());
        v1_body.error = e.to_string();
    }
    let header_value = x402::encode_header(&v2_body);
    let body = serde_json::to_vec(&v1_body).expect("402 body serialises");
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
