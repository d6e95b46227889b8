//! The external pricer: for prices only the seller's own code can know, a rule delegates to an
//! HTTP service. Tariff POSTs a summary of the request and expects `{"price": "$0.05"}` (dollars)
//! or `{"amount": 50000}` / `{"amount": "50000"}` (micro-dollars). A timeout, an error status or
//! an unreadable answer falls back to the rule's `fallback` price, so a pricer outage neither
//! blocks sales nor gives requests away.

use serde::Serialize;
use serde_json::Value;

use super::expr::{RequestView, parse_usd};
use super::rules::{Clamp, ExternalPricer};
use crate::money::UsdMicros;

/// The body sent to the pricer.
#[derive(Serialize)]
pub struct PricerRequest<'a> {
    pub route: &'a str,
    pub rule: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub params: &'a std::collections::BTreeMap<String, String>,
    pub query: &'a std::collections::BTreeMap<String, String>,
    /// Only the route's declared price-relevant headers.
    pub headers: &'a std::collections::BTreeMap<String, String>,
    pub body: &'a Value,
    pub body_size: u64,
}

impl<'a> PricerRequest<'a> {
    pub fn new(route: &'a str, rule: &'a str, view: &'a RequestView, body: &'a Value) -> Self {
        PricerRequest {
            route,
            rule,
            method: &view.method,
            path: &view.path,
            params: &view.params,
            query: &view.query,
            headers: &view.headers,
            body,
            body_size: view.body_size,
        }
    }
}

/// Where an external price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSource {
    Pricer,
    Fallback,
}

/// Asks the pricer; any failure yields the fallback (logged). The result is clamped.
pub async fn external_price(
    client: &reqwest::Client,
    pricer: &ExternalPricer,
    clamp: &Clamp,
    request: &PricerRequest<'_>,
) -> (UsdMicros, PriceSource) {
    match ask(client, pricer, request).await {
        Ok(p) => (clamp.apply(p), PriceSource::Pricer),
        Err(reason) => {
            tracing::warn!(url = %pricer.url, %reason, fallback = %pricer.fallback, "external pricer failed; using fallback");
            (clamp.apply(pricer.fallback), PriceSource::Fallback)
        }
    }
}

async fn ask(
    client: &reqwest::Client,
    pricer: &ExternalPricer,
    request: &PricerRequest<'_>,
) -> Result<UsdMicros, String> {
    let resp = client
        .post(&pricer.url)
        .timeout(pricer.timeout)
        .json(request)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    // Bounded read: a pricer answer is a few bytes.
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("reading answer: {e}"))?;
    if bytes.len() > 4096 {
        return Err("answer larger than 4 KiB".into());
    }
    parse_answer(&bytes)
}

pub fn parse_answer(bytes: &[u8]) -> Result<UsdMicros, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("answer is not JSON: {e}"))?;
    match (v.get("price"), v.get("amount")) {
        (Some(Value::String(s)), None) => parse_usd(s)
            .map(UsdMicros)
            .map_err(|e| format!("price: {e}")),
        (None, Some(Value::Number(n))) => n
            .as_u64()
            .map(UsdMicros)
            .ok_or_else(|| format!("amount {n} is not a non-negative integer")),
        (None, Some(Value::String(s)))
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse().map(UsdMicros).map_err(|e| format!("amount: {e}"))
        }
        _ => Err("answer must be {\"price\": \"$x.yy\"} or {\"amount\": <micro-dollars>}".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_exactly() {
        assert_eq!(parse_answer(br#"{"price":"$0.05"}"#), Ok(UsdMicros(50_000)));
        assert_eq!(parse_answer(br#"{"amount":50000}"#), Ok(UsdMicros(50_000)));
        assert_eq!(
            parse_answer(br#"{"amount":"50000"}"#),
            Ok(UsdMicros(50_000))
        );
        for bad in [
            &br#"{"amount":-1}"#[..],
            br#"{"amount":0.5}"#,
            br#"{"amount":"1e3"}"#,
            br#"{"price":"cheap"}"#,
            br#"{"price":"$1","amount":1}"#,
            b"[]",
            b"nope",
        ] {
            assert!(
                parse_answer(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
