//! x402 version 1 wire types (`x402Version: 1`), for legacy clients.
//!
//! v1 is frozen upstream; shapes follow the legacy TS package (`legacy/x402`
//! `types/verify/x402Specs.ts`) and `@x402/core` `types/v1`. Networks are legacy names on the
//! wire (`base-sepolia`) but a typed [`Network`] in memory; see [`super::network::v1_serde`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::network::{Network, NetworkError, v1_serde};
use super::v2::FacilitatorRequest;
use super::{AmountError, X402_VERSION_V1, parse_base_units};

/// `POST /verify` answer: the same shape in both versions.
pub use super::v2::VerifyResponse;

/// The 402 JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirementsResponse {
    pub x402_version: u32,
    /// Required by the v1 spec; the legacy server sends e.g. `"X-PAYMENT header is required"`.
    #[serde(default)]
    pub error: String,
    pub accepts: Vec<PaymentRequirements>,
}

impl PaymentRequirementsResponse {
    pub fn new(error: impl Into<String>, accepts: Vec<PaymentRequirements>) -> Self {
        PaymentRequirementsResponse {
            x402_version: X402_VERSION_V1,
            error: error.into(),
            accepts,
        }
    }
}

/// One way to pay, v1 style: resource metadata sits on every requirement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    pub scheme: String,
    #[serde(with = "v1_serde")]
    pub network: Network,
    /// Base units as a decimal string. v1 called it a maximum, but current facilitators
    /// require the authorization value to equal it.
    pub max_amount_required: String,
    /// Absolute URL of the resource.
    pub resource: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub mime_type: String,
    /// Discovery metadata (see [`super::bazaar::v1_output_schema`]). Omitted when absent,
    /// *not* written as `null` (as the spec example shows): the legacy `x402-fetch` client
    /// validates it as `z.record(...).optional()`, which rejects `null` and with it the whole
    /// 402. `null` is still accepted on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    pub asset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
}

impl PaymentRequirements {
    pub fn max_amount_base_units(&self) -> Result<u128, AmountError> {
        parse_base_units(&self.max_amount_required)
    }

    /// v1 servers match a payment to a requirement on scheme and network only.
    pub fn matches(&self, payload: &PaymentPayload) -> bool {
        self.scheme == payload.scheme && self.network == payload.network
    }
}

/// What the client sends in `X-PAYMENT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    pub x402_version: u32,
    pub scheme: String,
    #[serde(with = "v1_serde")]
    pub network: Network,
    /// Scheme-specific proof, e.g. [`super::exact_evm::ExactEvmPayload`].
    pub payload: Value,
}

/// `POST /verify` body for a v1 payment.
pub type VerifyRequest = FacilitatorRequest<PaymentPayload, PaymentRequirements>;
/// `POST /settle` body for a v1 payment.
pub type SettleRequest = FacilitatorRequest<PaymentPayload, PaymentRequirements>;

impl FacilitatorRequest<PaymentPayload, PaymentRequirements> {
    pub fn new_v1(
        payment_payload: PaymentPayload,
        payment_requirements: PaymentRequirements,
    ) -> Self {
        FacilitatorRequest {
            x402_version: X402_VERSION_V1,
            payment_payload,
            payment_requirements,
        }
    }
}

/// `POST /settle` answer, and what the server returns in `X-PAYMENT-RESPONSE`.
///
/// `network` stays a string for the same reason as in [`super::v2::SettleResponse`]: a
/// settled payment must never become a parse error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Required by the v1 spec, optional in the TS type; always set it when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    #[serde(default)]
    pub transaction: String,
    #[serde(default)]
    pub network: String,
}

impl SettleResponse {
    /// The network as a typed id, accepting a v1 name or a CAIP-2 id.
    pub fn network_id(&self) -> Result<Network, NetworkError> {
        Network::parse_any(&self.network)
    }
}

impl From<super::v2::SettleResponse> for SettleResponse {
    /// Re-labels a settlement for a v1 client: the network goes back to its legacy name, and
    /// the v2-only `amount` / `extensions` are dropped.
    fn from(s: super::v2::SettleResponse) -> Self {
        let network = match Network::parse_any(&s.network) {
            Ok(n) => n.v1_name().map_or(s.network, str::to_owned),
            Err(_) => s.network,
        };
        SettleResponse {
            success: s.success,
            error_reason: s.error_reason,
            error_message: s.error_message,
            payer: s.payer,
            transaction: s.transaction,
            network,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reference §1.2, the 402 body (without the HTTP status lines), verbatim.
    const REF_402_BODY: &str = r#"{ "x402Version": 1,
  "error": "X-PAYMENT header is required",
  "accepts": [{
    "scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "10000",
    "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
    "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
    "resource": "https://api.example.com/premium-data",
    "description": "Access to premium market data", "mimeType": "application/json",
    "outputSchema": null, "maxTimeoutSeconds": 60,
    "extra": { "name": "USDC", "version": "2" } }] }"#;

    /// Reference §1.2, the decoded `X-PAYMENT` header, verbatim.
    const REF_X_PAYMENT: &str = r#"{ "x402Version": 1, "scheme": "exact", "network": "base-sepolia",
  "payload": {
    "signature": "0x2d6a…571c",
    "authorization": {
      "from": "0x857b06519E91e3A54538791bDbb0E22373e36b66",
      "to":   "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
      "value": "10000", "validAfter": "1740672089", "validBefore": "1740672154",
      "nonce": "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480" } } }"#;

