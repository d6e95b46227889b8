//! Tariff's own operational endpoints: health and metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::quote::QuoteStore;

/// A monotonically increasing counter.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default, Debug)]
pub struct Metrics {
    pub quotes_created: Counter,
    pub quotes_reused: Counter,
    pub free_served: Counter,
    pub pricing_errors: Counter,
    pub store_errors: Counter,
    /// Paid requests served after their payment settled and was credited.
    pub payments_settled: Counter,
    /// Payments refused before settlement (402 with a reason).
    pub payments_refused: Counter,
    /// Settlements that failed, or whose outcome was unknown (left to the reconciler).
    pub settlement_failures: Counter,
}

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

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    let mut out = String::new();
    for (name, help, v) in [
        (
            "tariff_quotes_created_total",
            "Quotes created",
            m.quotes_created.get(),
        ),
        (
            "tariff_quotes_reused_total",
            "402s answered with an already open quote",
            m.quotes_reused.get(),
        ),
        (
            "tariff_free_requests_total",
            "Requests served by a free rule",
            m.free_served.get(),
        ),
        (
            "tariff_pricing_errors_total",
            "Requests whose price could not be computed",
            m.pricing_errors.get(),
        ),
        (
            "tariff_quote_store_errors_total",
            "Quote store failures",
            m.store_errors.get(),
        ),
        (
            "tariff_payments_settled_total",
            "Payments settled and credited",
            m.payments_settled.get(),
        ),
        (
            "tariff_payments_refused_total",
            "Payments refused before settlement",
            m.payments_refused.get(),
        ),
        (
            "tariff_settlement_failures_total",
            "Settlements that failed or whose outcome is unknown",
            m.settlement_failures.get(),
        ),
        (
            "tariff_rules_generation",
            "Successful rule loads",
            state.rules.status().generation,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
