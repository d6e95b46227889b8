//! The quote store contract, run against every backend: in-memory and real Redis.

use std::sync::Arc;
use std::time::Duration;

use tariff::money::UsdMicros;
use tariff::quote::{
    AnyQuoteStore, MemoryQuoteStore, Offer, OfferScheme, Quote, QuoteId, QuoteStore,
    RedisQuoteStore, RequestHash, RuleRef, TopupTerms, TopupValuation, TransferMethod,
};
use tariff::time::{Clock, UnixMillis};
use tariff::x402::Network;

fn quote(hash: u8, now: UnixMillis, ttl_ms: u64, price: u64) -> Arc<Quote> {
    Arc::new(Quote {
        id: QuoteId::for_request(&RequestHash([hash; 32])),
        request_hash: RequestHash([hash; 32]),
        price: UsdMicros(price),
        rule: RuleRef {
            route: "r".into(),
            rule: "x".into(),
        },
        method: "GET".into(),
        path: "/p".into(),
        offers: vec![].into(),
        created_at: now,
        expires_at: UnixMillis(now.0 + ttl_ms),
        topup: None,
    })
}

async fn redis_store() -> AnyQuoteStore {
    // A per-test prefix isolates tests that share one Redis.
    let prefix = format!("test:{:016x}:", rand::random::<u64>());
    AnyQuoteStore::Redis(
        RedisQuoteStore::connect(&crate::support::redis_url(), &prefix)
            .await
            .unwrap(),
    )
}

fn memory_store(capacity: usize) -> AnyQuoteStore {
    AnyQuoteStore::Memory(MemoryQuoteStore::new(capacity, Clock::System))
}

async fn backends() -> Vec<AnyQuoteStore> {
    vec![memory_store(1000), redis_store().await]
}

/// Every field set, text that is not ASCII, a top-up's terms: what the store gives back is
/// the quote it was given (the memory store keeps quotes in a compact form and rebuilds them).
#[tokio::test]
async fn a_quote_with_every_field_set_survives_the_store_unchanged() {
    for store in backends().await {
        let now = Clock::System.now();
        let hash = RequestHash([0xa7; 32]);
        let offer = Offer {
            network: Network::parse("eip155:84532").unwrap(),
            asset: "0x036cbd53842c5426634e7929541ec2318f3dcf7e".into(),
            amount: "12345".into(),
            pay_to: "0x209693bc6afc0c5328ba36faf03c514ef312287c".into(),
            max_timeout_seconds: 60,
            eip712_name: "USDC".into(),
            eip712_version: "2".into(),
            transfer_method: TransferMethod::default(),
            scheme: OfferScheme::default(),
            facilitator: None,
        };
        let q = Arc::new(Quote {
            id: QuoteId::for_request(&hash),
            request_hash: hash,
            price: UsdMicros(12_345),
            rule: RuleRef {
                route: "recherche-été".into(),
                rule: "".into(),
            },
            method: "POST".into(),
            path: format!("/search/{}/ü", "x".repeat(3000)),
            offers: vec![offer.clone(), offer].into(),
            created_at: now,
            expires_at: UnixMillis(now.0 + 60_000),
            topup: Some(Box::new(TopupTerms {
                account: "acct_1".into(),
                valuations: vec![TopupValuation {
                    asset: "0xabc".into(),
                    valuation: "{\"pool\":1}".into(),
                }],
            })),
        });
        let name = store.backend_name();
        assert_eq!(store.get_or_insert(q.clone()).await.unwrap(), q, "{name}");
        assert_eq!(store.get(&hash).await.unwrap(), Some(q.clone()), "{name}");
        let later = Arc::new(Quote {
            price: UsdMicros(1),
            ..(*q).clone()
        });
        assert_eq!(store.get_or_insert(later).await.unwrap(), q, "{name}");
    }
}

#[tokio::test]
async fn first_insert_wins_and_is_returned_to_later_callers() {
    for store in backends().await {
        let now = Clock::System.now();
        let first = quote(1, now, 60_000, 20_000);
        let got = store.get_or_insert(first.clone()).await.unwrap();
        assert_eq!(got, first, "{}", store.backend_name());
        let second = quote(1, now, 60_000, 99_999);
        let got = store.get_or_insert(second).await.unwrap();
        assert_eq!(
            got,
            first,
            "{}: the open quote is kept",
            store.backend_name()
        );
        assert_eq!(
            store.get(&first.request_hash).await.unwrap(),
            Some(first.clone())
        );
        assert_eq!(store.get(&RequestHash([2; 32])).await.unwrap(), None);
    }
}

