//! The peer-independent baseline of `scripts/bench`: a bare axum server on the same runtime
//! and allocator as tariff, answering `/hello` (the trivial route) and `/fixed402` (a fixed
//! 402 the size of a static-price x402 middleware's: a ~0.5 KB `PAYMENT-REQUIRED` header and a
//! small JSON body). Nothing is computed per request.
//!
//! Given a 402 captured from tariff (`curl -D HEADERS -o BODY`), it also answers `/replay402`
//! with exactly those headers and body: the cost of a 402 of that size on the wire, with no
//! work behind it, so a benchmark can tell the answer's size from the work that makes it.
//!
//!   cargo run --release --example bare_axum -- 127.0.0.1:PORT [HEADERS BODY]

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use bytes::Bytes;

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
    let (required, body) = fixed_402();
    let mut app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/fixed402",
            get(move || {
                let required = required.clone();
                async move {
                    (
                        StatusCode::PAYMENT_REQUIRED,
                        [
                            (
                                header::CONTENT_TYPE,
                                HeaderValue::from_static("application/json"),
                            ),
                            (
                                header::HeaderName::from_static("payment-required"),
                                required,
                            ),
                        ],
                        body,
                    )
                        .into_response()
                }
            }),
        );
    if let Some((headers, body)) = replay {
        app = app.route(
            "/replay402",
            get(move || {
                let (headers, body) = (headers.clone(), body.clone());
                async move { (StatusCode::PAYMENT_REQUIRED, headers, body).into_response() }
            }),
        );
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("binding the listen address");
    axum::serve(listener, app).await.expect("serving");
}
