//! A mutational fuzzer for the decoders that face the network and the rule compiler (no
//! coverage guidance: cargo-fuzz and AFL need a nightly toolchain or compilers not available
//! here). Each target starts from valid seeds and mutates them (bit flips, byte and token
//! inserts, deletions, duplications, splices), checking on every input that nothing panics and
//! that what is accepted keeps its invariants.
//!
//!   scripts/fuzz [EXECUTIONS]                    # every target, 10,000,000 each by default
//!   cargo run --release --example fuzz -- TARGET EXECUTIONS [SEED]
//!
//! Targets:
//! - `payment`: `PAYMENT-SIGNATURE` / `X-PAYMENT` decoding (bounded base64 + JSON of either
//!   protocol version), then the scheme's own payload parse and local checks.
//! - `siwx`: `SIGN-IN-WITH-X` decoding and the CAIP-122 message it rebuilds.
//! - `json`: the strict JSON body parser behind the fingerprint; an accepted body must
//!   re-parse from its canonical form to the same value, fingerprint and canonical bytes.
//! - `request`: path canonicalisation and query parsing of a request URI; an accepted path must
//!   stay canonical.
//! - `rules`: the rule compiler over mutated rule files (errors are fine; panics are not).
//!
//! An input that panics or breaks an invariant is written to `fuzz/crashes/<target>-<blake3>`
//! and the run fails; once fixed, it belongs in the target's unit tests as a regression case.
//! Each target reports how many inputs its decoder accepted, i.e. how deep the mutations reach.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Instant;

use alloy::primitives::{B256, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use serde_json::json;
use tariff::x402::codec::encode_header;

/// A small, fast PRNG (xorshift64*): the fuzzer's only source of randomness, seeded per run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens worth inserting: JSON and base64 structure, numbers at the edges, escapes, TOML.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\\u0000",
    b"\\ud800",
    b"\\\"",
    b"null",
    b"true",
    b"1e999",
    b"-0",
    b"0.0000001",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\"x402Version\":2",
    b"\"x402Version\":1",
    b"0x",
    b"=",
    b"==",
    b"+/",
    b"%2f",
    b"%00",
    b"..",
    b"/",
    b"?",
    b"&",
    b"=",
    b"\n",
    b"[[route]]",
    b"[[route.rule]]",
    b"when = \"",
    b"price = \"",
    b"$",
    b"usd('",
    b"')",
    b"size(",
    b"body.",
    b"request.",
    b"has(",
    b"?:",
    b"\xff",
    b"\xc3\x28",
    b"\t",
    b"'''",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    // Mostly one change at a time, so most inputs stay close to valid and reach deep.
    let changes = if rng.below(4) == 0 {
        2 + rng.below(4)
    } else {
        1
    };
    for _ in 0..changes {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let i = rng.below(len + 1);
                input.splice(i..i, t.iter().copied());
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(32)) + 1;
                input.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(64)) + 1;
                let chunk: Vec<u8> = input[i..i + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            5 => {
                // Splice in part of another seed.
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let i = rng.below(other.len());
                    let n = rng.below(other.len() - i) + 1;
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[i..i + n].iter().copied());
                }
            }
            6 if len > 0 => input.truncate(rng.below(len)),
            _ => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
        }
    }
    // Keep inputs bounded: the decoders refuse oversized input long before this.
    input.truncate(64 * 1024);
}

/// The payment terms every payment is checked against (Base Sepolia USDC, $0.02).
fn terms() -> tariff::payment::scheme::Terms {
    tariff::payment::scheme::Terms {
        chain_id: 84532,
        asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
            .parse()
            .unwrap(),
        pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
            .parse()
            .unwrap(),
        amount: U256::from(20_000u64),
        eip712_name: "USDC".into(),
        eip712_version: "2".into(),
        facilitator: None,
    }
}

