//! The 402 read as a client would: the v2 header and the v1 body decoded with plain base64 and
//! `serde_json::Value` (not Tariff's structs), every field checked against the protocol
//! reference (shared/reference/x402-protocol.md §1.2, §1.3, §2.4, §4.4).

use base64::Engine;
use serde_json::Value;

use crate::harness::{TestApp, repo_rules};

const BASE_SEPOLIA_USDC: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn v2_header_and_v1_body_carry_the_quote() {
    let app = TestApp::start(
        &repo_rules(),
        &[
            ("TARIFF_PAY_TO", PAY_TO.to_string()),
            ("TARIFF_PUBLIC_URL", "https://api.example.com".to_string()),
        ],
    )
    .await;
    let reply = app.get("/search?q=bitcoin+price").await;
    assert_eq!(reply.status, 402);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    let expose = reply
        .header("access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in ["payment-required", "payment-response", "x-payment-response"] {
        assert!(expose.contains(h), "CORS exposes {h}: {expose}");
    }

    // ---- v2: PAYMENT-REQUIRED header ----
    let v2 = reply.payment_required();
    assert_eq!(
        keys(&v2),
        ["accepts", "error", "extensions", "resource", "x402Version"]
    );
    assert_eq!(v2["x402Version"], 2);
    assert_eq!(v2["error"], "PAYMENT-SIGNATURE header is required");
    let resource = &v2["resource"];
    assert_eq!(
        resource["url"],
        "https://api.example.com/search?q=bitcoin+price"
    );
    assert_eq!(resource["mimeType"], "application/json");
    assert!(
        resource["description"]
            .as_str()
            .unwrap()
            .starts_with("Search over market data")
    );
    assert_eq!(resource["serviceName"], "Tariff Demo Search");
    assert_eq!(
        resource["tags"],
        serde_json::json!(["search", "crypto", "finance", "filings"])
    );

    let accepts = v2["accepts"].as_array().unwrap();
    assert_eq!(accepts.len(), 1);
    let req = &accepts[0];
    assert_eq!(
        keys(req),
        [
            "amount",
            "asset",
            "extra",
            "maxTimeoutSeconds",
            "network",
            "payTo",
            "scheme"
        ]
    );
    assert_eq!(req["scheme"], "exact");
    assert_eq!(req["network"], "eip155:84532");
    assert_eq!(
        req["amount"], "20000",
        "amounts are decimal strings of base units"
    );
    assert_eq!(req["asset"], BASE_SEPOLIA_USDC);
    assert_eq!(req["payTo"], PAY_TO);
    assert_eq!(req["maxTimeoutSeconds"], 300);
    assert_eq!(
        req["extra"]["name"], "USDC",
        "Base Sepolia USDC's EIP-712 name"
    );
    assert_eq!(req["extra"]["version"], "2");
    let quote_id = req["extra"]["quoteId"].as_str().unwrap();
    assert!(
        quote_id.starts_with("q_") && quote_id.len() == 34,
        "{quote_id}"
    );
    assert_eq!(reply.header("x-tariff-quote-id").as_deref(), Some(quote_id));

    // Bazaar discovery extension: {info: {input, output}, schema}.
    let bazaar = &v2["extensions"]["bazaar"];
    assert_eq!(bazaar["info"]["input"]["type"], "http");
    assert_eq!(bazaar["info"]["input"]["method"], "GET");
    assert_eq!(bazaar["info"]["input"]["queryParams"]["q"], "bitcoin price");
    assert_eq!(bazaar["info"]["output"]["type"], "json");
    assert_eq!(
        bazaar["info"]["output"]["example"]["query"],
        "bitcoin price"
    );
    assert_eq!(
        bazaar["schema"]["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(bazaar["schema"]["type"], "object");

    // ---- v1: JSON body ----
    let v1 = reply.json();
    assert_eq!(keys(&v1), ["accepts", "error", "x402Version"]);
    assert_eq!(v1["x402Version"], 1);
    assert_eq!(v1["error"], "X-PAYMENT header is required");
    let r1 = &v1["accepts"][0];
    assert_eq!(
        keys(r1),
        [
            "asset",
            "description",
            "extra",
            "maxAmountRequired",
            "maxTimeoutSeconds",
            "mimeType",
            "network",
            "outputSchema",
            "payTo",
            "resource",
            "scheme"
        ]
    );
    assert_eq!(r1["scheme"], "exact");
    assert_eq!(
        r1["network"], "base-sepolia",
        "v1 uses the legacy network name"
    );
    assert_eq!(r1["maxAmountRequired"], "20000");
    assert_eq!(
        r1["resource"],
        "https://api.example.com/search?q=bitcoin+price"
    );
    assert_eq!(r1["description"], resource["description"]);
    assert_eq!(r1["mimeType"], "application/json");
    assert_eq!(r1["payTo"], PAY_TO);
    assert_eq!(r1["maxTimeoutSeconds"], 300);
    assert_eq!(r1["asset"], BASE_SEPOLIA_USDC);
    assert_eq!(
        r1["extra"], req["extra"],
        "same EIP-712 domain and quote id in both versions"
    );
    let out = &r1["outputSchema"];
    assert_eq!(out["input"]["type"], "http");
    assert_eq!(out["input"]["method"], "GET");
    assert_eq!(out["input"]["discoverable"], true);
}

#[tokio::test]
async fn post_discovery_describes_the_body_and_mainnet_uses_usd_coin() {
    let app = TestApp::start(&repo_rules(), &[("TARIFF_NETWORK", "base".to_string())]).await;
    let reply = app
        .post_json("/search", r#"{"query":"q","documents":["a","b","c"]}"#)
        .await;
    let v2 = reply.payment_required();
    let req = &v2["accepts"][0];
    assert_eq!(req["network"], "eip155:8453");
    assert_eq!(req["asset"], "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
    assert_eq!(
        req["extra"]["name"], "USD Coin",
        "Base mainnet USDC's EIP-712 name differs from Sepolia's"
    );
    assert_eq!(req["amount"], "120000");
    let input = &v2["extensions"]["bazaar"]["info"]["input"];
    assert_eq!(input["method"], "POST");
    assert_eq!(input["bodyType"], "json");
    assert_eq!(input["body"]["documents"][2], "10-Q Q1 2026");
    assert_eq!(reply.json()["accepts"][0]["network"], "base");
    assert_eq!(
        reply.json()["accepts"][0]["outputSchema"]["input"]["bodyType"],
        "json"
    );
}

#[tokio::test]
async fn repeated_request_gets_a_byte_identical_402() {
    let app = TestApp::start(&repo_rules(), &[]).await;
    let a = app.get("/search?q=tvl+of+aave").await;
    let b = app.get("/search?q=tvl+of+aave").await;
    // Only the sign-in challenge is fresh per answer (its nonce is single-use).
    let without_challenge = |r: &crate::harness::Reply| {
        let mut v = r.payment_required();
        let removed = v["extensions"]
            .as_object_mut()
            .unwrap()
            .remove("sign-in-with-x");
        assert!(removed.is_some(), "a server with credits offers sign-in");
        serde_json::to_vec(&v).unwrap()
    };
    assert_eq!(without_challenge(&a), without_challenge(&b));
    assert_eq!(a.body, b.body);
}

/// The v2 header's JSON with the sign-in challenge's per-answer fields (nonce, timestamps)
/// blanked, after checking they are well-formed.
fn challenge_blanked(r: &crate::harness::Reply) -> (Vec<u8>, String) {
    let b64 = r.header("payment-required").unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .expect("valid base64");
    // Canonical base64: re-encoding the bytes gives the header back.
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(&raw),
        b64,
        "canonical base64"
    );
    let text = String::from_utf8(raw).unwrap();
    let v: Value = serde_json::from_str(&text).expect("valid JSON");
    let info = &v["extensions"]["sign-in-with-x"]["info"];
    let nonce = info["nonce"].as_str().unwrap().to_string();
    assert_eq!(nonce.len(), 32);
    let mut blanked = text.replacen(&nonce, &"0".repeat(32), 1);
    for field in ["issuedAt", "expirationTime"] {
        let t = info[field].as_str().unwrap();
        assert!(tariff::x402::siwx::parse_rfc3339(t).is_some(), "{t}");
        blanked = blanked.replacen(t, "2000-01-01T00:00:00.000Z", 1);
    }
    (blanked.into_bytes(), nonce)
}

#[tokio::test]
async fn a_repeated_402_is_served_from_its_rendered_bytes_with_a_fresh_challenge() {
    let app = TestApp::start(&repo_rules(), &[]).await;
    let uri = "/search?q=market+cap+of+eth";
    let first = app.get(uri).await;
    assert!(
        app.state.repeats.is_empty(),
        "a new quote's 402 is not kept"
    );
    let second = app.get(uri).await;
    assert_eq!(app.state.repeats.len(), 1, "a repeat is kept");
    let (third, fourth) = (app.get(uri).await, app.get(uri).await);
    assert_eq!(app.state.repeats.len(), 1);

    let replies = [&first, &second, &third, &fourth];
    let blanked: Vec<_> = replies.iter().map(|r| challenge_blanked(r)).collect();
    for (r, (bytes, _)) in replies.iter().zip(&blanked) {
        assert_eq!(r.status, 402);
        assert_eq!(*bytes, blanked[0].0, "same 402 but for the challenge");
        assert_eq!(r.body, first.body);
        for h in ["x-tariff-quote-id", "x-tariff-price", "content-type"] {
            assert_eq!(r.header(h), first.header(h), "{h}");
        }
    }
    let mut nonces: Vec<_> = blanked.iter().map(|(_, n)| n.clone()).collect();
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 4, "every answer has its own nonce");

    // Another Host is another resource URL: rendered for it, not served from the kept one.
    let other = crate::harness::Reply::read(
        app.send(
            axum::http::Request::get(uri)
                .header("host", "other.example:8443")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!(
        other.payment_required()["resource"]["url"],
        "http://other.example:8443/search?q=market+cap+of+eth"
    );
    assert!(String::from_utf8_lossy(&other.body).contains("http://other.example:8443/search"));
}

#[tokio::test]
async fn a_repeated_402_follows_a_rules_reload() {
    let dir = crate::harness::TempDir::new("repeats");
    let file = dir.0.join("search.toml");
    let rules = std::fs::read_to_string(repo_rules().join("search.toml")).unwrap();
    std::fs::write(&file, &rules).unwrap();
    let app = TestApp::start(&dir.0, &[]).await;
    let uri = "/search?q=bitcoin+price";
    for _ in 0..3 {
        app.get(uri).await;
    }
    assert_eq!(app.state.repeats.len(), 1);
    let edited = rules.replace(
        "description = \"Search over market data",
        "description = \"Edited: search over market data",
    );
    assert_ne!(edited, rules);
    std::fs::write(&file, edited).unwrap();
    app.state.rules.reload().expect("the edited rules load");
    let after = app.get(uri).await;
    let description = |r: &crate::harness::Reply| {
        r.payment_required()["resource"]["description"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        description(&after).starts_with("Edited: "),
        "{}",
        description(&after)
    );
    assert!(String::from_utf8_lossy(&after.body).contains("Edited: "));
}

/// `extension_schemas = false` (as Cloudflare sends them): each extension of the 402 comes
/// without its `schema` and is otherwise the same, so the header is about half as large; the
/// v1 body, which has no extensions, is unchanged.
#[tokio::test]
async fn without_extension_schemas_each_extension_is_sent_without_its_schema() {
    let (_dir, lean_config) = crate::harness::config_file("extension_schemas = false\n");
    let full = TestApp::start(&repo_rules(), &[]).await;
    let lean = TestApp::start(&repo_rules(), &[lean_config]).await;
    let uri = "/search?q=bitcoin+price";
    let (a, b) = (full.get(uri).await, lean.get(uri).await);
    assert_eq!((a.status, b.status), (402, 402));
    let (va, vb) = (a.payment_required(), b.payment_required());
    let (ea, eb) = (
        va["extensions"].as_object().unwrap(),
        vb["extensions"].as_object().unwrap(),
    );
    assert_eq!(keys(&va["extensions"]), ["bazaar", "sign-in-with-x"]);
    assert_eq!(keys(&va["extensions"]), keys(&vb["extensions"]));
    for (key, declaration) in ea {
        assert!(declaration.get("schema").is_some(), "{key}");
        assert!(eb[key].get("schema").is_none(), "{key}");
    }
    assert_eq!(ea["bazaar"]["info"], eb["bazaar"]["info"]);
    for field in ["domain", "uri", "statement", "version", "resources"] {
        assert_eq!(
            ea["sign-in-with-x"]["info"][field], eb["sign-in-with-x"]["info"][field],
            "{field}"
        );
    }
    assert_eq!(
        ea["sign-in-with-x"]["supportedChains"],
        eb["sign-in-with-x"]["supportedChains"]
    );
    assert_eq!(va["accepts"][0]["amount"], vb["accepts"][0]["amount"]);
    let len = |r: &crate::harness::Reply| r.header("payment-required").unwrap().len();
    assert!(
        len(&b) * 10 < len(&a) * 6,
        "{} vs {} bytes",
        len(&b),
        len(&a)
    );
    // The v1 body: the same but for each app's own quote id.
    let v1 = |r: &crate::harness::Reply| {
        let mut v = r.json();
        for req in v["accepts"].as_array_mut().unwrap() {
            req["extra"].as_object_mut().unwrap().remove("quoteId");
        }
        v
    };
    assert_eq!(v1(&a), v1(&b));
}

/// New quotes of one route and price: the second builds the route's template and later ones
/// are copied from it. Each still carries its own URL, quote id and challenge (and in this
/// debug build every templated 402 is also checked against its full render).
#[tokio::test]
async fn new_quotes_402s_come_from_the_routes_template_with_their_own_values() {
    let app = TestApp::start(&repo_rules(), &[]).await;
    let templates = &app.state.repeats.templates;
    let first = app.get("/search?q=first").await.payment_required();
    let origin = first["resource"]["url"].as_str().unwrap();
    let origin = origin.strip_suffix("/search?q=first").unwrap().to_string();
    assert_eq!(
        templates.built(),
        0,
        "one new quote: nothing to template yet"
    );
    app.get("/search?q=second").await;
    assert_eq!(templates.built(), 1);
    let mut nonces = Vec::new();
    for q in ["third", "a%22quoted%22+one", "caf%C3%A9", "x&y=1"] {
        let uri = format!("/search?q={q}");
        let r = app.get(&uri).await;
        assert_eq!(r.status, 402);
        let url = format!("{origin}{uri}");
        let id = r.header("x-tariff-quote-id").unwrap();
        let v2 = r.payment_required();
        assert_eq!(v2["resource"]["url"], url);
        for a in v2["accepts"].as_array().unwrap() {
            assert_eq!(a["extra"]["quoteId"], id, "{uri}");
        }
        let info = &v2["extensions"]["sign-in-with-x"]["info"];
        assert_eq!(info["uri"], url);
        assert_eq!(info["resources"][0], url);
        nonces.push(info["nonce"].as_str().unwrap().to_string());
        let v1: Value = serde_json::from_slice(&r.body).unwrap();
        for a in v1["accepts"].as_array().unwrap() {
            assert_eq!(a["resource"], url);
            assert_eq!(a["extra"]["quoteId"], id);
        }
    }
    assert_eq!(templates.built(), 1, "used, not built again");
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 4, "every 402 has its own challenge");
}