#[tokio::test]
async fn concurrent_inserts_for_one_hash_agree_on_one_quote() {
    for store in backends().await {
        let now = Clock::System.now();
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.get_or_insert(quote(3, now, 60_000, i + 1)).await.unwrap()
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap().id.clone());
        }
        let first = ids[0].clone();
        assert!(
            ids.iter().all(|i| *i == first),
            "{}: one winner",
            store.backend_name()
        );
    }
}

#[tokio::test]
async fn quotes_expire() {
    for store in backends().await {
        let now = Clock::System.now();
        let q = quote(4, now, 300, 20_000);
        store.get_or_insert(q.clone()).await.unwrap();
        assert_eq!(store.get(&q.request_hash).await.unwrap(), Some(q.clone()));
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(
            store.get(&q.request_hash).await.unwrap(),
            None,
            "{}",
            store.backend_name()
        );
        let fresh = quote(4, Clock::System.now(), 60_000, 30_000);
        assert_eq!(
            store.get_or_insert(fresh.clone()).await.unwrap(),
            fresh,
            "{}",
            store.backend_name()
        );
    }
}

#[tokio::test]
async fn stores_answer_ping() {
    for store in backends().await {
        store.ping().await.unwrap();
    }
}

#[tokio::test]
async fn memory_store_is_bounded_and_evicts_soonest_expiry_first() {
    let clock = Clock::manual(UnixMillis(1_000_000));
    let store = MemoryQuoteStore::new(3, clock.clone());
    let now = clock.now();
    let long = quote(10, now, 100_000, 1);
    store.get_or_insert(long.clone()).await.unwrap();
    store.get_or_insert(quote(11, now, 1_000, 1)).await.unwrap();
    store
        .get_or_insert(quote(12, now, 50_000, 1))
        .await
        .unwrap();
    assert_eq!(store.len(), 3);
    store
        .get_or_insert(quote(13, now, 70_000, 1))
        .await
        .unwrap();
    assert_eq!(store.len(), 3, "bounded");
    assert!(
        store.get(&RequestHash([11; 32])).await.unwrap().is_none(),
        "soonest expiry evicted"
    );
    assert!(store.get(&long.request_hash).await.unwrap().is_some());
    // Expired entries are purged before anything live is evicted.
    clock.advance_ms(60_000);
    store
        .get_or_insert(quote(14, clock.now(), 10_000, 1))
        .await
        .unwrap();
    assert!(
        store.get(&RequestHash([13; 32])).await.unwrap().is_some(),
        "live quote kept"
    );
    assert!(
        store.get(&long.request_hash).await.unwrap().is_some(),
        "live quote kept"
    );
}

#[tokio::test]
async fn redis_store_down_is_an_error_not_a_hang() {
    let store = RedisQuoteStore::connect(&crate::support::redis_url(), "down:")
        .await
        .unwrap();
    // A store pointed at a closed port fails to connect with a clear error.
    let port = crate::support::free_port();
    let err = match RedisQuoteStore::connect(&format!("redis://127.0.0.1:{port}"), "x:").await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("unavailable"), "{err}");
    store.ping().await.unwrap();
}

#[tokio::test]
async fn redis_keys_carry_a_ttl() {
    let prefix = format!("ttl:{:016x}:", rand::random::<u64>());
    let store = RedisQuoteStore::connect(&crate::support::redis_url(), &prefix)
        .await
        .unwrap();
    let q = quote(5, Clock::System.now(), 60_000, 1);
    store.get_or_insert(q.clone()).await.unwrap();
    let client = redis::Client::open(crate::support::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}quote:{}", q.request_hash.to_hex()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (50_000..=60_000).contains(&pttl),
        "key expires with the quote: {pttl} ms"
    );
}

#[tokio::test]
async fn concurrent_inserts_of_distinct_quotes_each_get_their_own_answer() {
    // Redis writes are pipelined in batches: replies must go back to the right callers.
    for store in backends().await {
        let now = Clock::System.now();
        let mut tasks = Vec::new();
        for i in 0..=255u8 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let q = quote(i, now, 60_000, u64::from(i) + 1);
                let got = s.get_or_insert(q.clone()).await.unwrap();
                (q, got)
            }));
        }
        for t in tasks {
            let (sent, got) = t.await.unwrap();
            assert_eq!(
                got,
                sent,
                "{}: each caller gets its own new quote",
                store.backend_name()
            );
            assert_eq!(store.get(&sent.request_hash).await.unwrap(), Some(sent));
        }
    }
}
