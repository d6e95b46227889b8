//! Where admitted requests go: the configured upstream API (reverse proxy) or the demo.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use super::demo;
use super::error::ApiError;

#[derive(Clone)]
pub enum Upstream {
    Demo,
    Proxy {
        base: String,
        client: reqwest::Client,
    },
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus the payment headers:
/// the upstream is paid for by Tariff and never needs the buyer's authorization.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "payment-signature",
    "x-payment",
];

impl Upstream {
    pub fn proxy(base: &str, timeout: Duration) -> Result<Upstream, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect from the upstream goes back to the client as is: following it here
            // could take Tariff to hosts the operator never configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Upstream::Proxy {
            base: base.trim_end_matches('/').to_string(),
            client,
        })
    }

    /// Sends the request on. `parsed_body` is the JSON body the gateway already parsed (the
    /// demo uses it; the proxy forwards the original bytes untouched).
    pub async fn forward(
        &self,
        parts: &Parts,
        path: &str,
        query: &[(String, String)],
        body: Bytes,
        parsed_body: Option<&Value>,
    ) -> Result<Response, ApiError> {
        match self {
            Upstream::Demo => {
                let (status, json) = demo::answer(&parts.method, path, query, parsed_body);
                let mut resp = (status, axum::Json(json)).into_response();
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                Ok(resp)
            }
            Upstream::Proxy { base, client } => {
                let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let url = format!("{base}{path_and_query}");
                let mut headers = strip_hop_by_hop(&parts.headers);
                // The agent's Tariff API key pays Tariff; the upstream never needs to see it.
                if super::credits::tariff_key(&parts.headers).is_some() {
                    headers.remove(axum::http::header::AUTHORIZATION);
                }
                // Nor the operator's console session, if the browser sends it along.
                strip_console_cookies(&mut headers);
                if let Some(host) = parts.headers.get(header::HOST) {
                    headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
                }
                let resp = client
                    .request(parts.method.clone(), url)
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "upstream request failed");
                        ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            "upstream_unavailable",
                            "the upstream API did not answer",
                        )
                    })?;
                let status = resp.status();
                let headers = strip_hop_by_hop(resp.headers());
                let bytes = resp.bytes().await.map_err(|e| {
                    tracing::warn!(error = %e, "upstream body failed");
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream_unavailable",
                        "the upstream API answer was cut off",
                    )
                })?;
                let mut out = Response::new(Body::from(bytes));
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                Ok(out)
            }
        }
    }
}

/// Removes Tariff's own console cookies from `Cookie`, keeping the upstream's.
fn strip_console_cookies(h: &mut HeaderMap) {
    let ours = |pair: &str| {
        let name = pair.split('=').next().unwrap_or("").trim();
        name == super::console::session::COOKIE || name == super::console::session::LOGIN_COOKIE
    };
    let kept: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !ours(p))
        .map(str::to_string)
        .collect();
    if h.contains_key(header::COOKIE) {
        h.remove(header::COOKIE);
        if !kept.is_empty()
            && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
        {
            h.insert(header::COOKIE, v);
        }
    }
}

fn strip_hop_by_hop(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(h.len());
    // Connection may name further hop-by-hop headers.
    let named: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for (k, v) in h {
        let name = k.as_str();
        if HOP_BY_HOP.contains(&name) || named.iter().any(|n| n == name) {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_session_never_reaches_the_upstream() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("app=1; tariff_console=v1.2.3.4; theme=dark"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("tariff_console_login=x"),
        );
        strip_console_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "app=1; theme=dark");
        let mut only_ours = HeaderMap::new();
        only_ours.insert(
            header::COOKIE,
            HeaderValue::from_static("tariff_console=v1.2.3.4"),
        );
        strip_console_cookies(&mut only_ours);
        assert!(only_ours.get(header::COOKIE).is_none());
    }
}
