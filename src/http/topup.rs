//! Top-ups over HTTP:
//! - `GET /top-up/quote?network=&token=&amount=` (or `credits=`): a valuation or a refusal;
//! - `POST /top-up {"credits": "$5.00"}` as an account: a 402 offering USDC (EIP-3009) and each
//!   offered token (Permit2) at the amount valued now, held for the quote's life; paid, it
//!   credits the account instead of buying a request;
//! - `POST /top-up/transfer {"network", "tx_hash"}` as an account: plain transfers to the
//!   treasury from the account's linked wallets, credited once per (network, tx, log).

use std::collections::HashMap;
use std::sync::Arc;

use alloy::primitives::{Address, B256, U256};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::credits::{accounts, bearer};
use super::error::ApiError;
use super::metrics::PaymentOutcome;
use super::paid::payment_header;
use super::payment_required::{self, v1_requirement_json, v2_requirement};
use super::{AppState, payments_of};
use crate::ledger::AccountId;
use crate::money::UsdMicros;
use crate::payment::PaymentError;
use crate::payment::matching::{self, Advertised};
use crate::pricing::Route;
use crate::pricing::expr::parse_usd;
use crate::quote::json::parse_strict;
use crate::quote::{
    CanonicalBody, CanonicalRequest, Offer, OfferScheme, Quote, QuoteId, QuoteStore, RuleRef,
    TopupTerms, TopupValuation, TransferMethod, fingerprint,
};
use crate::topup::Refusal;
use crate::topup::pools::ReadError;
use crate::topup::record::{Booked, Source, TopupRow};
use crate::topup::route::{Valuation, Valuer};
use crate::topup::transfer::arrivals;
use crate::x402::{Network, v2};

/// The valuers of the networks with top-ups configured.
pub type Valuers = HashMap<Network, Arc<Served>>;

/// One network's valuer and the bound on how often it runs.
pub struct Served {
    pub valuer: Valuer,
    pub valuations: super::rate_limit::TokenBucket,
}

impl Served {
    pub fn new(valuer: Valuer, clock: crate::time::Clock) -> Self {
        let per_minute = valuer.net.valuations_per_minute;
        Served {
            valuer,
            valuations: super::rate_limit::TokenBucket::per_minute(per_minute, clock),
        }
    }

    /// The valuer, if a valuation may run now (else 429 with `Retry-After`).
    fn take(&self) -> Result<&Valuer, ApiError> {
        self.valuations.take().map_err(|wait| {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_valuations",
                "top-up valuations are running too fast here; retry later",
            );
            e.retry_after = Some(wait.as_secs().max(1));
            e
        })?;
        Ok(&self.valuer)
    }
}

const PATH: &str = "/top-up";

fn refused(r: &Refusal) -> ApiError {
    let status = match r {
        // Not yet: the same request succeeds later.
        Refusal::NotConfirmed { .. } => StatusCode::CONFLICT,
        Refusal::NoNetwork => StatusCode::NOT_FOUND,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, r.code(), r.to_string())
}

fn read_failed(e: ReadError) -> ApiError {
    match e {
        ReadError::Refused(r) => refused(&r),
        ReadError::Chain(e) => e.into(),
    }
}

/// The network asked for, or the only one configured.
fn served<'a>(state: &'a AppState, network: Option<&str>) -> Result<&'a Arc<Served>, ApiError> {
    match network {
        Some(n) => {
            let n = Network::parse_any(n)
                .map_err(|e| ApiError::bad_request("invalid_network", e.to_string()))?;
            state
                .topup
                .get(&n)
                .ok_or_else(|| refused(&Refusal::NoNetwork))
        }
        None if state.topup.len() == 1 => Ok(state.topup.values().next().expect("one")),
        None if state.topup.is_empty() => Err(refused(&Refusal::NoNetwork)),
        None => Err(ApiError::bad_request(
            "network_required",
            "several networks take top-ups: name one with `network`",
        )),
    }
}

fn parse_token(s: &str) -> Result<Address, ApiError> {
    s.parse().map_err(|_| {
        ApiError::bad_request("invalid_token", format!("`{s}` is not a token address"))
    })
}

