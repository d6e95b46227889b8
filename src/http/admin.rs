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

use super::credits::check_admin;
use super::error::ApiError;
use super::{AppState, payments_of};
use crate::db::{RuleFigures, quote_stats};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// How far back, in hours (default 24, at most 90 days).
    hours: Option<u64>,
}

fn figures_json(f: &RuleFigures) -> serde_json::Value {
    json!({
        "quotes": f.quotes,
        "quoted_usd_micros": f.quoted_usd_micros,
        "paid_onchain": f.paid_onchain,
        "paid_credits": f.paid_credits,
        "revenue_onchain_usd_micros": f.revenue_onchain_usd_micros,
        "revenue_credits_usd_micros": f.revenue_credits_usd_micros,
        "revenue_usd_micros": f.revenue(),
        "conversion_bps": f.conversion_bps(),
    })
}

/// The figures of one loaded route, rule by rule (zeros for a rule without traffic).
pub struct RouteFigures {
    pub route: String,
    pub methods: Vec<String>,
    pub path: String,
    pub file: Option<String>,
    pub rules: Vec<RuleFigures>,
}

/// Start of the window `hours` back from now, on a minute.
pub fn window_start(state: &AppState, hours: u64) -> i64 {
    let since = state.quotes.clock.now().0.saturating_sub(hours * 3_600_000);
    i64::try_from(since - since % 60_000).unwrap_or(0)
}

/// Every loaded route and rule with its figures since `since_ms`, and the figures of rules no
/// longer loaded.
pub async fn figures(
    state: &AppState,
    since_ms: i64,
) -> Result<(Vec<RouteFigures>, Vec<RuleFigures>), ApiError> {
    let stats = state.quote_stats.as_ref().ok_or_else(|| {
        ApiError::unavailable("stats_unavailable", "this server keeps no database")
    })?;
    let mut all = quote_stats::rule_figures(stats.db(), since_ms)
        .await
        .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?;
    let set = state.rules.current();
    let routes = set
        .routes
        .iter()
        .map(|r| RouteFigures {
            route: r.id.clone(),
            methods: r.methods.clone(),
            path: r.path.as_str().to_string(),
            file: r.file.file_name().map(|f| f.to_string_lossy().to_string()),
            rules: r
                .rules
                .iter()
                .map(|rule| {
                    all.iter()
                        .position(|f| f.route == r.id && f.rule == rule.id)
                        .map(|i| all.swap_remove(i))
                        .unwrap_or_else(|| RuleFigures {
                            route: r.id.clone(),
                            rule: rule.id.clone(),
                            ..RuleFigures::default()
                        })
                })
                .collect(),
        })
        .collect();
    Ok((routes, all))
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
    let since_ms = window_start(&state, hours);
    let (loaded, others) = figures(&state, since_ms).await?;
    let routes: Vec<_> = loaded
        .iter()
        .map(|r| {
            let rules: Vec<_> = r
                .rules
                .iter()
                .map(|f| {
                    let mut v = figures_json(f);
                    v["rule"] = json!(f.rule);
                    v
                })
                .collect();
            json!({
                "route": r.route,
                "methods": r.methods,
                "path": r.path,
                "file": r.file,
                "rules": rules,
            })
        })
        .collect();
    let others: Vec<_> = others
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    method: Option<String>,
    path: String,
    body: Option<serde_json::Value>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

/// `POST /admin/preview {"method", "path", "body", "headers"}`: what the live rules would
/// charge for that request; nothing is quoted or stored.
pub async fn preview(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<PreviewBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let Json(b) = body.map_err(|e| ApiError::bad_request("invalid_preview", e.body_text()))?;
    let req = super::preview::PreviewRequest {
        method: b.method.unwrap_or_else(|| "GET".into()),
        path: b.path,
        body: b.body.map(|v| v.to_string()),
        headers: b.headers.into_iter().collect(),
    };
    let set = state.rules.current();
    match super::preview::preview(&set, state.rules.env(), &req) {
        Ok(p) => Ok(Json(p).into_response()),
        Err(e) => Err(ApiError::bad_request("invalid_preview", e.to_string())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Rows at most (default 50, at most 1000).
    limit: Option<i64>,
    /// Accounts: continue after this id.
    after: Option<String>,
}

fn limit_of(p: &Page) -> Result<i64, ApiError> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", "limit: 1 to 1000"));
    }
    Ok(limit)
}

fn page_of(
    p: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Page, ApiError> {
    p.map(|q| q.0)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// Filters of the transfer list (`/admin/ledger/transfers`, the console's ledger page). Empty
/// values mean "any", as an HTML form sends them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferQuery {
    pub kind: Option<String>,
    pub account: Option<String>,
    /// Continue with transfers older than this `seq` (the previous page's `next_before`).
    pub before: Option<String>,
    pub limit: Option<String>,
}

/// The page of transfers a query asks for; 400 with the field's reason on a bad filter.
pub(super) async fn transfer_page(
    state: &AppState,
    q: &TransferQuery,
) -> Result<crate::ledger::HistoryPage, ApiError> {
    use crate::ledger::{AccountId, HistoryCursor, TransferKind};
    fn given(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
    let kind = given(&q.kind)
        .map(|k| {
            TransferKind::parse(k).ok_or_else(|| {
                ApiError::bad_request("invalid_kind", format!("unknown transfer kind `{k}`"))
            })
        })
        .transpose()?;
    let account = given(&q.account)
        .map(|a| {
            AccountId::new(a).map_err(|e| ApiError::bad_request("invalid_account", e.to_string()))
        })
        .transpose()?;
    let before = given(&q.before)
        .map(|b| {
            b.parse::<i64>()
                .map(HistoryCursor)
                .map_err(|_| ApiError::bad_request("invalid_before", "before: a transfer's seq"))
        })
        .transpose()?;
    let limit = match given(&q.limit) {
        None => 50,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::bad_request("invalid_limit", "limit: 1 to 1000"))?,
    };
    Ok(super::credits::accounts(state)?
        .ledger()
        .transfers(kind, account.as_ref(), before, limit)
        .await?)
}

/// `GET /admin/ledger/transfers?kind=&account=&before=&limit=`: every transfer newest first,
/// filtered by kind and account; `next_before` continues.
pub async fn transfers(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<TransferQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let q = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let page = transfer_page(&state, &q).await?;
    Ok(Json(json!({
        "unit": "usd_micros",
        "transfers": page.transfers,
        "next_before": page.next.map(|c| c.0),
    }))
    .into_response())
}

/// `GET /admin/ledger/holds?limit=`: holds not yet posted or voided, newest first.
pub async fn holds(
    State(state): State<AppState>,
    headers: HeaderMap,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let page = page_of(page)?;
    let limit = limit_of(&page)?;
    let holds = super::credits::accounts(&state)?
        .ledger()
        .open_holds(limit as u32)
        .await?;
    Ok(Json(json!({"unit": "usd_micros", "holds": holds})).into_response())
}

/// `GET /admin/ledger?limit=&after=`: the ledger's check (every balance recomputed) and the
/// accounts with their balances, in id order.
pub async fn ledger(
    State(state): State<AppState>,
    headers: HeaderMap,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let page = page_of(page)?;
    let limit = limit_of(&page)?;
    let ledger = super::credits::accounts(&state)?.ledger();
    let check = ledger.check().await?;
    let rows = ledger
        .accounts(page.after.as_deref().unwrap_or(""), limit)
        .await?;
    let accounts: Vec<_> = rows
        .iter()
        .map(|(a, b)| {
            json!({
                "account": a.id.as_str(),
                "kind": a.kind,
                "owner": a.owner,
                "posted": b.posted(),
                "held": b.held().0,
                "available": b.available(),
            })
        })
        .collect();
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|(a, _)| a.id.to_string()));
    Ok(Json(json!({
        "unit": "usd_micros",
        "check": {
            "clean": check.is_clean(),
            "accounts": check.accounts,
            "posted_sum": check.posted_sum.to_string(),
            "pending_sum": check.pending_sum.to_string(),
            "mismatches": check.mismatches.len(),
            "below_bound": check.below_bound,
            "bad_resolutions": check.bad_resolutions,
        },
        "accounts": accounts,
        "next_after": next.flatten(),
    }))
    .into_response())
}

