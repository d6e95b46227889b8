//! x402 version 2 wire types (`x402Version: 2`).
//!
//! Field names and optionality follow the TS reference types (`@x402/core` `types/payments.ts`
//! and `types/facilitator.ts`), which is what real clients and facilitators produce. Optional
//! fields are omitted when absent, never written as `null`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::network::{Network, NetworkError};
use super::{AmountError, X402_VERSION_V2, null_as_empty_object, parse_base_units};

/// What is being sold. Moved out of each requirement into one top-level object in v2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Printable ASCII, at most 32 chars (facilitators soft-drop anything else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// At most 5 tags of at most 32 printable ASCII chars each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Absolute http(s) URL, not an IP literal or localhost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
}

impl ResourceInfo {
    pub fn new(url: impl Into<String>) -> Self {
        ResourceInfo {
            url: url.into(),
            description: None,
            mime_type: None,
            service_name: None,
            tags: None,
            icon_url: None,
        }
    }
}

/// One way to pay. Clients copy the chosen one verbatim into `PaymentPayload.accepted`, and
/// the server matches by deep equality, so every field (including `extra`) is part of the
/// offer's identity. `PartialEq` here is that deep equality: `extra` is a sorted map, so key
/// order does not matter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    pub scheme: String,
    pub network: Network,
    /// Base units as a decimal string; see [`PaymentRequirements::amount_base_units`].
    pub amount: String,
    /// Token contract address (or an ISO-4217 code for non-chain schemes).
    pub asset: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    /// Always written (the TS type requires it); read leniently because the spec marks it
    /// optional and Go clients write a nil map as `null`.
    #[serde(default, deserialize_with = "null_as_empty_object")]
    pub extra: Map<String, Value>,
}

impl PaymentRequirements {
    /// The amount as an integer, parsed strictly.
    pub fn amount_base_units(&self) -> Result<u128, AmountError> {
        parse_base_units(&self.amount)
    }

    /// A string field of `extra`, e.g. the EIP-712 `name` / `version`.
    pub fn extra_str(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(Value::as_str)
    }
}

/// The 402 answer, carried base64-encoded in the `PAYMENT-REQUIRED` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    pub x402_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub resource: ResourceInfo,
    pub accepts: Vec<PaymentRequirements>,
    /// `{<key>: {info, schema}}`. Always written, `{}` when empty, matching the TS server;
    /// clients must echo what they receive here into `PaymentPayload.extensions`.
    #[serde(default, deserialize_with = "null_as_empty_object")]
    pub extensions: Map<String, Value>,
}

impl PaymentRequired {
    pub fn new(resource: ResourceInfo, accepts: Vec<PaymentRequirements>) -> Self {
        PaymentRequired {
            x402_version: X402_VERSION_V2,
            error: None,
            resource,
            accepts,
            extensions: Map::new(),
        }
    }

    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }
}

/// What the client sends in `PAYMENT-SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    pub x402_version: u32,
    /// Echo of the 402's resource. Optional, and not trustworthy for binding: reference
    /// servers do not compare it with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// Full copy of the chosen requirement.
    pub accepted: PaymentRequirements,
    /// Scheme-specific proof, e.g. [`super::exact_evm::ExactEvmPayload`]. Kept as raw JSON so
    /// unknown schemes can still be forwarded to a facilitator.
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
}

/// Body of `POST /verify` and `POST /settle` (both take the same shape).
///
/// Generic so the caller can forward the client's payload untouched (`P = serde_json::Value`)
/// when unknown fields must survive, or send typed values. v1 uses the same envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest<P = PaymentPayload, R = PaymentRequirements> {
    pub x402_version: u32,
    pub payment_payload: P,
    pub payment_requirements: R,
}

/// `POST /verify` body.
pub type VerifyRequest = FacilitatorRequest<PaymentPayload, PaymentRequirements>;
/// `POST /settle` body.
pub type SettleRequest = FacilitatorRequest<PaymentPayload, PaymentRequirements>;

impl FacilitatorRequest<PaymentPayload, PaymentRequirements> {
    /// Builds the body for a v2 payload and the *server's* copy of the matched requirements.
    pub fn new(payment_payload: PaymentPayload, payment_requirements: PaymentRequirements) -> Self {
        FacilitatorRequest {
            x402_version: X402_VERSION_V2,
            payment_payload,
            payment_requirements,
        }
    }
}

