//! Quotes: the canonical fingerprint of a request, the quote it gets, and where quotes live.

pub mod engine;
pub mod fingerprint;
pub mod json;
pub mod memory;
pub mod model;
pub mod redis_store;
pub mod store;
pub mod terms;

pub use engine::{IssueError, Issued, QuoteEngine, QuoteRequest};
pub use fingerprint::{CanonicalBody, CanonicalRequest, FingerprintKey, fingerprint};
pub use memory::MemoryQuoteStore;
pub use model::{Offer, Quote, QuoteId, RequestHash, RuleRef, TopupTerms, TopupValuation};
pub use redis_store::RedisQuoteStore;
pub use store::{AnyQuoteStore, QuoteStore, StoreError};
pub use terms::{OfferScheme, PaymentTerms, TransferMethod};
