//! Strict JSON for request bodies, and its canonical byte form.
//!
//! The hash of a request and its price must be functions of the *same* value, or a payment for
//! one request could buy another that hashes equal but prices differently. So a body is parsed
//! once, strictly, into a normalised `serde_json::Value`; the pricing rules read that value and
//! the fingerprint hashes its canonical bytes.
//!
//! Strict means:
//! - duplicate object keys are rejected: `{"docs":[…], "docs":[]}` would otherwise be priced by
//!   one value and executed by an upstream that keeps the other (a parser-differential attack);
//! - nesting is bounded ([`MAX_DEPTH`]).
//!
//! Normalised means numbers have one spelling: `1`, `1.0`, `1e0` and `10E-1` are all the integer
//! 1, and `-0.0` is 0. Integral values that fit in i64/u64 become integers; other numbers stay
//! f64 (shortest round-trip form). The pricing layer therefore sees an `int` whenever the hash
//! saw the integer spelling.
//!
//! Bound: an integer beyond ±2^53 written with a fraction or exponent (`9007199254740993.0`)
//! is read as an f64, as a JavaScript client would read it, and so may round. The hash and the
//! price are still computed from the same rounded value, so they never disagree; only the
//! plain integer spelling is exact at any size up to u64.

use std::fmt;
use std::io::{self, Write};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Deeper bodies are refused: no pricing rule needs them, and recursion must stay bounded.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JsonBodyError {
    #[error("the body is not valid JSON: {0}")]
    Syntax(String),
    #[error("duplicate key `{0}` in a JSON object")]
    DuplicateKey(String),
    #[error("the JSON body is nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

impl JsonBodyError {
    pub fn code(&self) -> &'static str {
        match self {
            JsonBodyError::Syntax(_) => "invalid_json_body",
            JsonBodyError::DuplicateKey(_) => "duplicate_json_key",
            JsonBodyError::TooDeep => "json_body_too_deep",
        }
    }
}

/// Parses and normalises a JSON body. See the module docs for what is refused.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, JsonBodyError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictSeed { depth: 0 }
        .deserialize(&mut de)
        .map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(value)
}

fn classify(e: serde_json::Error) -> JsonBodyError {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix(DUPLICATE_MARKER) {
        let key = rest.split(DUPLICATE_END).next().unwrap_or_default();
        return JsonBodyError::DuplicateKey(key.to_owned());
    }
    if msg.starts_with(TOO_DEEP_MARKER) || msg.starts_with("recursion limit exceeded") {
        return JsonBodyError::TooDeep;
    }
    JsonBodyError::Syntax(msg)
}

// serde errors carry only a message, so the custom errors are recognised by a marker prefix.
const DUPLICATE_MARKER: &str = "tariff:duplicate-key:";
const DUPLICATE_END: &str = ":end";
const TOO_DEEP_MARKER: &str = "tariff:too-deep";

struct StrictSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor { depth: self.depth })
    }
}

struct StrictVisitor {
    depth: usize,
}

impl StrictVisitor {
    fn child<E: de::Error>(&self) -> Result<StrictSeed, E> {
        if self.depth + 1 > MAX_DEPTH {
            return Err(E::custom(TOO_DEEP_MARKER));
        }
        Ok(StrictSeed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(
            normalise_f64(v).ok_or_else(|| E::custom("non-finite number"))?,
        ))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child()?)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "{DUPLICATE_MARKER}{key}{DUPLICATE_END}"
                )));
            }
            let v = map.next_value_seed(self.child()?)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// One spelling per number: integral floats that fit an integer type become that integer.
fn normalise_f64(v: f64) -> Option<Number> {
    if !v.is_finite() {
        return None;
    }
    // 2^63 and 2^64 are exact in f64, so these bounds are exact comparisons.
    const I64_MIN: f64 = -9_223_372_036_854_775_808.0;
    const U64_END: f64 = 18_446_744_073_709_551_616.0;
    if v.fract() == 0.0 && (I64_MIN..U64_END).contains(&v) {
        if v < 0.0 {
            // Truncation is exact here: v is integral and within i64.
            return Some(Number::from(v as i64));
        }
        return Some(Number::from(v as u64));
    }
    Number::from_f64(v)
}

