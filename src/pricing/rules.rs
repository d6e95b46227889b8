//! Rule files: TOML in `pricing-rules/`, compiled and checked as a whole at load.
//!
//! ```toml
//! [[route]]
//! id = "search"
//! methods = ["GET", "POST"]
//! path = "/search"
//! headers = ["x-search-depth"]      # price-relevant headers: hashed and visible to rules
//! default = "$0.02"                  # price when no rule matches (no default: fail closed)
//! max = "$1.00"                      # cap for this route (default: pricing.max_price)
//!
//! [[route.rule]]
//! id = "compare-filings"
//! when = "size(body.?documents.orValue([])) > 1"           # CEL predicate
//! price = "usd('0.10') + usd('0.02') * (size(body.documents) - 2)"   # CEL, micro-USD
//! min = "$0.10"
//!
//! [[route.sample]]                   # dry-run at load: a failing sample refuses the file
//! method = "POST"
//! body = { query = "x", documents = ["a", "b", "c"] }
//! expect_rule = "compare-filings"
//! expect_price = "$0.12"
//! ```
//!
//! Prices: a string is US dollars (`"$0.05"` or `"0.05"`), an integer is micro-dollars
//! (`50000`); a `price` string that does not start with `$` is a CEL expression evaluating to
//! micro-dollars. `free = true` makes a rule free; `external = { url, timeout_ms, fallback }`
//! asks the seller's pricer service.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::discovery::{self, RenderedDiscovery};
use super::expr::{EvalInput, Expr, ExprEnv, ExprKind, RequestView, Scope, parse_usd};
use super::route_path::PathPattern;
use crate::money::UsdMicros;

/// One problem in one place: file, route, rule, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub file: PathBuf,
    pub route: Option<String>,
    pub rule: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(r) = &self.route {
            write!(f, ": route `{r}`")?;
        }
        if let Some(r) = &self.rule {
            write!(f, ", rule `{r}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// All the errors of a failed load, each with its place.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct RuleErrors(pub Vec<RuleError>);

/// Limits and defaults the loader applies.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The price cap of a route that sets none, and the ceiling for any route's own cap.
    pub max_price: UsdMicros,
    /// The largest answer the server keeps for `payment-identifier` retries: a route whose
    /// answers may be larger cannot offer the extension.
    pub max_stored_answer_bytes: usize,
    /// Whether the 402's extensions carry their JSON Schemas (`extension_schemas`, on by
    /// default); without them the `PAYMENT-REQUIRED` header is about half as large.
    pub extension_schemas: bool,
}

/// The default of [`LoadOptions::max_stored_answer_bytes`] (`payments.stored_answer_max_bytes`).
pub const DEFAULT_STORED_ANSWER_BYTES: usize = 256 * 1024;

/// A route's `payment-identifier` extension: buyers may (or must) name each payment with an id,
/// and a retry with the same id and the same payment gets the stored answer of the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentIdPolicy {
    pub required: bool,
    /// The route's answers are at most this large: all of them can be stored.
    pub max_answer_bytes: usize,
}

/// Which loaded [`RuleSet`] something was derived from, without keeping it alive: what the
/// gateway's caches (remembered decisions, kept 402s, 402 templates) check on every use, so a
/// rules reload makes their entries stale at once.
#[derive(Debug, Clone, Default)]
pub struct Generation(std::sync::Weak<RuleSet>);

impl Generation {
    pub fn of(rules: &std::sync::Arc<RuleSet>) -> Self {
        Generation(std::sync::Arc::downgrade(rules))
    }

    /// Whether `rules` is the set this was derived from. Pointer equality is sound: the `Weak`
    /// keeps the allocation from being reused by a later set. The default is no set's.
    pub fn is(&self, rules: &std::sync::Arc<RuleSet>) -> bool {
        std::ptr::eq(self.0.as_ptr(), std::sync::Arc::as_ptr(rules))
    }
}

#[derive(Debug, Clone)]
pub struct RuleSet {
    pub routes: Vec<Arc<Route>>,
    pub files: Vec<PathBuf>,
}

/// When a paid request's payment is settled, relative to calling the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SettleTiming {
    /// Settle, then serve: nobody gets the answer unpaid (the default).
    #[default]
    Before,
    /// Call the upstream first and settle only after a successful answer, which is held back
    /// until the money has moved (not served if settlement fails).
    After,
}