/// `POST /verify` answer. Reason codes are opaque strings: three vocabularies are in use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub is_valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
    /// Scheme-specific details; in the spec's VerifyResponse and `@x402/core`'s parser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
}

/// `POST /settle` answer, and what the server returns in `PAYMENT-RESPONSE`.
///
/// `network` is kept as the string the facilitator sent rather than a [`Network`]: by the time
/// this is parsed money may already have moved, and a cosmetic difference in the network
/// spelling (a v1 name from a mixed-version facilitator, `""` on some failures) must not turn
/// a settled payment into a parse error. Use [`SettleResponse::network_id`] to interpret it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Transaction hash; `""` on failure.
    #[serde(default)]
    pub transaction: String,
    #[serde(default)]
    pub network: String,
    /// Amount actually settled, in base units (present for `upto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
    /// Scheme-specific details (accepted by `@x402/core`'s settle-response parser).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
}

impl SettleResponse {
    pub fn succeeded(
        transaction: impl Into<String>,
        network: &Network,
        payer: Option<String>,
    ) -> Self {
        SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer,
            transaction: transaction.into(),
            network: network.to_string(),
            amount: None,
            extensions: None,
            extra: None,
        }
    }

    /// A failure receipt: `transaction` is `""` as the spec requires.
    pub fn failed(
        error_reason: impl Into<String>,
        network: &Network,
        payer: Option<String>,
    ) -> Self {
        SettleResponse {
            success: false,
            error_reason: Some(error_reason.into()),
            error_message: None,
            payer,
            transaction: String::new(),
            network: network.to_string(),
            amount: None,
            extensions: None,
            extra: None,
        }
    }

    /// The network as a typed id, accepting a CAIP-2 id or a v1 name.
    pub fn network_id(&self) -> Result<Network, NetworkError> {
        Network::parse_any(&self.network)
    }
}

/// One entry of `GET /supported` `kinds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    pub x402_version: u32,
    pub scheme: String,
    /// A string, not a [`Network`]: one `/supported` answer lists v1 kinds with legacy names
    /// (`"base"`) next to v2 kinds with CAIP-2 ids.
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
}

impl SupportedKind {
    /// The network as a typed id, accepting a CAIP-2 id or a v1 name.
    pub fn network_id(&self) -> Result<Network, NetworkError> {
        Network::parse_any(&self.network)
    }
}

/// `GET /supported` answer. `extensions` and `signers` are v2 additions; v1 facilitators omit
/// them, so both default to empty.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedResponse {
    pub kinds: Vec<SupportedKind>,
    #[serde(default)]
    pub extensions: Vec<String>,
    /// CAIP family pattern (`"eip155:*"`) → signer addresses.
    #[serde(default)]
    pub signers: BTreeMap<String, Vec<String>>,
}

impl SupportedResponse {
    /// The kind for this version, scheme and network, if the facilitator offers it.
    pub fn find(
        &self,
        x402_version: u32,
        scheme: &str,
        network: &Network,
    ) -> Option<&SupportedKind> {
        self.kinds.iter().find(|k| {
            k.x402_version == x402_version
                && k.scheme == scheme
                && k.network_id().is_ok_and(|n| n == *network)
        })
    }

    /// Whether the facilitator advertises an extension such as `"bazaar"`.
    pub fn has_extension(&self, key: &str) -> bool {
        self.extensions.iter().any(|e| e == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reference §1.3, the decoded `PAYMENT-REQUIRED` header, verbatim.
    const REF_PAYMENT_REQUIRED: &str = r#"{ "x402Version": 2,
  "error": "PAYMENT-SIGNATURE header is required",
  "resource": { "url": "https://api.example.com/premium-data",
                "description": "Access to premium market data", "mimeType": "application/json",
                "serviceName": "Example Market Data", "tags": ["market-data","finance"],
                "iconUrl": "https://api.example.com/icon.png" },
  "accepts": [{
    "scheme": "exact", "network": "eip155:84532", "amount": "10000",
    "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
    "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
    "maxTimeoutSeconds": 60,
    "extra": { "name": "USDC", "version": "2" } }],
  "extensions": {} }"#;

    /// Reference §1.3, the decoded `PAYMENT-SIGNATURE` header, verbatim.
    const REF_PAYMENT_PAYLOAD: &str = r#"{ "x402Version": 2,
  "resource": { "url": "https://api.example.com/premium-data",
                "description": "Access to premium market data", "mimeType": "application/json" },
  "accepted": { "scheme": "exact", "network": "eip155:84532", "amount": "10000",
    "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
    "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
    "maxTimeoutSeconds": 60, "extra": { "name": "USDC", "version": "2" } },
  "payload": {
    "signature": "0x2d6a7588…af148b571c",
    "authorization": {
      "from": "0x857b06519E91e3A54538791bDbb0E22373e36b66",
      "to":   "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
      "value": "10000", "validAfter": "1740672089", "validBefore": "1740672154",
      "nonce": "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480" } },
  "extensions": {} }"#;

