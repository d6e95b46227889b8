//! The operator's console: server-rendered pages behind a login (the admin token → a signed,
//! expiring session cookie, HttpOnly and SameSite=Strict; a CSRF token in every form). No
//! script, no CDN: the styles are inline and the charts are SVG, so it works offline.

pub mod html;
pub mod session;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::admin::TransferQuery;
use super::error::ApiError;
use crate::db::quote_stats;
use session::{COOKIE, LOGIN_COOKIE, Session};

/// The session of a request, if it carries a valid one.
pub fn session_of(state: &AppState, headers: &HeaderMap) -> Option<Session> {
    let token = state.config.admin_token.as_ref()?;
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    let value = session::cookie(cookies, COOKIE)?;
    session::check(token.expose(), value, state.quotes.clock.now())
}

fn enabled(state: &AppState) -> Result<&str, ApiError> {
    state
        .config
        .admin_token
        .as_ref()
        .map(|t| t.expose().as_str())
        .ok_or_else(|| ApiError::not_found("admin_disabled", "no admin token is configured"))
}

/// `Secure` when the console is served over HTTPS (a `public_url` that says so).
fn secure(state: &AppState) -> &'static str {
    match &state.config.public_url {
        Some(u) if u.starts_with("https://") => "; Secure",
        _ => "",
    }
}

/// A 303 to `to` (a page of this console).
fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn page(status: StatusCode, body: String) -> Response {
    let mut resp = (status, Html(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Nothing here loads from elsewhere, runs script, or may be framed.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// `GET /console/login`: the form, with a fresh anti-forgery value in a cookie and a field.
pub async fn login_form(State(state): State<AppState>) -> Result<Response, ApiError> {
    enabled(&state)?;
    Ok(login_page(&state, StatusCode::OK, None))
}

fn login_page(state: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    let nonce = format!("{:032x}", rand::random::<u128>());
    let mut resp = page(status, html::login(&nonce, error));
    let cookie = format!(
        "{LOGIN_COOKIE}={nonce}; HttpOnly; SameSite=Strict; Path=/console; Max-Age=600{}",
        secure(state)
    );
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("ASCII"),
    );
    resp
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    csrf: String,
}

/// `POST /console/login`: the admin token for a session.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    let expected = enabled(&state)?;
    let sent = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| session::cookie(c, LOGIN_COOKIE));
    if !sent.is_some_and(|c| session::same_token(c, &form.csrf)) {
        return Ok(login_page(
            &state,
            StatusCode::FORBIDDEN,
            Some("The form expired or did not come from this console; try again."),
        ));
    }
    if !session::same_token(&form.token, expected) {
        return Ok(login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
        ));
    }
    let (value, _) = session::issue(expected, state.quotes.clock.now());
    let mut resp = redirect("/console");
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
            session::TTL_SECS,
            secure(&state)
        ))
        .expect("ASCII"),
    );
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{LOGIN_COOKIE}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0"
        ))
        .expect("ASCII"),
    );
    Ok(resp)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// A console page's session, as an extractor: without one, a 303 to the login form (a 404 when
/// the console is off).
pub struct Console(pub Session);

impl axum::extract::FromRequestParts<AppState> for Console {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Response> {
        if let Err(off) = enabled(state) {
            return Err(off.into_response());
        }
        session_of(state, &parts.headers)
            .map(Console)
            .ok_or_else(|| redirect("/console/login"))
    }
}

/// The refusal of a form that does not carry its session's token (another site's doing).
fn forged(s: &Session, csrf: &str) -> Option<Response> {
    (!session::same_token(&s.csrf, csrf)).then(|| {
        page(
            StatusCode::FORBIDDEN,
            html::message(
                "Refused",
                "This form did not come from your console session.",
            ),
        )
    })
}

/// `POST /console/logout`.
pub async fn logout(Console(s): Console, Form(form): Form<CsrfForm>) -> Result<Response, ApiError> {
    if let Some(refused) = forged(&s, &form.csrf) {
        return Ok(refused);
    }
    let mut resp = redirect("/console/login");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        ))
        .expect("ASCII"),
    );
    Ok(resp)
}

