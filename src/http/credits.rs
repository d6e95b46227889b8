//! Spending credits: an agent with an API key is quoted like anyone else, then pays from its
//! balance instead of on chain.
//!
//! hold the price → call the upstream → post the hold (or void it when the upstream fails with
//! 5xx or does not answer, so nobody pays for an error) → respond with a receipt. If the post
//! cannot be written the response is withheld: nothing priced is served without a posted debit.
//! If the client goes away mid-request the hold is never resolved here; it expires and the
//! sweeper voids it (the agent is not charged for an answer it never received).
//!
//! When the database fails mid-request: a void that cannot be written is retried in the
//! background until the database is back (the agent's credits come back then, not at the
//! hold's expiry); a post whose outcome is unknown (sent, no answer) is settled by voiding the
//! hold, since a hold is resolved once: if the void finds the post, the post landed and the
//! answer is served; if the void lands, nothing was charged; if neither can be known yet, the
//! answer is withheld and the background retry refunds the post should it turn out to have
//! landed.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::payment_required;
use super::request::ParsedBody;
use crate::accounts::{Accounts, REVENUE};
use crate::ledger::{
    AccountId, Ledger, LedgerError, NewHold, NewTransfer, References, Transfer, TransferId,
    TransferKind,
};
use crate::money::UsdMicros;
use crate::pricing::Route;
use crate::pricing::expr::{EvalInput, RequestView};
use crate::quote::Quote;
use crate::quote::json::parse_strict;

/// The header that carries the receipt of a credit-funded request.
pub const RECEIPT: &str = "tariff-receipt";
/// Machine-readable reason next to a 402 that credits could not cover.
pub use super::payment_required::REASON;

/// How long a request's hold may stay open beyond the upstream's own timeout.
const HOLD_MARGIN_SECS: u64 = 60;

/// The Tariff API key of a request: a `Bearer tk_…` authorization. Any other bearer token
/// belongs to the seller's upstream API and is left alone.
pub fn tariff_key(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let key = v.strip_prefix("Bearer ")?.trim();
    key.starts_with("tk_").then_some(key)
}

/// The bearer key of a request, if it carries one. `Some(Err)` for a malformed header: an agent
/// that meant to pay with credits must learn that, not silently get a 402.
pub fn bearer(headers: &HeaderMap) -> Option<Result<&str, ApiError>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let parsed = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    Some(parsed.ok_or_else(|| {
        ApiError::unauthorized(
            "invalid_authorization",
            "expected `Authorization: Bearer <api key>`",
        )
    }))
}

pub(super) fn accounts(state: &AppState) -> Result<&Accounts, ApiError> {
    state.accounts.as_ref().ok_or_else(|| {
        ApiError::unavailable("credits_unavailable", "this server keeps no credits ledger")
    })
}

/// A quoted request, as the gateway parsed it.
pub struct QuotedRequest<'a> {
    pub quote: &'a Quote,
    pub route: &'a Route,
    pub resource_url: &'a str,
    pub parts: &'a Parts,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub parsed: &'a ParsedBody,
    /// What the pricing rules saw (for an `actual` price computed from the response).
    pub view: &'a RequestView,
    pub body: &'a Value,
}

