//! The `sign-in-with-x` extension (CAIP-122; EIP-4361 "Sign-In with Ethereum" on EVM): the
//! server's challenge in a v2 402's `extensions`, the client's `SIGN-IN-WITH-X` header, and the
//! exact text an EVM wallet signs (as the official `@x402/extensions` client builds it).
//! Pure: parsing, rendering, time stamps. Verifying a signature and remembering nonces is the
//! domain's (`crate::wallet`).

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// The extension's key in `extensions`.
pub const KEY: &str = "sign-in-with-x";
/// The request header carrying a signed sign-in (base64 of the JSON payload).
pub const HEADER: &str = "sign-in-with-x";
/// The one message version the specification defines.
pub const VERSION: &str = "1";
/// The largest header accepted (a payload is a few hundred bytes).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// What a server asks a wallet to sign, per 402.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub domain: String,
    pub uri: String,
    pub statement: String,
    pub nonce: String,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    /// CAIP-2 ids of the EVM chains a wallet may sign for.
    pub chains: Vec<String>,
    /// Whether the declaration carries the payload's JSON Schema (the `extension_schemas`
    /// setting).
    pub with_schema: bool,
}

/// The payload schema every challenge carries (constant: rendered once).
fn schema() -> &'static RawValue {
    static SCHEMA: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let v = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "domain": {"type": "string"}, "address": {"type": "string"},
                "statement": {"type": "string"}, "uri": {"type": "string", "format": "uri"},
                "version": {"type": "string"}, "chainId": {"type": "string"},
                "type": {"type": "string"}, "nonce": {"type": "string"},
                "issuedAt": {"type": "string", "format": "date-time"},
                "expirationTime": {"type": "string", "format": "date-time"},
                "notBefore": {"type": "string", "format": "date-time"},
                "requestId": {"type": "string"},
                "resources": {"type": "array", "items": {"type": "string", "format": "uri"}},
                "signature": {"type": "string"}
            },
            "required": ["domain", "address", "uri", "version", "chainId", "type", "nonce", "issuedAt", "signature"]
        });
        RawValue::from_string(v.to_string()).expect("valid JSON")
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Declaration<'a> {
    info: Info<'a>,
    supported_chains: Vec<SupportedChain<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<&'static RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Info<'a> {
    domain: &'a str,
    uri: &'a str,
    version: &'static str,
    // `nonce`, `issuedAt` and `expirationTime` stay adjacent and in this order: together they
    // are the only bytes that differ between two challenges for the same resource, and a 402
    // answered again is re-rendered by replacing just them (see `Challenge::varying_part`).
    nonce: &'a str,
    issued_at: String,
    expiration_time: String,
    resources: [&'a str; 1],
    statement: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SupportedChain<'a> {
    chain_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl Challenge {
    /// The extension object: `info`, `supportedChains` and the payload schema.
    pub fn declaration(&self) -> Value {
        serde_json::from_str(&self.declaration_json()).expect("valid JSON")
    }

    /// [`Challenge::declaration`] as JSON text, without building a tree (a 402 is rendered
    /// per request).
    pub fn declaration_json(&self) -> String {
        let mut out = Vec::with_capacity(1280);
        self.write_declaration(&mut out);
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    fn write_declaration(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(
            out,
            &Declaration {
                info: Info {
                    domain: &self.domain,
                    uri: &self.uri,
                    version: VERSION,
                    nonce: &self.nonce,
                    issued_at: format_rfc3339(self.issued_at_ms),
                    resources: [&self.uri],
                    expiration_time: format_rfc3339(self.expires_at_ms),
                    statement: &self.statement,
                },
                supported_chains: self
                    .chains
                    .iter()
                    .map(|c| SupportedChain {
                        chain_id: c,
                        kind: "eip191",
                    })
                    .collect(),
                schema: self.with_schema.then(schema),
            },
        )
        .expect("strings serialise");
    }

    /// `extensions` (a JSON object's text) with this challenge added under [`KEY`], by splicing
    /// rather than parsing: `extensions` is serde_json output, so it ends with its `}`.
    pub fn add_to(&self, extensions: &str) -> String {
        let mut out = Vec::with_capacity(extensions.len() + 1280);
        self.append_to(extensions, &mut out);
        String::from_utf8(out).expect("UTF-8 in, UTF-8 out")
    }

    /// The bytes of the declaration's JSON that are unique to this challenge: from the nonce's
    /// first character to the expiry's last, exactly as [`Challenge::declaration_json`] writes
    /// them (nonce and timestamps need no escaping). Two challenges for the same resource and
    /// chains differ only here, and (with 32 hex digits and millisecond UTC timestamps) always
    /// by the same number of bytes.
    pub fn varying_part(&self) -> String {
        format!(
            "{}\",\"issuedAt\":\"{}\",\"expirationTime\":\"{}",
            self.nonce,
            format_rfc3339(self.issued_at_ms),
            format_rfc3339(self.expires_at_ms)
        )
    }

    /// [`Challenge::add_to`], written at the end of `out` (the 402 is assembled in one buffer).
    pub fn append_to(&self, extensions: &str, out: &mut Vec<u8>) {
        let body = extensions.trim_end().strip_suffix('}').unwrap_or("{");
        out.extend_from_slice(body.as_bytes());
        if !body.trim_end().ends_with('{') {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(KEY.as_bytes());
        out.extend_from_slice(b"\":");
        self.write_declaration(out);
        out.push(b'}');
    }
}

/// The client's signed sign-in, as sent (fields the specification adds later are ignored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignIn {
    pub domain: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    pub uri: String,
    pub version: String,
    pub chain_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub nonce: String,
    pub issued_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_scheme: Option<String>,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the sign-in header is larger than {MAX_HEADER_BYTES} bytes")]
    TooLarge,
    #[error("the sign-in header is not base64")]
    Base64,
    #[error("the sign-in header is not a sign-in payload: {0}")]
    Json(String),
}

/// Decodes a `SIGN-IN-WITH-X` header value.
pub fn decode_header(value: &str) -> Result<SignIn, HeaderError> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(HeaderError::TooLarge);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| HeaderError::Base64)?;
    serde_json::from_slice(&bytes).map_err(|e| HeaderError::Json(e.to_string()))
}

impl SignIn {
    /// The EIP-4361 message the wallet signed, line for line as the official client's SIWE
    /// library prepares it (`address` must be the EIP-55 spelling, `chain_id` the number).
    pub fn message(&self, checksummed_address: &str, chain_id: u64) -> String {
        let mut m = format!(
            "{} wants you to sign in with your Ethereum account:\n{checksummed_address}\n\n",
            self.domain
        );
        if let Some(s) = &self.statement {
            m.push_str(s);
            m.push('\n');
        }
        m.push('\n');
        m.push_str(&format!(
            "URI: {}\nVersion: {}\nChain ID: {chain_id}\nNonce: {}\nIssued At: {}",
            self.uri, self.version, self.nonce, self.issued_at
        ));
        if let Some(t) = &self.expiration_time {
            m.push_str(&format!("\nExpiration Time: {t}"));
        }
        if let Some(t) = &self.not_before {
            m.push_str(&format!("\nNot Before: {t}"));
        }
        if let Some(r) = &self.request_id {
            m.push_str(&format!("\nRequest ID: {r}"));
        }
        if let Some(rs) = self.resources.as_ref().filter(|r| !r.is_empty()) {
            m.push_str("\nResources:");
            for r in rs {
                m.push_str(&format!("\n- {r}"));
            }
        }
        m
    }

    /// `eip155:<n>` → n.
    pub fn evm_chain_id(&self) -> Option<u64> {
        let n = self.chain_id.strip_prefix("eip155:")?;
        (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0'))
            .then(|| n.parse().ok())
            .flatten()
    }
}

/// `2026-12-02T15:22:11.984Z`: RFC 3339 in UTC with milliseconds, as JavaScript writes it.
///
/// Digits are written into a fixed template rather than through `format!`: a 402 with a
/// sign-in challenge formats two of these per answer, and `format!` was ~2 % of its CPU.
pub fn format_rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, mo, d) = civil_from_days(days as i64);
    let Ok(y @ 0..=9999) = u64::try_from(y) else {
        // Years past four digits (not a clock this century reads) take the general path.
        return format!(
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            ms % 1000
        );
    };
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, mo.into());
    put(8, 2, d.into());
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, ms % 1000);
    String::from_utf8(out.to_vec()).expect("ASCII digits and separators")
}

