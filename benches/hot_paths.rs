//! Criterion benches of the 402 path's hot functions, each next to a baseline measured in the
//! same run (these machines are noisy: compare ratios, not absolute times).
//!
//!   cargo bench --bench hot_paths
//!
//! Pairs: strict body parse vs plain `serde_json::from_slice`; request fingerprint vs a bare
//! blake3 of the raw body; a full pricing decision on the demo rules vs binding the CEL context
//! alone; the whole 402 render (v1 body, v2 header, headers) vs the v1 body alone, and a new
//! quote's 402 from its template next to its render.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use tariff::money::UsdMicros;
use tariff::pricing::expr::{EvalInput, ExprEnv, RequestView};
use tariff::pricing::rules::{LoadOptions, load_dir};
use tariff::quote::json::parse_strict;
use tariff::quote::{
    CanonicalBody, CanonicalRequest, FingerprintKey, Offer, Quote, QuoteId, RequestHash, RuleRef,
    fingerprint,
};
use tariff::time::UnixMillis;
use tariff::x402::Network;

const BODY: &[u8] = br#"{"query":"compare revenue recognition and risk factors across filings","documents":["10-K 2023","10-K 2024","10-K 2025","10-Q Q1 2026"],"options":{"top_k":5,"language":"en","include_snippets":true}}"#;

fn view(method: &str, q: Option<&str>) -> RequestView {
    RequestView {
        method: method.into(),
        path: "/search".into(),
        params: Default::default(),
        query: q
            .map(|q| [("q".to_string(), q.to_string())].into())
            .unwrap_or_default(),
        headers: Default::default(),
        body_size: BODY.len() as u64,
    }
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("body_parse");
    g.bench_function("baseline_serde_json_from_slice", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(BODY)).unwrap())
    });
    g.bench_function("parse_strict", |b| {
        b.iter(|| parse_strict(black_box(BODY)).unwrap())
    });
    g.finish();
}

fn bench_fingerprint(c: &mut Criterion) {
    let key = FingerprintKey::new([7; 32]);
    let body = parse_strict(BODY).unwrap();
    let query = vec![("lang".to_string(), "en".to_string())];
    let mut g = c.benchmark_group("fingerprint");
    g.bench_function("baseline_blake3_raw_body", |b| {
        b.iter(|| blake3::hash(black_box(BODY)))
    });
    g.bench_function("fingerprint_canonical_request", |b| {
        b.iter(|| {
            fingerprint(
                &key,
                black_box(&CanonicalRequest {
                    method: "POST",
                    path: "/search",
                    query: &query,
                    headers: &[],
                    body: CanonicalBody::Json(&body),
                }),
            )
        })
    });
    g.finish();
}

fn bench_pricing(c: &mut Criterion) {
    let env = ExprEnv::new();
    let set = load_dir(
        Path::new("pricing-rules"),
        &env,
        &LoadOptions {
            max_price: UsdMicros(10_000_000),
            max_stored_answer_bytes: tariff::pricing::DEFAULT_STORED_ANSWER_BYTES,
            extension_schemas: true,
        },
    )
    .expect("demo rules load");
    let route = set
        .routes
        .iter()
        .find(|r| r.id == "search")
        .unwrap()
        .clone();
    let body = parse_strict(BODY).unwrap();
    let empty = Value::Object(Default::default());
    let post = view("POST", None);
    let get = view("GET", Some("bitcoin price"));
    let mut g = c.benchmark_group("pricing");
    g.bench_function("baseline_bind_context_only", |b| {
        b.iter(|| {
            let input = EvalInput {
                request: &post,
                body: &body,
                response: None,
            };
            black_box(env.bind(&input));
        })
    });
    g.bench_function("decide_post_compare_filings", |b| {
        b.iter(|| {
            let input = EvalInput {
                request: &post,
                body: &body,
                response: None,
            };
            route.decide(&env, black_box(&input)).unwrap()
        })
    });
    g.bench_function("decide_get_simple_lookup_after_regex", |b| {
        b.iter(|| {
            let input = EvalInput {
                request: &get,
                body: &empty,
                response: None,
            };
            route.decide(&env, black_box(&input)).unwrap()
        })
    });
    g.finish();

    let quote = Quote {
        id: QuoteId::for_request(&RequestHash([1; 32])),
        request_hash: RequestHash([1; 32]),
        price: UsdMicros(20_000),
        rule: RuleRef {
            route: "search".into(),
            rule: "simple-lookup".into(),
        },
        method: "GET".into(),
        path: "/search".into(),
        offers: vec![Offer {
            network: Network::eip155(84532),
            asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
            amount: "20000".into(),
            pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into(),
            max_timeout_seconds: 300,
            eip712_name: "USDC".into(),
            eip712_version: "2".into(),
            transfer_method: Default::default(),
            scheme: Default::default(),
            facilitator: None,
        }]
        .into(),
        created_at: UnixMillis(1),
        expires_at: UnixMillis(300_001),
        topup: None,
    };
    let url = "https://api.example.com/search?q=bitcoin+price";
    let mut g = c.benchmark_group("render_402");
    g.bench_function("baseline_v1_body_only", |b| {
        b.iter(|| tariff::http::payment_required::v1_json(black_box(&quote), &route, url, "x"))
    });
    g.bench_function("render_v1_body_and_v2_header", |b| {
        b.iter(|| {
            tariff::http::payment_required::render(black_box(&quote), &route, url, None, None)
        })
    });
    // With the per-answer sign-in-with-x challenge a server with credits adds.
    let challenge = tariff::x402::siwx::Challenge {
        domain: "api.example.com".into(),
        uri: url.into(),
        statement: "Sign in to pay with the Tariff credits of this wallet".into(),
        nonce: "0123456789abcdef0123456789abcdef".into(),
        issued_at_ms: 1_764_000_000_000,
        expires_at_ms: 1_764_000_300_000,
        chains: vec!["eip155:84532".into()],
        with_schema: true,
    };
    g.bench_function("render_with_sign_in_challenge", |b| {
        b.iter(|| {
            tariff::http::payment_required::render(
                black_box(&quote),
                &route,
                url,
                None,
                Some(&challenge),
            )
        })
    });
    // The same 402 as the gateway answers a new quote once its key has a template (the second
    // new quote of a route at a price builds it): the render's bytes, copied with the request's
    // path, quote id and challenge put in.
    let rules = std::sync::Arc::new(set);
    let repeats = tariff::http::payment_required::Repeats::default();
    let path_and_query = "/search?q=bitcoin+price";
    let answer = |quote: &Quote| {
        repeats.answer(&tariff::http::payment_required::Asked {
            rules: &rules,
            quote,
            created: true,
            route: &route,
            resource_url: url,
            path_and_query,
            sign_in: Some(&challenge),
        })
    };
    answer(&quote);
    answer(&quote);
    assert_eq!(repeats.templates.built(), 1, "the template is built");
    g.bench_function("templated_with_sign_in_challenge", |b| {
        b.iter(|| answer(black_box(&quote)))
    });
    g.finish();
}

criterion_group!(benches, bench_parse, bench_fingerprint, bench_pricing);
criterion_main!(benches);
