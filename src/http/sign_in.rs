//! Wallets as accounts over HTTP (`sign-in-with-x`): the challenge a 402 carries, a priced
//! request paid from a signed-in wallet's credits, a wallet obtaining an API key for its
//! account, and an API-key account linking a wallet.
//!
//! A malformed `SIGN-IN-WITH-X` header is a 400; a well-formed sign-in that does not prove the
//! wallet for this request (or reuses a nonce) is answered with the route's 402 and its reason in
//! `Tariff-Reason`, so a client can still pay on chain; on the account endpoints it is a 401.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::AppState;
use super::credits::{self, QuotedRequest};
use super::error::ApiError;
use super::payment_required;
use crate::ledger::{AccountId, LedgerError};
use crate::quote::Quote;
use crate::wallet::{self, CLOCK_SKEW_MS, Expected, SignInError};
use crate::x402::siwx::{self, Challenge};

/// How long a challenge, and so a signed sign-in, stays acceptable.
pub const SIGN_IN_TTL_MS: u64 = 300_000;
const STATEMENT: &str = "Sign in to pay with the Tariff credits of this wallet";

/// `host[:port]` of an absolute URL.
pub(super) fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

/// A fresh challenge for a 402 of `quote`, when this server keeps credits (a wallet has
/// something to spend only then); for the EVM networks the quote is offered on.
pub fn challenge(state: &AppState, quote: &Quote, resource_url: &str) -> Option<Challenge> {
    state.accounts.as_ref()?;
    let mut chains: Vec<String> = quote
        .offers
        .iter()
        .filter(|o| o.network.chain_id().is_some())
        .map(|o| o.network.to_string())
        .collect();
    chains.dedup();
    let now = state.quotes.clock.now().0;
    Some(Challenge {
        domain: authority(resource_url).to_string(),
        uri: resource_url.to_string(),
        statement: STATEMENT.into(),
        nonce: format!("{:032x}", rand::random::<u128>()),
        issued_at_ms: now,
        expires_at_ms: now + SIGN_IN_TTL_MS,
        chains,
        with_schema: state.config.extension_schemas,
    })
}

/// The wallet a request's `SIGN-IN-WITH-X` proves for `url`, its nonce taken.
async fn signed_in_wallet(
    state: &AppState,
    value: &HeaderValue,
    url: &str,
    chains: &[u64],
) -> Result<String, SignInError> {
    let value = value
        .to_str()
        .map_err(|_| SignInError::Malformed(siwx::HeaderError::Base64))?;
    let s = siwx::decode_header(value)?;
    let now_ms = state.quotes.clock.now().0;
    let expected = Expected {
        host: authority(url),
        url,
        chains,
        max_age_ms: SIGN_IN_TTL_MS,
        now_ms,
    };
    let chain_of = |id: u64| {
        let p = state.payments.as_ref()?;
        let (_, settler) = p.settlers().find(|(n, _)| n.chain_id() == Some(id))?;
        settler.chain().cloned()
    };
    let wallet = wallet::verify(&s, &expected, chain_of).await?;
    let wallet = format!("{wallet:#x}");
    let accounts = credits::accounts(state).map_err(|_| SignInError::Refused {
        reason: "credits_unavailable",
        detail: "this server keeps no credits ledger".into(),
    })?;
    // A message is acceptable for at most its age limit (plus skew): older nonces are forgotten.
    let forget_before = now_ms.saturating_sub(SIGN_IN_TTL_MS + 2 * CLOCK_SKEW_MS);
    match accounts.use_nonce(&s.nonce, &wallet, forget_before).await {
        Ok(()) => Ok(wallet),
        Err(crate::accounts::AccountsError::NonceUsed(n)) => Err(SignInError::Refused {
            reason: "siwx_nonce_reused",
            detail: format!("the sign-in nonce {n} was already used"),
        }),
        Err(e) => Err(SignInError::Chain(
            crate::payment::PaymentError::unavailable("database_unavailable", e.to_string()),
        )),
    }
}

fn malformed(e: siwx::HeaderError) -> ApiError {
    ApiError::bad_request("invalid_siwx_header", e.to_string())
}

