//! The demo upstream: a pretend per-query search API, served in-process when no upstream is
//! configured, so `tariff serve` shows the whole flow on a bare machine. It is reached only
//! through the gateway, i.e. only for requests that are free or paid.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

/// Answers a request the gateway has admitted. `body` is the parsed JSON body, if any.
pub fn answer(
    method: &Method,
    path: &str,
    query: &[(String, String)],
    body: Option<&Value>,
) -> (StatusCode, Value) {
    match (method.as_str(), path) {
        ("GET", "/search") => {
            let q = query
                .iter()
                .find(|(k, _)| k == "q")
                .map_or("", |(_, v)| v.as_str());
            (StatusCode::OK, results(q, &[]))
        }
        ("POST", "/search") => {
            let q = body
                .and_then(|b| b.get("query"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let docs: Vec<String> = body
                .and_then(|b| b.get("documents"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (StatusCode::OK, results(q, &docs))
        }
        ("GET", "/about") => (
            StatusCode::OK,
            json!({
                "service": "Tariff demo search",
                "pricing": "GET /search?q=… or POST /search {query, documents}; see pricing-rules/search.toml",
            }),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            json!({"error": "not_found", "message": "the demo API has no such resource"}),
        ),
    }
}

fn results(query: &str, documents: &[String]) -> Value {
    json!({
        "query": query,
        "documents_compared": documents.len(),
        "results": [
            {"title": format!("Demo result for \u{201c}{query}\u{201d}"), "score": 0.92},
        ],
        "served_by": "tariff-demo",
    })
}