/// Pays for a quoted request from `account`'s balance (an API key's, or a signed-in wallet's)
/// and serves it.
pub async fn serve_with_credits(
    state: &AppState,
    account: AccountId,
    req: QuotedRequest<'_>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let QuotedRequest {
        quote,
        route,
        resource_url,
        parts,
        path,
        query,
        parsed,
        ..
    } = req;
    let accounts = accounts(state)?;
    let ledger = accounts.ledger();
    let revenue = AccountId::new(REVENUE)?;
    let hold_id = TransferId::new(format!("req:{}:{:016x}", quote.id, rand::random::<u64>()))?;
    let expires_at = state
        .quotes
        .clock
        .now()
        .plus_secs(state.config.upstream_timeout_ms.div_ceil(1000) + HOLD_MARGIN_SECS);
    let hold = ledger
        .hold(NewHold {
            id: hold_id.clone(),
            debit: account.clone(),
            credit: revenue,
            amount: quote.price,
            expires_at,
            refs: References {
                quote_id: Some(quote.id.to_string()),
                request_hash: Some(quote.request_hash.to_hex()),
                ..References::default()
            },
        })
        .await;
    match hold {
        Ok(_) => {}
        Err(LedgerError::InsufficientFunds { available, .. }) => {
            // The normal 402, so the agent can pay on chain instead, with the reason.
            let msg = format!(
                "insufficient credits: {} available, this request costs {}",
                UsdMicros(u64::try_from(available).unwrap_or(0)),
                quote.price
            );
            let challenge = super::sign_in::challenge(state, quote, resource_url);
            return Ok(payment_required::render_refused(
                quote,
                route,
                resource_url,
                "insufficient_credits",
                &msg,
                challenge.as_ref(),
            ));
        }
        Err(e @ LedgerError::Unavailable(_)) => {
            // The hold may have landed without its answer reaching us: release it as soon as
            // the database is back rather than leave it to the expiry sweep.
            release_later(ledger.clone(), hold_id, None);
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    }

    let answer = state
        .upstream
        .forward(parts, path, query, bytes, parsed.json())
        .await;
    let resp = match answer {
        Ok(resp) if resp.status().is_server_error() => {
            release_hold(ledger, &hold_id, "upstream 5xx").await?;
            return Ok(resp);
        }
        Ok(resp) => resp,
        Err(e) => {
            release_hold(ledger, &hold_id, "upstream unavailable").await?;
            return Err(e);
        }
    };
    let (resp, charge) = actual_charge(state, &req, resp).await;
    let mut resp = resp;
    if charge == UsdMicros::ZERO {
        release_hold(ledger, &hold_id, "actual price is zero").await?;
        return Ok(resp);
    }
    let post_id = TransferId::new(format!("{hold_id}:post"))?;
    let posted = match ledger.post(post_id.clone(), &hold_id, charge).await {
        Ok(t) => t,
        Err(e) => match settle_failed_post(ledger, &hold_id, &post_id, charge).await {
            Some(t) => t,
            None => {
                // The answer is withheld: serving it without a posted debit would serve unpaid.
                tracing::error!(error = %e, %hold_id, "posting a credit hold failed; response withheld");
                return Err(e.into());
            }
        },
    };
    if let Some(stats) = &state.quote_stats {
        stats.record_paid(
            &quote.rule,
            state.quotes.clock.now(),
            posted.amount,
            crate::db::PaidVia::Credits,
        );
    }
    // The charge has landed, so the answer must be served: a balance that cannot be read now
    // (the database went away after the post) is left out of the receipt, never a 503 for a
    // request that was paid for.
    let balance = match ledger.balance(&account).await {
        Ok(b) => Some(b.available()),
        Err(e) => {
            tracing::warn!(error = %e, %account, "balance unreadable after a post; receipt without it");
            None
        }
    };
    let receipt = json!({
        "transfer": posted.id.as_str(),
        "account": account.as_str(),
        "amount": posted.amount.0,
        "held": quote.price.0,
        "unit": "usd_micros",
        "balance": balance,
        "quote": quote.id.as_str(),
    });
    resp.headers_mut().insert(
        HeaderName::from_static(RECEIPT),
        HeaderValue::from_str(&receipt.to_string()).expect("JSON of ASCII ids and integers"),
    );
    Ok(resp)
}

/// The most of an upstream answer read to compute an `actual` price.
const ACTUAL_BODY_CAP: usize = 1 << 20;