/// `GET /console`: the overview (what each rule earned in the last 24 hours).
pub async fn overview(
    State(state): State<AppState>,
    Console(s): Console,
) -> Result<Response, ApiError> {
    let since_ms = super::admin::window_start(&state, 24);
    let figures = match &state.quote_stats {
        Some(stats) => quote_stats::rule_figures(stats.db(), since_ms)
            .await
            .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?,
        None => Vec::new(),
    };
    let hourly = match &state.quote_stats {
        Some(stats) => quote_stats::revenue_by_hour(stats.db(), since_ms)
            .await
            .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?,
        None => Vec::new(),
    };
    let open_payments = match &state.payments {
        Some(p) => p
            .store()
            .counts()
            .await
            .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?
            .iter()
            .filter(|(status, _)| matches!(status.as_str(), "claimed" | "submitted" | "settled"))
            .map(|(_, n)| *n)
            .sum(),
        None => 0,
    };
    let status = state.rules.status();
    let extras = html::OverviewExtras {
        latency_402: state.metrics.latency_quantiles("gateway", "402"),
        settlement_failures: state
            .metrics
            .total("tariff_payments_total", Some(("outcome", "failed"))),
        open_payments,
        hourly,
    };
    Ok(page(
        StatusCode::OK,
        html::overview(
            &s,
            &figures,
            &extras,
            status.generation,
            status.last_error.as_deref(),
        ),
    ))
}

#[derive(Deserialize, Default)]
pub struct RulesQuery {
    saved: Option<String>,
    reverted: Option<String>,
}

/// `GET /console/rules`: the rules with their figures, the reload status, the files (edit,
/// revert) and the preview form.
pub async fn rules(
    State(state): State<AppState>,
    Console(s): Console,
    q: Result<axum::extract::Query<RulesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = q.map(|q| q.0).unwrap_or_default();
    let notice = match (q.saved, q.reverted) {
        (Some(f), _) => Some(format!("Saved {f}; the new rules are serving.")),
        (None, Some(f)) => Some(format!("{f} is back to its previous version.")),
        _ => None,
    };
    rules_page(&state, &s, notice.as_deref(), None, None).await
}

async fn rules_page(
    state: &AppState,
    s: &Session,
    notice: Option<&str>,
    form: Option<&PreviewForm>,
    result: Option<String>,
) -> Result<Response, ApiError> {
    let since = super::admin::window_start(state, 24);
    let (loaded, _) = super::admin::figures(state, since).await?;
    let files: Vec<(String, bool)> = state
        .rules
        .file_names()
        .into_iter()
        .map(|f| {
            let prev = state.rules.has_previous(&f);
            (f, prev)
        })
        .collect();
    let status = state.rules.status();
    Ok(page(
        StatusCode::OK,
        html::rules(&html::RulesView {
            session: s,
            routes: &loaded,
            generation: status.generation,
            reload_error: status.last_error.as_deref(),
            files: &files,
            notice,
            preview_form: form.map(|f| {
                (
                    f.method.as_str(),
                    f.path.as_str(),
                    f.body.as_str(),
                    f.headers.as_str(),
                )
            }),
            preview_result: result.as_deref(),
        }),
    ))
}

#[derive(Deserialize)]
pub struct PreviewForm {
    csrf: String,
    method: String,
    path: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    headers: String,
}

/// `POST /console/rules/preview`: the price of a request under the live rules.
pub async fn preview(
    State(state): State<AppState>,
    Console(s): Console,
    Form(form): Form<PreviewForm>,
) -> Result<Response, ApiError> {
    if let Some(refused) = forged(&s, &form.csrf) {
        return Ok(refused);
    }
    let mut pairs = Vec::new();
    let mut bad = None;
    for line in form.headers.lines().filter(|l| !l.trim().is_empty()) {
        match line.split_once(':') {
            Some((k, v)) => pairs.push((k.to_string(), v.to_string())),
            None => bad = Some(format!("header `{line}`: expected `name: value`")),
        }
    }
    let req = super::preview::PreviewRequest {
        method: form.method.clone(),
        path: form.path.clone(),
        body: Some(form.body.clone()),
        headers: pairs,
    };
    let set = state.rules.current();
    let result = match bad {
        Some(b) => b,
        None => match super::preview::preview(&set, state.rules.env(), &req) {
            Ok(super::preview::Preview::Priced {
                route, rule, price, ..
            }) => format!("route {route}, rule {rule}: {price}"),
            Ok(super::preview::Preview::Free { route, rule }) => {
                format!("route {route}, rule {rule}: free")
            }
            Ok(super::preview::Preview::External {
                route,
                rule,
                pricer,
                ..
            }) => format!("route {route}, rule {rule}: priced by {pricer} at request time"),
            Ok(super::preview::Preview::NoRoute { method, path }) => {
                format!("no route prices {method} {path}")
            }
            Err(e) => e.to_string(),
        },
    };
    rules_page(&state, &s, None, Some(&form), Some(result)).await
}

#[derive(Deserialize)]
pub struct FileQuery {
    file: String,
}