/// `GET /admin/payments?limit=`: payments by status and the most recent ones (network, asset,
/// payer, amount, price, status, transaction; not the signed authorization).
pub async fn payments(
    State(state): State<AppState>,
    headers: HeaderMap,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let limit = limit_of(&page_of(page)?)?;
    let payments = payments_of(&state)?;
    let db = |e: crate::db::DbError| ApiError::unavailable("database_unavailable", e.to_string());
    let counts: serde_json::Map<String, serde_json::Value> = payments
        .store()
        .counts()
        .await
        .map_err(db)?
        .into_iter()
        .map(|(status, n)| (status, json!(n)))
        .collect();
    let totals = payments.store().totals().await.map_err(db)?;
    let recent: Vec<_> = payments
        .store()
        .recent(limit)
        .await
        .map_err(db)?
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "network": r.network,
                "asset": r.asset,
                "payer": r.payer,
                "pay_to": r.pay_to,
                "amount": r.amount,
                "price_micros": r.price_micros,
                "quote_id": r.quote_id,
                "mode": r.mode,
                "status": r.status,
                "tx_hash": r.tx_hash,
                "error": r.error,
                "topup": r.topup.is_some(),
                "created_at_ms": r.created_at_ms,
                "updated_at_ms": r.updated_at_ms,
            })
        })
        .collect();
    let topups = payments
        .topups()
        .recent(limit)
        .await
        .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?;
    Ok(Json(json!({
        "counts": counts,
        "by_network_and_asset": totals,
        "recent": recent,
        "topups": topups,
    }))
    .into_response())
}

