//! The canonical form of a request and its keyed blake3 hash.
//!
//! Canonical form (version 1), fed to `blake3::keyed_hash` with the server's secret key:
//!
//! ```text
//! "tariff/request/v1"
//! field(method)                       upper-case, as received
//! field(path)                         percent-decoded, already checked canonical by the gateway
//! u64(n) then field(key) field(value) for each query pair: percent-decoded, sorted by key
//!                                     (values of one key keep their order: it can matter)
//! u64(n) then field(name) field(value) for each price-relevant header the route declares:
//!                                     lower-case name, value trimmed, sorted by name
//! body tag: 0 = none, 1 = JSON (canonical bytes, see `json.rs`), 2 = raw bytes
//! field(body bytes)                   (absent for tag 0)
//! ```
//!
//! `field(x)` is the byte length as u64 little-endian followed by the bytes, so no choice of
//! contents can make two different requests serialise to the same stream.
//! The key means nobody without it can precompute or probe hashes.

use std::fmt;

use serde_json::Value;

use super::json::write_canonical;
use super::model::RequestHash;

const DOMAIN_TAG: &[u8] = b"tariff/request/v1";

/// The 32-byte secret the request hash is keyed with. Debug never prints it.
#[derive(Clone)]
pub struct FingerprintKey([u8; 32]);

impl FingerprintKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        FingerprintKey(bytes)
    }
    pub fn random() -> Self {
        FingerprintKey(rand::random())
    }
    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let bytes = hex::decode(s.trim()).map_err(|e| format!("not hex: {e}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("need 32 bytes (64 hex characters), got {}", b.len()))?;
        Ok(FingerprintKey(arr))
    }
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey([redacted])")
    }
}

/// The body as it enters the fingerprint.
#[derive(Clone, Copy, Debug)]
pub enum CanonicalBody<'a> {
    None,
    /// A parsed, normalised JSON body (see `json::parse_strict`).
    Json(&'a Value),
    Bytes(&'a [u8]),
}

/// Everything about a request that can change its price or its answer.
#[derive(Clone, Copy, Debug)]
pub struct CanonicalRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Sorted by key (stable), percent-decoded.
    pub query: &'a [(String, String)],
    /// The route's declared headers present on the request: lower-case names, sorted by name.
    pub headers: &'a [(String, String)],
    pub body: CanonicalBody<'a>,
}

struct Framed(blake3::Hasher);

impl Framed {
    fn field(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }
    fn count(&mut self, n: usize) {
        self.0.update(&(n as u64).to_le_bytes());
    }
}

pub fn fingerprint(key: &FingerprintKey, req: &CanonicalRequest<'_>) -> RequestHash {
    let mut h = Framed(blake3::Hasher::new_keyed(&key.0));
    h.0.update(DOMAIN_TAG);
    h.field(req.method.as_bytes());
    h.field(req.path.as_bytes());
    h.count(req.query.len());
    for (k, v) in req.query {
        h.field(k.as_bytes());
        h.field(v.as_bytes());
    }
    h.count(req.headers.len());
    for (k, v) in req.headers {
        h.field(k.as_bytes());
        h.field(v.as_bytes());
    }
    match req.body {
        CanonicalBody::None => {
            h.0.update(&[0]);
        }
        CanonicalBody::Json(v) => {
            h.0.update(&[1]);
            // The length prefix needs the size up front; bodies are capped small, so one
            // buffer per request is cheaper than hashing twice.
            let mut buf = Vec::with_capacity(256);
            write_canonical(&mut buf, v).expect("writing to a Vec cannot fail");
            h.field(&buf);
        }
        CanonicalBody::Bytes(b) => {
            h.0.update(&[2]);
            h.field(b);
        }
    }
    RequestHash(*h.0.finalize().as_bytes())
}

