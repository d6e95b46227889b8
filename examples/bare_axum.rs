//! The peer-independent baseline of `scripts/bench`: a bare axum server on the same runtime
//! and allocator as tariff, answering `/hello` (the trivial route) and `/fixed402` (a fixed
//! 402 the size of a static-price x402 middleware's: a ~0.5 KB `PAYMENT-REQUIRED` header and a
//! small JSON body). Nothing is computed per request.
//!
//! Given a 402 captured from tariff (`curl -D HEADERS -o BODY`), it also answers `/replay402`
//! with exactly those headers and body: the cost of a 402 of that size on the wire, with no
//! work behind it, so a benchmark can tell the answer's size from the work that makes it.
//!
//! The floor of a new quote: `/replay402-memory` also writes one fresh quote per request into
//! tariff's own in-memory store, and, given a Redis URL, `/replay402-redis` into tariff's own
//! Redis store (and `/fixed402-redis`: the small fixed 402 plus that write). No fingerprint, no
//! pricing, no rendering: what any server that answers with these bytes and keeps its quotes
//! in that store pays at least, so a target above it cannot be met by making tariff's own work
//! cheaper.
//!
//!   cargo run --release --example bare_axum -- 127.0.0.1:PORT [HEADERS BODY [REDIS_URL]]

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tariff::quote::{MemoryQuoteStore, Quote, QuoteId, QuoteStore, RedisQuoteStore, RequestHash};
use tariff::time::Clock;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn fixed_402() -> (HeaderValue, &'static str) {
    let required = serde_json::json!({
        "x402Version": 2,
        "error": "PAYMENT-SIGNATURE header is required",
        "resource": {"url": "http://127.0.0.1/fixed402", "description": "A fixed price", "mimeType": "application/json"},
        "accepts": [{
            "scheme": "exact", "network": "eip155:84532", "amount": "20000",
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "payTo": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}
        }]
    });
    let b64 = base64::engine::general_purpose::STANDARD.encode(required.to_string());
    (
        HeaderValue::from_str(&b64).expect("base64 is a valid header value"),
        r#"{"error":"PAYMENT-SIGNATURE header is required"}"#,
    )
}

/// The header lines of a `curl -D` dump, less the status line and what hyper writes itself
/// (`date`, `content-length`).
fn replayed_headers(dump: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in dump.lines().skip(1) {
        let Some((name, value)) = line.trim_end().split_once(':') else {
            continue;
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes()).expect("a header name");
        if name == header::DATE || name == header::CONTENT_LENGTH {
            continue;
        }
        let value = HeaderValue::from_str(value.trim()).expect("a header value");
        headers.append(name, value);
    }
    headers
}

/// A quote shaped like the ones tariff stores for the demo's `/search` (one offer, ~500 bytes
/// as JSON), to be stamped with a fresh hash, id and times per request.
fn prototype_quote() -> Quote {
    serde_json::from_str(
        r#"{"id":"q_00000000000000000000000000000000",
            "request_hash":"0000000000000000000000000000000000000000000000000000000000000000",
            "price":20000,"rule":{"route":"search","rule":"simple-lookup"},
            "method":"GET","path":"/search",
            "offers":[{"network":"eip155:84532","asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                       "amount":"20000","pay_to":"0x000000000000000000000000000000000000dEaD",
                       "max_timeout_seconds":300,"eip712_name":"USDC","eip712_version":"2"}],
            "created_at":0,"expires_at":0}"#,
    )
    .expect("the prototype quote parses")
}

/// Stamps out distinct quotes: a hash from a counter (distinct per request, as tariff's
/// fingerprints are), a fresh id, and tariff's default five-minute expiry.
struct Fresh {
    prototype: Quote,
    counter: AtomicU64,
    clock: Clock,
}

impl Fresh {
    fn next(&self) -> Arc<Quote> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let hash = RequestHash(*blake3::hash(&n.to_le_bytes()).as_bytes());
        let now = self.clock.now();
        let mut quote = self.prototype.clone();
        quote.id = QuoteId::for_request(&hash);
        quote.request_hash = hash;
        quote.created_at = now;
        quote.expires_at = now.plus_secs(300);
        Arc::new(quote)
    }
}

/// Writes one fresh quote into `store`, then answers `answer`; a store error is a 503, so a
/// benchmark that expects 402s counts it.
async fn write_then<S: QuoteStore>(
    store: &S,
    fresh: &Fresh,
    answer: axum::response::Response,
) -> axum::response::Response {
    match store.get_or_insert(fresh.next()).await {
        Ok(_) => answer,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8403".into());
    let replay = match (args.next(), args.next()) {
        (Some(h), Some(b)) => Some((
            replayed_headers(&std::fs::read_to_string(h).expect("reading the header dump")),
            Bytes::from(std::fs::read(b).expect("reading the body")),
        )),
        _ => None,
    };
    let redis_url = args.next();
    let (required, body) = fixed_402();
    let fixed = {
        let required = required.clone();
        move || {
            (
                StatusCode::PAYMENT_REQUIRED,
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                    (
                        header::HeaderName::from_static("payment-required"),
                        required.clone(),
                    ),
                ],
                body,
            )
                .into_response()
        }
    };
    let fresh = Arc::new(Fresh {
        prototype: prototype_quote(),
        counter: AtomicU64::new(0),
        clock: Clock::System,
    });
    let mut app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/fixed402", {
            let fixed = fixed.clone();
            get(move || {
                let response = fixed();
                async move { response }
            })
        });
    if let Some((headers, body)) = replay {
        let replay =
            move || (StatusCode::PAYMENT_REQUIRED, headers.clone(), body.clone()).into_response();
        // The same capacity as tariff's memory store by default (`quotes.memory_capacity`).
        let memory = MemoryQuoteStore::new(100_000, Clock::System);
        app = app
            .route("/replay402", {
                let replay = replay.clone();
                get(move || {
                    let response = replay();
                    async move { response }
                })
            })
            .route("/replay402-memory", {
                let (replay, fresh) = (replay.clone(), fresh.clone());
                get(move || {
                    let (memory, fresh, response) = (memory.clone(), fresh.clone(), replay());
                    async move { write_then(&memory, &fresh, response).await }
                })
            });
        if let Some(url) = redis_url {
            // Tariff's own Redis store: the same auto-pipelined `SET NX PXAT GET` per quote.
            let redis = RedisQuoteStore::connect(&url, "bare:")
                .await
                .expect("connecting to Redis");
            app = app
                .route("/replay402-redis", {
                    let (replay, fresh, redis) = (replay.clone(), fresh.clone(), redis.clone());
                    get(move || {
                        let (redis, fresh, response) = (redis.clone(), fresh.clone(), replay());
                        async move { write_then(&redis, &fresh, response).await }
                    })
                })
                .route(
                    "/fixed402-redis",
                    get(move || {
                        let (redis, fresh, response) = (redis.clone(), fresh.clone(), fixed());
                        async move { write_then(&redis, &fresh, response).await }
                    }),
                );
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("binding the listen address");
    axum::serve(listener, app).await.expect("serving");
}