#[derive(Debug)]
pub struct Route {
    pub id: String,
    pub file: PathBuf,
    pub methods: Vec<String>,
    pub path: PathPattern,
    /// Lower-case, sorted, unique.
    pub headers: Vec<String>,
    pub default: Option<UsdMicros>,
    pub max: UsdMicros,
    pub description: Option<String>,
    pub mime_type: String,
    pub discovery: Option<Discovery>,
    /// `discovery` rendered per method, once (see `discovery.rs`).
    pub discovery_json: BTreeMap<String, RenderedDiscovery>,
    pub rules: Vec<Rule>,
    /// The `payment-identifier` extension, when the route offers it.
    pub payment_identifier: Option<PaymentIdPolicy>,
    /// The v2 402's `extensions` per method: Bazaar discovery and `payment-identifier`,
    /// rendered once at load.
    pub v2_extensions: BTreeMap<String, Box<serde_json::value::RawValue>>,
    /// When an on-chain payment for this route is settled: before calling the upstream (the
    /// default) or after a successful answer, which is held back until the money moved.
    pub settle: SettleTiming,
}

#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub when: Option<Expr>,
    /// With `actual`, this is the ceiling: what is held (or paid on chain) up front.
    pub price: PriceSpec,
    pub min: Option<UsdMicros>,
    pub max: Option<UsdMicros>,
    /// The price known only after the upstream answered: a CEL expression that may also read
    /// `response` (`status`, `headers`, `body`). Credit-funded requests are charged this,
    /// clamped into [0, ceiling]; the rest of the hold is released.
    pub actual: Option<Expr>,
}

