//! In-memory quote store: the embedded default when no Redis is configured. Bounded: at
//! capacity, expired quotes go first, then the ones closest to expiry.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::model::{Quote, RequestHash};
use super::store::{QuoteStore, StoreError};
use crate::time::{Clock, UnixMillis};

#[derive(Clone)]
pub struct MemoryQuoteStore {
    inner: Arc<Mutex<Inner>>,
    clock: Clock,
    capacity: usize,
}

struct Inner {
    by_hash: HashMap<RequestHash, Arc<Quote>>,
    /// Expiry order, so purging and eviction never scan the whole map.
    by_expiry: BTreeSet<(UnixMillis, RequestHash)>,
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
                by_expiry: BTreeSet::new(),
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
    fn remove(&mut self, hash: &RequestHash) {
        if let Some(q) = self.by_hash.remove(hash) {
            self.by_expiry.remove(&(q.expires_at, *hash));
        }
    }

    fn purge_expired(&mut self, now: UnixMillis) {
        while let Some(&(exp, hash)) = self.by_expiry.first() {
            if exp > now {
                break;
            }
            self.remove(&hash);
        }
    }
}

impl QuoteStore for MemoryQuoteStore {
    async fn get_or_insert(&self, quote: Arc<Quote>) -> Result<Arc<Quote>, StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        if let Some(existing) = inner.by_hash.get(&quote.request_hash) {
            if existing.is_open_at(now) {
                return Ok(existing.clone());
            }
            let hash = quote.request_hash;
            inner.remove(&hash);
        }
        inner.purge_expired(now);
        while inner.by_hash.len() >= self.capacity {
            let (_, victim) = *inner.by_expiry.first().expect("non-empty at capacity");
            inner.remove(&victim);
        }
        inner
            .by_expiry
            .insert((quote.expires_at, quote.request_hash));
        inner.by_hash.insert(quote.request_hash, quote.clone());
        Ok(quote)
    }

    async fn get(&self, hash: &RequestHash) -> Result<Option<Arc<Quote>>, StoreError> {
        let now = self.clock.now();
        let inner = self.lock();
        Ok(inner
            .by_hash
            .get(hash)
            .filter(|q| q.is_open_at(now))
            .cloned())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