/// `GET /console/rules/edit?file=…`: a rule file in an editor.
pub async fn edit_form(
    State(state): State<AppState>,
    Console(s): Console,
    axum::extract::Query(q): axum::extract::Query<FileQuery>,
) -> Result<Response, ApiError> {
    match state.rules.read_file(&q.file) {
        Ok(text) => Ok(page(StatusCode::OK, html::editor(&s, &q.file, &text, None))),
        Err(e) => Ok(page(
            StatusCode::NOT_FOUND,
            html::message("Not found", &e.to_string()),
        )),
    }
}

#[derive(Deserialize)]
pub struct SaveForm {
    csrf: String,
    file: String,
    text: String,
}

/// `POST /console/rules/save`: checked with the whole directory, written, loaded.
pub async fn save(
    State(state): State<AppState>,
    Console(s): Console,
    Form(form): Form<SaveForm>,
) -> Result<Response, ApiError> {
    if let Some(refused) = forged(&s, &form.csrf) {
        return Ok(refused);
    }
    // Browsers send textarea lines with CRLF.
    let text = form.text.replace("\r\n", "\n");
    match state.rules.save_file(&form.file, &text) {
        Ok(()) => {
            tracing::info!(file = %form.file, "rule file saved from the console");
            Ok(redirect(&format!(
                "/console/rules?saved={}",
                urlencode(&form.file)
            )))
        }
        Err(e @ crate::pricing::edit::EditError::UnknownFile(_)) => Ok(page(
            StatusCode::NOT_FOUND,
            html::message("Not found", &e.to_string()),
        )),
        Err(e) => Ok(page(
            StatusCode::UNPROCESSABLE_ENTITY,
            html::editor(&s, &form.file, &text, Some(&e.to_string())),
        )),
    }
}

/// `POST /console/rules/revert`: the previous version of a file back.
pub async fn revert(
    State(state): State<AppState>,
    Console(s): Console,
    Form(form): Form<RevertForm>,
) -> Result<Response, ApiError> {
    if let Some(refused) = forged(&s, &form.csrf) {
        return Ok(refused);
    }
    match state.rules.revert_file(&form.file) {
        Ok(()) => {
            tracing::info!(file = %form.file, "rule file reverted from the console");
            Ok(redirect(&format!(
                "/console/rules?reverted={}",
                urlencode(&form.file)
            )))
        }
        Err(e) => Ok(page(
            StatusCode::CONFLICT,
            html::message("Not reverted", &e.to_string()),
        )),
    }
}