/// What to charge: the quoted price, or the rule's `actual` computed from the upstream's answer
/// (clamped into [0, quoted]). Returns the response rebuilt around its (already buffered) body.
/// An `actual` that cannot be computed charges the quoted ceiling, which the agent accepted:
/// an unreadable answer must not make the request free.
async fn actual_charge(
    state: &AppState,
    req: &QuotedRequest<'_>,
    resp: Response,
) -> (Response, UsdMicros) {
    if actual_expr(req).is_none() {
        return (resp, req.quote.price);
    }
    let (parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, ACTUAL_BODY_CAP).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "upstream answer unreadable for `actual`; charging the ceiling");
            return (Response::from_parts(parts, Body::empty()), req.quote.price);
        }
    };
    let charge = actual_price(state, req, &parts, &bytes);
    (Response::from_parts(parts, Body::from(bytes)), charge)
}

fn actual_expr<'r>(req: &QuotedRequest<'r>) -> Option<&'r crate::pricing::expr::Expr> {
    req.route
        .rules
        .iter()
        .find(|r| r.id == req.quote.rule.rule)
        .and_then(|r| r.actual.as_ref())
}

/// The rule's `actual` price for an answer already held in memory (the quoted ceiling when the
/// rule has none, the answer is larger than `actual` may read, or the expression fails),
/// clamped into [0, ceiling].
pub(super) fn actual_price(
    state: &AppState,
    req: &QuotedRequest<'_>,
    parts: &axum::http::response::Parts,
    bytes: &[u8],
) -> UsdMicros {
    let ceiling = req.quote.price;
    let Some(expr) = actual_expr(req) else {
        return ceiling;
    };
    if bytes.len() > ACTUAL_BODY_CAP {
        tracing::warn!(
            len = bytes.len(),
            "upstream answer too large for `actual`; charging the ceiling"
        );
        return ceiling;
    }
    let response = json!({
        "status": parts.status.as_u16(),
        "headers": parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), Value::String(v.to_str().ok()?.to_string()))))
            .collect::<serde_json::Map<String, Value>>(),
        "body": parse_strict(bytes).unwrap_or_else(|_| json!({})),
    });
    let input = EvalInput {
        request: req.view,
        body: req.body,
        response: Some(&response),
    };
    match expr.eval_amount(&state.rules.env().bind(&input)) {
        Ok(micros) => UsdMicros(micros).min(ceiling),
        Err(e) => {
            tracing::warn!(error = %e, rule = %req.quote.rule.rule, "`actual` failed; charging the ceiling");
            ceiling
        }
    }
}

/// Releases a request's hold: the agent pays nothing for it.
async fn void_hold(ledger: &Ledger, hold_id: &TransferId) -> Result<(), LedgerError> {
    let void_id = TransferId::new(format!("{hold_id}:void"))?;
    ledger.void(void_id, hold_id).await.map(|_| ())
}

