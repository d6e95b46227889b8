//! The pricing decisions of repeated requests, remembered per rules generation.
//!
//! Pricing rules are a pure function of what the request fingerprint covers (method, canonical
//! path, query, the route's declared headers, canonical body): CEL here has no clock and no
//! randomness (`pricing::expr::lint` refuses them at load). So the same request hash under the
//! same loaded rules always gets the same decision, and a client polling an unpaid resource, or
//! many agents asking the same question, need not run the rules again: ~2 µs of a ~17 µs
//! repeated 402.
//!
//! What keeps it exact:
//! - an entry belongs to the [`RuleSet`] that decided it (a rules reload makes every entry
//!   stale, checked on each use), and to the body's size as well as its hash (a JSON body's
//!   fingerprint ignores its whitespace, `request.body_size` does not);
//! - only fixed-rule prices are kept (`Decision::Priced`): a free decision serves the request and
//!   is never asked again, and an external pricer's answer is per quote (the open quote keeps
//!   it);
//! - only repeats enter (the gateway keeps a decision when its quote was reused), so a flood of
//!   distinct requests never does, and at most [`CAPACITY`] are kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::money::UsdMicros;
use crate::pricing::{Decision, Generation, RuleSet};
use crate::quote::RequestHash;

/// How many decisions are kept (each ~100 bytes).
pub const CAPACITY: usize = 4096;

struct Entry {
    rules: Generation,
    rule: String,
    price: UsdMicros,
}

#[derive(Default)]
pub struct Decisions {
    map: Mutex<HashMap<(RequestHash, u64), Entry>>,
}

impl Decisions {
    /// The decision `rules` made for this request before, if it was kept.
    pub fn get(
        &self,
        rules: &Arc<RuleSet>,
        hash: &RequestHash,
        body_size: u64,
    ) -> Option<Decision> {
        let map = self.lock();
        let e = map.get(&(*hash, body_size))?;
        e.rules.is(rules).then(|| Decision::Priced {
            rule: e.rule.clone(),
            price: e.price,
        })
    }

    /// Remembers that `rules` priced this request at `price` by `rule`.
    pub fn keep(
        &self,
        rules: &Arc<RuleSet>,
        hash: RequestHash,
        body_size: u64,
        rule: &str,
        price: UsdMicros,
    ) {
        let mut map = self.lock();
        if map.len() >= CAPACITY
            && let Some(evicted) = map.keys().next().copied()
        {
            map.remove(&evicted);
        }
        map.insert(
            (hash, body_size),
            Entry {
                rules: Generation::of(rules),
                rule: rule.to_string(),
                price,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(RequestHash, u64), Entry>> {
        // Plain data: a poisoned lock still holds whole entries.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many are kept (for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
