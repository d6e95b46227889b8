//! HTTP: axum routes. `app(state)` is the one router, used by `main` and by the tests.

pub mod admin;
pub mod backtest;
pub mod console;
pub mod credits;
pub mod decisions;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod metrics;
pub mod ops;
pub mod paid;
pub mod payment_required;
pub mod preview;
pub mod rate_limit;
pub mod request;
pub mod serve;
pub mod sign_in;
pub mod topup;
pub mod upstream;

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tracing::Instrument;

use crate::accounts::Accounts;
use crate::config::Config;
use crate::db::QuoteStats;
use crate::pricing::RulesHandle;
use crate::quote::QuoteEngine;
pub use error::ApiError;
pub use upstream::Upstream;

/// Everything a request needs, shared.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

pub struct StateInner {
    pub config: Arc<Config>,
    pub rules: RulesHandle,
    pub quotes: QuoteEngine,
    pub upstream: Upstream,
    /// For outbound calls Tariff makes itself (external pricer).
    pub http_client: reqwest::Client,
    /// Quotes issued per minute and rule (absent when running without a database).
    pub quote_stats: Option<QuoteStats>,
    /// What rules may read of past requests, for backtests (`[backtest] record = true`).
    pub pricing_inputs: Option<crate::db::pricing_inputs::InputLog>,
    /// Agent accounts and the credits ledger (absent when running without a database).
    pub accounts: Option<Accounts>,
    /// On-chain payments (absent when running without a database).
    pub payments: Option<Arc<crate::payment::Payments>>,
    /// Bounds `POST /accounts` (each account is a durable row).
    pub signups: rate_limit::TokenBucket,
    /// Top-up valuers, per network with `[[topup]]` configured.
    pub topup: topup::Valuers,
    pub metrics: metrics::Metrics,
    /// 402s of quotes answered more than once, kept rendered.
    pub repeats: payment_required::Repeats,
    /// Pricing decisions of repeated requests, per rules generation.
    pub decisions: decisions::Decisions,
}

impl AppState {
    pub fn new(inner: StateInner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/accounts", post(credits::open_account))
        .route("/accounts/me", get(credits::me))
        .route("/accounts/wallet", post(sign_in::wallet_key))
        .route("/accounts/me/wallets", post(sign_in::link_wallet))
        .route("/admin/credits", post(credits::grant))
        .route("/admin/rules", get(admin::rules))
        .route("/admin/preview", post(admin::preview))
        .route("/admin/ledger", get(admin::ledger))
        .route("/admin/ledger/transfers", get(admin::transfers))
        .route("/admin/ledger/holds", get(admin::holds))
        .route(
            "/admin/experiments",
            get(admin::experiments)
                .post(admin::start_experiment)
                .delete(admin::stop_experiment),
        )
        .route("/admin/experiments/apply", post(admin::apply_experiment))
        .route("/admin/experiments/backtest", post(admin::backtest))
        .route(
            "/admin/rules/files/{name}",
            get(admin::rule_file).put(admin::save_rule_file),
        )
        .route(
            "/admin/rules/files/{name}/revert",
            post(admin::revert_rule_file),
        )
        .route("/admin/payments", get(admin::payments))
        .route("/admin/payments/reconcile", post(admin::reconcile))
        .route("/console", get(console::overview))
        .route(
            "/console/login",
            get(console::login_form).post(console::login),
        )
        .route("/console/logout", post(console::logout))
        .route("/console/rules", get(console::rules))
        .route("/console/rules/preview", post(console::preview))
        .route("/console/rules/edit", get(console::edit_form))
        .route("/console/rules/save", post(console::save))
        .route("/console/rules/revert", post(console::revert))
        .route("/console/experiments", get(console::experiments))
        .route(
            "/console/experiments/start",
            post(console::start_experiment),
        )
        .route("/console/experiments/stop", post(console::stop_experiment))
        .route("/console/experiments/backtest", post(console::backtest))
        .route(
            "/console/experiments/apply",
            post(console::apply_experiment),
        )
        .route("/console/ledger", get(console::ledger))
        .route("/console/ledger/grant", post(console::grant))
        .route("/console/payments", get(console::payments))
        .route("/console/payments/reconcile", post(console::reconcile))
        .route("/top-up", post(topup::top_up))
        .route("/top-up/quote", get(topup::quote))
        .route("/top-up/transfer", post(topup::transfer))
        .fallback(gateway::handle)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The payment records, or 503 on a server without a database.
pub(crate) fn payments_of(state: &AppState) -> Result<&Arc<crate::payment::Payments>, ApiError> {
    state.payments.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "payments_unavailable",
            "this server keeps no payment records (no database)",
        )
    })
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A caller's request id worth keeping (a proxy's, say): short and plain.
fn incoming_request_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(&REQUEST_ID)?.to_str().ok()?;
    let plain = (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    plain.then(|| v.to_string())
}

/// Every answer: a request id (the caller's, or a fresh one) on every log line written while
/// answering and in `X-Request-Id`, and its latency in the histogram, by handler and status.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let handler = req.extensions().get::<MatchedPath>().cloned();
    let id = incoming_request_id(req.headers())
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let span = tracing::info_span!("request", request_id = %id);
    let mut resp = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let handler = handler.as_ref().map_or("gateway", |p| p.as_str());
    let status = resp.status().as_u16();
    state
        .metrics
        .observe(handler, status, elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(
            handler,
            status,
            micros = elapsed.as_micros() as u64,
            "answered"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}