    /// Reference §1.2, the decoded `X-PAYMENT-RESPONSE` header, verbatim.
    const REF_X_PAYMENT_RESPONSE: &str = r#"{"success":true,"transaction":"0x1234…cdef","network":"base-sepolia","payer":"0x857b…6b66"}"#;

    fn value(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn reference_402_body_round_trips() {
        let body: PaymentRequirementsResponse = serde_json::from_str(REF_402_BODY).unwrap();
        assert_eq!(body.x402_version, 1);
        assert_eq!(body.error, "X-PAYMENT header is required");
        let req = &body.accepts[0];
        assert_eq!(req.network, Network::eip155(84532));
        assert_eq!(req.max_amount_base_units(), Ok(10_000));
        assert_eq!(req.resource, "https://api.example.com/premium-data");
        assert_eq!(req.description, "Access to premium market data");
        assert_eq!(req.mime_type, "application/json");
        assert_eq!(req.output_schema, None);
        assert_eq!(req.max_timeout_seconds, 60);
        assert_eq!(req.extra.as_ref().unwrap()["name"], "USDC");

        // Re-encoding is the reference minus `"outputSchema": null` (see the field's docs).
        let mut expected = value(REF_402_BODY);
        let removed = expected["accepts"][0]
            .as_object_mut()
            .unwrap()
            .remove("outputSchema");
        assert_eq!(removed, Some(Value::Null));
        assert_eq!(serde_json::to_value(&body).unwrap(), expected);
    }

    #[test]
    fn output_schema_is_kept_when_present() {
        let mut v = value(REF_402_BODY);
        let schema = json!({"input": {"type": "http", "method": "GET", "discoverable": true},
                            "output": null});
        v["accepts"][0]["outputSchema"] = schema.clone();
        let body: PaymentRequirementsResponse = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(body.accepts[0].output_schema, Some(schema));
        assert_eq!(serde_json::to_value(&body).unwrap(), v);
    }

    #[test]
    fn absent_output_schema_and_extra_are_omitted() {
        let req = PaymentRequirements {
            scheme: "exact".into(),
            network: Network::eip155(8453),
            max_amount_required: "5".into(),
            resource: "https://x.test/r".into(),
            description: String::new(),
            mime_type: String::new(),
            output_schema: None,
            pay_to: "0xb".into(),
            max_timeout_seconds: 60,
            asset: "0xa".into(),
            extra: None,
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            json!({
                "scheme": "exact", "network": "base", "maxAmountRequired": "5",
                "resource": "https://x.test/r", "description": "", "mimeType": "",
                "payTo": "0xb", "maxTimeoutSeconds": 60, "asset": "0xa"
            })
        );
        let body = PaymentRequirementsResponse::new("X-PAYMENT header is required", vec![req]);
        assert_eq!(serde_json::to_value(&body).unwrap()["x402Version"], 1);
    }

    #[test]
    fn reference_x_payment_round_trips_and_matches() {
        let p: PaymentPayload = serde_json::from_str(REF_X_PAYMENT).unwrap();
        assert_eq!(p.x402_version, 1);
        assert_eq!(p.scheme, "exact");
        assert_eq!(p.network, Network::eip155(84532));
        assert_eq!(p.payload["authorization"]["value"], "10000");
        assert_eq!(serde_json::to_value(&p).unwrap(), value(REF_X_PAYMENT));

        let body: PaymentRequirementsResponse = serde_json::from_str(REF_402_BODY).unwrap();
        assert!(body.accepts[0].matches(&p));
        let mut other = body.accepts[0].clone();
        other.network = Network::eip155(8453);
        assert!(!other.matches(&p));
    }

    #[test]
    fn reference_x_payment_response_round_trips() {
        let s: SettleResponse = serde_json::from_str(REF_X_PAYMENT_RESPONSE).unwrap();
        assert!(s.success);
        assert_eq!(s.transaction, "0x1234…cdef");
        assert_eq!(s.network_id(), Ok(Network::eip155(84532)));
        assert_eq!(s.payer.as_deref(), Some("0x857b…6b66"));
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            value(REF_X_PAYMENT_RESPONSE)
        );
    }

    #[test]
    fn v2_settlement_converts_to_v1_names() {
        let v2 = crate::x402::v2::SettleResponse::succeeded(
            "0x1234…cdef",
            &Network::eip155(84532),
            Some("0x857b…6b66".into()),
        );
        let v1 = SettleResponse::from(v2);
        assert_eq!(
            serde_json::to_value(&v1).unwrap(),
            value(REF_X_PAYMENT_RESPONSE)
        );
    }

    #[test]
    fn facilitator_body_carries_version_1() {
        let p: PaymentPayload = serde_json::from_str(REF_X_PAYMENT).unwrap();
        let body: PaymentRequirementsResponse = serde_json::from_str(REF_402_BODY).unwrap();
        let req = VerifyRequest::new_v1(p, body.accepts[0].clone());
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["x402Version"], 1);
        assert_eq!(v["paymentPayload"]["network"], "base-sepolia");
        assert_eq!(v["paymentRequirements"]["network"], "base-sepolia");
    }

    #[test]
    fn caip2_network_accepted_from_v1_clients() {
        // Some v1 servers fall back to `eip155:N` for chains without a legacy name.
        let p: PaymentPayload = serde_json::from_value(json!({
            "x402Version": 1, "scheme": "exact", "network": "eip155:42161", "payload": {}
        }))
        .unwrap();
        assert_eq!(p.network.chain_id(), Some(42161));
        assert_eq!(serde_json::to_value(&p).unwrap()["network"], "eip155:42161");
    }
}
