//! The listener against slow and hostile clients, over real TCP: slowloris connections are cut
//! at the header-read timeout and cannot starve the connection cap, oversized or overlong heads
//! get 431, a trickled body gets 408 with nothing quoted, and a request in the gateway holds a
//! small future.

use std::time::{Duration, Instant};

use tariff::config::ServerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{TestApp, repo_rules};

async fn start(limits: ServerLimits) -> (TestApp, std::net::SocketAddr) {
    let app = TestApp::start(&repo_rules(), &[]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = tariff::http::app(app.state.clone());
    tokio::spawn(tariff::http::serve::serve(
        listener,
        router,
        limits,
        std::future::pending(),
    ));
    (app, addr)
}

/// Sends `request` and reads the answer until the server closes or `wait` passes.
async fn exchange(addr: std::net::SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

fn limits() -> ServerLimits {
    ServerLimits {
        max_connections: 4,
        header_read_timeout: Duration::from_millis(400),
        body_read_timeout: Duration::from_millis(400),
        max_headers: 16,
        max_header_bytes: 24 * 1024,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_and_cannot_starve_the_server() {
    let (_app, addr) = start(limits()).await;
    // As many slow clients as the cap, each dribbling a header byte every 50 ms.
    let started = Instant::now();
    let slow: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
                    .await
                    .unwrap();
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if s.write_all(b"a").await.is_err() {
                        break;
                    }
                    let mut buf = [0u8; 256];
                    // The server answers (408) or closes; either way the connection is over.
                    let read = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf));
                    if let Ok(Ok(n)) = read.await
                        && (n == 0 || buf.starts_with(b"HTTP/1.1 408"))
                    {
                        break;
                    }
                    if started.elapsed() > Duration::from_secs(10) {
                        panic!("a slow client was never cut off");
                    }
                }
                started.elapsed()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A normal client waits for a free slot, then is served.
    let answer = exchange(
        addr,
        b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // It waited for the cap (all slots were held), and not longer than the timeout freed one.
    let served_after = started.elapsed();
    assert!(
        served_after >= Duration::from_millis(350) && served_after < Duration::from_secs(3),
        "{served_after:?}"
    );
    for s in slow {
        let cut_after = s.await.unwrap();
        assert!(
            cut_after >= Duration::from_millis(350) && cut_after < Duration::from_secs(3),
            "cut after {cut_after:?}"
        );
    }
}

#[tokio::test]
async fn oversized_heads_are_refused_with_431_and_trickled_bodies_with_408() {
    let (app, addr) = start(limits()).await;
    let many: String = (0..40).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = exchange(
        addr,
        format!("GET /health HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let long = "a".repeat(30 * 1024);
    let answer = exchange(
        addr,
        format!("GET /health HTTP/1.1\r\nhost: x\r\nx-long: {long}\r\n\r\n").as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    // A head within the limits (a 16 KiB payment-sized header) is served.
    let payment_sized = "b".repeat(16 * 1024);
    let answer = exchange(
        addr,
        format!(
            "GET /health HTTP/1.1\r\nhost: x\r\nx-big: {payment_sized}\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A priced request whose body never arrives in full: 408 body_timeout, no quote.
    let started = Instant::now();
    let answer = exchange(
        addr,
        b"POST /search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"query\":",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        app.state.metrics.total("tariff_quotes_total", None),
        0,
        "nothing quoted"
    );
}

/// Every request in the gateway holds its future for as long as it takes, a slow client's body
/// upload included, so its size is memory per connection (up to `max_connections` of them).
/// The paid, credits, sign-in, forwarding and external-pricer branches are boxed: inline, their
/// state made every 402's future ~4× larger (~8 KB against ~2 KB in this test build), held and
/// copied by requests that never take those branches.
#[tokio::test]
async fn a_request_in_the_gateway_holds_a_small_future() {
    let app = TestApp::start(&repo_rules(), &[]).await;
    let request = axum::http::Request::get("/search?q=bitcoin+price")
        .body(axum::body::Body::empty())
        .unwrap();
    let future = tariff::http::gateway::handle(axum::extract::State(app.state.clone()), request);
    let size = std::mem::size_of_val(&future);
    assert!(size <= 3 * 1024, "the gateway's future is {size} bytes");
    // It is a real request's future: it runs to the 402.
    let response = future.await;
    assert_eq!(response.status(), 402);
}