/// One signed v2 and v1 EIP-3009 payment, a Permit2 one, as headers (base64 JSON).
fn payment_seeds() -> Vec<Vec<u8>> {
    use tariff::payment::scheme::exact_eip3009::{Authorization, TransferWithAuthorization};
    let terms = terms();
    let payer = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x42)).unwrap();
    let mut auth = Authorization {
        message: TransferWithAuthorization {
            from: payer.address(),
            to: terms.pay_to,
            value: terms.amount,
            validAfter: U256::from(1_750_000_000u64 - 600),
            validBefore: U256::from(1_750_000_000u64 + 300),
            nonce: B256::repeat_byte(7),
        },
        signature: vec![],
    };
    auth.signature = payer
        .sign_hash_sync(&auth.signing_hash(&terms))
        .unwrap()
        .as_bytes()
        .to_vec();
    let m = &auth.message;
    let authorization = json!({
        "from": format!("{:#x}", m.from), "to": format!("{:#x}", m.to),
        "value": m.value.to_string(), "validAfter": m.validAfter.to_string(),
        "validBefore": m.validBefore.to_string(), "nonce": format!("{:#x}", m.nonce),
    });
    let signature = format!("0x{}", hex::encode(&auth.signature));
    let accepted = json!({
        "scheme": "exact", "network": "eip155:84532", "amount": "20000",
        "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "payTo": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "maxTimeoutSeconds": 300,
        "extra": {"name": "USDC", "version": "2", "quoteId": "q_0123456789abcdef0123456789abcdef"},
    });
    let v2 = json!({
        "x402Version": 2, "resource": {"url": "https://api.example.com/search?q=x"},
        "accepted": accepted, "payload": {"signature": signature, "authorization": authorization},
        "extensions": {"payment-identifier": {"info": {"id": "pay_0123456789abcdef"}}},
    });
    let v1 = json!({
        "x402Version": 1, "scheme": "exact", "network": "base-sepolia",
        "payload": {"signature": signature, "authorization": authorization},
    });
    let permit2 = json!({
        "x402Version": 2, "resource": {"url": "https://api.example.com/search?q=x"},
        "accepted": {
            "scheme": "exact", "network": "eip155:84532", "amount": "20000",
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "payTo": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "maxTimeoutSeconds": 300,
            "extra": {"assetTransferMethod": "permit2", "quoteId": "q_x"},
        },
        "payload": {"signature": signature, "permit2Authorization": {
            "from": format!("{:#x}", m.from),
            "permitted": {"token": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "amount": "20000"},
            "spender": "0x4020615294c913F045dc10f0a5cdEbd86c280001", "nonce": "12345",
            "deadline": "1750000300",
            "witness": {"to": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "validAfter": "0"},
        }},
    });
    let mut seeds: Vec<Vec<u8>> = [&v2, &v1, &permit2]
        .iter()
        .map(|v| encode_header(v).into_bytes())
        .collect();
    // The JSON itself too: mutations then reach the JSON decoder through valid base64.
    seeds.extend([v2, v1, permit2].iter().map(|v| v.to_string().into_bytes()));
    seeds
}

fn siwx_seeds() -> Vec<Vec<u8>> {
    let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x24)).unwrap();
    let mut s = tariff::x402::siwx::SignIn {
        domain: "api.example.com".into(),
        address: key.address().to_checksum(None),
        statement: Some("Sign in".into()),
        uri: "https://api.example.com/search?q=x".into(),
        version: "1".into(),
        chain_id: "eip155:84532".into(),
        kind: "eip191".into(),
        nonce: "0123456789abcdef0123456789abcdef".into(),
        issued_at: "2026-12-03T08:00:00.000Z".into(),
        expiration_time: Some("2026-12-03T08:05:00.000Z".into()),
        not_before: None,
        request_id: None,
        resources: Some(vec!["https://api.example.com/search?q=x".into()]),
        signature_scheme: None,
        signature: String::new(),
    };
    let msg = s.message(&key.address().to_checksum(None), 84532);
    s.signature = format!(
        "0x{}",
        hex::encode(key.sign_message_sync(msg.as_bytes()).unwrap().as_bytes())
    );
    vec![
        encode_header(&s).into_bytes(),
        serde_json::to_vec(&s).unwrap(),
    ]
}

