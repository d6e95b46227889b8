//! "What would this request cost": a request (method, path with query, body, headers) priced
//! by a rule set without quoting or storing anything. The same for `tariff quote`, the
//! console's preview form and `POST /admin/preview`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::money::UsdMicros;
use crate::pricing::Decision;
use crate::pricing::expr::{EvalInput, ExprEnv, RequestView};
use crate::pricing::rules::RuleSet;
use crate::quote::json::parse_strict;

/// A request to price.
#[derive(Clone, Debug, Default)]
pub struct PreviewRequest {
    pub method: String,
    /// Path with an optional query string: `/search?q=bitcoin+price`.
    pub path: String,
    pub body: Option<String>,
    /// `name: value` pairs; only the route's declared headers count.
    pub headers: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Preview {
    /// No route prices it (what happens then is the `unpriced` policy).
    NoRoute {
        method: String,
        path: String,
    },
    Free {
        route: String,
        rule: String,
    },
    Priced {
        route: String,
        rule: String,
        price: UsdMicros,
        price_usd: String,
    },
    /// Priced by the seller's own pricer at request time.
    External {
        route: String,
        rule: String,
        pricer: String,
        fallback: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("path: {0}")]
    Path(String),
    #[error("body: {0}")]
    Body(String),
    #[error("header `{0}`: expected `name: value`")]
    Header(String),
    #[error("pricing failed: {0}")]
    Pricing(String),
}

pub fn preview(
    set: &RuleSet,
    env: &ExprEnv,
    req: &PreviewRequest,
) -> Result<Preview, PreviewError> {
    let uri: axum::http::Uri = req
        .path
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| PreviewError::Path(e.to_string()))?;
    let path = super::request::canonical_path(&uri).map_err(|e| PreviewError::Path(e.message))?;
    let (_, query) =
        super::request::parse_query(&uri).map_err(|e| PreviewError::Path(e.message))?;
    let method = req.method.trim().to_ascii_uppercase();
    let Some((route, params)) = set.match_route(&method, &path) else {
        return Ok(Preview::NoRoute { method, path });
    };
    let body = match req.body.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
        Some(b) => parse_strict(b.as_bytes()).map_err(|e| PreviewError::Body(e.to_string()))?,
        None => Value::Object(Default::default()),
    };
    let mut headers = BTreeMap::new();
    for (k, v) in &req.headers {
        let k = k.trim().to_ascii_lowercase();
        if k.is_empty() {
            return Err(PreviewError::Header(format!("{k}:{v}")));
        }
        if route.headers.contains(&k) {
            headers.insert(k, v.trim().to_string());
        }
    }
    let view = RequestView {
        method,
        path,
        params,
        query,
        headers,
        body_size: req.body.as_ref().map_or(0, |b| b.len() as u64),
    };
    let input = EvalInput {
        request: &view,
        body: &body,
        response: None,
    };
    let route_id = route.id.clone();
    Ok(
        match route
            .decide(env, &input)
            .map_err(|e| PreviewError::Pricing(e.to_string()))?
        {
            Decision::Free { rule } => Preview::Free {
                route: route_id,
                rule,
            },
            Decision::Priced { rule, price } => Preview::Priced {
                route: route_id,
                rule,
                price,
                price_usd: price.to_string(),
            },
            Decision::External { rule, pricer, .. } => Preview::External {
                route: route_id,
                rule,
                pricer: pricer.url.clone(),
                fallback: pricer.fallback.to_string(),
            },
        },
    )
}
