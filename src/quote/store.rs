//! The quote store contract. Two implementations (Redis and in-memory) satisfy it and run the
//! same contract tests (`tests/it/quote_store.rs`).

use std::future::Future;
use std::sync::Arc;

use super::memory::MemoryQuoteStore;
use super::model::{Quote, RequestHash};
use super::redis_store::RedisQuoteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("quote store unavailable: {0}")]
    Unavailable(String),
    #[error("stored quote is unreadable: {0}")]
    Corrupt(String),
}

/// Contract:
/// - `get_or_insert(q)`: if an open quote exists for `q.request_hash`, return it unchanged;
///   otherwise store `q` until `q.expires_at` and return it. Atomic: of any number of
///   concurrent calls for one hash, exactly one quote wins and all callers get that one.
/// - `get(hash)`: the open quote for the hash, if any. An expired quote is never returned.
///
/// Quotes are immutable once issued, so they travel as `Arc<Quote>`: a cache hit or a repeated
/// 402 shares the quote instead of copying its dozen strings.
pub trait QuoteStore: Send + Sync {
    fn get_or_insert(
        &self,
        quote: Arc<Quote>,
    ) -> impl Future<Output = Result<Arc<Quote>, StoreError>> + Send;
    fn get(
        &self,
        hash: &RequestHash,
    ) -> impl Future<Output = Result<Option<Arc<Quote>>, StoreError>> + Send;
    /// Whether the backend answers (for health checks).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The configured store. An enum rather than `dyn` because the trait's futures are `impl`
/// types; dispatch is one match.
#[derive(Clone)]
pub enum AnyQuoteStore {
    Memory(MemoryQuoteStore),
    Redis(RedisQuoteStore),
}

impl AnyQuoteStore {
    pub fn backend_name(&self) -> &'static str {
        match self {
            AnyQuoteStore::Memory(_) => "memory",
            AnyQuoteStore::Redis(_) => "redis",
        }
    }
}

impl QuoteStore for AnyQuoteStore {
    async fn get_or_insert(&self, quote: Arc<Quote>) -> Result<Arc<Quote>, StoreError> {
        match self {
            AnyQuoteStore::Memory(s) => s.get_or_insert(quote).await,
            AnyQuoteStore::Redis(s) => s.get_or_insert(quote).await,
        }
    }
    async fn get(&self, hash: &RequestHash) -> Result<Option<Arc<Quote>>, StoreError> {
        match self {
            AnyQuoteStore::Memory(s) => s.get(hash).await,
            AnyQuoteStore::Redis(s) => s.get(hash).await,
        }
    }
    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            AnyQuoteStore::Memory(s) => s.ping().await,
            AnyQuoteStore::Redis(s) => s.ping().await,
        }
    }
}
