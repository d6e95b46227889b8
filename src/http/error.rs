//! The one API error: an HTTP status, a stable machine-readable code, and a human message.
//! Internal causes are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::accounts::AccountsError;
use crate::ledger::LedgerError;
use crate::payment::PaymentError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For 405: the methods the path accepts (the `Allow` header).
    pub allow: Option<String>,
    /// For 429/503: seconds until a retry may succeed (the `Retry-After` header).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            allow: None,
            retry_after: None,
        }
    }
    /// The path is priced, but not for this method.
    pub fn method_not_allowed(method: &str, path: &str, allowed: &[&str]) -> Self {
        let allow = allowed.join(", ");
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} accepts {allow}, not {method}"),
        );
        e.allow = Some(allow);
        e
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
    }
    /// A dependency is down: fail closed, the client may retry.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
    /// Something that is our fault. `cause` goes to the log only.
    pub fn internal(
        code: &'static str,
        message: impl Into<String>,
        cause: &dyn std::fmt::Display,
    ) -> Self {
        tracing::error!(code, %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body {
            error: self.code,
            message: &self.message,
        })
        .expect("serialising two strings cannot fail");
        let mut resp = (self.status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(v) = self
            .allow
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            h.insert(header::ALLOW, v);
        }
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<AccountsError> for ApiError {
    fn from(e: AccountsError) -> Self {
        match e {
            AccountsError::InvalidKey => ApiError::unauthorized("invalid_api_key", e.to_string()),
            AccountsError::ReasonRequired => {
                ApiError::bad_request("reason_required", e.to_string())
            }
            AccountsError::WalletLinked { .. } => {
                ApiError::new(StatusCode::CONFLICT, "wallet_already_linked", e.to_string())
            }
            AccountsError::NonceUsed(_) => {
                ApiError::unauthorized("siwx_nonce_reused", e.to_string())
            }
            AccountsError::Ledger(l) => l.into(),
            AccountsError::Db(d) => ApiError::unavailable(
                "ledger_unavailable",
                format!("the ledger cannot be reached: {d}"),
            ),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        if e.is_transient() {
            return ApiError::unavailable(
                "ledger_unavailable",
                "the ledger cannot be reached; retry shortly",
            );
        }
        match &e {
            LedgerError::UnknownAccount(_) => ApiError::not_found(e.code(), e.to_string()),
            LedgerError::Conflict { .. } | LedgerError::OwnerTaken { .. } => {
                ApiError::new(StatusCode::CONFLICT, e.code(), e.to_string())
            }
            LedgerError::InsufficientFunds { .. } => {
                ApiError::new(StatusCode::PAYMENT_REQUIRED, e.code(), e.to_string())
            }
            LedgerError::Database(_) | LedgerError::Overflow(_) => {
                ApiError::internal("ledger_error", "the ledger refused the operation", &e)
            }
            _ => ApiError::bad_request(e.code(), e.to_string()),
        }
    }
}

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        match &e {
            PaymentError::Malformed { reason, .. } => ApiError::bad_request(reason, e.to_string()),
            PaymentError::InProgress => {
                ApiError::new(StatusCode::CONFLICT, "payment_in_progress", e.to_string())
            }
            PaymentError::Pending(_) => {
                tracing::warn!(error = %e, "settlement outcome unknown; the reconciler resolves it");
                ApiError::unavailable(
                    "settlement_pending",
                    "the payment's settlement outcome is not known yet; if it lands it is credited to the payer's account",
                )
            }
            PaymentError::Unavailable { reason, .. } => {
                ApiError::unavailable(reason, e.to_string())
            }
            // A refusal is normally answered with the quote's 402 (which names the reason);
            // this is the answer where no quote is at hand.
            PaymentError::Invalid { .. } | PaymentError::SettlementFailed { .. } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "payment_refused",
                e.to_string(),
            ),
            PaymentError::Internal(_) => {
                ApiError::internal("unexpected_settle_error", "payment processing failed", &e)
            }
        }
    }
}