/// A priced request paid from the credits of the wallet its sign-in proves (or of the agent
/// account the wallet is linked to). A refused sign-in, or no credits: the route's 402.
pub async fn serve_signed_in(
    state: &AppState,
    value: &HeaderValue,
    req: QuotedRequest<'_>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let chains: Vec<u64> = req
        .quote
        .offers
        .iter()
        .filter_map(|o| o.network.chain_id())
        .collect();
    let refused = |reason: &str, msg: &str| {
        let challenge = challenge(state, req.quote, req.resource_url);
        payment_required::render_refused(
            req.quote,
            req.route,
            req.resource_url,
            reason,
            msg,
            challenge.as_ref(),
        )
    };
    let wallet = match signed_in_wallet(state, value, req.resource_url, &chains).await {
        Ok(w) => w,
        Err(SignInError::Malformed(e)) => return Err(malformed(e)),
        Err(SignInError::Refused { reason, detail }) => {
            tracing::info!(reason, %detail, "sign-in refused");
            return Ok(refused(reason, &detail));
        }
        Err(SignInError::Chain(e)) => return Err(e.into()),
    };
    let accounts = credits::accounts(state)?;
    let account =
        AccountId::new(accounts.links().account_of(&wallet).await.map_err(|e| {
            ApiError::unavailable("ledger_unavailable", format!("wallet links: {e}"))
        })?)?;
    // A wallet that never held credits has no account yet: the normal 402.
    match accounts.ledger().balance(&account).await {
        Ok(_) => {}
        Err(LedgerError::UnknownAccount(_)) => {
            return Ok(refused(
                "insufficient_credits",
                &format!("wallet {wallet} has no credits; pay on chain"),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let mut resp = credits::serve_with_credits(state, account, req, bytes).await?;
    if let Ok(v) = HeaderValue::from_str(&wallet) {
        resp.headers_mut()
            .insert(HeaderName::from_static("tariff-wallet"), v);
    }
    Ok(resp)
}

/// Every EVM chain this server takes payments on.
fn configured_chains(state: &AppState) -> Vec<u64> {
    state
        .config
        .networks
        .iter()
        .filter_map(|n| n.terms.network.chain_id())
        .collect()
}

pub(super) async fn wallet_for_endpoint(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<String, ApiError> {
    let value = headers.get(siwx::HEADER).ok_or_else(|| {
        ApiError::unauthorized(
            "missing_sign_in",
            "send a SIGN-IN-WITH-X header signed for this URL",
        )
    })?;
    let url = super::gateway::absolute_url(state, headers, path);
    match signed_in_wallet(state, value, &url, &configured_chains(state)).await {
        Ok(w) => Ok(w),
        Err(SignInError::Malformed(e)) => Err(malformed(e)),
        Err(SignInError::Refused { reason, detail }) => Err(ApiError::unauthorized(reason, detail)),
        Err(SignInError::Chain(e)) => Err(e.into()),
    }
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `POST /accounts/wallet`: a signed-in wallet gets an API key for the account it spends from
/// (its own, opened if new, or the one it is linked to).
pub async fn wallet_key(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wallet = wallet_for_endpoint(&state, &headers, "/accounts/wallet").await?;
    // Like `POST /accounts`: a key (and maybe an account) is a durable row per call.
    credits::signup_slot(&state)?;
    let accounts = credits::accounts(&state)?;
    let account = accounts.wallet_spends_from(&wallet).await?;
    let key = accounts.issue_key(&account).await?;
    let body = json!({
        "account": account.as_str(),
        "wallet": wallet,
        "api_key": key.expose(),
        "note": "store the api_key now: it is shown only once",
    });
    Ok(no_store((StatusCode::CREATED, Json(body)).into_response()))
}

/// `POST /accounts/me/wallets`: the API key's account links a wallet it proves with a sign-in;
/// the wallet's sign-ins then spend from this account and its on-chain payments are credited
/// to it.
pub async fn link_wallet(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = credits::bearer(&headers).ok_or_else(|| {
        ApiError::unauthorized("missing_api_key", "send `Authorization: Bearer <api key>`")
    })??;
    let accounts = credits::accounts(&state)?;
    let account = accounts.authenticate(key).await?;
    let wallet = wallet_for_endpoint(&state, &headers, "/accounts/me/wallets").await?;
    accounts.link_wallet(&wallet, &account).await?;
    Ok(no_store(
        Json(json!({"account": account.as_str(), "wallet": wallet})).into_response(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_is_the_host_and_port_of_a_url() {
        assert_eq!(
            authority("http://127.0.0.1:8080/search?q=a"),
            "127.0.0.1:8080"
        );
        assert_eq!(authority("https://api.example.com/v1/x"), "api.example.com");
        assert_eq!(authority("http://h?x=/"), "h");
    }
}