#[derive(Debug, Clone)]
pub enum PriceSpec {
    Free,
    Fixed(UsdMicros),
    Expr(Expr),
    External(Arc<ExternalPricer>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalPricer {
    pub url: String,
    pub timeout: Duration,
    pub fallback: UsdMicros,
}

/// Metadata a route publishes for discovery (x402 Bazaar, v1 `outputSchema`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    pub service_name: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub icon_url: Option<String>,
    /// Example query parameters (a table), for GET-style input.
    pub query_params: Option<Value>,
    /// Example JSON body, for POST-style input.
    pub body: Option<Value>,
    pub output_example: Option<Value>,
}

// ---- raw file format ------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    id: String,
    path: String,
    methods: Vec<String>,
    #[serde(default)]
    headers: Vec<String>,
    default: Option<RawPrice>,
    max: Option<RawPrice>,
    description: Option<String>,
    mime_type: Option<String>,
    discovery: Option<Discovery>,
    #[serde(default)]
    settle: SettleTiming,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
    #[serde(default, rename = "sample")]
    samples: Vec<RawSample>,
    payment_identifier: Option<RawPaymentId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPaymentId {
    #[serde(default)]
    required: bool,
    /// The largest answer this route gives (default: the server's cap).
    max_answer_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    when: Option<String>,
    price: Option<RawPrice>,
    #[serde(default)]
    free: bool,
    external: Option<RawExternal>,
    min: Option<RawPrice>,
    max: Option<RawPrice>,
    actual: Option<String>,
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExternal {
    url: String,
    timeout_ms: Option<u64>,
    fallback: RawPrice,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawPrice {
    Micros(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSample {
    name: Option<String>,
    method: Option<String>,
    path: Option<String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<Value>,
    expect_rule: Option<String>,
    expect_price: Option<RawPrice>,
    #[serde(default)]
    expect_free: bool,
}

const MAX_EXTERNAL_TIMEOUT_MS: u64 = 10_000;

/// A literal price: a string is dollars, an integer micro-dollars.
fn literal_price(p: &RawPrice) -> Result<UsdMicros, String> {
    match p {
        RawPrice::Micros(m) => u64::try_from(*m)
            .map(UsdMicros)
            .map_err(|_| format!("price {m} is negative")),
        RawPrice::Text(s) => parse_usd(s)
            .map(UsdMicros)
            .map_err(|e| format!("`{s}`: {e}")),
    }
}

// ---- loading --------------------------------------------------------------------------------

/// Loads every `*.toml` in `dir` (sorted by name; routes are tried in that order).
pub fn load_dir(dir: &Path, env: &ExprEnv, opts: &LoadOptions) -> Result<RuleSet, RuleErrors> {
    let files = rule_files(dir).map_err(|reason| {
        RuleErrors(vec![RuleError {
            file: dir.to_path_buf(),
            route: None,
            rule: None,
            reason,
        }])
    })?;
    let mut sources = Vec::with_capacity(files.len());
    for f in &files {
        match std::fs::read_to_string(f) {
            Ok(text) => sources.push((f.clone(), text)),
            Err(e) => {
                return Err(RuleErrors(vec![RuleError {
                    file: f.clone(),
                    route: None,
                    rule: None,
                    reason: format!("cannot read: {e}"),
                }]));
            }
        }
    }
    load_sources(&sources, env, opts)
}

/// The rule files of a directory, sorted by name.
pub fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read rules directory: {e}"))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Compiles rule files given as (name, text). Collects every error rather than stopping at the
/// first, so an operator fixes a broken file in one pass.
pub fn load_sources(
    sources: &[(PathBuf, String)],
    env: &ExprEnv,
    opts: &LoadOptions,
) -> Result<RuleSet, RuleErrors> {
    let mut errors = Vec::new();
    let mut routes = Vec::new();
    let mut route_ids = HashSet::new();
    for (file, text) in sources {
        let raw: RawFile = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                errors.push(RuleError {
                    file: file.clone(),
                    route: None,
                    rule: None,
                    reason: e.to_string().trim_end().to_string(),
                });
                continue;
            }
        };
        for raw_route in raw.route {
            let id = raw_route.id.clone();
            if !route_ids.insert(id.clone()) {
                errors.push(RuleError {
                    file: file.clone(),
                    route: Some(id),
                    rule: None,
                    reason: "route id is used twice".into(),
                });
                continue;
            }
            match compile_route(file, raw_route, env, opts) {
                Ok(route) => routes.push(Arc::new(route)),
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    if errors.is_empty() {
        Ok(RuleSet {
            routes,
            files: sources.iter().map(|(f, _)| f.clone()).collect(),
        })
    } else {
        Err(RuleErrors(errors))
    }
}

fn compile_route(
    file: &Path,
    raw: RawRoute,
    env: &ExprEnv,
    opts: &LoadOptions,
) -> Result<Route, Vec<RuleError>> {
    let mut errors = Vec::new();
    let err = |rule: Option<&str>, reason: String| RuleError {
        file: file.to_path_buf(),
        route: Some(raw.id.clone()),
        rule: rule.map(str::to_string),
        reason,
    };
    if !valid_id(&raw.id) {
        errors.push(err(None, "id must be 1-64 letters, digits, - or _".into()));
    }
    let path = PathPattern::parse(&raw.path).map_err(|e| err(None, e));
    let mut methods = Vec::new();
    for m in &raw.methods {
        let up = m.to_ascii_uppercase();
        if ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].contains(&up.as_str()) {
            methods.push(up);
        } else {
            errors.push(err(None, format!("method `{m}` is not supported")));
        }
    }
    if methods.is_empty() {
        errors.push(err(
            None,
            "methods must name at least one HTTP method".into(),
        ));
    }
    let mut headers: Vec<String> = raw.headers.iter().map(|h| h.to_ascii_lowercase()).collect();
    headers.sort();
    headers.dedup();
    for h in &headers {
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            errors.push(err(None, format!("header name `{h}` is not valid")));
        }
        // Credentials must never become part of a hash that is stored and logged.
        if ["authorization", "cookie", "payment-signature", "x-payment"].contains(&h.as_str()) {
            errors.push(err(
                None,
                format!("header `{h}` carries credentials and cannot be price-relevant"),
            ));
        }
    }
    let max = match raw.max.as_ref().map(literal_price).transpose() {
        Ok(Some(m)) if m > opts.max_price => {
            errors.push(err(
                None,
                format!(
                    "max {m} is above the server's pricing.max_price {}",
                    opts.max_price
                ),
            ));
            opts.max_price
        }
        Ok(Some(m)) => m,
        Ok(None) => opts.max_price,
        Err(e) => {
            errors.push(err(None, format!("max: {e}")));
            opts.max_price
        }
    };
    let default = match raw.default.as_ref().map(literal_price).transpose() {
        Ok(d) => d,
        Err(e) => {
            errors.push(err(None, format!("default: {e}")));
            None
        }
    };
    if let Some(d) = default.filter(|d| *d > max) {
        errors.push(err(
            None,
            format!("default {d} is above the route's max {max}"),
        ));
    }
    if let Some(d) = &raw.discovery
        && let Err(e) = check_discovery(d)
    {
        errors.push(err(None, format!("discovery: {e}")));
    }

    let mut rules = Vec::new();
    let mut rule_ids = HashSet::new();
    let declared_rules = raw.rules.len();
    for r in raw.rules {
        if !rule_ids.insert(r.id.clone()) {
            errors.push(err(
                Some(&r.id),
                "rule id is used twice in this route".into(),
            ));
            continue;
        }
        match compile_rule(r, env, max) {
            Ok(rule) => rules.push(rule),
            Err((rule, reason)) => errors.push(err(Some(&rule), reason)),
        }
    }
    if declared_rules == 0 && default.is_none() {
        errors.push(err(None, "route has no rules and no default price".into()));
    }

    let discovery_json = raw
        .discovery
        .as_ref()
        .map(|d| discovery::render(d, &methods))
        .unwrap_or_default();
    let payment_identifier = match raw.payment_identifier {
        None => None,
        Some(p) => {
            let max_answer_bytes = p.max_answer_bytes.unwrap_or(opts.max_stored_answer_bytes);
            if max_answer_bytes > opts.max_stored_answer_bytes {
                errors.push(err(
                    None,
                    format!(
                        "payment_identifier: answers of up to {max_answer_bytes} bytes cannot be stored for retries (payments.stored_answer_max_bytes is {})",
                        opts.max_stored_answer_bytes
                    ),
                ));
            }
            Some(PaymentIdPolicy {
                required: p.required,
                max_answer_bytes,
            })
        }
    };
    let v2_extensions = discovery::render_extensions(
        &discovery_json,
        &methods,
        payment_identifier.as_ref(),
        opts.extension_schemas,
    );
    let route = match path {
        Ok(path) if errors.is_empty() => Route {
            id: raw.id.clone(),
            file: file.to_path_buf(),
            methods,
            path,
            headers,
            default,
            max,
            description: raw.description,
            mime_type: raw.mime_type.unwrap_or_else(|| "application/json".into()),
            discovery_json,
            discovery: raw.discovery,
            rules,
            settle: raw.settle,
            payment_identifier,
            v2_extensions,
        },
        Ok(_) => return Err(errors),
        Err(e) => {
            errors.push(e);
            return Err(errors);
        }
    };

    for (i, sample) in raw.samples.iter().enumerate() {
        if let Err(reason) = check_sample(&route, env, sample) {
            let name = sample.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
            errors.push(err(None, format!("sample {name}: {reason}")));
        }
    }
    if errors.is_empty() {
        Ok(route)
    } else {
        Err(errors)
    }
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Bazaar limits (protocol reference §1.4): facilitators drop fields that break them.
fn check_discovery(d: &Discovery) -> Result<(), String> {
    let printable = |s: &str| s.bytes().all(|b| (0x20..0x7f).contains(&b));
    if let Some(n) = &d.service_name
        && (n.len() > 32 || !printable(n))
    {
        return Err("service_name must be at most 32 printable ASCII characters".into());
    }
    if d.tags.len() > 5 || d.tags.iter().any(|t| t.len() > 32 || !printable(t)) {
        return Err("at most 5 tags, each at most 32 printable ASCII characters".into());
    }
    if d.query_params.as_ref().is_some_and(|q| !q.is_object()) {
        return Err("query_params must be a table of example values".into());
    }
    if let Some(u) = &d.icon_url
        && (!(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 2048)
    {
        return Err("icon_url must be an absolute http(s) URL of at most 2048 characters".into());
    }
    Ok(())
}

fn compile_rule(r: RawRule, env: &ExprEnv, route_max: UsdMicros) -> Result<Rule, (String, String)> {
    let fail = |reason: String| (r.id.clone(), reason);
    if !valid_id(&r.id) {
        return Err(fail("id must be 1-64 letters, digits, - or _".into()));
    }
    let when = r
        .when
        .as_deref()
        .map(|src| env.compile(src, ExprKind::Predicate, Scope::Request))
        .transpose()
        .map_err(|e| fail(format!("when: {e}")))?;
    let min = r
        .min
        .as_ref()
        .map(literal_price)
        .transpose()
        .map_err(|e| fail(format!("min: {e}")))?;
    let max = r
        .max
        .as_ref()
        .map(literal_price)
        .transpose()
        .map_err(|e| fail(format!("max: {e}")))?;
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        return Err(fail(format!("min {lo} is above max {hi}")));
    }
    if let Some(lo) = min.filter(|lo| *lo > route_max) {
        return Err(fail(format!(
            "min {lo} is above the route's max {route_max}"
        )));
    }
    let kinds =
        usize::from(r.free) + usize::from(r.price.is_some()) + usize::from(r.external.is_some());
    if kinds != 1 {
        return Err(fail(
            "set exactly one of `price`, `free = true` or `external`".into(),
        ));
    }
    let price = if r.free {
        PriceSpec::Free
    } else if let Some(ext) = r.external {
        let url = ext.url.trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(fail("external.url must be an http(s) URL".into()));
        }
        let timeout_ms = ext.timeout_ms.unwrap_or(500);
        if !(1..=MAX_EXTERNAL_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(fail(format!(
                "external.timeout_ms must be 1..={MAX_EXTERNAL_TIMEOUT_MS}"
            )));
        }
        let fallback =
            literal_price(&ext.fallback).map_err(|e| fail(format!("external.fallback: {e}")))?;
        PriceSpec::External(Arc::new(ExternalPricer {
            url,
            timeout: Duration::from_millis(timeout_ms),
            fallback,
        }))
    } else {
        match r.price.expect("checked above") {
            p @ RawPrice::Micros(_) => {
                PriceSpec::Fixed(literal_price(&p).map_err(|e| fail(format!("price: {e}")))?)
            }
            RawPrice::Text(s) if s.trim_start().starts_with('$') => PriceSpec::Fixed(UsdMicros(
                parse_usd(&s).map_err(|e| fail(format!("price `{s}`: {e}")))?,
            )),
            RawPrice::Text(s) => {
                if looks_like_decimal(&s) {
                    return Err(fail(format!(
                        "price `{s}` is a decimal: write \"${s}\" for dollars, or an integer of micro-dollars"
                    )));
                }
                let expr = env
                    .compile(&s, ExprKind::Amount, Scope::Request)
                    .map_err(|e| fail(format!("price: {e}")))?;
                if expr.may_be_negative() && min.is_none() {
                    return Err(fail(
                        "price may be negative (it subtracts or reads a request field); \
                         set `min`, or wrap it in math.greatest(0, …)"
                            .into(),
                    ));
                }
                PriceSpec::Expr(expr)
            }
        }
    };
    let actual = match (&r.actual, &price) {
        (None, _) => None,
        (Some(_), PriceSpec::Free) => {
            return Err(fail(
                "`actual` needs a `price` (the ceiling); a free rule has none".into(),
            ));
        }
        (Some(src), _) => Some(
            env.compile(src, ExprKind::Amount, Scope::Response)
                .map_err(|e| fail(format!("actual: {e}")))?,
        ),
    };
    Ok(Rule {
        id: r.id,
        when,
        price,
        min,
        max,
        actual,
    })
}

fn looks_like_decimal(s: &str) -> bool {
    let t = s.trim();
    t.contains('.') && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

// ---- evaluation ----------------------------------------------------------------------------

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PricingError {
    #[error("route `{route}` has no rule for this request and no default price")]
    NoPrice { route: String },
    #[error("route `{route}`, rule `{rule}`: price could not be computed: {reason}")]
    Evaluation {
        route: String,
        rule: String,
        reason: String,
    },
}

/// What the rules decided for one request, before any external pricer is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Free {
        rule: String,
    },
    Priced {
        rule: String,
        price: UsdMicros,
    },
    /// The rule delegates to the seller's pricer; clamp the answer with `clamp`.
    External {
        rule: String,
        pricer: Arc<ExternalPricer>,
        clamp: Clamp,
    },
}

/// The bounds a price is clamped into: the rule's `min`/`max`, then the route's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clamp {
    pub min: Option<UsdMicros>,
    pub max: Option<UsdMicros>,
    pub route_max: UsdMicros,
}

impl Clamp {
    pub fn apply(&self, price: UsdMicros) -> UsdMicros {
        let mut p = price;
        if let Some(lo) = self.min {
            p = p.max(lo);
        }
        if let Some(hi) = self.max {
            p = p.min(hi);
        }
        p.min(self.route_max)
    }
}

impl RuleSet {
    /// The first route (in file order) whose method and path match, with its path parameters.
    pub fn match_route(
        &self,
        method: &str,
        path: &str,
    ) -> Option<(&Arc<Route>, BTreeMap<String, String>)> {
        self.routes.iter().find_map(|r| {
            if !r.methods.iter().any(|m| m == method) {
                return None;
            }
            r.path.matches(path).map(|params| (r, params))
        })
    }
}

impl RuleSet {
    /// The methods routes accept on `path` (for a 405's `Allow`), sorted, without duplicates.
    pub fn methods_for(&self, path: &str) -> Vec<&str> {
        let mut methods: Vec<&str> = self
            .routes
            .iter()
            .filter(|r| r.path.matches(path).is_some())
            .flat_map(|r| r.methods.iter().map(String::as_str))
            .collect();
        methods.sort_unstable();
        methods.dedup();
        methods
    }
}

impl Route {
    /// Runs the rules in order; the first whose `when` holds prices the request. A `when` that
    /// fails to evaluate (a missing field, a type mismatch) does not match: the request simply
    /// is not of that rule's kind. A *price* that fails to evaluate fails the request: charging
    /// a guess would be wrong either way.
    pub fn decide(&self, env: &ExprEnv, input: &EvalInput<'_>) -> Result<Decision, PricingError> {
        let bound = env.bind(input);
        for rule in &self.rules {
            let hit = match &rule.when {
                None => true,
                Some(w) => w.eval_predicate(&bound).unwrap_or(false),
            };
            if !hit {
                continue;
            }
            let clamp = Clamp {
                min: rule.min,
                max: rule.max,
                route_max: self.max,
            };
            let rule_id = rule.id.clone();
            return match &rule.price {
                PriceSpec::Free => Ok(Decision::Free { rule: rule_id }),
                PriceSpec::Fixed(p) => Ok(Decision::Priced {
                    rule: rule_id,
                    price: clamp.apply(*p),
                }),
                PriceSpec::Expr(e) => match e.eval_amount(&bound) {
                    Ok(micros) => Ok(Decision::Priced {
                        rule: rule_id,
                        price: clamp.apply(UsdMicros(micros)),
                    }),
                    Err(err) => Err(PricingError::Evaluation {
                        route: self.id.clone(),
                        rule: rule_id,
                        reason: err.to_string(),
                    }),
                },
                PriceSpec::External(p) => Ok(Decision::External {
                    rule: rule_id,
                    pricer: p.clone(),
                    clamp,
                }),
            };
        }
        match self.default {
            Some(price) => Ok(Decision::Priced {
                rule: "default".into(),
                price,
            }),
            None => Err(PricingError::NoPrice {
                route: self.id.clone(),
            }),
        }
    }
}

fn check_sample(route: &Route, env: &ExprEnv, s: &RawSample) -> Result<(), String> {
    let method = s
        .method
        .clone()
        .unwrap_or_else(|| route.methods[0].clone())
        .to_ascii_uppercase();
    let path = s
        .path
        .clone()
        .unwrap_or_else(|| route.path.as_str().to_string());
    let params = route
        .path
        .matches(&path)
        .ok_or_else(|| format!("path `{path}` does not match the route"))?;
    if !route.methods.contains(&method) {
        return Err(format!("method {method} is not one of the route's methods"));
    }
    let body = s
        .body
        .clone()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let view = RequestView {
        method,
        path,
        params,
        query: s.query.clone(),
        headers: s
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        body_size: s.body.as_ref().map_or(0, |b| b.to_string().len() as u64),
    };
    let input = EvalInput {
        request: &view,
        body: &body,
        response: None,
    };
    let decision = route.decide(env, &input).map_err(|e| e.to_string())?;
    let (rule, price) = match &decision {
        Decision::Free { rule } => (rule, Some(UsdMicros::ZERO)),
        Decision::Priced { rule, price } => (rule, Some(*price)),
        // The pricer is not called at load; only the rule choice is checked.
        Decision::External { rule, .. } => (rule, None),
    };
    if let Some(want) = &s.expect_rule
        && want != rule
    {
        return Err(format!("expected rule `{want}`, got `{rule}`"));
    }
    if s.expect_free && !matches!(decision, Decision::Free { .. }) {
        return Err(format!("expected a free request, got rule `{rule}`"));
    }
    if let Some(want) = &s.expect_price {
        let want = literal_price(want)?;
        match price {
            Some(got) if got == want => {}
            Some(got) => return Err(format!("expected price {want}, got {got} (rule `{rule}`)")),
            None => {
                return Err(format!(
                    "rule `{rule}` is external: expect_price cannot be checked"
                ));
            }
        }
    }
    Ok(())
}
