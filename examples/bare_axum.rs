//! The peer-independent baseline of `scripts/bench`: a bare axum server on the same runtime
//! and allocator as tariff, answering `/hello` (the trivial route) and `/fixed402` (a fixed
//! 402 the size of a static-price x402 middleware's: a ~0.5 KB `PAYMENT-REQUIRED` header and a
//! small JSON body). Nothing is computed per request.
//!
//!   cargo run --release --example bare_axum -- 127.0.0.1:PORT

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;

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

#[tokio::main]
async fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8403".into());
    let (required, body) = fixed_402();
    let app = Router::new()
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
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("binding the listen address");
    axum::serve(listener, app).await.expect("serving");
}
