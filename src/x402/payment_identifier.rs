//! The `payment-identifier` extension: a client-chosen idempotency key for a payment. The server
//! declares it in a v2 402's `extensions`; the client echoes the declaration in its
//! `PaymentPayload.extensions` and adds `info.id`.

use serde_json::{Value, json};

/// The extension's key in `extensions`.
pub const KEY: &str = "payment-identifier";

/// What the server declares (the official `declarePaymentIdentifierExtension` output).
pub fn declaration(required: bool) -> Value {
    json!({
        "info": {"required": required},
        "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "required": {"type": "boolean"},
                "id": {"type": "string", "minLength": 16, "maxLength": 128, "pattern": "^[a-zA-Z0-9_-]+$"}
            },
            "required": ["required"]
        }
    })
}

/// 16 to 128 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_id(id: &str) -> bool {
    (16..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The id a v2 `PaymentPayload` (as JSON) carries, if any. The official client echoes the
/// declaration without an id when it has none to give: that is no id, not an error. An id that
/// is present but not a well-formed one is `Err` with what is wrong.
pub fn payment_id(payload: &Value) -> Result<Option<&str>, &'static str> {
    let Some(ext) = payload.get("extensions").and_then(|e| e.get(KEY)) else {
        return Ok(None);
    };
    match ext.get("info").and_then(|i| i.get("id")) {
        None => Ok(None),
        Some(Value::String(id)) if is_valid_id(id) => Ok(Some(id)),
        Some(Value::String(_)) => {
            Err("the payment id must be 16 to 128 characters of A-Z, a-z, 0-9, `-` and `_`")
        }
        Some(_) => Err("the payment id must be a string"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_where_the_official_client_puts_them() {
        let with = |info: Value| json!({"extensions": {KEY: {"info": info, "schema": {}}}});
        let id = "pay_0c3d4645da4040dda55e99b53873e143";
        assert_eq!(
            payment_id(&with(json!({"required": true, "id": id}))),
            Ok(Some(id))
        );
        assert_eq!(payment_id(&with(json!({"required": true}))), Ok(None));
        assert_eq!(payment_id(&json!({"payload": {}})), Ok(None));
        for bad in [
            json!("short"),
            json!("x".repeat(129)),
            json!("pay_with space_12345"),
            json!(42),
        ] {
            assert!(payment_id(&with(json!({"id": bad}))).is_err(), "{bad}");
        }
        assert!(is_valid_id(&"a".repeat(16)) && is_valid_id(&"Z-_9".repeat(32)));
        assert!(!is_valid_id(&"a".repeat(15)) && !is_valid_id("pay_ünïcode_1234567"));
    }
}
