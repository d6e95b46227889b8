//! Issuing quotes: turn a price into offers on every configured network and store the quote
//! under the request's hash, or find the one already open for it.

use std::collections::HashMap;
use std::sync::Arc;

use super::memory::MemoryQuoteStore;
use super::model::{Offer, Quote, QuoteId, RequestHash, RuleRef};
use super::store::{AnyQuoteStore, QuoteStore, StoreError};
use super::terms::{OfferScheme, PaymentTerms, TransferMethod};
use crate::money::UsdMicros;
use crate::time::Clock;

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("price {price} cannot be expressed in the base units of {network}")]
    Overflow { price: UsdMicros, network: String },
}

#[derive(Clone)]
pub struct QuoteEngine {
    pub store: AnyQuoteStore,
    /// An in-process cache in front of a shared store. Safe because quotes are immutable and
    /// `get_or_insert` never replaces an open one: every instance that has seen the quote for a
    /// hash has seen the same quote, until the expiry it carries (which the cache honours). A
    /// repeated request then costs no round trip.
    pub local: Option<MemoryQuoteStore>,
    pub terms: Vec<PaymentTerms>,
    pub ttl_seconds: u64,
    pub clock: Clock,
    /// The offers of each recent (price, metered): every quote of that price shares them.
    shared: Arc<std::sync::Mutex<SharedOffers>>,
}

/// Offers by (price, metered).
type SharedOffers = HashMap<(UsdMicros, bool), Arc<[Offer]>>;

/// Distinct (price, metered) pairs whose offers are kept; beyond it the map starts over (a
/// rule pricing by a continuous input gives many prices, each cheap to rebuild).
const SHARED_OFFERS: usize = 4096;

/// What to quote: the request and the price the rules gave it.
pub struct QuoteRequest<'a> {
    pub hash: RequestHash,
    pub price: UsdMicros,
    pub rule: RuleRef,
    pub method: &'a str,
    pub path: &'a str,
    /// The price is a ceiling: the rule computes the actual one from the upstream's answer, so
    /// `upto` is offered next to `exact` where a network can settle it.
    pub metered: bool,
}

/// A quote, and whether this call created it (false: an open quote was already there).
pub struct Issued {
    pub quote: Arc<Quote>,
    pub created: bool,
}

impl QuoteEngine {
    /// The engine for a store; a shared (Redis) store gets a local cache of `cache_capacity`.
    pub fn new(
        store: AnyQuoteStore,
        terms: Vec<PaymentTerms>,
        ttl_seconds: u64,
        clock: Clock,
        cache_capacity: usize,
    ) -> Self {
        let local = match store {
            AnyQuoteStore::Redis(_) => Some(MemoryQuoteStore::new(cache_capacity, clock.clone())),
            AnyQuoteStore::Memory(_) => None,
        };
        QuoteEngine {
            store,
            local,
            terms,
            ttl_seconds,
            clock,
            shared: Arc::default(),
        }
    }

    /// [`Self::offers`], shared with the other quotes of the same price.
    pub fn shared_offers(
        &self,
        price: UsdMicros,
        metered: bool,
    ) -> Result<Arc<[Offer]>, IssueError> {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = shared.get(&(price, metered)) {
            return Ok(o.clone());
        }
        let offers: Arc<[Offer]> = self.offers(price, metered)?.into();
        if shared.len() >= SHARED_OFFERS {
            shared.clear();
        }
        shared.insert((price, metered), offers.clone());
        Ok(offers)
    }

    /// The open quote for a request, if there is one (local cache first).
    pub async fn open_quote(&self, hash: &RequestHash) -> Result<Option<Arc<Quote>>, StoreError> {
        if let Some(local) = &self.local
            && let Some(q) = local.get(hash).await?
        {
            return Ok(Some(q));
        }
        let found = self.store.get(hash).await?;
        if let (Some(local), Some(q)) = (&self.local, &found) {
            local.get_or_insert(q.clone()).await?;
        }
        Ok(found)
    }

    /// One `exact` offer per listing, then (`metered`) one `upto` offer per listing of a network
    /// that can settle `upto`. Exact offers come first: a client that takes the first offer it
    /// can pay keeps paying as before, and one that wants `upto` picks it by its policy.
    pub fn offers(&self, price: UsdMicros, metered: bool) -> Result<Vec<Offer>, IssueError> {
        let offer = |t: &PaymentTerms, scheme: OfferScheme| -> Result<Offer, IssueError> {
            let amount = price
                .to_asset_units(t.decimals)
                .ok_or_else(|| IssueError::Overflow {
                    price,
                    network: t.network.to_string(),
                })?;
            let upto = scheme == OfferScheme::Upto;
            Ok(Offer {
                network: t.network.clone(),
                asset: t.asset.clone(),
                amount: amount.to_string(),
                pay_to: t.pay_to.clone(),
                max_timeout_seconds: t.max_timeout_seconds,
                eip712_name: t.eip712_name.clone(),
                eip712_version: t.eip712_version.clone(),
                // EVM `upto` is Permit2 only, for every token.
                transfer_method: if upto {
                    TransferMethod::Permit2
                } else {
                    t.transfer_method
                },
                scheme,
                facilitator: if upto {
                    t.upto_facilitator.clone()
                } else {
                    None
                },
            })
        };
        let exact = self.terms.iter().map(|t| offer(t, OfferScheme::Exact));
        let upto = self
            .terms
            .iter()
            .filter(|t| metered && t.upto_facilitator.is_some())
            .map(|t| offer(t, OfferScheme::Upto));
        exact.chain(upto).collect()
    }

    /// Returns the open quote for `req.hash`, creating it (atomically, across instances) if
    /// there is none. A quote already open keeps its price even if the rules changed since:
    /// the buyer may be signing for it right now.
    pub async fn issue(&self, req: QuoteRequest<'_>) -> Result<Issued, IssueError> {
        if let Some(local) = &self.local
            && let Some(quote) = local.get(&req.hash).await?
        {
            return Ok(Issued {
                quote,
                created: false,
            });
        }
        let now = self.clock.now();
        let candidate = Arc::new(Quote {
            id: QuoteId::for_request(&req.hash),
            request_hash: req.hash,
            price: req.price,
            rule: req.rule,
            method: req.method.to_string(),
            path: req.path.to_string(),
            offers: self.shared_offers(req.price, req.metered)?,
            created_at: now,
            expires_at: now.plus_secs(self.ttl_seconds),
            topup: None,
        });
        let id = candidate.id.clone();
        let quote = self.store.get_or_insert(candidate).await?;
        if let Some(local) = &self.local {
            local.get_or_insert(quote.clone()).await?;
        }
        let created = quote.id == id;
        Ok(Issued { quote, created })
    }
}