/// `POST /admin/payments/reconcile`: one reconciliation pass now (what runs periodically).
pub async fn reconcile(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::credits::check_admin_write(&state, &headers)?;
    let report = payments_of(&state)?.reconcile_once().await?;
    Ok(Json(json!({
        "examined": report.examined,
        "credited": report.credited,
        "failed": report.failed,
        "still_open": report.still_open,
        "errors": report.errors,
    }))
    .into_response())
}

/// `GET /admin/experiments`: the running price experiment (a shadow rule set) and its
/// comparison per current rule, or `{"running": false}`.
pub async fn experiments(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let Some(shadow) = state.rules.shadow() else {
        return Ok(Json(json!({"running": false})).into_response());
    };
    let rows = super::console::experiment_rows(&state, &shadow).await?;
    Ok(Json(json!({
        "running": true,
        "file": shadow.file,
        "started_at_ms": shadow.started_at.0,
        "unit": "usd_micros",
        "rules": rows_json(&rows),
    }))
    .into_response())
}

fn rows_json(rows: &[super::console::ExperimentRow]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|r| {
            json!({
                "route": r.route,
                "rule": r.rule,
                "compared": r.compared,
                "observed_usd_micros": r.observed_usd_micros,
                "projected_usd_micros": r.projected_usd_micros,
            })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestBody {
    file: String,
    text: String,
    days: u64,
}

/// `POST /admin/experiments/backtest {"file","text","days"}`: re-prices the pricing inputs
/// recorded over the last `days` under the live rules and the candidate (nothing is written).
pub async fn backtest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<BacktestBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    // Reads only, but it burns CPU for seconds: as guarded as a write.
    super::credits::check_admin_write(&state, &headers)?;
    let Json(b) = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    let report = super::backtest::run(&state, &b.file, &b.text, b.days).await?;
    Ok(Json(json!({
        "file": report.file,
        "days": report.days,
        "since_ms": report.since_ms,
        "inputs": report.totals.inputs,
        "not_priced_now": report.totals.not_priced_now,
        "unreadable": report.totals.unreadable,
        "unit": "usd_micros",
        "rules": rows_json(&report.rows),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBody {
    text: String,
}

pub(super) fn edit_failed(e: crate::pricing::edit::EditError) -> ApiError {
    use crate::pricing::edit::EditError;
    match e {
        EditError::UnknownFile(_) => ApiError::not_found("unknown_rule_file", e.to_string()),
        EditError::NoPrevious(_) => ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "no_previous_version",
            e.to_string(),
        ),
        EditError::Invalid(_) => ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "rules_invalid",
            e.to_string(),
        ),
        EditError::Io(_) => ApiError::unavailable("rules_unwritable", e.to_string()),
    }
}

/// `GET /admin/rules/files/{name}`: a rule file's text.
pub async fn rule_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    check_admin(&state, &headers)?;
    let text = state.rules.read_file(&name).map_err(edit_failed)?;
    Ok(Json(json!({
        "file": name,
        "text": text,
        "has_previous": state.rules.has_previous(&name),
    }))
    .into_response())
}

/// `PUT /admin/rules/files/{name} {"text"}`: checked with the whole directory, written, loaded
/// (422 `rules_invalid` with the loader's messages otherwise).
pub async fn save_rule_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: Result<Json<FileBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    super::credits::check_admin_write(&state, &headers)?;
    let Json(b) = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    state.rules.save_file(&name, &b.text).map_err(edit_failed)?;
    Ok(
        Json(json!({"file": name, "rules_generation": state.rules.status().generation}))
            .into_response(),
    )
}

/// `POST /admin/rules/files/{name}/revert`: the previous version back.
pub async fn revert_rule_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    super::credits::check_admin_write(&state, &headers)?;
    state.rules.revert_file(&name).map_err(edit_failed)?;
    Ok(
        Json(json!({"file": name, "rules_generation": state.rules.status().generation}))
            .into_response(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentBody {
    file: String,
    text: String,
}

/// `POST /admin/experiments {"file","text"}`: a candidate version of a file as the shadow.
pub async fn start_experiment(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ExperimentBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    super::credits::check_admin_write(&state, &headers)?;
    let Json(b) = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    state
        .rules
        .start_shadow(&b.file, &b.text, state.quotes.clock.now())
        .map_err(edit_failed)?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(json!({"running": true, "file": b.file})),
    )
        .into_response())
}

/// `DELETE /admin/experiments`: stops the experiment (nothing is written).
pub async fn stop_experiment(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::credits::check_admin_write(&state, &headers)?;
    state.rules.stop_shadow();
    Ok(Json(json!({"running": false})).into_response())
}

/// `POST /admin/experiments/apply`: the candidate becomes the live rules.
pub async fn apply_experiment(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::credits::check_admin_write(&state, &headers)?;
    let Some(file) = state.rules.shadow().map(|s| s.file.clone()) else {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "no_experiment",
            "no experiment is running",
        ));
    };
    state.rules.apply_shadow().map_err(edit_failed)?;
    Ok(
        Json(json!({"applied": file, "rules_generation": state.rules.status().generation}))
            .into_response(),
    )
}
