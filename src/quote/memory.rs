//! In-memory quote store: the embedded default when no Redis is configured. Bounded: at
//! capacity, expired quotes go first, then the ones closest to expiry.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::model::{Offer, Quote, QuoteId, RequestHash, RuleRef, TopupTerms};
use super::store::{QuoteStore, StoreError};
use crate::money::UsdMicros;
use crate::time::{Clock, UnixMillis};

#[derive(Clone)]
pub struct MemoryQuoteStore {
    inner: Arc<Mutex<Inner>>,
    clock: Clock,
    capacity: usize,
}

struct Inner {
    by_hash: HashMap<RequestHash, Compact>,
    /// Expiry order, so purging and eviction never scan the whole map: one queue per
    /// time-to-live (the engine uses one for every quote, top-ups another), in which quotes
    /// expire in the order they were stored, so each queue is sorted by expiry without a tree
    /// (a `BTreeSet` cost ~80 bytes per quote, a queue slot costs 40). A quote removed before
    /// its turn leaves its slot behind, skipped when it reaches the front. (If the wall clock
    /// steps back, a queue is briefly out of order: purging stops early and eviction takes a
    /// quote that is not quite the soonest, both harmless.)
    queues: Vec<ExpiryQueue>,
}

struct ExpiryQueue {
    ttl_ms: u64,
    slots: VecDeque<(UnixMillis, RequestHash)>,
}

/// A quote as this store keeps it: 96 bytes in the map plus one allocation for its text. An
/// `Arc<Quote>` with its five strings cost ~480 bytes per quote, which at the default capacity
/// (100,000) put the process well over issue 11's 64 MiB; the store is full under any flood of
/// distinct requests, so this is its steady state. The request hash is the map's key, the id
/// is kept as its 128 bits, the offers stay shared between quotes of one price. Reads rebuild
/// the `Quote` (a handful of small allocations, next to the 402 they serve).
struct Compact {
    id: u128,
    price: UsdMicros,
    created_at: UnixMillis,
    expires_at: UnixMillis,
    offers: Arc<[Offer]>,
    topup: Option<Box<TopupTerms>>,
    /// Route, rule, method and path, one after the other; `cuts` are where each after the
    /// first starts.
    text: Box<str>,
    cuts: [u32; 3],
}

impl Compact {
    /// `None` only when a cut is past 4 GiB, which no request head can produce; such a quote
    /// is simply not stored (the payer gets a new one).
    fn of(q: &Quote) -> Option<Compact> {
        let parts = [&q.rule.route, &q.rule.rule, &q.method, &q.path];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut cuts = [0u32; 3];
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                cuts[i - 1] = u32::try_from(text.len()).ok()?;
            }
            text.push_str(part);
        }
        Some(Compact {
            id: q.id.to_bits(),
            price: q.price,
            created_at: q.created_at,
            expires_at: q.expires_at,
            offers: q.offers.clone(),
            topup: q.topup.clone(),
            text: text.into_boxed_str(),
            cuts,
        })
    }

    fn quote(&self, request_hash: RequestHash) -> Arc<Quote> {
        let [a, b, c] = self.cuts.map(|c| c as usize);
        let t = &self.text;
        Arc::new(Quote {
            id: QuoteId::from_bits(self.id),
            request_hash,
            price: self.price,
            rule: RuleRef {
                route: t[..a].to_string(),
                rule: t[a..b].to_string(),
            },
            method: t[b..c].to_string(),
            path: t[c..].to_string(),
            offers: self.offers.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            topup: self.topup.clone(),
        })
    }

    fn is_open_at(&self, now: UnixMillis) -> bool {
        // The same rule as `Quote::is_open_at`, which
        // `a_quote_closes_at_its_expiry_exactly_as_a_quote_does` pins down.
        now < self.expires_at
    }
}

impl MemoryQuoteStore {
    pub fn new(capacity: usize, clock: Clock) -> Self {
        assert!(
            capacity > 0,
            "a quote store needs room for at least one quote"
        );
        MemoryQuoteStore {
            inner: Arc::new(Mutex::new(Inner {
                by_hash: HashMap::new(),
                queues: Vec::new(),
            })),
            clock,
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // breaks the contract (each step is a single insert/remove), so poison is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn push(&mut self, quote: &Quote) {
        let ttl_ms = quote.expires_at.0.saturating_sub(quote.created_at.0);
        let slot = (quote.expires_at, quote.request_hash);
        match self.queues.iter_mut().find(|q| q.ttl_ms == ttl_ms) {
            Some(q) => q.slots.push_back(slot),
            None => self.queues.push(ExpiryQueue {
                ttl_ms,
                slots: VecDeque::from([slot]),
            }),
        }
    }

    /// The queue whose front expires first.
    fn soonest(&self) -> Option<(usize, UnixMillis)> {
        self.queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| q.slots.front().map(|&(exp, _)| (i, exp)))
            .min_by_key(|&(_, exp)| exp)
    }