    /// Reference §1.3 settlement headers, verbatim.
    const REF_SETTLE_OK: &str = r#"{"success":true,"transaction":"0x1234…cdef","network":"eip155:84532","payer":"0x857b…6b66"}"#;
    const REF_SETTLE_FAIL: &str = r#"{"success":false,"errorReason":"insufficient_funds","transaction":"","network":"eip155:84532","payer":"0x857b…"}"#;

    /// Reference §3 `/supported` example, verbatim.
    const REF_SUPPORTED: &str = r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:8453"},{"x402Version":2,"scheme":"upto","network":"eip155:8453","extra":{"facilitatorAddress":"0x…"}},{"x402Version":1,"scheme":"exact","network":"base"}],"extensions":["bazaar"],"signers":{"eip155:*":["0x…"],"solana:*":["CKPK…"]}}"#;

    fn value(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn reference_payment_required_round_trips() {
        let pr: PaymentRequired = serde_json::from_str(REF_PAYMENT_REQUIRED).unwrap();
        assert_eq!(pr.x402_version, 2);
        assert_eq!(
            pr.error.as_deref(),
            Some("PAYMENT-SIGNATURE header is required")
        );
        assert_eq!(pr.resource.url, "https://api.example.com/premium-data");
        assert_eq!(
            pr.resource.service_name.as_deref(),
            Some("Example Market Data")
        );
        assert_eq!(
            pr.resource.tags,
            Some(vec!["market-data".to_string(), "finance".to_string()])
        );
        assert_eq!(
            pr.resource.icon_url.as_deref(),
            Some("https://api.example.com/icon.png")
        );
        assert_eq!(pr.accepts.len(), 1);
        let req = &pr.accepts[0];
        assert_eq!(req.scheme, "exact");
        assert_eq!(req.network, Network::eip155(84532));
        assert_eq!(req.amount_base_units(), Ok(10_000));
        assert_eq!(req.pay_to, "0x209693Bc6afc0C5328bA36FaF03C514EF312287C");
        assert_eq!(req.max_timeout_seconds, 60);
        assert_eq!(req.extra_str("name"), Some("USDC"));
        assert_eq!(req.extra_str("version"), Some("2"));
        assert!(pr.extensions.is_empty());

        assert_eq!(
            serde_json::to_value(&pr).unwrap(),
            value(REF_PAYMENT_REQUIRED)
        );
    }

    #[test]
    fn reference_payment_payload_round_trips() {
        let p: PaymentPayload = serde_json::from_str(REF_PAYMENT_PAYLOAD).unwrap();
        assert_eq!(p.x402_version, 2);
        let resource = p.resource.as_ref().unwrap();
        assert_eq!(resource.mime_type.as_deref(), Some("application/json"));
        assert_eq!(resource.service_name, None);
        assert_eq!(p.payload["authorization"]["validBefore"], "1740672154");
        assert_eq!(p.extensions, Some(Map::new()));

        // The echoed `accepted` deep-equals the offered requirement.
        let pr: PaymentRequired = serde_json::from_str(REF_PAYMENT_REQUIRED).unwrap();
        assert_eq!(p.accepted, pr.accepts[0]);

        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            value(REF_PAYMENT_PAYLOAD)
        );
    }