/// Voids a hold nobody is charged for. If the database cannot take the void now, it is retried
/// in the background and the caller goes on: the hold is released as soon as the database is
/// back (and at the latest by the expiry sweep), and nothing is charged meanwhile.
async fn release_hold(
    ledger: &Ledger,
    hold_id: &TransferId,
    why: &'static str,
) -> Result<(), ApiError> {
    match void_hold(ledger, hold_id).await {
        Ok(()) => {
            tracing::debug!(%hold_id, why, "credit hold voided");
            Ok(())
        }
        Err(LedgerError::Unavailable(e)) => {
            tracing::warn!(error = %e, %hold_id, why, "voiding a credit hold failed; retrying in the background");
            release_later(ledger.clone(), hold_id.clone(), None);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// After a post failed: whether it landed anyway (the database committed it and the answer was
/// lost). A hold is resolved once, so voiding it tells: the void finds the post (it landed:
/// `Some`, serve), or the void lands (nothing charged: `None`), or neither is known yet (`None`,
/// and the background retry decides, refunding the post if it had landed).
async fn settle_failed_post(
    ledger: &Ledger,
    hold_id: &TransferId,
    post_id: &TransferId,
    charge: UsdMicros,
) -> Option<Transfer> {
    match void_hold(ledger, hold_id).await {
        Err(LedgerError::HoldAlreadyResolved { by, .. }) if &by == post_id => {
            // Replaying the post returns the stored one.
            match ledger.post(post_id.clone(), hold_id, charge).await {
                Ok(t) => {
                    tracing::info!(%hold_id, "a post reported failed had landed; serving");
                    Some(t)
                }
                Err(e) => {
                    tracing::warn!(error = %e, %hold_id, "a post landed but cannot be read back; refunding");
                    release_later(ledger.clone(), hold_id.clone(), Some(post_id.clone()));
                    None
                }
            }
        }
        Ok(()) | Err(LedgerError::HoldAlreadyResolved { .. }) => None,
        Err(e) => {
            tracing::warn!(error = %e, %hold_id, "a failed post cannot be settled yet; retrying in the background");
            release_later(ledger.clone(), hold_id.clone(), Some(post_id.clone()));
            None
        }
    }
}

/// How long the background release keeps trying; after that the expiry sweep voids the hold.
const RELEASE_RETRY_FOR: Duration = Duration::from_secs(10 * 60);

/// Retries voiding a hold whose request was not served until the database answers. If
/// `post_id` is given and turns out to have resolved the hold (a post that landed although it
/// was reported failed, for an answer that was withheld), the charge is refunded.
fn release_later(ledger: Ledger, hold_id: TransferId, post_id: Option<TransferId>) {
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(100);
        while started.elapsed() < RELEASE_RETRY_FOR {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            let landed = match void_hold(&ledger, &hold_id).await {
                Ok(()) => {
                    tracing::info!(%hold_id, "credit hold voided after the database came back");
                    return;
                }
                Err(LedgerError::HoldAlreadyResolved { by, .. }) => match &post_id {
                    Some(p) if &by == p => by,
                    _ => return,
                },
                Err(LedgerError::Unavailable(_)) => continue,
                // The hold never landed: nothing to release.
                Err(LedgerError::UnknownHold(_)) => return,
                Err(e) => {
                    tracing::error!(error = %e, %hold_id, "releasing a credit hold failed; the expiry sweep will");
                    return;
                }
            };
            match refund_withheld(&ledger, &hold_id, &landed).await {
                Ok(()) => return,
                Err(LedgerError::Unavailable(_)) => continue,
                Err(e) => {
                    tracing::error!(error = %e, %hold_id, "refunding a withheld answer failed");
                    return;
                }
            }
        }
        tracing::warn!(%hold_id, "gave up releasing a credit hold; the expiry sweep will");
    });
}

/// Refunds a post that landed for an answer that was withheld (idempotent: one id per hold).
async fn refund_withheld(
    ledger: &Ledger,
    hold_id: &TransferId,
    post_id: &TransferId,
) -> Result<(), LedgerError> {
    let post = ledger
        .transfer_by_id(post_id)
        .await?
        .ok_or_else(|| LedgerError::UnknownHold(post_id.clone()))?;
    let refund = ledger
        .transfer(NewTransfer {
            id: TransferId::new(format!("{hold_id}:refund"))?,
            kind: TransferKind::Refund,
            debit: post.credit.clone(),
            credit: post.debit.clone(),
            amount: post.amount,
            refs: References {
                reason: Some("answer withheld after a post whose outcome was unknown".into()),
                ..post.refs.clone()
            },
        })
        .await?;
    tracing::warn!(%hold_id, refund = %refund.id, "refunded a post whose answer was withheld");
    Ok(())
}

/// One of the per-instance sign-up tokens: every account or key issued anonymously is a durable
/// row, so issuing them is bounded (429 with `Retry-After`).
pub(super) fn signup_slot(state: &AppState) -> Result<(), ApiError> {
    state.signups.take().map_err(|wait| {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_signups",
            "accounts and keys are being issued too fast; retry later",
        );
        e.retry_after = Some(wait.as_secs().max(1));
        e
    })
}

