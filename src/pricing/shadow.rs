//! Price experiments on live traffic: a candidate rule set loaded as a *shadow*. Every priced
//! request is also priced by the candidate (never charged, never quoted), and the two prices
//! are added up per current route and rule, so the console can compare what the candidate
//! would have earned at the conversion actually observed.
//!
//! The shadow lives in this instance's memory: each instance compares its own traffic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::edit::EditError;
use super::expr::{EvalInput, ExprEnv, RequestView};
use super::reload::RulesHandle;
use super::rules::RuleSet;
use super::{Decision, PricingError};
use crate::money::UsdMicros;
use crate::time::UnixMillis;

/// What the two rule sets said about the requests of one current route and rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Compared {
    pub requests: u64,
    pub current_usd_micros: u64,
    pub candidate_usd_micros: u64,
    /// The candidate's rule for these requests, and how often.
    pub candidate_rules: BTreeMap<String, u64>,
    /// Requests the candidate prices by an external pricer (not called in a shadow), or does
    /// not price at all, or fails to price.
    pub candidate_external: u64,
    pub candidate_unpriced: u64,
    pub candidate_errors: u64,
}

/// A request as the live rules priced it.
pub struct Observed<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub input: &'a EvalInput<'a>,
    pub route: &'a str,
    pub rule: &'a str,
    pub price: UsdMicros,
}

pub struct Shadow {
    set: RuleSet,
    /// The candidate's changed file, as it would be written if applied.
    pub file: String,
    pub text: String,
    pub started_at: UnixMillis,
    compared: Mutex<BTreeMap<(String, String), Compared>>,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow").field("file", &self.file).finish()
    }
}

impl Compared {
    /// Adds one request: what the live rules charge for it, and what `candidate` says.
    pub fn add(&mut self, current: UsdMicros, candidate: Option<&Result<Decision, PricingError>>) {
        self.requests += 1;
        self.current_usd_micros = self.current_usd_micros.saturating_add(current.get());
        match candidate {
            None => self.candidate_unpriced += 1,
            Some(Err(_)) => self.candidate_errors += 1,
            Some(Ok(Decision::External { rule, .. })) => {
                self.candidate_external += 1;
                *self.candidate_rules.entry(rule.clone()).or_default() += 1;
            }
            Some(Ok(Decision::Free { rule })) => {
                *self.candidate_rules.entry(rule.clone()).or_default() += 1;
            }
            Some(Ok(Decision::Priced { rule, price })) => {
                self.candidate_usd_micros = self.candidate_usd_micros.saturating_add(price.get());
                *self.candidate_rules.entry(rule.clone()).or_default() += 1;
            }
        }
    }
}

/// How `set` prices a request: `None` when no route of it matches. The route's own path
/// parameters replace the ones in `input`, since a candidate may name them differently.
pub fn decide_in(
    set: &RuleSet,
    env: &ExprEnv,
    method: &str,
    path: &str,
    input: &EvalInput<'_>,
) -> Option<Result<Decision, PricingError>> {
    let (route, params) = set.match_route(method, path)?;
    if params == input.request.params {
        return Some(route.decide(env, input));
    }
    let view = RequestView {
        params,
        ..input.request.clone()
    };
    Some(route.decide(
        env,
        &EvalInput {
            request: &view,
            ..*input
        },
    ))
}

impl Shadow {
    /// Prices the request with the candidate and adds it next to the current decision.
    pub fn observe(&self, env: &ExprEnv, o: Observed<'_>) {
        let candidate = decide_in(&self.set, env, o.method, o.path, o.input);
        let mut all = self.compared.lock().unwrap_or_else(|p| p.into_inner());
        all.entry((o.route.to_string(), o.rule.to_string()))
            .or_default()
            .add(o.price, candidate.as_ref());
    }

    /// What was compared so far, per current route and rule.
    pub fn compared(&self) -> Vec<((String, String), Compared)> {
        self.compared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Revenue at the observed conversion: `observed` scaled by the candidate's prices over the
/// current ones for the same requests, rounded down (integers only).
pub fn projected(observed: u64, c: &Compared) -> u64 {
    if c.current_usd_micros == 0 {
        return 0;
    }
    let v = u128::from(observed) * u128::from(c.candidate_usd_micros)
        / u128::from(c.current_usd_micros);
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl RulesHandle {
    /// Loads the directory with `file` replaced by `text` as the shadow (checked like a save).
    pub fn start_shadow(&self, file: &str, text: &str, now: UnixMillis) -> Result<(), EditError> {
        let set = self.candidate(file, text)?;
        self.set_shadow(Some(Arc::new(Shadow {
            set,
            file: file.to_string(),
            text: text.to_string(),
            started_at: now,
            compared: Mutex::default(),
        })));
        Ok(())
    }

    pub fn stop_shadow(&self) {
        self.set_shadow(None);
    }

    /// Writes the shadow's file (it becomes the live rules) and stops the shadow.
    pub fn apply_shadow(&self) -> Result<(), EditError> {
        let Some(s) = self.shadow() else {
            return Err(EditError::Io("no experiment is running".into()));
        };
        self.save_file(&s.file, &s.text)?;
        self.stop_shadow();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_scales_the_observed_revenue_by_the_price_ratio() {
        let c = Compared {
            requests: 10,
            current_usd_micros: 200_000,
            candidate_usd_micros: 300_000,
            ..Compared::default()
        };
        assert_eq!(projected(40_000, &c), 60_000);
        assert_eq!(projected(0, &c), 0);
        assert_eq!(projected(40_000, &Compared::default()), 0);
        let huge = Compared {
            current_usd_micros: 1,
            candidate_usd_micros: u64::MAX,
            ..Compared::default()
        };
        assert_eq!(
            projected(u64::MAX, &huge),
            u64::MAX,
            "saturates, never wraps"
        );
    }
}