fn parse_credits(s: &str) -> Result<UsdMicros, ApiError> {
    parse_usd(s)
        .map(UsdMicros)
        .map_err(|e| ApiError::bad_request("invalid_credits", format!("credits: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteParams {
    network: Option<String>,
    token: String,
    amount: Option<String>,
    credits: Option<String>,
}

/// `GET /top-up/quote`: what an amount of a token buys now, or what some credits cost in it.
pub async fn quote(
    State(state): State<AppState>,
    q: Result<Query<QuoteParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let token = parse_token(&q.token)?;
    let v = served(&state, q.network.as_deref())?.take()?;
    let valuation = match (q.amount.as_deref(), q.credits.as_deref()) {
        (Some(a), None) => {
            let amount: U256 = a.parse().map_err(|_| {
                ApiError::bad_request("invalid_amount", "amount: base units, a decimal integer")
            })?;
            v.value(token, amount).await
        }
        (None, Some(c)) => v.cost(token, parse_credits(c)?).await,
        _ => {
            return Err(ApiError::bad_request(
                "amount_or_credits",
                "give exactly one of `amount` (token base units) or `credits` (e.g. $5.00)",
            ));
        }
    }
    .map_err(read_failed)?;
    v.check_size(valuation.credit).map_err(|r| refused(&r))?;
    let mut body = valuation.to_json(&v.net);
    let expires = state.quotes.clock.now().plus_secs(v.net.quote_ttl_secs);
    body["expires_at_ms"] = json!(expires.0);
    Ok(no_store(Json(body).into_response()))
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The account a top-up credits: an API key's, or a wallet's signed in for this very URL (the
/// account it spends from: its own, or the one it is linked to).
async fn account_of(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<AccountId, ApiError> {
    if let Some(key) = bearer(headers) {
        return Ok(accounts(state)?.authenticate(key?).await?);
    }
    if headers.contains_key(crate::x402::siwx::HEADER) {
        let wallet = super::sign_in::wallet_for_endpoint(state, headers, path).await?;
        return Ok(accounts(state)?.wallet_spends_from(&wallet).await?);
    }
    Err(ApiError::unauthorized(
        "missing_api_key",
        "top-ups credit an account: send `Authorization: Bearer <api key>`, or a SIGN-IN-WITH-X header signed for this URL",
    ))
}

/// The refusal of a top-up that would take the account past its daily cap.
async fn over_daily_cap(
    state: &AppState,
    v: &Valuer,
    account: &AccountId,
    credit: UsdMicros,
) -> Result<Option<Refusal>, ApiError> {
    let payments = payments_of(state)?;
    let now = state.quotes.clock.now();
    let since = crate::time::UnixMillis(now.0.saturating_sub(24 * 3600 * 1000));
    let used = payments
        .topups()
        .credited_since(account.as_str(), since)
        .await
        .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?;
    let max = v.net.max_per_account_day;
    if used.get().saturating_add(credit.get()) > max.get() {
        return Ok(Some(Refusal::DailyCap {
            left: UsdMicros(max.get().saturating_sub(used.get())).to_string(),
            max: max.to_string(),
        }));
    }
    Ok(None)
}

/// A small JSON body, parsed strictly (duplicate keys and the like are refused).
fn strict_body(state: &AppState, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > state.config.max_body_bytes.min(16 * 1024) {
        return Err(ApiError::too_large("a top-up body is a few fields"));
    }
    parse_strict(body).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopupBody {
    credits: String,
    network: Option<String>,
}

/// The route a top-up's 402 describes.
fn topup_route() -> &'static Route {
    static ROUTE: std::sync::OnceLock<Route> = std::sync::OnceLock::new();
    ROUTE.get_or_init(|| Route {
        id: "topup".into(),
        file: Default::default(),
        methods: vec!["POST".into()],
        path: crate::pricing::route_path::PathPattern::parse(PATH).expect("a literal path"),
        headers: Vec::new(),
        default: None,
        max: UsdMicros(u64::MAX),
        description: Some("Credits for this API, paid in any accepted token".into()),
        mime_type: "application/json".into(),
        discovery: None,
        discovery_json: Default::default(),
        rules: Vec::new(),
        payment_identifier: None,
        v2_extensions: Default::default(),
        settle: Default::default(),
    })
}

struct AsAdvertised<'a> {
    quote: &'a Quote,
    resource_url: &'a str,
}

impl Advertised for AsAdvertised<'_> {
    fn v2(&self, offer: &Offer) -> v2::PaymentRequirements {
        v2_requirement(offer, self.quote)
    }
    fn v1(&self, offer: &Offer) -> Value {
        v1_requirement_json(offer, self.quote, topup_route(), self.resource_url)
    }
}

/// `POST /top-up`: the 402 to buy credits, or (with a payment) the credited top-up.
pub async fn top_up(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let account = account_of(&state, &headers, PATH).await?;
    let parsed = strict_body(&state, &body)?;
    let req: TopupBody = serde_json::from_value(parsed).map_err(|e| {
        ApiError::bad_request(
            "invalid_topup",
            format!("expected {{\"credits\": \"$5.00\"}}: {e}"),
        )
    })?;
    let s = served(&state, req.network.as_deref())?.clone();
    let v = &s.valuer;
    let credits = parse_credits(&req.credits)?;
    v.check_size(credits).map_err(|r| refused(&r))?;
    let who = [("tariff-account".to_string(), account.to_string())];
    let hash = fingerprint(
        state.config.fingerprint_key.expose(),
        &CanonicalRequest {
            method: "POST",
            path: PATH,
            query: &[],
            headers: &who,
            body: CanonicalBody::Json(&json!({
                "credits": credits.get(),
                "network": v.net.network.as_str(),
            })),
        },
    );
    let resource_url = super::gateway::absolute_url(&state, &headers, PATH);
    let payment = payment_header(&headers)?;
    let open = state
        .quotes
        .open_quote(&hash)
        .await
        .map_err(|e| super::gateway::store_unavailable(&state, e))?;
    let (quote, fresh) = match open {
        Some(q) => (q, false),
        None => {
            if let Some(r) = over_daily_cap(&state, v, &account, credits).await? {
                return Err(refused(&r));
            }
            let q = issue(&state, s.take()?, &account, credits, hash).await?;
            (q, true)
        }
    };
    let Some(header) = payment else {
        return Ok(payment_required::render(
            &quote,
            topup_route(),
            &resource_url,
            None,
            None,
        ));
    };
    let refuse = |e: PaymentError| -> Result<Response, ApiError> {
        if e.is_refusal() {
            state
                .metrics
                .payment(v.net.network.as_str(), PaymentOutcome::Refused, e.code());
            Ok(payment_required::render_refused(
                &quote,
                topup_route(),
                &resource_url,
                e.code(),
                &e.to_string(),
                None,
            ))
        } else {
            Err(e.into())
        }
    };
    let decoded = matching::decode(header, state.config.payments.max_header_bytes)?;
    let advertised = AsAdvertised {
        quote: &quote,
        resource_url: &resource_url,
    };
    let matched = match matching::match_quote(decoded, &quote, fresh, &advertised) {
        Ok(m) => m,
        Err(e) => return refuse(e),
    };
    let payments = payments_of(&state)?.clone();
    let verified = match payments.verify(matched).await {
        Ok(v) => v,
        Err(e) => return refuse(e),
    };
    let claimed = match payments.claim(verified).await {
        Ok(c) => c,
        Err(e) => return refuse(e),
    };
    let credited = match payments.clone().settle_and_credit(claimed).await {
        Ok(c) => c,
        Err(u) => {
            state.metrics.payment(
                u.summary.network.as_str(),
                PaymentOutcome::Failed,
                u.error.code(),
            );
            return refuse(u.error);
        }
    };
    let network = credited.summary().network;
    state
        .metrics
        .payment(network.as_str(), PaymentOutcome::Settled, "");
    state.metrics.topup(network.as_str(), "x402");
    let row = payments
        .topups()
        .get(&TopupRow::x402_id(credited.id().as_str()))
        .await
        .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?;
    let balance = accounts(&state)?.ledger().balance(&account).await?;
    let mut resp = no_store(
        Json(json!({
            "account": account.as_str(),
            "topup": row,
            "available": balance.available(),
            "unit": "usd_micros",
        }))
        .into_response(),
    );
    super::paid::insert_success(resp.headers_mut(), &credited);
    Ok(resp)
}

/// Values every offered token for `credits` and stores the quote. A token refused now is left
/// out of the 402 (its reason is logged); USDC is always offered.
async fn issue(
    state: &AppState,
    v: &Valuer,
    account: &AccountId,
    credits: UsdMicros,
    hash: crate::quote::RequestHash,
) -> Result<Arc<Quote>, ApiError> {
    let usdc_terms = state.config.networks.iter().map(|n| &n.terms).find(|t| {
        t.network == v.net.network && t.asset.parse::<Address>().ok() == Some(v.net.usdc)
    });
    let known = crate::x402::assets::usdc_for(&v.net.network);
    let timeout = v.net.quote_ttl_secs.min(state.config.quote_ttl_seconds);
    let pay_to = format!("{:#x}", v.net.treasury);
    let mut offers = Vec::new();
    let mut valuations = Vec::new();
    let mut tokens = vec![v.net.usdc];
    tokens.extend(v.net.offer.iter().copied());
    for token in tokens {
        let valued: Valuation = match v.cost(token, credits).await {
            Ok(x) => x,
            Err(ReadError::Refused(r)) => {
                tracing::info!(token = %token, reason = r.code(), "top-up token not offered now");
                continue;
            }
            Err(ReadError::Chain(e)) => return Err(e.into()),
        };
        let usdc = token == v.net.usdc;
        let (name, version) = match (usdc_terms, known) {
            _ if !usdc => (String::new(), String::new()),
            (Some(t), _) => (t.eip712_name.clone(), t.eip712_version.clone()),
            (None, Some(k)) => (k.eip712_name.to_string(), k.eip712_version.to_string()),
            (None, None) => continue,
        };
        let asset = format!("{token:#x}");
        valuations.push(TopupValuation {
            asset: asset.clone(),
            valuation: valued.to_json(&v.net).to_string(),
        });
        offers.push(Offer {
            network: v.net.network.clone(),
            asset,
            amount: valued.amount.to_string(),
            pay_to: pay_to.clone(),
            max_timeout_seconds: timeout,
            eip712_name: name,
            eip712_version: version,
            transfer_method: if usdc {
                TransferMethod::Eip3009
            } else {
                TransferMethod::Permit2
            },
            scheme: OfferScheme::Exact,
            facilitator: None,
        });
    }
    if offers.is_empty() {
        return Err(refused(&Refusal::NoPool));
    }
    let now = state.quotes.clock.now();
    let candidate = Arc::new(Quote {
        id: QuoteId::for_request(&hash),
        request_hash: hash,
        price: credits,
        rule: RuleRef {
            route: "topup".into(),
            rule: v.net.network.to_string(),
        },
        method: "POST".into(),
        path: PATH.into(),
        offers: offers.into(),
        created_at: now,
        expires_at: now.plus_secs(timeout),
        topup: Some(Box::new(TopupTerms {
            account: account.to_string(),
            valuations,
        })),
    });
    state
        .quotes
        .store
        .get_or_insert(candidate)
        .await
        .map_err(|e| super::gateway::store_unavailable(state, e))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    network: String,
    tx_hash: String,
}

/// `POST /top-up/transfer`: credits the tokens a transaction sent to the treasury from the
/// account's wallets, once per log, on what arrived.
pub async fn transfer(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let account = account_of(&state, &headers, "/top-up/transfer").await?;
    let parsed = strict_body(&state, &body)?;
    let req: TransferBody = serde_json::from_value(parsed).map_err(|e| {
        ApiError::bad_request(
            "invalid_topup_transfer",
            format!("expected {{\"network\", \"tx_hash\"}}: {e}"),
        )
    })?;
    let s = served(&state, Some(&req.network))?.clone();
    let v = &s.valuer;
    let tx: B256 = req.tx_hash.parse().map_err(|_| {
        ApiError::bad_request("invalid_tx_hash", "tx_hash: 0x and 64 hex characters")
    })?;
    let tx_hex = format!("{tx:#x}");
    let chain = v.chain();
    let Some(receipt) = chain.receipt(tx).await.map_err(ApiError::from)? else {
        return Err(refused(&Refusal::UnknownTransaction));
    };
    if !receipt.succeeded {
        return Err(refused(&Refusal::UnknownTransaction));
    }
    let (latest, _) = chain.latest_block().await.map_err(ApiError::from)?;
    let have = latest.saturating_sub(receipt.block) + 1;
    if have < v.net.confirmations {
        return Err(refused(&Refusal::NotConfirmed {
            have,
            need: v.net.confirmations,
        }));
    }
    let found = arrivals(&receipt.logs, v.net.treasury);
    if found.is_empty() {
        return Err(refused(&Refusal::NoTransferToTreasury));
    }
    let links = accounts(&state)?.links();
    let mut results = Vec::new();
    let mut first_refusal: Option<Refusal> = None;
    for a in found {
        let from = format!("{:#x}", a.from);
        let owner = links
            .account_of(&from)
            .await
            .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?;
        let id = TopupRow::transfer_id(v.net.network.as_str(), &tx_hex, a.log_index);
        let outcome = if owner != account.as_str() {
            Err(Refusal::WalletNotLinked { from })
        } else {
            credit_arrival(&state, &s, &account, &id, &tx_hex, &from, a.token, a.amount).await?
        };
        match outcome {
            Ok(booked) => {
                let status = match &booked {
                    Booked::Credited(_) => {
                        state.metrics.topup(v.net.network.as_str(), "transfer");
                        "credited"
                    }
                    Booked::Already(_) => "already_credited",
                };
                results.push(json!({ "status": status, "topup": booked.row() }));
            }
            Err(r) => {
                results.push(json!({
                    "status": "refused",
                    "log_index": a.log_index,
                    "token": format!("{:#x}", a.token),
                    "error": r.code(),
                    "message": r.to_string(),
                }));
                first_refusal.get_or_insert(r);
            }
        }
    }
    let any_credited = results.iter().any(|r| r["status"] != "refused");
    if !any_credited && let Some(r) = first_refusal {
        return Err(refused(&r));
    }
    let balance = accounts(&state)?.ledger().balance(&account).await?;
    Ok(no_store(
        Json(json!({
            "account": account.as_str(),
            "topups": results,
            "available": balance.available(),
            "unit": "usd_micros",
        }))
        .into_response(),
    ))
}

/// Values and books one arrival (an arrival already booked is returned as it was booked).
#[allow(clippy::too_many_arguments)]
async fn credit_arrival(
    state: &AppState,
    s: &Served,
    account: &AccountId,
    id: &str,
    tx: &str,
    from: &str,
    token: Address,
    amount: U256,
) -> Result<Result<Booked, Refusal>, ApiError> {
    let topups = payments_of(state)?.topups();
    let db = |e: crate::topup::record::RecordError| {
        ApiError::unavailable("database_unavailable", e.to_string())
    };
    if let Some(row) = topups.get(id).await.map_err(db)? {
        return Ok(Ok(Booked::Already(row)));
    }
    let v = s.take()?;
    let valued = match v.value(token, amount).await {
        Ok(x) => x,
        Err(ReadError::Refused(r)) => return Ok(Err(r)),
        Err(ReadError::Chain(e)) => return Err(e.into()),
    };
    if let Err(r) = v.check_size(valued.credit) {
        return Ok(Err(r));
    }
    if let Some(r) = over_daily_cap(state, v, account, valued.credit).await? {
        return Ok(Err(r));
    }
    let row = TopupRow {
        id: id.to_string(),
        account: account.to_string(),
        network: v.net.network.to_string(),
        token: format!("{token:#x}"),
        amount: amount.to_string(),
        credit: valued.credit,
        source: Source::Transfer,
        tx_hash: tx.to_string(),
        payer: from.to_string(),
        valuation: valued.to_json(&v.net),
        created_at_ms: 0,
    };
    let booked = topups
        .book(&row, state.quotes.clock.now())
        .await
        .map_err(db)?;
    Ok(Ok(booked))
}