/// `POST /accounts`: opens an agent account; the API key is in this answer and nowhere else.
pub async fn open_account(State(state): State<AppState>) -> Result<Response, ApiError> {
    signup_slot(&state)?;
    let (account, key) = accounts(&state)?.open().await?;
    let body = json!({
        "account": account.as_str(),
        "api_key": key.expose(),
        "note": "store the api_key now: it is shown only once",
    });
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /accounts/me`: balance and recent transfers of the key's account.
pub async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let key = bearer(&headers).ok_or_else(|| {
        ApiError::unauthorized("missing_api_key", "send `Authorization: Bearer <api key>`")
    })??;
    let accounts = accounts(&state)?;
    let account = accounts.authenticate(key).await?;
    let ledger = accounts.ledger();
    let balance = ledger.balance(&account).await?;
    let page = ledger.history(&account, None, 20).await?;
    let topups = match &state.payments {
        Some(p) => p
            .topups()
            .of_account(account.as_str(), 50)
            .await
            .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?,
        None => Vec::new(),
    };
    let body = json!({
        "account": account.as_str(),
        "unit": "usd_micros",
        "posted": balance.posted(),
        "held": balance.held().0,
        "available": balance.available(),
        "recent": page.transfers,
        "topups": topups,
    });
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// Idempotency id chosen by the operator (a retry with the same id changes nothing).
    pub id: String,
    pub account: String,
    /// Micro-dollars; negative takes credits back.
    pub amount: i64,
    pub reason: String,
}

#[derive(Serialize)]
struct GrantAnswer<'a> {
    transfer: &'a str,
    account: &'a str,
    balance: i64,
}

/// `POST /admin/credits` (admin token): grants (or, with a negative amount, takes back)
/// credits. Every change is an `adjustment` transfer with its reason.
pub async fn grant(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<GrantRequest>,
) -> Result<Response, ApiError> {
    check_admin_write(&state, &headers)?;
    let account = AccountId::new(req.account)?;
    let (t, balance) = accounts(&state)?
        .adjust(&req.id, account.clone(), req.amount, req.reason)
        .await?;
    Ok(Json(GrantAnswer {
        transfer: t.id.as_str(),
        account: account.as_str(),
        balance: balance.available(),
    })
    .into_response())
}

/// The admin token as a bearer, or a console session (a browser reading the JSON API).
pub(super) fn check_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if bearer(headers).is_none() && super::console::session_of(state, headers).is_some() {
        return Ok(());
    }
    check_admin_token(state, headers)
}

/// For a call that changes something: the admin token, or a console session that also sends
/// its form token in `X-CSRF-Token` (a cookie alone could be another site's doing).
pub(super) fn check_admin_write(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if bearer(headers).is_none()
        && let Some(s) = super::console::session_of(state, headers)
    {
        let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        return match sent {
            Some(t) if super::console::session::same_token(t, &s.csrf) => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_token_invalid",
                "a console session must send its form token in X-CSRF-Token",
            )),
        };
    }
    check_admin_token(state, headers)
}

fn check_admin_token(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.config.admin_token else {
        return Err(ApiError::not_found(
            "admin_disabled",
            "no admin token is configured",
        ));
    };
    let presented = bearer(headers).ok_or_else(|| {
        ApiError::unauthorized(
            "missing_admin_token",
            "send `Authorization: Bearer <admin token>`",
        )
    })??;
    // Compare hashes so the comparison time does not depend on how much of the token matched.
    if blake3::hash(presented.as_bytes()) != blake3::hash(expected.expose().as_bytes()) {
        return Err(ApiError::unauthorized(
            "invalid_admin_token",
            "the admin token is wrong",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use crate::ledger::{AccountKind, NewAccount};
    use crate::time::Clock;

    fn id(s: &str) -> TransferId {
        TransferId::new(s).unwrap()
    }

    /// A ledger in a throwaway SQLite file with a funded agent and the revenue account.
    async fn ledger() -> (Ledger, AccountId) {
        let path =
            std::env::temp_dir().join(format!("tariff-credits-{:016x}.db", rand::random::<u64>()));
        let db = Db::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap();
        let ledger = Ledger::new(db, Clock::System);
        let agent = AccountId::new("agent:settle").unwrap();
        for (acct, kind, neg) in [
            (agent.clone(), AccountKind::Agent, false),
            (AccountId::new(REVENUE).unwrap(), AccountKind::System, false),
            (
                AccountId::new("sys:inflow").unwrap(),
                AccountKind::System,
                true,
            ),
        ] {
            ledger
                .create_account(NewAccount {
                    id: acct,
                    kind,
                    owner: None,
                    allow_negative: neg,
                })
                .await
                .unwrap();
        }
        ledger
            .transfer(NewTransfer {
                id: id("fund"),
                kind: TransferKind::Topup,
                debit: AccountId::new("sys:inflow").unwrap(),
                credit: agent.clone(),
                amount: UsdMicros(1_000),
                refs: References::default(),
            })
            .await
            .unwrap();
        (ledger, agent)
    }

    async fn hold(ledger: &Ledger, agent: &AccountId, hold_id: &str) {
        ledger
            .hold(NewHold {
                id: id(hold_id),
                debit: agent.clone(),
                credit: AccountId::new(REVENUE).unwrap(),
                amount: UsdMicros(100),
                expires_at: Clock::System.now().plus_secs(60),
                refs: References::default(),
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_post_reported_failed_that_landed_is_found_and_served() {
        let (ledger, agent) = ledger().await;
        hold(&ledger, &agent, "h1").await;
        // The post committed; only its answer was lost.
        ledger
            .post(id("h1:post"), &id("h1"), UsdMicros(60))
            .await
            .unwrap();
        let found = settle_failed_post(&ledger, &id("h1"), &id("h1:post"), UsdMicros(60)).await;
        assert_eq!(
            found.map(|t| (t.id, t.amount)),
            Some((id("h1:post"), UsdMicros(60)))
        );
        let b = ledger.balance(&agent).await.unwrap();
        assert_eq!((b.posted(), b.held().0), (940, 0));
    }

    #[tokio::test]
    async fn a_post_that_did_not_land_leaves_the_hold_voided_and_nothing_charged() {
        let (ledger, agent) = ledger().await;
        hold(&ledger, &agent, "h2").await;
        let found = settle_failed_post(&ledger, &id("h2"), &id("h2:post"), UsdMicros(60)).await;
        assert!(found.is_none());
        let b = ledger.balance(&agent).await.unwrap();
        assert_eq!((b.posted(), b.held().0), (1_000, 0));
        // The post cannot land afterwards: the hold is resolved once.
        assert_eq!(
            ledger
                .post(id("h2:post"), &id("h2"), UsdMicros(60))
                .await
                .unwrap_err()
                .code(),
            "hold_already_resolved"
        );
    }

    #[tokio::test]
    async fn a_landed_post_for_a_withheld_answer_is_refunded_once() {
        let (ledger, agent) = ledger().await;
        hold(&ledger, &agent, "h3").await;
        ledger
            .post(id("h3:post"), &id("h3"), UsdMicros(100))
            .await
            .unwrap();
        refund_withheld(&ledger, &id("h3"), &id("h3:post"))
            .await
            .unwrap();
        refund_withheld(&ledger, &id("h3"), &id("h3:post"))
            .await
            .unwrap();
        let b = ledger.balance(&agent).await.unwrap();
        assert_eq!((b.posted(), b.held().0), (1_000, 0));
        assert!(ledger.check().await.unwrap().is_clean());
    }
}
