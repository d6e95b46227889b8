//! An x402 facilitator over HTTP: `POST /verify`, `POST /settle`, `GET /supported`.
//!
//! Status codes are not standardised (the TS facilitator answers 200 with `isValid:false`,
//! x402-rs answers 400 or 412), so the body is parsed on 200, 400 and 412 alike; anything else,
//! or a body that is not a verdict, is the facilitator failing, never the payer.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Serialize;
use serde_json::Value;

use super::PaymentError;
use crate::x402::v2::{SettleResponse, SupportedResponse, VerifyResponse};

#[derive(Clone)]
pub struct Facilitator {
    base: String,
    client: reqwest::Client,
    headers: Vec<(String, String)>,
}

impl std::fmt::Debug for Facilitator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values are credentials.
        f.debug_struct("Facilitator")
            .field("base", &self.base)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    x402_version: u32,
    payment_payload: &'a Value,
    payment_requirements: &'a Value,
}

/// Which call failed, for messages.
#[derive(Clone, Copy)]
enum Call {
    Verify,
    Settle,
}

impl Call {
    fn path(self) -> &'static str {
        match self {
            Call::Verify => "verify",
            Call::Settle => "settle",
        }
    }
}

impl Facilitator {
    pub fn new(
        base: &str,
        headers: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<Facilitator, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Facilitator {
            base: base.trim_end_matches('/').to_string(),
            client,
            headers: headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    async fn post(
        &self,
        call: Call,
        version: u32,
        payload: &Value,
        requirements: &Value,
    ) -> Result<(StatusCode, Vec<u8>), PaymentError> {
        let mut req = self
            .client
            .post(format!("{}/{}", self.base, call.path()))
            .json(&Envelope {
                x402_version: version,
                payment_payload: payload,
                payment_requirements: requirements,
            });
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|e| match call {
            // A settle request that may have reached the facilitator has an unknown outcome.
            Call::Settle if !e.is_connect() => {
                PaymentError::Pending(format!("facilitator /settle did not answer: {e}"))
            }
            _ => PaymentError::unavailable(
                "facilitator_unavailable",
                format!("facilitator /{} failed: {e}", call.path()),
            ),
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| match call {
            Call::Settle => PaymentError::Pending(format!("facilitator /settle answer lost: {e}")),
            Call::Verify => PaymentError::unavailable(
                "facilitator_unavailable",
                format!("facilitator /verify answer unreadable: {e}"),
            ),
        })?;
        Ok((status, body.to_vec()))
    }

    fn parseable(status: StatusCode) -> bool {
        matches!(
            status,
            StatusCode::OK | StatusCode::BAD_REQUEST | StatusCode::PRECONDITION_FAILED
        )
    }

    pub async fn verify(
        &self,
        version: u32,
        payload: &Value,
        requirements: &Value,
    ) -> Result<VerifyResponse, PaymentError> {
        let (status, body) = self
            .post(Call::Verify, version, payload, requirements)
            .await?;
        match serde_json::from_slice::<VerifyResponse>(&body) {
            Ok(v) if Self::parseable(status) => Ok(v),
            _ => Err(PaymentError::unavailable(
                "facilitator_error",
                format!("facilitator /verify answered {status} without a verdict"),
            )),
        }
    }

    /// Settles. A non-verdict answer to `/settle` leaves the outcome unknown: the facilitator
    /// may have broadcast before failing, so the caller must reconcile against the chain.
    pub async fn settle(
        &self,
        version: u32,
        payload: &Value,
        requirements: &Value,
    ) -> Result<SettleResponse, PaymentError> {
        let (status, body) = self
            .post(Call::Settle, version, payload, requirements)
            .await?;
        match serde_json::from_slice::<SettleResponse>(&body) {
            Ok(s) if Self::parseable(status) => Ok(s),
            _ => Err(PaymentError::Pending(format!(
                "facilitator /settle answered {status} without a verdict"
            ))),
        }
    }

    pub async fn supported(&self) -> Result<SupportedResponse, PaymentError> {
        let mut req = self.client.get(format!("{}/supported", self.base));
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|e| {
            PaymentError::unavailable("facilitator_unavailable", format!("/supported: {e}"))
        })?;
        if !resp.status().is_success() {
            return Err(PaymentError::unavailable(
                "facilitator_error",
                format!("/supported answered {}", resp.status()),
            ));
        }
        resp.json()
            .await
            .map_err(|e| PaymentError::unavailable("facilitator_error", format!("/supported: {e}")))
    }
}