/// Writes the canonical form of a (normalised) value: object keys sorted by their UTF-8 bytes,
/// no whitespace, strings escaped as serde_json escapes them, numbers as normalised.
pub fn write_canonical<W: Write>(out: &mut W, v: &Value) -> io::Result<()> {
    match v {
        Value::Null => out.write_all(b"null"),
        Value::Bool(true) => out.write_all(b"true"),
        Value::Bool(false) => out.write_all(b"false"),
        Value::Number(n) => write!(out, "{n}"),
        Value::String(s) => serde_json::to_writer(out, s).map_err(io::Error::other),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(out, item)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.write_all(b"{")?;
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, k).map_err(io::Error::other)?;
                out.write_all(b":")?;
                write_canonical(out, &map[k])?;
            }
            out.write_all(b"}")
        }
    }
}

pub fn canonical_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(&mut out, v).expect("writing to a Vec cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        String::from_utf8(canonical_bytes(&parse_strict(s.as_bytes()).unwrap())).unwrap()
    }

    #[test]
    fn key_order_whitespace_and_number_spelling_do_not_matter() {
        let a = canon(r#"{"b": [1, 2.0, 1e2], "a": {"y": -0.0, "x": "\u0041"}}"#);
        let b = canon(r#"{"a":{"x":"A","y":0},"b":[1,2,100]}"#);
        assert_eq!(a, b);
        assert_eq!(a, r#"{"a":{"x":"A","y":0},"b":[1,2,100]}"#);
    }

    #[test]
    fn big_integers_stay_exact() {
        assert_eq!(canon("9007199254740993"), "9007199254740993");
        assert_eq!(canon("18446744073709551615"), "18446744073709551615");
        assert_ne!(canon("9007199254740993"), canon("9007199254740992"));
        assert_eq!(canon("0.5"), "0.5");
        assert_eq!(canon("1e300"), canon("1.0E+300"));
    }

    #[test]
    fn duplicate_keys_are_refused_with_the_key_named() {
        let err = parse_strict(br#"{"docs":[1,2,3],"docs":[]}"#).unwrap_err();
        assert_eq!(err, JsonBodyError::DuplicateKey("docs".into()));
        assert_eq!(err.code(), "duplicate_json_key");
        // Nested objects too.
        let err = parse_strict(br#"{"a":{"k":1,"k":2}}"#).unwrap_err();
        assert_eq!(err, JsonBodyError::DuplicateKey("k".into()));
    }

    #[test]
    fn depth_is_bounded() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse_strict(ok.as_bytes()).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(
            parse_strict(deep.as_bytes()).unwrap_err(),
            JsonBodyError::TooDeep
        );
    }

    #[test]
    fn syntax_errors_and_trailing_data_are_refused() {
        for bad in ["", "{", "{\"a\":1}x", "[1,]", "NaN", "{'a':1}"] {
            let err = parse_strict(bad.as_bytes()).unwrap_err();
            assert_eq!(err.code(), "invalid_json_body", "{bad:?}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arbitrary bytes never panic the parser: they parse or get a coded error.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                match parse_strict(&bytes) {
                    Ok(v) => { canonical_bytes(&v); }
                    Err(e) => prop_assert!(!e.code().is_empty()),
                }
            }

            /// JSON-ish text (the interesting part of the input space) never panics either, and
            /// canonicalisation is idempotent: canonical bytes parse back to the same canonical bytes.
            #[test]
            fn canonical_form_is_a_fixed_point(text in r#"[\[\]{}:,"a-c0-9.eE+\- ]{0,40}"#) {
                if let Ok(v) = parse_strict(text.as_bytes()) {
                    let once = canonical_bytes(&v);
                    let again = canonical_bytes(&parse_strict(&once).unwrap());
                    prop_assert_eq!(once, again);
                }
            }
        }
    }
}