#[derive(Deserialize)]
pub struct RevertForm {
    csrf: String,
    file: String,
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET /console/ledger`: the ledger's check, accounts and balances, a grant form.
pub async fn ledger(
    State(state): State<AppState>,
    Console(s): Console,
    q: Result<axum::extract::Query<TransferQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = q.map(|q| q.0).unwrap_or_default();
    ledger_page(&state, &s, StatusCode::OK, None, &q).await
}

async fn ledger_page(
    state: &AppState,
    s: &Session,
    status: StatusCode,
    notice: Option<&str>,
    q: &TransferQuery,
) -> Result<Response, ApiError> {
    let ledger = super::credits::accounts(state)?.ledger();
    let check = ledger.check().await?;
    let accounts = ledger.accounts("", 500).await?;
    let holds = ledger.open_holds(100).await?;
    // A bad filter is said on the page, which then lists every transfer.
    let (transfers, status, filter_error) = match super::admin::transfer_page(state, q).await {
        Ok(p) => (p, status, None),
        Err(e) if e.status == StatusCode::BAD_REQUEST => (
            super::admin::transfer_page(state, &TransferQuery::default()).await?,
            StatusCode::BAD_REQUEST,
            Some(e.message),
        ),
        Err(e) => return Err(e),
    };
    Ok(page(
        status,
        html::ledger(
            s,
            &html::LedgerView {
                check: &check,
                accounts: &accounts,
                holds: &holds,
                transfers: &transfers,
                filter: q,
                filter_error: filter_error.as_deref(),
            },
            notice,
        ),
    ))
}

#[derive(Deserialize)]
pub struct GrantForm {
    csrf: String,
    id: String,
    account: String,
    amount: String,
    reason: String,
}

/// `POST /console/ledger/grant`: credits granted (or taken back) with a reason, once per id.
pub async fn grant(
    State(state): State<AppState>,
    Console(s): Console,
    Form(form): Form<GrantForm>,
) -> Result<Response, ApiError> {
    if let Some(refused) = forged(&s, &form.csrf) {
        return Ok(refused);
    }
    let outcome = match (
        form.amount.trim().parse::<i64>(),
        crate::ledger::AccountId::new(form.account.trim()),
    ) {
        (Ok(amount), Ok(account)) => super::credits::accounts(&state)?
            .adjust(form.id.trim(), account, amount, form.reason.clone())
            .await
            .map(|(t, b)| {
                format!(
                    "Granted ({}): the balance of {} is now {} micro-dollars.",
                    t.id.as_str(),
                    b.account.as_str(),
                    b.available()
                )
            })
            .map_err(|e| e.to_string()),
        (Err(_), _) => Err("amount: micro-dollars, an integer (negative takes back)".into()),
        (_, Err(e)) => Err(format!("account: {e}")),
    };
    match outcome {
        Ok(msg) => {
            ledger_page(
                &state,
                &s,
                StatusCode::OK,
                Some(&msg),
                &TransferQuery::default(),
            )
            .await
        }
        Err(msg) => {
            ledger_page(
                &state,
                &s,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&msg),
                &TransferQuery::default(),
            )
            .await
        }
    }
}

/// `GET /console/payments`: payments by status, the recent ones and top-ups, reconcile.
pub async fn payments(
    State(state): State<AppState>,
    Console(s): Console,
) -> Result<Response, ApiError> {
    payments_page(&state, &s, None).await
}

async fn payments_page(
    state: &AppState,
    s: &Session,
    notice: Option<&str>,
) -> Result<Response, ApiError> {
    let Some(p) = &state.payments else {
        return Ok(page(
            StatusCode::OK,
            html::message("Payments", "This server keeps no payment records."),
        ));
    };
    let db = |e: crate::db::DbError| ApiError::unavailable("database_unavailable", e.to_string());
    let counts = p.store().counts().await.map_err(db)?;
    let totals = p.store().totals().await.map_err(db)?;
    let recent = p.store().recent(100).await.map_err(db)?;
    let topups = p
        .topups()
        .recent(100)
        .await
        .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?;
    Ok(page(
        StatusCode::OK,
        html::payments(s, &counts, &totals, &recent, &topups, notice),
    ))
}

/// `POST /console/payments/reconcile`.
pub async fn reconcile(
    State(state): State<AppState>,
    Console(s): Console,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    if let Some(refused) = forged(&s, &form.csrf) {
        return Ok(refused);
    }
    let msg = match &state.payments {
        Some(p) => match p.reconcile_once().await {
            Ok(r) => format!(
                "Reconciled: {} examined, {} credited, {} failed, {} still open, {} errors.",
                r.examined, r.credited, r.failed, r.still_open, r.errors
            ),
            Err(e) => format!("Reconciliation did not run: {e}"),
        },
        None => "This server keeps no payment records.".into(),
    };
    payments_page(&state, &s, Some(&msg)).await
}

/// One row of the experiment's comparison.
pub struct ExperimentRow {
    pub route: String,
    pub rule: String,
    pub compared: crate::pricing::shadow::Compared,
    /// Revenue observed for this rule since the experiment started (its first minute on).
    pub observed_usd_micros: u64,
    pub projected_usd_micros: u64,
}

/// The running experiment's comparison, with the observed revenue from the aggregates.
pub async fn experiment_rows(
    state: &AppState,
    shadow: &crate::pricing::shadow::Shadow,
) -> Result<Vec<ExperimentRow>, ApiError> {
    let start = shadow.started_at.0 - shadow.started_at.0 % 60_000;
    let figures = match &state.quote_stats {
        Some(stats) => quote_stats::rule_figures(stats.db(), i64::try_from(start).unwrap_or(0))
            .await
            .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?,
        None => Vec::new(),
    };
    Ok(compare_rows(&figures, shadow.compared()))
}

/// Puts each compared (route, rule) next to the revenue it was observed to earn, and what the
/// candidate's prices would have earned at the same conversion.
pub fn compare_rows(
    figures: &[quote_stats::RuleFigures],
    compared: impl IntoIterator<Item = ((String, String), crate::pricing::shadow::Compared)>,
) -> Vec<ExperimentRow> {
    compared
        .into_iter()
        .map(|((route, rule), compared)| {
            let observed = figures
                .iter()
                .find(|f| f.route == route && f.rule == rule)
                .map_or(0, |f| f.revenue().max(0) as u64);
            ExperimentRow {
                projected_usd_micros: crate::pricing::shadow::projected(observed, &compared),
                observed_usd_micros: observed,
                route,
                rule,
                compared,
            }
        })
        .collect()
}

#[derive(Deserialize, Default)]
pub struct ExperimentQuery {
    file: Option<String>,
}

/// `GET /console/experiments`: the running experiment's comparison, or the form to start one.
pub async fn experiments(
    State(state): State<AppState>,
    Console(s): Console,
    q: Result<axum::extract::Query<ExperimentQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    if let Some(shadow) = state.rules.shadow() {
        let rows = experiment_rows(&state, &shadow).await?;
        return Ok(page(
            StatusCode::OK,
            html::experiment(&s, &shadow.file, shadow.started_at, &rows),
        ));
    }
    let files = state.rules.file_names();
    let file = q
        .ok()
        .and_then(|q| q.0.file)
        .filter(|f| files.contains(f))
        .or_else(|| files.first().cloned())
        .unwrap_or_default();
    let text = state.rules.read_file(&file).unwrap_or_default();
    Ok(page(
        StatusCode::OK,
        html::experiment_form(&s, &files, &file, &text, None, &backtest_offer(&state)),
    ))
}

fn backtest_offer(state: &AppState) -> html::BacktestOffer {
    let limits = state.config.backtest;
    html::BacktestOffer {
        recording: state.pricing_inputs.is_some(),
        retention_days: limits.retention_days,
        days: limits.retention_days.min(7),
    }
}

#[derive(Deserialize)]
pub struct BacktestForm {
    csrf: String,
    file: String,
    text: String,
    days: String,
}

/// `POST /console/experiments/backtest`: the candidate re-prices the recorded requests.
pub async fn backtest(
    State(state): State<AppState>,
    Console(s): Console,
    Form(form): Form<BacktestForm>,
) -> Result<Response, ApiError> {
    if let Some(refused) = forged(&s, &form.csrf) {
        return Ok(refused);
    }
    let text = form.text.replace("\r\n", "\n");
    let offer = backtest_offer(&state);
    let days = form.days.trim().parse::<u64>().unwrap_or(0);
    let files = state.rules.file_names();
    match super::backtest::run(&state, &form.file, &text, days).await {
        Ok(report) => {
            let again = html::BacktestOffer { days, ..offer };
            let form = html::experiment_form_body(&s, &files, &form.file, &text, None, &again);
            Ok(page(StatusCode::OK, html::backtest(&s, &report, &form)))
        }
        Err(e) => {
            let message = e.to_string();
            let status = ApiError::from(e).status;
            Ok(page(
                status,
                html::experiment_form(&s, &files, &form.file, &text, Some(&message), &offer),
            ))
        }
    }
}

/// `POST /console/experiments/start`: a candidate version of a file as the shadow.
pub async fn start_experiment(
    State(state): State<AppState>,
    Console(s): Console,
    Form(form): Form<SaveForm>,
) -> Result<Response, ApiError> {
    if let Some(refused) = forged(&s, &form.csrf) {
        return Ok(refused);
    }
    let text = form.text.replace("\r\n", "\n");
    match state
        .rules
        .start_shadow(&form.file, &text, state.quotes.clock.now())
    {
        Ok(()) => {
            tracing::info!(file = %form.file, "price experiment started");
            Ok(redirect("/console/experiments"))
        }
        Err(e) => Ok(page(
            StatusCode::UNPROCESSABLE_ENTITY,
            html::experiment_form(
                &s,
                &state.rules.file_names(),
                &form.file,
                &text,
                Some(&e.to_string()),
                &backtest_offer(&state),
            ),
        )),
    }
}

/// `POST /console/experiments/stop`.
pub async fn stop_experiment(
    State(state): State<AppState>,
    Console(s): Console,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    if let Some(refused) = forged(&s, &form.csrf) {
        return Ok(refused);
    }
    state.rules.stop_shadow();
    Ok(redirect("/console/experiments"))
}

/// `POST /console/experiments/apply`: the candidate becomes the live rules.
pub async fn apply_experiment(
    State(state): State<AppState>,
    Console(s): Console,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    if let Some(refused) = forged(&s, &form.csrf) {
        return Ok(refused);
    }
    let Some(file) = state.rules.shadow().map(|s| s.file.clone()) else {
        return Ok(page(
            StatusCode::CONFLICT,
            html::message("Not applied", "No experiment is running."),
        ));
    };
    match state.rules.apply_shadow() {
        Ok(()) => {
            tracing::info!(%file, "price experiment applied");
            Ok(redirect(&format!(
                "/console/rules?saved={}",
                urlencode(&file)
            )))
        }
        Err(e) => Ok(page(
            StatusCode::UNPROCESSABLE_ENTITY,
            html::message("Not applied", &e.to_string()),
        )),
    }
}
