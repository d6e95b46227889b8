//! Backtests: a candidate rule set re-prices the pricing inputs recorded from past traffic, and
//! the result is compared per live route and rule, like a shadow (see `shadow.rs`) but over days
//! instead of from now on.
//!
//! What is recorded is only what a rule may read: method, path, query, the route's declared
//! headers, the body's size and its JSON value. Recording is off by default, each input is
//! size-capped and the table is bounded by a retention window and a row count (see
//! `db::pricing_inputs`).
//!
//! Both sides are priced *now*: the live rules of today and the candidate, over the same inputs,
//! so a rule changed since the traffic was recorded does not skew the comparison.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Decision;
use super::expr::{EvalInput, ExprEnv, RequestView};
use super::rules::RuleSet;
use super::shadow::{Compared, decide_in};
use crate::money::UsdMicros;

/// One request's pricing inputs, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredInput {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    pub body_size: u64,
    /// The JSON body, or `{}` (what the rules see for a request without one).
    #[serde(default = "empty_object")]
    pub body: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl StoredInput {
    /// What a rule could read of a request (path parameters are matched again when re-priced).
    pub fn of(view: &RequestView, body: &Value) -> StoredInput {
        StoredInput {
            method: view.method.clone(),
            path: view.path.clone(),
            query: view.query.clone(),
            headers: view.headers.clone(),
            body_size: view.body_size,
            body: body.clone(),
        }
    }

    fn view(&self) -> RequestView {
        RequestView {
            method: self.method.clone(),
            path: self.path.clone(),
            params: BTreeMap::new(),
            query: self.query.clone(),
            headers: self.headers.clone(),
            body_size: self.body_size,
        }
    }
}

/// A backtest's running totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Backtest {
    /// Inputs read.
    pub inputs: u64,
    /// Inputs the live rules do not price today (no route, an external pricer, or an error):
    /// they have no current price to compare with.
    pub not_priced_now: u64,
    /// Stored rows that could not be read back (never expected; counted, not fatal).
    pub unreadable: u64,
    /// Per live (route, rule): the two prices of the same requests.
    pub compared: BTreeMap<(String, String), Compared>,
}

impl Backtest {
    /// Prices one stored input under the live rules and the candidate.
    pub fn add(&mut self, live: &RuleSet, candidate: &RuleSet, env: &ExprEnv, input: &StoredInput) {
        self.inputs += 1;
        let view = input.view();
        let eval = EvalInput {
            request: &view,
            body: &input.body,
            response: None,
        };
        let (rule, price) = match decide_in(live, env, &input.method, &input.path, &eval) {
            Some(Ok(Decision::Free { rule })) => (rule, UsdMicros::ZERO),
            Some(Ok(Decision::Priced { rule, price })) => (rule, price),
            // An external pricer is not called for an experiment, as in a shadow.
            _ => {
                self.not_priced_now += 1;
                return;
            }
        };
        let route = live
            .match_route(&input.method, &input.path)
            .map(|(r, _)| r.id.clone())
            .unwrap_or_default();
        let candidate = decide_in(candidate, env, &input.method, &input.path, &eval);
        self.compared
            .entry((route, rule))
            .or_default()
            .add(price, candidate.as_ref());
    }

    /// Adds a row as stored (JSON text).
    pub fn add_stored(&mut self, live: &RuleSet, candidate: &RuleSet, env: &ExprEnv, text: &str) {
        match serde_json::from_str::<StoredInput>(text) {
            Ok(input) => self.add(live, candidate, env, &input),
            Err(_) => {
                self.inputs += 1;
                self.unreadable += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::pricing::rules::{LoadOptions, load_sources};

    fn set(text: &str) -> RuleSet {
        load_sources(
            &[(PathBuf::from("t.toml"), text.to_string())],
            &ExprEnv::new(),
            &LoadOptions {
                max_price: UsdMicros(10_000_000),
                max_stored_answer_bytes: crate::pricing::DEFAULT_STORED_ANSWER_BYTES,
                extension_schemas: true,
            },
        )
        .unwrap()
    }

    const LIVE: &str = r#"
[[route]]
id = "items"
methods = ["POST"]
path = "/items/{id}"
[[route.rule]]
id = "big"
when = "body.n > 10"
price = "$0.10"
[[route.rule]]
id = "small"
price = "$0.01"
"#;

    // Renames the path parameter and prices by it: the candidate must see its own `{item}`.
    const CANDIDATE: &str = r#"
[[route]]
id = "items2"
methods = ["POST"]
path = "/items/{item}"
[[route.rule]]
id = "by-item"
when = "request.params.item == 'gold'"
price = "$1.00"
[[route.rule]]
id = "rest"
price = "usd('0.02') * body.n"
min = "$0"
"#;

    fn input(path: &str, n: i64) -> StoredInput {
        let body = serde_json::json!({ "n": n });
        let view = RequestView {
            method: "POST".into(),
            path: path.into(),
            params: BTreeMap::from([("id".to_string(), "x".to_string())]),
            body_size: 7,
            ..RequestView::default()
        };
        StoredInput::of(&view, &body)
    }

    #[test]
    fn stored_inputs_are_repriced_under_both_rule_sets_per_live_rule() {
        let (live, candidate, env) = (set(LIVE), set(CANDIDATE), ExprEnv::new());
        let mut b = Backtest::default();
        for (path, n) in [("/items/a", 20), ("/items/gold", 30), ("/items/b", 2)] {
            // Through the stored form, as a backtest reads it.
            let text = serde_json::to_string(&input(path, n)).unwrap();
            b.add_stored(&live, &candidate, &env, &text);
        }
        b.add(&live, &candidate, &env, &input("/other", 1));
        b.add_stored(&live, &candidate, &env, "{\"method\":1}");
        assert_eq!((b.inputs, b.not_priced_now, b.unreadable), (5, 1, 1));
        let big = &b.compared[&("items".to_string(), "big".to_string())];
        assert_eq!(big.requests, 2);
        assert_eq!(big.current_usd_micros, 200_000);
        // 20 × $0.02 + $1.00 for gold.
        assert_eq!(big.candidate_usd_micros, 1_400_000);
        assert_eq!(
            big.candidate_rules,
            BTreeMap::from([("by-item".to_string(), 1), ("rest".to_string(), 1)])
        );
        let small = &b.compared[&("items".to_string(), "small".to_string())];
        assert_eq!(
            (small.current_usd_micros, small.candidate_usd_micros),
            (10_000, 40_000)
        );
    }

    #[test]
    fn the_stored_form_keeps_only_what_rules_read_and_round_trips() {
        let i = input("/items/a", 3);
        let text = serde_json::to_string(&i).unwrap();
        assert!(!text.contains("params"), "{text}");
        assert_eq!(serde_json::from_str::<StoredInput>(&text).unwrap(), i);
        let bare: StoredInput =
            serde_json::from_str(r#"{"method":"GET","path":"/x","body_size":0}"#).unwrap();
        assert_eq!(bare.body, serde_json::json!({}));
        assert!(
            serde_json::from_str::<StoredInput>(
                r#"{"method":"GET","path":"/x","body_size":0,"cookie":"s"}"#
            )
            .is_err()
        );
    }
}
