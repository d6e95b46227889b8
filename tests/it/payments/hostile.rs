//! Hostile and malformed payments, one table: each gets its specific status and reason, and
//! neither the chain balances nor the ledger move. Plus the honest payment they are measured
//! against, replays (sequential and concurrent), and an expired quote.

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use serde_json::{Value, json};
use tariff::ledger::TransferKind;

use super::{
    Chain, Draft, PAY_TO, SIMPLE_PRICE, b64, get_with, ledger_of, local_app, payment_response,
    quote,
};
use crate::harness::{Reply, TestApp};

type Headers = Vec<(&'static str, String)>;

/// What a case may use besides the request's own requirement.
struct Ctx {
    payer: PrivateKeySigner,
    broke: PrivateKeySigner,
    stranger: PrivateKeySigner,
    /// The requirement of another (cheaper) request's open quote.
    cheap_accepted: Value,
    /// A nonce the payer already spent on chain.
    spent_nonce: B256,
}

fn v2(ctx: &Ctx, d: &Draft) -> Headers {
    vec![("payment-signature", b64(&d.v2(&ctx.payer)))]
}

fn v2_with(ctx: &Ctx, accepted: &Value, f: impl FnOnce(&mut Draft)) -> Headers {
    let mut d = Draft::honest(&ctx.payer, accepted);
    f(&mut d);
    v2(ctx, &d)
}

/// `accepted` with one field replaced (the signature stays honest for the new value).
fn edit(accepted: &Value, path: &[&str], v: Value) -> Value {
    let mut a = accepted.clone();
    let mut slot = &mut a;
    for p in path {
        slot = &mut slot[*p];
    }
    *slot = v;
    a
}

/// secp256k1 group order.
const N: &str = "115792089237316195423570985008687907852837564279074904382605163141518161494337";

struct Case {
    name: &'static str,
    /// Priced $0.05 (`tvl`) instead of $0.02.
    expensive: bool,
    make: fn(&Ctx, &Value) -> Headers,
    status: u16,
    reason: &'static str,
}

fn cases() -> Vec<Case> {
    let c = |name, make: fn(&Ctx, &Value) -> Headers, status, reason| Case {
        name,
        expensive: false,
        make,
        status,
        reason,
    };
    vec![
        c(
            "not base64",
            |_, _| vec![("payment-signature", "!!not base64!!".into())],
            400,
            "invalid_base64",
        ),
        c(
            "url-safe base64",
            |ctx, a| {
                let h = v2_with(ctx, a, |_| {});
                vec![(
                    "payment-signature",
                    h[0].1.replace('+', "-").replace('/', "_") + "-_",
                )]
            },
            400,
            "invalid_base64",
        ),
        c(
            "oversized header",
            |_, _| vec![("payment-signature", "A".repeat(20_000))],
            400,
            "payment_header_too_large",
        ),
        c(
            "base64 of text",
            |_, _| vec![("payment-signature", "aGVsbG8=".into())],
            400,
            "invalid_payload",
        ),
        c(
            "no x402Version",
            |_, a| vec![("payment-signature", b64(&json!({ "accepted": a })))],
            400,
            "invalid_x402_version",
        ),
        c(
            "x402Version 3",
            |ctx, a| {
                let mut p = Draft::honest(&ctx.payer, a).v2(&ctx.payer);
                p["x402Version"] = json!(3);
                vec![("payment-signature", b64(&p))]
            },
            400,
            "invalid_x402_version",
        ),
        c(
            "v2 without accepted",
            |ctx, a| {
                let mut p = Draft::honest(&ctx.payer, a).v2(&ctx.payer);
                p.as_object_mut().unwrap().remove("accepted");
                vec![("payment-signature", b64(&p))]
            },
            400,
            "invalid_payload",
        ),
        c(
            "two payment headers",
            |ctx, a| {
                let d = Draft::honest(&ctx.payer, a);
                vec![
                    ("payment-signature", b64(&d.v2(&ctx.payer))),
                    ("x-payment", b64(&d.v1(&ctx.payer))),
                ]
            },
            400,
            "ambiguous_payment",
        ),
        c(
            "nonce of 31 bytes",
            |ctx, a| {
                let mut p = Draft::honest(&ctx.payer, a).v2(&ctx.payer);
                p["payload"]["authorization"]["nonce"] = json!(format!("0x{}", "ab".repeat(31)));
                vec![("payment-signature", b64(&p))]
            },
            400,
            "invalid_exact_evm_payload_nonce",
        ),
        c(
            "odd-length signature hex",
            |ctx, a| {
                let mut p = Draft::honest(&ctx.payer, a).v2(&ctx.payer);
                let s = p["payload"]["signature"].as_str().unwrap().to_string();
                p["payload"]["signature"] = json!(s[..s.len() - 1]);
                vec![("payment-signature", b64(&p))]
            },
            400,
            "invalid_exact_evm_payload_signature",
        ),
        c(
            "value not a number",
            |ctx, a| {
                let mut p = Draft::honest(&ctx.payer, a).v2(&ctx.payer);
                p["payload"]["authorization"]["value"] = json!("20000.0");
                vec![("payment-signature", b64(&p))]
            },
            400,
            "invalid_exact_evm_payload_value",
        ),
        c(
            "scheme upto",
            |ctx, a| v2_with(ctx, &edit(a, &["scheme"], json!("upto")), |_| {}),
            402,
            "unsupported_scheme",
        ),
        c(
            "network mismatch",
            |ctx, a| v2_with(ctx, &edit(a, &["network"], json!("eip155:8453")), |_| {}),
            402,
            "invalid_network",
        ),
        c(
            "asset mismatch",
            |ctx, a| {
                v2_with(
                    ctx,
                    &edit(
                        a,
                        &["asset"],
                        json!("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
                    ),
                    |_| {},
                )
            },
            402,
            "asset_mismatch",
        ),
        c(
            "payTo mismatch",
            |ctx, a| {
                v2_with(
                    ctx,
                    &edit(
                        a,
                        &["payTo"],
                        json!(format!("{:#x}", Address::repeat_byte(7))),
                    ),
                    |_| {},
                )
            },
            402,
            "pay_to_mismatch",
        ),
        c(
            "accepted amount - 1",
            |ctx, a| {
                v2_with(
                    ctx,
                    &edit(a, &["amount"], json!((SIMPLE_PRICE - 1).to_string())),
                    |_| {},
                )
            },
            402,
            "amount_mismatch",
        ),
        c(
            "accepted maxTimeoutSeconds changed",
            |ctx, a| v2_with(ctx, &edit(a, &["maxTimeoutSeconds"], json!(1)), |_| {}),
            402,
            "accepted_requirements_mismatch",
        ),
        c(
            "EIP-712 name edited in accepted",
            |ctx, a| v2_with(ctx, &edit(a, &["extra", "name"], json!("USD Coin")), |_| {}),
            402,
            "accepted_requirements_mismatch",
        ),
        c(
            "quote id missing",
            |ctx, a| {
                let mut a = a.clone();
                a["extra"].as_object_mut().unwrap().remove("quoteId");
                v2_with(ctx, &a, |_| {})
            },
            402,
            "quote_id_missing",
        ),
        c(
            "unknown quote id",
            |ctx, a| {
                v2_with(
                    ctx,
                    &edit(
                        a,
                        &["extra", "quoteId"],
                        json!(format!("q_{}", "0".repeat(32))),
                    ),
                    |_| {},
                )
            },
            402,
            "quote_for_other_request",
        ),
        c(
            "stale quote id of this request",
            |ctx, a| {
                let id = a["extra"]["quoteId"].as_str().unwrap();
                let stale = format!("{}{}", &id[..18], "0".repeat(16));
                v2_with(ctx, &edit(a, &["extra", "quoteId"], json!(stale)), |_| {})
            },
            402,
            "quote_expired",
        ),
        Case {
            name: "another (cheaper) request's quote",
            expensive: true,
            make: |ctx, _| v2_with(ctx, &ctx.cheap_accepted, |_| {}),
            status: 402,
            reason: "quote_for_other_request",
        },
        c(
            "authorized amount + 1",
            |ctx, a| v2_with(ctx, a, |d| d.value += U256::from(1)),
            402,
            "invalid_exact_evm_payload_authorization_value_mismatch",
        ),
        c(
            "authorized amount - 1",
            |ctx, a| v2_with(ctx, a, |d| d.value -= U256::from(1)),
            402,
            "invalid_exact_evm_payload_authorization_value_mismatch",
        ),
        c(
            "authorization pays someone else",
            |ctx, a| v2_with(ctx, a, |d| d.to = Address::repeat_byte(7)),
            402,
            "invalid_exact_evm_payload_recipient_mismatch",
        ),
        c(
            "expired authorization",
            |ctx, a| v2_with(ctx, a, |d| d.valid_before = super::now_secs() + 3),
            402,
            "invalid_exact_evm_payload_authorization_valid_before",
        ),
        c(
            "not yet valid",
            |ctx, a| v2_with(ctx, a, |d| d.valid_after = super::now_secs() + 120),
            402,
            "invalid_exact_evm_payload_authorization_valid_after",
        ),
        c(
            "garbage signature",
            |ctx, a| {
                v2_with(ctx, a, |d| {
                    d.signature = Some(format!("0x{}1b", "11".repeat(64)))
                })
            },
            402,
            "invalid_exact_evm_payload_signature",
        ),
        c(
            "high-s twin signature",
            |ctx, a| {
                let d = Draft::honest(&ctx.payer, a);
                let p = d.v2(&ctx.payer);
                let sig = hex::decode(&p["payload"]["signature"].as_str().unwrap()[2..]).unwrap();
                let s = U256::from_be_slice(&sig[32..64]);
                let n = U256::from_str_radix(N, 10).unwrap();
                let mut twin = sig[..32].to_vec();
                twin.extend((n - s).to_be_bytes::<32>());
                twin.push(if sig[64] == 27 { 28 } else { 27 });
                v2_with(ctx, a, |d2| {
                    *d2 = d.clone();
                    d2.signature = Some(format!("0x{}", hex::encode(&twin)));
                })
            },
            402,
            "invalid_exact_evm_payload_signature",
        ),
        c(
            "signed by another key",
            |ctx, a| v2_with(ctx, a, |d| d.signer = Some(ctx.stranger.clone())),
            402,
            "invalid_exact_evm_payload_signature",
        ),
        c(
            "wrong EIP-712 name",
            |ctx, a| v2_with(ctx, a, |d| d.terms.eip712_name = "USD Coin".into()),
            402,
            "invalid_exact_evm_payload_signature",
        ),
        c(
            "wrong EIP-712 version",
            |ctx, a| v2_with(ctx, a, |d| d.terms.eip712_version = "1".into()),
            402,
            "invalid_exact_evm_payload_signature",
        ),
        c(
            "wrong EIP-712 chain",
            |ctx, a| v2_with(ctx, a, |d| d.terms.chain_id = 8453),
            402,
            "invalid_exact_evm_payload_signature",
        ),
        c(
            "wrong EIP-712 contract",
            |ctx, a| v2_with(ctx, a, |d| d.terms.asset = Address::repeat_byte(3)),
            402,
            "invalid_exact_evm_payload_signature",
        ),
        c(
            "insufficient balance",
            |ctx, a| {
                let d = Draft::honest(&ctx.broke, a);
                vec![("payment-signature", b64(&d.v2(&ctx.broke)))]
            },
            402,
            "insufficient_funds",
        ),
        c(
            "nonce already used on chain",
            |ctx, a| v2_with(ctx, a, |d| d.nonce = ctx.spent_nonce),
            402,
            "invalid_exact_evm_nonce_already_used",
        ),
        c(
            "v1: network not offered",
            |ctx, a| {
                let mut p = Draft::honest(&ctx.payer, a).v1(&ctx.payer);
                p["network"] = json!("base");
                vec![("x-payment", b64(&p))]
            },
            402,
            "invalid_network",
        ),
        c(
            "v1: unknown network name",
            |ctx, a| {
                let mut p = Draft::honest(&ctx.payer, a).v1(&ctx.payer);
                p["network"] = json!("base-moon");
                vec![("x-payment", b64(&p))]
            },
            400,
            "invalid_payload",
        ),
        Case {
            name: "v1: cheaper request's authorization",
            expensive: true,
            make: |ctx, _| {
                let d = Draft::honest(&ctx.payer, &ctx.cheap_accepted);
                vec![("x-payment", b64(&d.v1(&ctx.payer)))]
            },
            status: 402,
            reason: "invalid_exact_evm_payload_authorization_value_mismatch",
        },
    ]
}

/// The refusal reason: `tariff-reason` on a 402, the JSON `error` otherwise.
fn reason(r: &Reply) -> String {
    if r.status == 402 {
        let header = r.header("tariff-reason").unwrap_or_default();
        // The 402 repeats it in both protocol views.
        assert_eq!(r.json()["error"], json!(header), "v1 body error");
        assert_eq!(
            r.payment_required()["error"],
            json!(header),
            "v2 header error"
        );
        header
    } else {
        r.error_code()
    }
}

/// Pays `uri` honestly; returns the reply and the nonce used.
async fn pay(app: &TestApp, payer: &PrivateKeySigner, uri: &str) -> (Reply, Draft) {
    let (_, accepted) = quote(app, uri).await;
    let d = Draft::honest(payer, &accepted);
    let r = get_with(app, uri, &[("payment-signature", b64(&d.v2(payer)))]).await;
    (r, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payments_are_refused_precisely_and_move_nothing() {
    let chain = Chain::start().await;
    let app = local_app(&chain).await;
    let payer = chain.payer(10_000_000).await;
    let broke = chain.payer(0).await;

    // The honest baseline (and the nonce a later case replays).
    let (ok, spent) = pay(&app, &payer, "/search?q=baseline").await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let receipt = payment_response(&ok, "payment-response");
    assert_eq!(receipt["success"], json!(true));
    assert_eq!(receipt["network"], json!("eip155:84532"));
    assert_eq!(receipt["payer"], json!(format!("{:#x}", payer.address())));

    let (_, cheap_accepted) = quote(&app, "/search?q=cheap+one").await;
    let ctx = Ctx {
        payer: payer.clone(),
        broke: broke.clone(),
        stranger: PrivateKeySigner::random(),
        cheap_accepted,
        spent_nonce: spent.nonce,
    };
    let payer_hex = format!("{:#x}", payer.address());
    let (payer_before, seller_before) =
        (chain.balance(&payer_hex).await, chain.balance(PAY_TO).await);
    let ledger_before = ledger_of(&app, payer.address()).await;
    assert_eq!(
        ledger_before,
        vec![
            (TransferKind::RequestDebit, 20_000),
            (TransferKind::PaymentCredit, 20_000)
        ]
    );

    let table = cases();
    assert!(table.len() >= 30, "the issue asks for at least 30 cases");
    let mut failures = vec![];
    for (i, case) in table.iter().enumerate() {
        let uri = if case.expensive {
            format!("/search?q=tvl+case+{i}")
        } else {
            format!("/search?q=case+{i}")
        };
        let (_, accepted) = quote(&app, &uri).await;
        let headers = (case.make)(&ctx, &accepted);
        let r = get_with(&app, &uri, &headers).await;
        let got = reason(&r);
        if r.status != case.status || got != case.reason {
            failures.push(format!(
                "{}: expected {} {}, got {} {got} ({})",
                case.name,
                case.status,
                case.reason,
                r.status,
                String::from_utf8_lossy(&r.body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ));
        }
        assert!(
            r.header("payment-response").is_none(),
            "{}: no settlement happened",
            case.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let refusals = table.iter().filter(|c| c.status == 402).count() as u64;
    let payments = |outcome| {
        app.state
            .metrics
            .total("tariff_payments_total", Some(("outcome", outcome)))
    };
    assert_eq!(payments("refused"), refusals);
    assert_eq!(payments("settled"), 1, "only the baseline");

    assert_eq!(
        chain.balance(&payer_hex).await,
        payer_before,
        "payer balance moved"
    );
    assert_eq!(
        chain.balance(PAY_TO).await,
        seller_before,
        "seller balance moved"
    );
    assert_eq!(chain.balance(&format!("{:#x}", broke.address())).await, 0);
    assert_eq!(
        ledger_of(&app, payer.address()).await,
        ledger_before,
        "ledger moved"
    );
    assert!(ledger_of(&app, broke.address()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_buys_one_request_once_even_when_replayed_concurrently() {
    let chain = Chain::start().await;
    let app = local_app(&chain).await;
    let payer = chain.payer(1_000_000).await;
    let payer_hex = format!("{:#x}", payer.address());
    let uri = "/search?q=replayed";
    let (_, accepted) = quote(&app, uri).await;
    let header = b64(&Draft::honest(&payer, &accepted).v2(&payer));
    let seller_before = chain.balance(PAY_TO).await;

    let replies = futures_join(&app, uri, &header, 8).await;
    let statuses: Vec<(u16, String)> = replies
        .iter()
        .map(|r| (r.status, reason_or_ok(r)))
        .collect();
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 1, "exactly one request is served: {statuses:?}");
    for (s, why) in &statuses {
        assert!(
            *s == 200
                || (*s == 409 && why == "payment_in_progress")
                || (*s == 402 && why == "invalid_exact_evm_nonce_already_used"),
            "{statuses:?}"
        );
    }
    // Sequential replay after the fact.
    let again = get_with(&app, uri, &[("payment-signature", header.clone())]).await;
    assert_eq!(
        (again.status, reason(&again)),
        (402, "invalid_exact_evm_nonce_already_used".to_string())
    );

    assert_eq!(chain.balance(PAY_TO).await - seller_before, SIMPLE_PRICE);
    assert_eq!(chain.balance(&payer_hex).await, 1_000_000 - SIMPLE_PRICE);
    assert_eq!(
        ledger_of(&app, payer.address()).await,
        vec![
            (TransferKind::RequestDebit, 20_000),
            (TransferKind::PaymentCredit, 20_000)
        ]
    );
    app.assert_ledger_clean().await;
}

fn reason_or_ok(r: &Reply) -> String {
    if r.status == 200 {
        "ok".into()
    } else {
        reason(r)
    }
}

async fn futures_join(app: &TestApp, uri: &str, header: &str, n: usize) -> Vec<Reply> {
    let mut tasks = vec![];
    for _ in 0..n {
        let state = app.state.clone();
        let (uri, header) = (uri.to_string(), header.to_string());
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let req = axum::http::Request::get(uri)
                .header("payment-signature", header)
                .body(axum::body::Body::empty())
                .unwrap();
            Reply::read(tariff::http::app(state).oneshot(req).await.unwrap()).await
        }));
    }
    let mut out = vec![];
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_quote_gets_a_fresh_402() {
    let chain = Chain::start().await;
    let clock = tariff::time::Clock::manual(tariff::time::UnixMillis(super::now_secs() * 1000));
    let app = TestApp::start_with(
        &crate::harness::repo_rules(),
        &super::local_vars(&chain),
        clock.clone(),
    )
    .await;
    let payer = chain.payer(1_000_000).await;
    let uri = "/search?q=slow+payer";
    let (first, accepted) = quote(&app, uri).await;
    let header = b64(&Draft::honest(&payer, &accepted).v2(&payer));
    clock.advance_ms(301_000); // past the 300 s quote lifetime
    let r = get_with(&app, uri, &[("payment-signature", header)]).await;
    assert_eq!((r.status, reason(&r)), (402, "quote_expired".to_string()));
    assert_ne!(r.quote_id(), first.quote_id(), "a fresh quote is offered");
    assert!(ledger_of(&app, payer.address()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_redis_and_postgres_serve_one_payment_once() {
    let chain = Chain::start().await;
    let mut vars = super::local_vars(&chain);
    vars.push(("TARIFF_REDIS_URL", crate::support::redis_url()));
    vars.push(("TARIFF_DATABASE_URL", crate::db::fresh_postgres().await));
    let a = TestApp::start(&crate::harness::repo_rules(), &vars).await;
    let b = TestApp::start(&crate::harness::repo_rules(), &vars).await;
    let payer = chain.payer(1_000_000).await;
    let uri = "/search?q=two+instances";
    let (_, accepted) = quote(&a, uri).await;
    // Instance B hands out the same quote (shared Redis), so the payment matches on both.
    let (_, accepted_b) = quote(&b, uri).await;
    assert_eq!(accepted, accepted_b);
    let header = b64(&Draft::honest(&payer, &accepted).v2(&payer));
    let seller_before = chain.balance(PAY_TO).await;
    let (ra, rb) = tokio::join!(
        futures_join(&a, uri, &header, 4),
        futures_join(&b, uri, &header, 4)
    );
    let served = ra
        .iter()
        .chain(rb.iter())
        .filter(|r| r.status == 200)
        .count();
    assert_eq!(served, 1, "one payment, one answer, across instances");
    assert_eq!(chain.balance(PAY_TO).await - seller_before, SIMPLE_PRICE);
    assert_eq!(
        ledger_of(&a, payer.address()).await,
        vec![
            (TransferKind::RequestDebit, 20_000),
            (TransferKind::PaymentCredit, 20_000)
        ]
    );
}