    /// Takes the soonest slot; removes its quote unless the slot is stale. `false` when every
    /// queue is empty.
    fn drop_soonest(&mut self) -> bool {
        let Some((i, _)) = self.soonest() else {
            return false;
        };
        let (exp, hash) = self.queues[i]
            .slots
            .pop_front()
            .expect("soonest is a front");
        if self.queues[i].slots.is_empty() {
            // Queues exist only for time-to-lives in use.
            self.queues.swap_remove(i);
        }
        // Stale when the quote was removed early, or replaced by one of a later expiry.
        if self.by_hash.get(&hash).is_some_and(|q| q.expires_at == exp) {
            self.by_hash.remove(&hash);
        }
        true
    }

    fn purge_expired(&mut self, now: UnixMillis) {
        while self.soonest().is_some_and(|(_, exp)| exp <= now) {
            self.drop_soonest();
        }
    }
}

impl QuoteStore for MemoryQuoteStore {
    async fn get_or_insert(&self, quote: Arc<Quote>) -> Result<Arc<Quote>, StoreError> {
        let now = self.clock.now();
        let hash = quote.request_hash;
        let mut inner = self.lock();
        if let Some(existing) = inner.by_hash.get(&hash) {
            if existing.is_open_at(now) {
                return Ok(existing.quote(hash));
            }
            // Its slot is left behind, and expired: the purge below takes it.
            inner.by_hash.remove(&hash);
        }
        let Some(compact) = Compact::of(&quote) else {
            return Ok(quote);
        };
        inner.purge_expired(now);
        while inner.by_hash.len() >= self.capacity && inner.drop_soonest() {}
        inner.push(&quote);
        inner.by_hash.insert(hash, compact);
        Ok(quote)
    }

    async fn get(&self, hash: &RequestHash) -> Result<Option<Arc<Quote>>, StoreError> {
        let now = self.clock.now();
        let inner = self.lock();
        Ok(inner
            .by_hash
            .get(hash)
            .filter(|q| q.is_open_at(now))
            .map(|q| q.quote(*hash)))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The figure the store's memory bound was sized with (see `Compact`).
    #[test]
    fn a_stored_quote_is_96_bytes_plus_its_text() {
        assert!(
            std::mem::size_of::<Compact>() <= 96,
            "{}",
            std::mem::size_of::<Compact>()
        );
    }

    fn quote(hash: RequestHash, now: UnixMillis, ttl_ms: u64) -> Arc<Quote> {
        Arc::new(Quote {
            id: QuoteId::for_request(&hash),
            request_hash: hash,
            price: UsdMicros(5),
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

    /// Churn with three time-to-lives, a small capacity and a clock that moves: the store
    /// stays bounded, never answers an expired or replaced quote, keeps one slot per stored
    /// quote (no slot leaks), and keeps the quotes expiring last.
    #[tokio::test]
    async fn churn_with_several_ttls_stays_bounded_and_keeps_the_latest_expiries() {
        let clock = Clock::manual(UnixMillis(1_000_000));
        let store = MemoryQuoteStore::new(50, clock.clone());
        let mut latest: HashMap<RequestHash, Arc<Quote>> = HashMap::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5_000 {
            let r = next();
            clock.advance_ms(r % 7);
            let now = clock.now();
            let hash = RequestHash([(r >> 8) as u8 % 120; 32]);
            let ttl = [300, 1_000, 5_000][(r >> 16) as usize % 3];
            let mut before = Vec::new();
            for (h, q) in &latest {
                if store.get(h).await.unwrap().is_some() {
                    before.push((*h, q.expires_at));
                }
            }
            let got = store.get_or_insert(quote(hash, now, ttl)).await.unwrap();
            latest.insert(hash, got);
            {
                let inner = store.lock();
                let slots: usize = inner.queues.iter().map(|q| q.slots.len()).sum();
                assert_eq!(slots, inner.by_hash.len(), "one slot per stored quote");
                assert!(inner.by_hash.len() <= 50);
            }
            for (h, q) in &latest {
                if let Some(stored) = store.get(h).await.unwrap() {
                    assert_eq!(&stored, q, "the latest quote for its request");
                    assert!(q.is_open_at(now));
                }
            }
            // An open quote evicted by this insert expired no later than any quote kept.
            let mut kept = UnixMillis(u64::MAX);
            let mut evicted = UnixMillis(0);
            for (h, exp) in before {
                if h == hash {
                    continue;
                }
                if store.get(&h).await.unwrap().is_some() {
                    kept = kept.min(exp);
                } else if now < exp {
                    evicted = evicted.max(exp);
                }
            }
            assert!(
                evicted <= kept,
                "evicted {evicted:?} while keeping {kept:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_quote_closes_at_its_expiry_exactly_as_a_quote_does() {
        let clock = Clock::manual(UnixMillis(1_000));
        let store = MemoryQuoteStore::new(10, clock.clone());
        let hash = RequestHash([3; 32]);
        let q = quote(hash, clock.now(), 10);
        store.get_or_insert(q.clone()).await.unwrap();
        for _ in 0..12 {
            let now = clock.now();
            let stored = store.get(&hash).await.unwrap();
            assert_eq!(stored.is_some(), q.is_open_at(now), "at {now:?}");
            clock.advance_ms(1);
        }
    }
}
