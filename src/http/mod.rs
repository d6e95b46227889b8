//! HTTP: axum routes. `app(state)` is the one router, used by `main` and by the tests.

pub mod credits;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod ops;
pub mod paid;
pub mod payment_required;
pub mod rate_limit;
pub mod request;
pub mod sign_in;
pub mod topup;
pub mod upstream;

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

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
    /// Agent accounts and the credits ledger (absent when running without a database).
    pub accounts: Option<Accounts>,
    /// On-chain payments (absent when running without a database).
    pub payments: Option<Arc<crate::payment::Payments>>,
    /// Bounds `POST /accounts` (each account is a durable row).
    pub signups: rate_limit::TokenBucket,
    /// Top-up valuers, per network with `[[topup]]` configured.
    pub topup: topup::Valuers,
    pub metrics: ops::Metrics,
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
        .route("/top-up", post(topup::top_up))
        .route("/top-up/quote", get(topup::quote))
        .route("/top-up/transfer", post(topup::transfer))
        .fallback(gateway::handle)
        .with_state(state)
}
