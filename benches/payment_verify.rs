//! Criterion benches of the local (pre-RPC) cost of verifying one x402 payment, each next to
//! baselines measured in the same run (these machines are noisy: compare ratios, not absolute
//! times).
//!
//!   cargo bench --bench payment_verify
//!
//! Group `payment_verify`: two baselines, a bare keccak256 of 192 bytes (the six encoded
//! `TransferWithAuthorization` fields) and the EIP-712 signing hash alone (domain separator +
//! struct hash, no ECDSA); then `local_check`, the whole `eip3009::check` of a valid signed
//! authorization (one ECDSA public-key recovery), the recovery alone by k256 (alloy's, used
//! before) and by libsecp256k1 (used now), and `decode_and_check`, everything a paid
//! retry costs before its first RPC: base64 + JSON decode of the `PAYMENT-SIGNATURE` header,
//! the exact-EVM shape check and `check`; the same for Permit2 (`permit2_parse_and_check`) and
//! for a wallet sign-in (`siwx_decode_and_verify`).

use std::hint::black_box;

use alloy::primitives::{B256, U256, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use tariff::payment::scheme::exact_eip3009::{
    self as eip3009, Authorization, TransferWithAuthorization,
};
use tariff::payment::scheme::{Scheme, SchemePayment, SignatureCheck, Terms};
use tariff::x402::codec::{decode_header, encode_header};
use tariff::x402::exact_evm::ExactEvmPayload;

/// The clock `check` sees: inside the authorization's window.
const NOW: u64 = 1_750_000_000;
/// The server's default `payments.max_header_bytes`.
const MAX_HEADER: usize = 16 * 1024;

fn terms() -> Terms {
    Terms {
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

/// A valid authorization for `terms`, signed by a fixed key (so every run measures the same
/// recovery).
fn signed(terms: &Terms) -> Authorization {
    let payer = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x42)).unwrap();
    let mut auth = Authorization {
        message: TransferWithAuthorization {
            from: payer.address(),
            to: terms.pay_to,
            value: terms.amount,
            validAfter: U256::from(NOW - 600),
            validBefore: U256::from(NOW + 300),
            nonce: B256::repeat_byte(7),
        },
        signature: vec![],
    };
    let sig = payer.sign_hash_sync(&auth.signing_hash(terms)).unwrap();
    auth.signature = sig.as_bytes().to_vec();
    auth
}

/// The `PAYMENT-SIGNATURE` header a v2 client sends for `auth`, with a realistic `accepted`.
fn header(auth: &Authorization, terms: &Terms) -> String {
    let m = &auth.message;
    let payment = json!({
        "x402Version": 2,
        "resource": { "url": "http://127.0.0.1:8402/search?q=bitcoin+price" },
        "accepted": {
            "scheme": "exact",
            "network": "eip155:84532",
            "amount": terms.amount.to_string(),
            "asset": format!("{:#x}", terms.asset),
            "payTo": format!("{:#x}", terms.pay_to),
            "maxTimeoutSeconds": 300,
            "extra": {
                "name": terms.eip712_name,
                "version": terms.eip712_version,
                "quoteId": "q_0123456789abcdef0123456789abcdef_0123456789abcdef",
            },
        },
        "payload": {
            "signature": format!("0x{}", hex::encode(&auth.signature)),
            "authorization": {
                "from": format!("{:#x}", m.from),
                "to": format!("{:#x}", m.to),
                "value": m.value.to_string(),
                "validAfter": m.validAfter.to_string(),
                "validBefore": m.validBefore.to_string(),
                "nonce": format!("{:#x}", m.nonce),
            },
        },
    });
    encode_header(&payment)
}

/// Header → checked authorization: what the server does locally per paid retry.
fn decode_and_check(header: &str, terms: &Terms, now: u64) -> SignatureCheck {
    let raw: Value = decode_header(header, MAX_HEADER).unwrap();
    let exact = ExactEvmPayload::from_value(&raw["payload"])
        .and_then(|p| p.validate())
        .unwrap();
    let auth = Authorization::from_validated(&exact);
    eip3009::check(&auth, terms, now).unwrap()
}

/// A signed Permit2 payload (wire JSON) for `terms()`'s token and payee.
fn permit2_payment() -> (Value, Terms) {
    use tariff::payment::scheme::exact_permit2::{
        EXACT_PROXY, Permit2Authorization, PermitWitnessTransferFrom, TokenPermissions, Witness,
    };
    let terms = terms();
    let key = PrivateKeySigner::random();
    let mut auth = Permit2Authorization {
        owner: key.address(),
        message: PermitWitnessTransferFrom {
            permitted: TokenPermissions {
                token: terms.asset,
                amount: terms.amount,
            },
            spender: EXACT_PROXY,
            nonce: U256::from(12_345u64),
            deadline: U256::from(NOW + 300),
            witness: Witness {
                to: terms.pay_to,
                validAfter: U256::ZERO,
            },
        },
        signature: vec![],
    };
    let hash = auth.signing_hash(terms.chain_id);
    auth.signature = key.sign_hash_sync(&hash).unwrap().as_bytes().to_vec();
    (auth.stored().payload.unwrap(), terms)
}

fn bench_payment_verify(c: &mut Criterion) {
    let terms = terms();
    let auth = signed(&terms);
    let header = header(&auth, &terms);
    // Both measured paths must accept the payment, or they would measure an early exit.
    assert_eq!(
        eip3009::check(&auth, &terms, NOW).unwrap(),
        SignatureCheck::Recovered
    );
    assert_eq!(
        decode_and_check(&header, &terms, NOW),
        SignatureCheck::Recovered
    );
    let buf = [0xa5u8; 192];
    let mut g = c.benchmark_group("payment_verify");
    g.bench_function("baseline_keccak256_192_bytes", |b| {
        b.iter(|| keccak256(black_box(&buf[..])))
    });
    g.bench_function("baseline_eip712_signing_hash", |b| {
        b.iter(|| black_box(&auth).signing_hash(black_box(&terms)))
    });
    g.bench_function("local_check", |b| {
        b.iter(|| eip3009::check(black_box(&auth), black_box(&terms), NOW).unwrap())
    });
    // The public-key recovery alone, by alloy's k256 (what `check` used before) and by
    // libsecp256k1 (what it uses now), on the same signature.
    let hash = auth.signing_hash(&terms);
    let sig = alloy::primitives::Signature::try_from(&auth.signature[..]).unwrap();
    let rs: [u8; 64] = auth.signature[..64].try_into().unwrap();
    assert_eq!(
        tariff::payment::scheme::recover_signer(&rs, sig.v(), &hash),
        Some(auth.message.from)
    );
    g.bench_function("recover_k256", |b| {
        b.iter(|| {
            black_box(&sig)
                .recover_address_from_prehash(black_box(&hash))
                .unwrap()
        })
    });
    g.bench_function("recover_libsecp256k1", |b| {
        b.iter(|| {
            tariff::payment::scheme::recover_signer(black_box(&rs), sig.v(), black_box(&hash))
                .unwrap()
        })
    });
    g.bench_function("decode_and_check", |b| {
        b.iter(|| decode_and_check(black_box(&header), black_box(&terms), NOW))
    });
    // The same for a Permit2 payment (nested EIP-712 witness struct): the scheme's parse of the
    // payload and its local checks, as the pipeline runs them.
    let (permit2_payload, permit2_terms) = permit2_payment();
    let scheme = tariff::payment::scheme::exact_permit2::ExactPermit2;
    assert!(
        scheme
            .parse(&permit2_payload)
            .unwrap()
            .check(&permit2_terms, NOW)
            .is_ok()
    );
    g.bench_function("permit2_parse_and_check", |b| {
        b.iter(|| {
            scheme
                .parse(black_box(&permit2_payload))
                .unwrap()
                .check(black_box(&permit2_terms), NOW)
                .unwrap()
        })
    });
    // A wallet sign-in (`SIGN-IN-WITH-X`): base64 + JSON decode, every check of the message
    // and one EIP-191 recovery; no chain (an EOA needs none).
    let (siwx_header, url) = sign_in_header();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let verify_siwx = |header: &str| {
        let s = tariff::x402::siwx::decode_header(header).unwrap();
        let expected = tariff::wallet::Expected {
            host: "api.example.com",
            url: &url,
            chains: &[84532],
            max_age_ms: 300_000,
            now_ms: NOW * 1000,
        };
        rt.block_on(tariff::wallet::verify(&s, &expected, |_| None))
            .unwrap()
    };
    verify_siwx(&siwx_header);
    g.bench_function("siwx_decode_and_verify", |b| {
        b.iter(|| verify_siwx(black_box(&siwx_header)))
    });
    g.finish();
}

/// A signed sign-in header for `https://api.example.com/search?q=x`, as the official client
/// builds it.
fn sign_in_header() -> (String, String) {
    let key = PrivateKeySigner::random();
    let url = "https://api.example.com/search?q=x".to_string();
    let mut s = tariff::x402::siwx::SignIn {
        domain: "api.example.com".into(),
        address: key.address().to_checksum(None),
        statement: Some("Sign in".into()),
        uri: url.clone(),
        version: "1".into(),
        chain_id: "eip155:84532".into(),
        kind: "eip191".into(),
        nonce: "0123456789abcdef0123456789abcdef".into(),
        issued_at: tariff::x402::siwx::format_rfc3339(NOW * 1000 - 1_000),
        expiration_time: Some(tariff::x402::siwx::format_rfc3339(NOW * 1000 + 299_000)),
        not_before: None,
        request_id: None,
        resources: Some(vec![url.clone()]),
        signature_scheme: None,
        signature: String::new(),
    };
    let msg = s.message(&key.address().to_checksum(None), 84532);
    s.signature = format!(
        "0x{}",
        hex::encode(key.sign_message_sync(msg.as_bytes()).unwrap().as_bytes())
    );
    (encode_header(&s), url)
}

criterion_group!(benches, bench_payment_verify);
criterion_main!(benches);
