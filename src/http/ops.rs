//! Tariff's own operational endpoints: health and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::quote::QuoteStore;

/// Liveness: cheap, touches nothing. Also the benchmark's baseline route.
pub async fn health() -> &'static str {
    "ok"
}

/// Readiness: the quote store answers and the rules are loaded.
pub async fn ready(State(state): State<AppState>) -> Response {
    let store = state.quotes.store.ping().await;
    let rules = state.rules.status();
    let body = json!({
        "quote_store": state.quotes.store.backend_name(),
        "quote_store_ok": store.is_ok(),
        "rules_generation": rules.generation,
        "rules_reload_error": rules.last_error,
        "routes": state.rules.current().routes.len(),
    });
    let status = if store.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text format (see [`super::metrics`]).
pub async fn metrics(State(state): State<AppState>) -> Response {
    let batched: Vec<(String, u64, u64)> = state
        .payments
        .iter()
        .flat_map(|p| p.settlers())
        .filter_map(|(network, s)| s.batched().map(|(t, n)| (network.to_string(), t, n)))
        .collect();
    let text = state
        .metrics
        .render(state.rules.status().generation, &batched);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