/// Parses an RFC 3339 date-time (`Z` or a numeric offset, optional fraction) into Unix
/// milliseconds. `None` for anything else, including dates before 1970.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 3)];
        frac_ms = digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32);
    }
    let offset_secs = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && matches!(tz.as_bytes()[0], b'+' | b'-')
            && tz.as_bytes()[3] == b':' =>
        {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if tz.starts_with('-') { -o } else { o }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    if civil_from_days(days) != (y, mo as u32, d as u32) {
        return None; // 2026-02-30 and the like
    }
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    u64::try_from(secs * 1000 + frac_ms).ok()
}

// Howard Hinnant's civil-calendar algorithms (proleptic Gregorian, days since 1970-01-01).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the official client (`@x402/extensions` 2.27.0, viem account of anvil key 1) sent.
    pub(crate) fn official_header_json() -> Value {
        json!({"domain":"127.0.0.1:8402","address":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","statement":"Sign in to Tariff","uri":"http://127.0.0.1:8402/search","version":"1","chainId":"eip155:84532","type":"eip191","nonce":"bb9cf094ea3e8ac86b9e78f1d6acb307","issuedAt":"2026-12-02T15:22:11.984Z","expirationTime":"2026-12-02T15:27:12.002Z","resources":["http://127.0.0.1:8402/search"],"signature":"0x6776c46aae6d4fbc394ad79b063da6c8d449e2915e86a057808a35e1113ea8ff73ff9245d704000909c03cb03b5f12b96eaa2c99e9fcbb3e0487b6c270444ab11c"})
    }

    #[test]
    fn the_message_is_the_official_clients_text() {
        let s: SignIn = serde_json::from_value(official_header_json()).unwrap();
        assert_eq!(
            s.message(&s.address, s.evm_chain_id().unwrap()),
            "127.0.0.1:8402 wants you to sign in with your Ethereum account:\n\
             0x70997970C51812dc3A010C7d01b50e0d17dc79C8\n\n\
             Sign in to Tariff\n\n\
             URI: http://127.0.0.1:8402/search\n\
             Version: 1\n\
             Chain ID: 84532\n\
             Nonce: bb9cf094ea3e8ac86b9e78f1d6acb307\n\
             Issued At: 2026-12-02T15:22:11.984Z\n\
             Expiration Time: 2026-12-02T15:27:12.002Z\n\
             Resources:\n\
             - http://127.0.0.1:8402/search"
        );
        let mut bare = s.clone();
        bare.statement = None;
        bare.resources = None;
        bare.expiration_time = None;
        assert!(
            bare.message(&s.address, 84532)
                .contains("account:\n0x70997970C51812dc3A010C7d01b50e0d17dc79C8\n\n\nURI: ")
        );
    }

    proptest::proptest! {
        /// The digit template writes what `format!` writes, for every millisecond up to the
        /// end of year 9999 and past it.
        #[test]
        fn time_stamps_format_like_format(ms in 0u64..300_000_000_000_000) {
            let secs = ms / 1000;
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (y, mo, d) = civil_from_days(days as i64);
            let expected = format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                ms % 1000
            );
            proptest::prop_assert_eq!(format_rfc3339(ms), expected);
        }
    }

    #[test]
    fn time_stamps_round_trip_and_refuse_nonsense() {
        let ms = parse_rfc3339("2026-12-02T15:22:11.984Z").unwrap();
        assert_eq!(format_rfc3339(ms), "2026-12-02T15:22:11.984Z");
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-12-02T16:22:11.984+01:00"), Some(ms));
        assert_eq!(parse_rfc3339("2026-12-02T15:22:11.9841234Z"), Some(ms));
        assert_eq!(format_rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        for bad in [
            "",
            "2026-12-02",
            "2026-02-30T00:00:00Z",
            "2026-12-02T25:00:00Z",
            "2026-12-02T15:22:11",
            "2026-12-02T15:22:11.Z",
            "1969-12-31T23:59:59Z",
            "２026-12-02T15:22:11Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    fn challenge() -> Challenge {
        Challenge {
            domain: "h".into(),
            uri: "http://h/x".into(),
            statement: "s".into(),
            nonce: "0123456789abcdef".into(),
            issued_at_ms: 0,
            expires_at_ms: 300_000,
            chains: vec!["eip155:8453".into()],
            with_schema: true,
        }
    }

    #[test]
    fn a_challenge_is_spliced_into_any_extensions_object() {
        let c = challenge();
        for base in ["{}", r#"{"bazaar":{"info":1}}"#] {
            let v: Value = serde_json::from_str(&c.add_to(base)).unwrap();
            assert_eq!(v[KEY], c.declaration(), "{base}");
            assert_eq!(
                v[KEY]["info"]["expirationTime"],
                json!("1970-01-01T00:05:00.000Z")
            );
            assert_eq!(
                v[KEY]["supportedChains"],
                json!([{"chainId": "eip155:8453", "type": "eip191"}])
            );
            if base != "{}" {
                assert_eq!(v["bazaar"]["info"], json!(1));
            }
        }
    }

    #[test]
    fn without_its_schema_a_declaration_is_the_same_but_for_it() {
        let c = challenge();
        let lean = Challenge {
            with_schema: false,
            ..c.clone()
        };
        let mut full = c.declaration();
        assert!(full.as_object_mut().unwrap().remove("schema").is_some());
        assert_eq!(lean.declaration(), full);
        assert_eq!(lean.varying_part(), c.varying_part());
    }

    #[test]
    fn the_varying_part_is_where_two_challenges_differ_and_nowhere_else() {
        let c = |nonce: u128, at: u64| Challenge {
            domain: "h:1".into(),
            uri: "http://h:1/x?q=a%20b".into(),
            statement: "s".into(),
            nonce: format!("{nonce:032x}"),
            issued_at_ms: at,
            expires_at_ms: at + 300_000,
            chains: vec!["eip155:8453".into()],
            with_schema: true,
        };
        let (a, b) = (c(1, 1_764_000_000_123), c(u128::MAX, 1_780_000_000_999));
        let (ja, jb) = (a.declaration_json(), b.declaration_json());
        let (va, vb) = (a.varying_part(), b.varying_part());
        assert_eq!(va.len(), vb.len());
        let at = ja.find(&va).expect("the varying part is written as is");
        assert_eq!(ja.matches(&va).count(), 1);
        assert_eq!(jb.find(&vb), Some(at));
        assert_eq!(ja[..at], jb[..at]);
        assert_eq!(ja[at + va.len()..], jb[at + vb.len()..]);
    }

    #[test]
    fn headers_decode_strictly() {
        let v = official_header_json();
        let b64 = base64::engine::general_purpose::STANDARD.encode(v.to_string());
        assert_eq!(
            decode_header(&b64).unwrap().nonce,
            "bb9cf094ea3e8ac86b9e78f1d6acb307"
        );
        assert_eq!(decode_header("%%%"), Err(HeaderError::Base64));
        assert!(matches!(
            decode_header(&base64::engine::general_purpose::STANDARD.encode("{}")),
            Err(HeaderError::Json(_))
        ));
        assert_eq!(
            decode_header(&"A".repeat(MAX_HEADER_BYTES + 1)),
            Err(HeaderError::TooLarge)
        );
    }
}