    #[test]
    fn deep_equality_sees_every_field() {
        let pr: PaymentRequired = serde_json::from_str(REF_PAYMENT_REQUIRED).unwrap();
        let offered = &pr.accepts[0];

        let mut reordered = value(REF_PAYMENT_REQUIRED)["accepts"][0].clone();
        reordered["extra"] = json!({"version": "2", "name": "USDC"});
        let reordered: PaymentRequirements = serde_json::from_value(reordered).unwrap();
        assert_eq!(&reordered, offered, "key order must not matter");

        let mut tampered = offered.clone();
        tampered.extra.insert("quoteId".into(), json!("q1"));
        assert_ne!(&tampered, offered);
        let mut tampered = offered.clone();
        tampered.max_timeout_seconds = 61;
        assert_ne!(&tampered, offered);
        let mut tampered = offered.clone();
        tampered.amount = "10001".into();
        assert_ne!(&tampered, offered);
    }

    #[test]
    fn optional_fields_are_omitted_and_extensions_always_written() {
        let req = PaymentRequirements {
            scheme: "exact".into(),
            network: Network::eip155(8453),
            amount: "1".into(),
            asset: "0xa".into(),
            pay_to: "0xb".into(),
            max_timeout_seconds: 300,
            extra: Map::new(),
        };
        let pr = PaymentRequired::new(ResourceInfo::new("https://x.test/a"), vec![req]);
        assert_eq!(
            serde_json::to_value(&pr).unwrap(),
            json!({
                "x402Version": 2,
                "resource": {"url": "https://x.test/a"},
                "accepts": [{
                    "scheme": "exact", "network": "eip155:8453", "amount": "1",
                    "asset": "0xa", "payTo": "0xb", "maxTimeoutSeconds": 300, "extra": {}
                }],
                "extensions": {}
            })
        );
        let with_error = pr.with_error("payment required");
        assert_eq!(
            serde_json::to_value(&with_error).unwrap()["error"],
            "payment required"
        );
    }

    #[test]
    fn extra_and_extensions_tolerate_null_or_absence() {
        let req: PaymentRequirements = serde_json::from_value(json!({
            "scheme": "exact", "network": "eip155:8453", "amount": "1", "asset": "0xa",
            "payTo": "0xb", "maxTimeoutSeconds": 60, "extra": null
        }))
        .unwrap();
        assert!(req.extra.is_empty());
        let req: PaymentRequirements = serde_json::from_value(json!({
            "scheme": "exact", "network": "eip155:8453", "amount": "1", "asset": "0xa",
            "payTo": "0xb", "maxTimeoutSeconds": 60
        }))
        .unwrap();
        assert!(req.extra.is_empty());
        assert_eq!(serde_json::to_value(&req).unwrap()["extra"], json!({}));
    }

