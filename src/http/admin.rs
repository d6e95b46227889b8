//! The operator's JSON API (`/admin/…`, admin token): what each pricing rule earns.
//!
//! Figures come from the per-minute aggregates (`quote_stats`, `rule_revenue`) written in
//! batches, never from scanning the ledger on a page view; they lag by at most one flush.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::credits::check_admin;
use super::error::ApiError;
use crate::db::{RuleFigures, quote_stats};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// How far back, in hours (default 24, at most 90 days).
    hours: Option<u64>,
}

/// Paid requests per quote, in basis points (integers only; 0 without quotes).
fn conversion_bps(f: &RuleFigures) -> i64 {
    if f.quotes <= 0 {
        return 0;
    }
    (f.paid_onchain + f.paid_credits).saturating_mul(10_000) / f.quotes
}

fn figures_json(f: &RuleFigures) -> serde_json::Value {
    json!({
        "quotes": f.quotes,
        "quoted_usd_micros": f.quoted_usd_micros,
        "paid_onchain": f.paid_onchain,
        "paid_credits": f.paid_credits,
        "revenue_onchain_usd_micros": f.revenue_onchain_usd_micros,
        "revenue_credits_usd_micros": f.revenue_credits_usd_micros,
        "revenue_usd_micros": f.revenue_onchain_usd_micros + f.revenue_credits_usd_micros,
        "conversion_bps": conversion_bps(f),
    })
}

/// `GET /admin/rules?hours=24`: every loaded route and rule with its quotes, paid requests,
/// conversion and revenue over the window, the rules' reload status, and figures of rules no
/// longer loaded (renamed or removed within the window).
pub async fn rules(
    State(state): State<AppState>,
    headers: HeaderMap,
    window: Result<Query<Window>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let Query(window) =
        window.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let hours = window.hours.unwrap_or(24);
    if !(1..=90 * 24).contains(&hours) {
        return Err(ApiError::bad_request(
            "invalid_window",
            "hours: 1 to 2160 (90 days)",
        ));
    }
    let stats = state.quote_stats.as_ref().ok_or_else(|| {
        ApiError::unavailable("stats_unavailable", "this server keeps no database")
    })?;
    let now = state.quotes.clock.now();
    let since = now.0.saturating_sub(hours * 3_600_000);
    let since_ms = i64::try_from(since - since % 60_000).unwrap_or(0);
    let mut figures = quote_stats::rule_figures(stats.db(), since_ms)
        .await
        .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?;
    let set = state.rules.current();
    let routes: Vec<_> = set
        .routes
        .iter()
        .map(|r| {
            let rules: Vec<_> = r
                .rules
                .iter()
                .map(|rule| {
                    let found = figures
                        .iter()
                        .position(|f| f.route == r.id && f.rule == rule.id)
                        .map(|i| figures.swap_remove(i))
                        .unwrap_or_default();
                    let mut v = figures_json(&found);
                    v["rule"] = json!(rule.id);
                    v
                })
                .collect();
            json!({
                "route": r.id,
                "methods": r.methods,
                "path": r.path.as_str(),
                "file": r.file.file_name().map(|f| f.to_string_lossy().to_string()),
                "rules": rules,
            })
        })
        .collect();
    let others: Vec<_> = figures
        .iter()
        .map(|f| {
            let mut v = figures_json(f);
            v["route"] = json!(f.route);
            v["rule"] = json!(f.rule);
            v
        })
        .collect();
    let status = state.rules.status();
    Ok(Json(json!({
        "since_ms": since_ms,
        "hours": hours,
        "unit": "usd_micros",
        "rules_generation": status.generation,
        "last_reload_error": status.last_error,
        "routes": routes,
        "no_longer_loaded": others,
    }))
    .into_response())
}