fn json_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"query":"compare revenue","documents":["10-K 2024","10-K 2025"],"n":3}"#,
        r#"{"a":{"b":[1,2.5,-0,1e3,"\u00e9\n"],"c":null,"d":true},"e":"x"}"#,
        r#"[{"k":"v"},[],{},0.1,-12345678901234567890]"#,
        r#""just a string""#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn request_seeds() -> Vec<Vec<u8>> {
    [
        "/search?q=bitcoin+price",
        "/items/a%20b/c?x=1&y=%E2%82%AC&z=",
        "/a/b/c?q=%2F&r=%00",
        "/?",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn rule_seeds() -> Vec<Vec<u8>> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pricing-rules/search.toml");
    vec![
        std::fs::read(repo).expect("the demo rules"),
        br#"[[route]]
id = "items"
methods = ["POST"]
path = "/items/{id}"
[[route.rule]]
id = "big"
when = "body.n > 10 && request.params.id != 'free'"
price = "usd('0.02') * body.n"
min = "$0"
[[route.rule]]
id = "rest"
price = "$0.01"
"#
        .to_vec(),
    ]
}

/// Runs one input through `target`: whether the decoder accepted it (how deep the fuzzer
/// reaches), or `Err` for a violated invariant (a panic is caught outside).
fn run(target: &str, input: &[u8], ctx: &Context) -> Result<bool, String> {
    let text = String::from_utf8_lossy(input);
    let mut accepted = false;
    match target {
        // Each input is tried as the header itself (mutations hit the base64) and as the JSON
        // inside a well-formed header (mutations hit the JSON and the payload's shape).
        "payment" => {
            for header in [text.to_string(), b64(input)] {
                if let Ok(decoded) = tariff::payment::matching::decode(&header, 16 * 1024) {
                    accepted = true;
                    let payload = decoded.scheme_payload();
                    for scheme in tariff::payment::scheme::registry() {
                        if let Ok(p) = scheme.parse(payload) {
                            let _ = p.check(&ctx.terms, 1_750_000_000);
                        }
                    }
                }
            }
        }
        "siwx" => {
            for header in [text.to_string(), b64(input)] {
                if let Ok(s) = tariff::x402::siwx::decode_header(&header) {
                    accepted = true;
                    let _ = s.message(&s.address, 84532);
                }
            }
        }
        "json" => {
            use tariff::quote::json::{canonical_bytes, parse_strict};
            if let Ok(v) = parse_strict(input) {
                accepted = true;
                let canonical = canonical_bytes(&v);
                let again = parse_strict(&canonical)
                    .map_err(|e| format!("canonical form does not re-parse: {e}"))?;
                if again != v || canonical_bytes(&again) != canonical {
                    return Err("canonical form is not stable".into());
                }
                let fp = |v: &serde_json::Value| {
                    tariff::quote::fingerprint::fingerprint(
                        &ctx.key,
                        &tariff::quote::fingerprint::CanonicalRequest {
                            method: "POST",
                            path: "/p",
                            query: &[],
                            headers: &[],
                            body: tariff::quote::fingerprint::CanonicalBody::Json(v),
                        },
                    )
                };
                if fp(&v) != fp(&again) {
                    return Err("fingerprint differs for the same body".into());
                }
            }
        }
        "request" => {
            if let Ok(uri) = text.parse::<axum::http::Uri>() {
                if let Ok(path) = tariff::http::request::canonical_path(&uri) {
                    accepted = true;
                    // The decoded path, encoded again, must be accepted as itself.
                    let encoded: String =
                        percent_encoding::utf8_percent_encode(&path, ctx.path_set).collect();
                    if let Ok(uri2) = encoded.parse::<axum::http::Uri>()
                        && let Ok(p2) = tariff::http::request::canonical_path(&uri2)
                        && p2 != path
                    {
                        return Err(format!("path not stable: {path:?} -> {p2:?}"));
                    }
                }
                let _ = tariff::http::request::parse_query(&uri);
            }
        }
        "rules" => {
            accepted = tariff::pricing::rules::load_sources(
                &[(PathBuf::from("fuzz.toml"), text.into_owned())],
                &ctx.env,
                &ctx.opts,
            )
            .is_ok();
        }
        other => return Err(format!("unknown target {other}")),
    }
    Ok(accepted)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

struct Context {
    terms: tariff::payment::scheme::Terms,
    key: tariff::quote::fingerprint::FingerprintKey,
    env: tariff::pricing::expr::ExprEnv,
    opts: tariff::pricing::rules::LoadOptions,
    path_set: &'static percent_encoding::AsciiSet,
}

fn seeds_of(target: &str) -> Vec<Vec<u8>> {
    match target {
        "payment" => payment_seeds(),
        "siwx" => siwx_seeds(),
        "json" => json_seeds(),
        "request" => request_seeds(),
        "rules" => rule_seeds(),
        other => panic!("unknown target {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target = args.get(1).map(String::as_str).unwrap_or("all");
    let execs: u64 = args
        .get(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000_000);
    let seed: u64 = args
        .get(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| rand::random::<u64>() | 1);
    const PATH_SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'?')
        .add(b'<')
        .add(b'>')
        .add(b'`')
        .add(b'{')
        .add(b'}');
    let ctx = Context {
        terms: terms(),
        key: tariff::quote::fingerprint::FingerprintKey::new([7; 32]),
        env: tariff::pricing::expr::ExprEnv::new(),
        opts: tariff::pricing::rules::LoadOptions {
            max_price: tariff::money::UsdMicros(10_000_000),
            max_stored_answer_bytes: tariff::pricing::DEFAULT_STORED_ANSWER_BYTES,
            extension_schemas: true,
        },
        path_set: PATH_SET,
    };
    let targets: Vec<&str> = if target == "all" {
        vec!["payment", "siwx", "json", "request", "rules"]
    } else {
        vec![target]
    };
    // Panics are caught and reported here, not printed by the default hook per input.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    for t in targets {
        let seeds = seeds_of(t);
        for s in &seeds {
            match catch_unwind(AssertUnwindSafe(|| run(t, s, &ctx)))
                .unwrap_or_else(|_| Err("panic".into()))
            {
                Ok(true) => {}
                Ok(false) => {
                    eprintln!("{t}: a seed is refused: the fuzzer would start from nothing");
                    failed = true;
                }
                Err(e) => {
                    eprintln!("{t}: a seed fails: {e}");
                    failed = true;
                }
            }
        }
        let mut rng = Rng(seed);
        let started = Instant::now();
        let mut input = Vec::new();
        let mut crashes = 0u64;
        let mut accepted = 0u64;
        for i in 0..execs {
            // Mostly keep mutating the current input; often start again from a seed.
            if i % 16 == 0 || input.is_empty() {
                input = seeds[rng.below(seeds.len())].clone();
            }
            mutate(&mut rng, &mut input, &seeds);
            let outcome = catch_unwind(AssertUnwindSafe(|| run(t, &input, &ctx)))
                .unwrap_or_else(|_| Err("panic".into()));
            if outcome == Ok(true) {
                accepted += 1;
            }
            if let Err(why) = outcome {
                crashes += 1;
                let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/crashes");
                let _ = std::fs::create_dir_all(&dir);
                let name = format!("{t}-{}", &blake3::hash(&input).to_hex()[..16]);
                let _ = std::fs::write(dir.join(&name), &input);
                if crashes <= 5 {
                    eprintln!("{t}: {why} (input saved as fuzz/crashes/{name})");
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "FUZZ target={t} executions={execs} accepted={accepted} seconds={secs:.1} per_second={:.0} failures={crashes} seed={seed}",
            execs as f64 / secs
        );
        failed |= crashes > 0;
    }
    if failed {
        std::process::exit(1);
    }
}