    #[test]
    fn v2_requirements_reject_legacy_network_names() {
        let err = serde_json::from_value::<PaymentRequirements>(json!({
            "scheme": "exact", "network": "base-sepolia", "amount": "1", "asset": "0xa",
            "payTo": "0xb", "maxTimeoutSeconds": 60, "extra": {}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("CAIP-2"), "{err}");
    }

    #[test]
    fn reference_settle_responses_round_trip() {
        let ok: SettleResponse = serde_json::from_str(REF_SETTLE_OK).unwrap();
        assert!(ok.success);
        assert_eq!(ok.transaction, "0x1234…cdef");
        assert_eq!(ok.network_id(), Ok(Network::eip155(84532)));
        assert_eq!(ok.payer.as_deref(), Some("0x857b…6b66"));
        assert_eq!(ok.error_reason, None);
        assert_eq!(serde_json::to_value(&ok).unwrap(), value(REF_SETTLE_OK));

        let fail: SettleResponse = serde_json::from_str(REF_SETTLE_FAIL).unwrap();
        assert!(!fail.success);
        assert_eq!(fail.error_reason.as_deref(), Some("insufficient_funds"));
        assert_eq!(fail.transaction, "");
        assert_eq!(serde_json::to_value(&fail).unwrap(), value(REF_SETTLE_FAIL));

        let built = SettleResponse::failed(
            "insufficient_funds",
            &Network::eip155(84532),
            Some("0x857b…".into()),
        );
        assert_eq!(built, fail);
        let built = SettleResponse::succeeded(
            "0x1234…cdef",
            &Network::eip155(84532),
            Some("0x857b…6b66".into()),
        );
        assert_eq!(built, ok);
    }

    #[test]
    fn settle_response_with_upto_amount_and_extensions() {
        let s: SettleResponse = serde_json::from_value(json!({
            "success": true, "transaction": "0xab", "network": "eip155:8453",
            "amount": "500", "errorMessage": "ignored detail",
            "extensions": {"offer-receipt": {"info": {}}}
        }))
        .unwrap();
        assert_eq!(s.amount.as_deref(), Some("500"));
        assert_eq!(s.error_message.as_deref(), Some("ignored detail"));
        assert!(s.extensions.as_ref().unwrap().contains_key("offer-receipt"));
        // A facilitator that answers with a v1 name still parses.
        let s: SettleResponse = serde_json::from_value(json!({
            "success": true, "transaction": "0xab", "network": "base"
        }))
        .unwrap();
        assert_eq!(s.network_id(), Ok(Network::eip155(8453)));
    }

    #[test]
    fn reference_verify_responses() {
        let ok: VerifyResponse =
            serde_json::from_str(r#"{"isValid":true,"payer":"0x857b…"}"#).unwrap();
        assert!(ok.is_valid);
        assert_eq!(ok.payer.as_deref(), Some("0x857b…"));
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            json!({"isValid": true, "payer": "0x857b…"})
        );

        let bad: VerifyResponse = serde_json::from_str(
            r#"{"isValid":false,"invalidReason":"insufficient_funds","payer":"0x…"}"#,
        )
        .unwrap();
        assert!(!bad.is_valid);
        assert_eq!(bad.invalid_reason.as_deref(), Some("insufficient_funds"));

        // x402-rs shape: extra fields are ignored, empty payer kept as-is.
        let rs: VerifyResponse = serde_json::from_str(
            r#"{"isValid":false,"invalidReason":"invalid_signature","invalidReasonDetails":"x","payer":""}"#,
        )
        .unwrap();
        assert_eq!(rs.invalid_reason.as_deref(), Some("invalid_signature"));
        assert_eq!(rs.payer.as_deref(), Some(""));
    }

    #[test]
    fn facilitator_request_shape() {
        let payload: PaymentPayload = serde_json::from_str(REF_PAYMENT_PAYLOAD).unwrap();
        let requirements = payload.accepted.clone();
        let body = VerifyRequest::new(payload, requirements);
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["x402Version"], 2);
        assert_eq!(v["paymentPayload"], value(REF_PAYMENT_PAYLOAD));
        assert_eq!(
            v["paymentRequirements"],
            value(REF_PAYMENT_PAYLOAD)["accepted"]
        );
        assert_eq!(v.as_object().unwrap().len(), 3);

        // Raw pass-through keeps fields the typed payload would drop.
        let mut raw = value(REF_PAYMENT_PAYLOAD);
        raw["clientHint"] = json!("kept");
        let body: FacilitatorRequest<Value, PaymentRequirements> = FacilitatorRequest {
            x402_version: 2,
            payment_payload: raw,
            payment_requirements: body.payment_requirements,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap()["paymentPayload"]["clientHint"],
            "kept"
        );
    }

    #[test]
    fn reference_supported_round_trips() {
        let s: SupportedResponse = serde_json::from_str(REF_SUPPORTED).unwrap();
        assert_eq!(s.kinds.len(), 3);
        assert!(s.has_extension("bazaar"));
        assert!(!s.has_extension("sign-in-with-x"));
        assert_eq!(s.signers["eip155:*"], vec!["0x…".to_string()]);

        let base = Network::eip155(8453);
        let upto = s.find(2, "upto", &base).unwrap();
        assert_eq!(upto.extra.as_ref().unwrap()["facilitatorAddress"], "0x…");
        // The v1 kind is found through its legacy name.
        assert_eq!(s.find(1, "exact", &base).unwrap().network, "base");
        assert!(s.find(2, "exact", &Network::eip155(84532)).is_none());

        assert_eq!(serde_json::to_value(&s).unwrap(), value(REF_SUPPORTED));

        // A v1-only facilitator omits extensions and signers.
        let v1: SupportedResponse = serde_json::from_str(
            r#"{"kinds":[{"x402Version":1,"scheme":"exact","network":"base-sepolia"}]}"#,
        )
        .unwrap();
        assert!(v1.extensions.is_empty() && v1.signers.is_empty());
    }
}
