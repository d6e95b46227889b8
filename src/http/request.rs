//! Turning an HTTP request into what pricing and fingerprinting read, refusing anything
//! ambiguous. Each refusal is a 400/413 with a specific code, before any quote exists.
//!
//! Why so strict: the gateway prices what *it* parses, and the upstream executes what *it*
//! parses. Anything the two could read differently — a percent-encoded path, `..` segments,
//! a repeated query key, a repeated header, duplicate JSON keys — could make a cheap quote
//! stand for an expensive request.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Uri, header};
use bytes::Bytes;
use percent_encoding::percent_decode_str;
use serde_json::Value;

use super::error::ApiError;
use crate::quote::fingerprint::sort_query;
use crate::quote::json::parse_strict;

/// The decoded path, checked canonical: no `.`/`..` segments, no empty segments, no encoded
/// `/` or NUL, valid UTF-8.
pub fn canonical_path(uri: &Uri) -> Result<String, ApiError> {
    let raw = uri.path();
    let bad =
        |why: &str| ApiError::bad_request("non_canonical_path", format!("path `{raw}` {why}"));
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%00") || lower.contains("%5c") {
        return Err(bad("contains an encoded '/', '\\' or NUL"));
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| bad("is not valid UTF-8 once decoded"))?;
    if !decoded.starts_with('/') {
        return Err(bad("must start with /"));
    }
    if decoded.len() > 1 {
        for seg in decoded[1..].split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(bad("has an empty, '.' or '..' segment"));
            }
        }
    }
    if decoded.contains(['\\', '\0']) || decoded.chars().any(char::is_control) {
        return Err(bad("contains a backslash or control character"));
    }
    Ok(decoded.into_owned())
}

/// Decoded query pairs in canonical order, and the same as a map for rules. A key given twice
/// is refused: upstreams disagree on whether the first or the last one counts.
/// Query pairs in canonical order, and the same pairs as a map.
pub type ParsedQuery = (Vec<(String, String)>, BTreeMap<String, String>);

pub fn parse_query(uri: &Uri) -> Result<ParsedQuery, ApiError> {
    let mut pairs: Vec<(String, String)> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    sort_query(&mut pairs);
    let mut map = BTreeMap::new();
    for (k, v) in &pairs {
        if map.insert(k.clone(), v.clone()).is_some() {
            return Err(ApiError::bad_request(
                "ambiguous_query",
                format!("query parameter `{k}` is given more than once"),
            ));
        }
    }
    Ok((pairs, map))
}

/// The route's declared price-relevant headers that are present: lower-case names (sorted,
/// because `declared` is), trimmed values.
pub fn declared_headers(
    headers: &HeaderMap,
    declared: &[String],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::with_capacity(declared.len());
    for name in declared {
        let mut values = headers.get_all(name.as_str()).iter();
        let Some(v) = values.next() else { continue };
        if values.next().is_some() {
            return Err(ApiError::bad_request(
                "ambiguous_header",
                format!("header `{name}` is given more than once"),
            ));
        }
        let v = v.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_header",
                format!("header `{name}` is not visible ASCII"),
            )
        })?;
        out.push((name.clone(), v.trim().to_string()));
    }
    Ok(out)
}

/// The body as pricing sees it.
pub enum ParsedBody {
    None,
    Json(Value),
    Bytes,
}

impl ParsedBody {
    /// The parsed JSON, for an upstream (the demo) that reads it.
    pub fn json(&self) -> Option<&Value> {
        match self {
            ParsedBody::Json(v) => Some(v),
            _ => None,
        }
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Parses a JSON body strictly (400 with the reason on failure); other bodies stay bytes.
pub fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<ParsedBody, ApiError> {
    if body.is_empty() {
        return Ok(ParsedBody::None);
    }
    if !is_json(headers) {
        return Ok(ParsedBody::Bytes);
    }
    parse_strict(body)
        .map(ParsedBody::Json)
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))
}

/// Refuses a body whose declared length is over the cap before reading any of it.
pub fn check_content_length(headers: &HeaderMap, max: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max as u64 => Err(ApiError::too_large(format!(
            "the body is {n} bytes; priced requests accept at most {max}"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Result<String, String> {
        canonical_path(&s.parse::<Uri>().unwrap()).map_err(|e| e.code.to_string())
    }

    #[test]
    fn paths_are_decoded_and_checked() {
        assert_eq!(path("/search").unwrap(), "/search");
        assert_eq!(path("/sea%72ch").unwrap(), "/search");
        assert_eq!(path("/").unwrap(), "/");
        for bad in [
            "/a/../search",
            "/a/./b",
            "//search",
            "/search/",
            "/a%2fb",
            "/a%2Fb",
            "/a%00",
            "/%ff",
            "/a%5cb",
        ] {
            assert_eq!(path(bad).unwrap_err(), "non_canonical_path", "{bad}");
        }
    }

    #[test]
    fn query_is_sorted_and_repeats_refused() {
        let (pairs, map) = parse_query(&"/s?b=2&a=%20x+y".parse().unwrap()).unwrap();
        assert_eq!(
            pairs,
            vec![("a".into(), " x y".into()), ("b".into(), "2".into())]
        );
        assert_eq!(map["a"], " x y");
        let e = parse_query(&"/s?q=cheap&q=expensive".parse().unwrap()).unwrap_err();
        assert_eq!(e.code, "ambiguous_query");
    }

    #[test]
    fn repeated_declared_header_is_refused() {
        let mut h = HeaderMap::new();
        h.append("x-depth", "1".parse().unwrap());
        h.append("x-depth", "9".parse().unwrap());
        h.insert("x-other", "a".parse().unwrap());
        let e = declared_headers(&h, &["x-depth".into()]).unwrap_err();
        assert_eq!(e.code, "ambiguous_header");
        assert_eq!(
            declared_headers(&h, &["x-other".into()]).unwrap(),
            vec![("x-other".into(), "a".into())]
        );
    }

    #[test]
    fn json_bodies_are_strict_other_bodies_are_bytes() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(matches!(
            parse_body(&h, &Bytes::from_static(b"{\"a\":1}")),
            Ok(ParsedBody::Json(_))
        ));
        let e = parse_body(&h, &Bytes::from_static(b"{\"a\":1,\"a\":2}"))
            .err()
            .unwrap();
        assert_eq!(e.code, "duplicate_json_key");
        let e = parse_body(&h, &Bytes::from_static(b"{")).err().unwrap();
        assert_eq!(e.code, "invalid_json_body");
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(matches!(
            parse_body(&h, &Bytes::from_static(b"{")),
            Ok(ParsedBody::Bytes)
        ));
        assert!(matches!(
            parse_body(&h, &Bytes::new()),
            Ok(ParsedBody::None)
        ));
    }
}