/// Sorts query pairs into canonical order: by key, keeping the order of repeated keys.
pub fn sort_query(pairs: &mut [(String, String)]) {
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quote::json::parse_strict;
    use proptest::prelude::*;

    fn key() -> FingerprintKey {
        FingerprintKey::new([7; 32])
    }

    fn req<'a>(
        q: &'a [(String, String)],
        h: &'a [(String, String)],
        body: CanonicalBody<'a>,
    ) -> CanonicalRequest<'a> {
        CanonicalRequest {
            method: "POST",
            path: "/search",
            query: q,
            headers: h,
            body,
        }
    }

    #[test]
    fn key_changes_the_hash() {
        let r = req(&[], &[], CanonicalBody::None);
        assert_ne!(
            fingerprint(&key(), &r),
            fingerprint(&FingerprintKey::new([8; 32]), &r)
        );
    }

    #[test]
    fn framing_separates_fields() {
        // "ab" + "c" vs "a" + "bc" in adjacent fields must differ.
        let q1 = vec![("ab".to_string(), "c".to_string())];
        let q2 = vec![("a".to_string(), "bc".to_string())];
        assert_ne!(
            fingerprint(&key(), &req(&q1, &[], CanonicalBody::None)),
            fingerprint(&key(), &req(&q2, &[], CanonicalBody::None))
        );
        // A query pair is not a header.
        assert_ne!(
            fingerprint(&key(), &req(&q1, &[], CanonicalBody::None)),
            fingerprint(&key(), &req(&[], &q1, CanonicalBody::None))
        );
        // An empty JSON string body is not "no body", nor raw bytes.
        let v = Value::String(String::new());
        let none = fingerprint(&key(), &req(&[], &[], CanonicalBody::None));
        let json = fingerprint(&key(), &req(&[], &[], CanonicalBody::Json(&v)));
        let raw = fingerprint(&key(), &req(&[], &[], CanonicalBody::Bytes(b"\"\"")));
        assert!(none != json && json != raw && none != raw);
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", key()), "FingerprintKey([redacted])");
    }

    /// A JSON value, and the same value re-spelled: keys shuffled, whitespace, number spellings.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            // Integers whose `.0` / `e0` spellings are exact in f64 (see json.rs on the bound).
            (-(1i64 << 53)..=(1i64 << 53)).prop_map(|i| Value::Number(i.into())),
            any::<u64>().prop_map(|u| Value::Number(u.into())),
            "[a-z\\u{e9}\"\\\\ ]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]{1,2}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Writes `v` with a different spelling: reversed key order, spaces, integers as `N.0`/`Ne0`.
    fn respell(v: &Value, salt: u32) -> String {
        match v {
            Value::Number(n) if n.as_i64().is_some_and(|i| i.unsigned_abs() <= 1 << 53) => {
                match salt % 3 {
                    0 => format!("{n}"),
                    1 => format!("{n}.0"),
                    _ => format!("{n}e0"),
                }
            }
            Value::Array(a) => {
                let parts: Vec<String> = a.iter().map(|x| respell(x, salt + 1)).collect();
                format!("[ {} ]", parts.join(" , "))
            }
            Value::Object(m) => {
                let parts: Vec<String> = m
                    .iter()
                    .rev()
                    .map(|(k, x)| {
                        format!(
                            "{} :\n{}",
                            serde_json::to_string(k).unwrap(),
                            respell(x, salt + 1)
                        )
                    })
                    .collect();
                format!("{{ {} }}", parts.join(",\t"))
            }
            other => serde_json::to_string(other).unwrap(),
        }
    }

    proptest! {
        #[test]
        fn equivalent_json_bodies_hash_equal(v in json_value(), salt in 0u32..3) {
            let a = parse_strict(serde_json::to_string(&v).unwrap().as_bytes()).unwrap();
            let b = parse_strict(respell(&v, salt).as_bytes()).unwrap();
            prop_assert_eq!(
                fingerprint(&key(), &req(&[], &[], CanonicalBody::Json(&a))),
                fingerprint(&key(), &req(&[], &[], CanonicalBody::Json(&b)))
            );
        }

        #[test]
        fn different_json_bodies_hash_differently(a in json_value(), b in json_value()) {
            prop_assume!(a != b);
            let pa = parse_strict(serde_json::to_string(&a).unwrap().as_bytes()).unwrap();
            let pb = parse_strict(serde_json::to_string(&b).unwrap().as_bytes()).unwrap();
            prop_assert_ne!(
                fingerprint(&key(), &req(&[], &[], CanonicalBody::Json(&pa))),
                fingerprint(&key(), &req(&[], &[], CanonicalBody::Json(&pb)))
            );
        }

        #[test]
        fn any_change_to_method_path_query_or_header_changes_the_hash(
            method in "(GET|POST|PUT)", path in "/[a-z]{0,8}",
            q in prop::collection::vec(("[a-c]{1,2}", "[a-c ]{0,3}"), 0..4),
            h in prop::collection::vec(("x-[a-c]{1,2}", "[a-c]{0,3}"), 0..3),
            which in 0usize..4, extra in "[a-z]{1,3}",
        ) {
            let mut q: Vec<(String, String)> = q;
            sort_query(&mut q);
            let mut h: Vec<(String, String)> = h;
            h.sort();
            let base = CanonicalRequest { method: &method, path: &path, query: &q, headers: &h, body: CanonicalBody::None };
            let base_hash = fingerprint(&key(), &base);
            let (mut m2, mut p2, mut q2, mut h2) = (method.clone(), path.clone(), q.clone(), h.clone());
            match which {
                0 => m2.push_str(&extra),
                1 => p2.push_str(&extra),
                2 => { q2.push((extra.clone(), String::new())); sort_query(&mut q2); }
                _ => { h2.push((format!("x-{extra}"), extra.clone())); h2.sort(); }
            }
            let changed = CanonicalRequest { method: &m2, path: &p2, query: &q2, headers: &h2, body: CanonicalBody::None };
            prop_assert_ne!(base_hash, fingerprint(&key(), &changed));
        }
    }
}
