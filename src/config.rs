//! Configuration: an optional TOML file (`--config` / `TARIFF_CONFIG`) overlaid by `TARIFF_*`
//! environment variables, validated once at start-up into [`Config`]. Every error names the
//! setting and what is wrong with it.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::money::UsdMicros;
use crate::pricing::expr::parse_usd;
use crate::quote::{FingerprintKey, PaymentTerms, TransferMethod};
use crate::x402::assets;
use crate::x402::network::Network;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8402";
/// A recognisable placeholder payee for the demo configuration. Nobody holds its key: the
/// server logs a warning and payments to it would be lost, so real deployments must set one.
pub const DEMO_PAY_TO: &str = "0x000000000000000000000000000000000000dEaD";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{setting}: {message}")]
    Invalid { setting: String, message: String },
}

fn invalid(setting: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.into(),
        message: message.into(),
    }
}

/// A value that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(v: T) -> Self {
        Secret(v)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What happens to a request that no pricing route matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnpricedPolicy {
    /// 404: only what the operator priced (or declared free) is reachable. The safe default:
    /// a typo in a rule's path must not publish a paid endpoint for free.
    Deny,
    /// Forward to the upstream without payment.
    Pass,
}

/// One configured network: the payment terms quoted on it and how its payments are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    pub terms: PaymentTerms,
    /// How payments on this network are verified and settled.
    pub settlement: Settlement,
}

/// Batched local settlement: payments ready at the same time are settled in one transaction
/// through a Multicall3-compatible contract, each call allowed to fail on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    /// The `aggregate3` contract (checksummed or lowercase hex).
    pub contract: String,
    /// Most payments per transaction (2..=256).
    pub max: usize,
    /// How long the first payment of a batch waits for others; zero: a batch is whatever is
    /// waiting when the previous broadcast is done (group commit, no timer).
    pub window: std::time::Duration,
}

/// How one network's payments are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Payments are refused with 503 `settlement_unconfigured` (quotes are still issued).
    None,
    /// Tariff verifies with its own RPC and submits `transferWithAuthorization` with its own
    /// gas key.
    Local {
        rpc_url: Secret<String>,
        gas_key: Secret<String>,
        confirmations: u64,
        /// Several payments per settlement transaction; `None`: one transaction per payment.
        batch: Option<BatchSettings>,
    },
    /// An x402 facilitator verifies and settles; the RPC (optional) lets the reconciler
    /// resolve payments whose settle call got no answer.
    Facilitator {
        url: String,
        /// Sent with every facilitator call (e.g. an API key); values are secrets.
        headers: Vec<(String, Secret<String>)>,
        timeout_ms: u64,
        rpc_url: Option<Secret<String>>,
    },
}

/// Payment handling shared by every network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentsConfig {
    /// Largest accepted `PAYMENT-SIGNATURE` / `X-PAYMENT` header.
    pub max_header_bytes: usize,
    pub rpc_timeout_ms: u64,
    pub receipt_timeout_seconds: u64,
    /// How often a settlement's receipt is polled (about a quarter of the block time).
    pub receipt_poll_ms: u64,
    /// A payment untouched this long is resolved by the reconciler.
    pub reconcile_after_seconds: u64,
    pub reconcile_interval_seconds: u64,
    /// The largest answer kept for `payment-identifier` retries (a route may ask for less).
    pub stored_answer_max_bytes: usize,
    /// How long an answer stays retrievable under its payment id.
    pub payment_id_ttl_seconds: u64,
}

#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Base of the absolute resource URLs in 402s (`https://api.example.com`). Without it the
    /// request's Host header is used.
    pub public_url: Option<String>,
    pub upstream: Option<String>,
    pub upstream_timeout_ms: u64,
    pub rules_dir: PathBuf,
    pub redis_url: Option<Secret<String>>,
    pub redis_prefix: String,
    pub database_url: Option<Secret<String>>,
    pub fingerprint_key: Secret<FingerprintKey>,
    /// Bearer token of the admin endpoints (`/admin/*`); without it they are disabled.
    pub admin_token: Option<Secret<String>>,
    /// False when the key was generated at start-up (quotes then die with the process).
    pub fingerprint_key_configured: bool,
    pub unpriced: UnpricedPolicy,
    pub max_body_bytes: usize,
    pub quote_ttl_seconds: u64,
    pub memory_quote_capacity: usize,
    /// With Redis: quotes kept in this instance's cache in front of it (a repeat of a recent
    /// request then costs no round trip; older ones are read from Redis).
    pub local_quote_cache: usize,
    pub max_price: UsdMicros,
    /// Accounts `POST /accounts` may open per minute on this instance (0 disables signup).
    pub signups_per_minute: u32,
    pub rules_reload_ms: u64,
    pub networks: Vec<NetworkConfig>,
    pub payments: PaymentsConfig,
    /// Top-ups in DEX-liquid tokens, per network (`[[topup]]`); none by default.
    pub topup: Vec<crate::topup::config::TopupNetwork>,
    /// Whether quotes and revenue are counted per minute and rule (the console's figures).
    pub aggregates: bool,
    /// Each 402 extension carries its JSON Schema (`extension_schemas`, default true). Off, they
    /// are left out as Cloudflare does: the `PAYMENT-REQUIRED` header drops from ~3.6 KB to
    /// ~1.8 KB on a route with discovery and sign-in.
    pub extension_schemas: bool,
    /// Recording of pricing inputs for backtests (`[backtest]`); off by default.
    pub backtest: BacktestConfig,
    /// The listener's limits against slow and hostile clients (`[server]`).
    pub server: ServerLimits,
}

/// `[server]`: what one client may hold of the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections at most; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A request head must arrive within this (also between requests on a kept-alive
    /// connection).
    pub header_read_timeout: Duration,
    /// A request body must arrive within this (408 otherwise).
    pub body_read_timeout: Duration,
    /// Header lines per request at most (431 beyond).
    pub max_headers: usize,
    /// The largest request head, request line and headers, in bytes (431 beyond).
    pub max_header_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_headers: 64,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// `[backtest]`: what a backtest may re-price, and how much of it is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BacktestConfig {
    /// Record what rules may read of each priced request.
    pub record: bool,
    /// Inputs older than this are deleted (and a backtest reaches back at most this far).
    pub retention_days: u64,
    /// An input larger than this (as stored JSON) is not recorded.
    pub max_input_bytes: usize,
    /// At most this many inputs are kept; the oldest go first.
    pub max_rows: u64,
}

impl Default for BacktestConfig {
    fn default() -> Self {
        BacktestConfig {
            record: false,
            retention_days: 7,
            max_input_bytes: 4096,
            max_rows: 200_000,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    public_url: Option<String>,
    upstream: Option<String>,
    upstream_timeout_ms: Option<u64>,
    rules_dir: Option<PathBuf>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    database_url: Option<String>,
    fingerprint_key: Option<String>,
    fingerprint_key_file: Option<PathBuf>,
    admin_token: Option<String>,
    unpriced: Option<UnpricedPolicy>,
    max_body_bytes: Option<usize>,
    signups_per_minute: Option<u32>,
    /// The per-minute figures of the console (`quote_stats`, `rule_revenue`); on by default.
    aggregates: Option<bool>,
    /// The extensions' JSON Schemas in each 402; on by default.
    extension_schemas: Option<bool>,
    #[serde(default)]
    quotes: RawQuotes,
    #[serde(default)]
    pricing: RawPricing,
    #[serde(default)]
    networks: Vec<RawNetwork>,
    #[serde(default)]
    payments: RawPayments,
    #[serde(default)]
    topup: Vec<crate::topup::config::RawTopup>,
    #[serde(default)]
    backtest: RawBacktest,
    #[serde(default)]
    server: RawServer,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    max_connections: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    max_headers: Option<usize>,
    max_header_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBacktest {
    record: Option<bool>,
    retention_days: Option<u64>,
    max_input_bytes: Option<usize>,
    max_rows: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayments {
    max_header_bytes: Option<usize>,
    rpc_timeout_ms: Option<u64>,
    receipt_timeout_seconds: Option<u64>,
    receipt_poll_ms: Option<u64>,
    reconcile_after_seconds: Option<u64>,
    reconcile_interval_seconds: Option<u64>,
    stored_answer_max_bytes: Option<usize>,
    payment_id_ttl_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuotes {
    ttl_seconds: Option<u64>,
    memory_capacity: Option<usize>,
    local_cache_capacity: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPricing {
    max_price: Option<String>,
    reload_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    network: String,
    pay_to: Option<String>,
    asset: Option<String>,
    decimals: Option<u8>,
    eip712_name: Option<String>,
    eip712_version: Option<String>,
    max_timeout_seconds: Option<u64>,
    /// `eip3009` (the default) or `permit2`.
    transfer_method: Option<String>,
    /// `local`, `facilitator` or `none`; inferred from what is configured when absent.
    settlement: Option<String>,
    rpc_url: Option<String>,
    gas_key: Option<String>,
    gas_key_file: Option<PathBuf>,
    confirmations: Option<u64>,
    /// A Multicall3-compatible contract (`aggregate3`): local settlements of EIP-3009 payments
    /// that are ready together go out in one transaction through it.
    batch_contract: Option<String>,
    /// Most payments per batched transaction.
    batch_max: Option<u32>,
    /// How long the first payment of a batch waits for others (0: only those already waiting).
    batch_window_ms: Option<u64>,
    facilitator_url: Option<String>,
    #[serde(default)]
    facilitator_headers: std::collections::BTreeMap<String, String>,
    facilitator_timeout_ms: Option<u64>,
}

/// One environment variable of the documented interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvVar {
    pub name: &'static str,
    pub meaning: &'static str,
    pub default: &'static str,
}

/// Every environment variable [`Config::load`] reads, and the only way it reads them
/// ([`env_var`]); the README's table and `tariff --help` are rendered from it (a test keeps the
/// README in step).
pub const ENV_VARS: &[EnvVar] = &[
    EnvVar {
        name: "TARIFF_CONFIG",
        meaning: "the TOML config file (or `--config`)",
        default: "none",
    },
    EnvVar {
        name: "TARIFF_LISTEN",
        meaning: "listen address",
        default: "`127.0.0.1:8402`",
    },
    EnvVar {
        name: "TARIFF_UPSTREAM",
        meaning: "the API to put a price on (reverse-proxy mode)",
        default: "built-in demo search API",
    },
    EnvVar {
        name: "TARIFF_RULES",
        meaning: "pricing rules directory",
        default: "`pricing-rules`",
    },
    EnvVar {
        name: "TARIFF_REDIS_URL",
        meaning: "Redis for quotes (`redis://`, `rediss://`, `unix://`)",
        default: "in-memory store",
    },
    EnvVar {
        name: "TARIFF_DATABASE_URL",
        meaning: "`postgres://…` or `sqlite:…`",
        default: "SQLite in `.tariff/tariff.db`",
    },
    EnvVar {
        name: "TARIFF_FINGERPRINT_KEY",
        meaning: "64 hex chars keying request hashes; required with Redis so every instance hashes alike",
        default: "random per process",
    },
    EnvVar {
        name: "TARIFF_NETWORK",
        meaning: "network of the payment terms (`base`, `eip155:8453`, …)",
        default: "Base Sepolia USDC",
    },
    EnvVar {
        name: "TARIFF_PAY_TO",
        meaning: "payee address on every configured network",
        default: "a demo address (warned about)",
    },
    EnvVar {
        name: "TARIFF_PUBLIC_URL",
        meaning: "base of the resource URLs in 402s",
        default: "the request's Host",
    },
    EnvVar {
        name: "TARIFF_ADMIN_TOKEN",
        meaning: "bearer token (≥ 32 chars) of `/admin/*`",
        default: "admin endpoints disabled",
    },
    EnvVar {
        name: "TARIFF_SETTLEMENT",
        meaning: "`local`, `facilitator` or `none`, for every network",
        default: "inferred from what is set",
    },
    EnvVar {
        name: "TARIFF_RPC_URL",
        meaning: "EVM JSON-RPC for every network (verification, local settlement, reconciling)",
        default: "none",
    },
    EnvVar {
        name: "TARIFF_GAS_KEY",
        meaning: "hex key that pays gas for local settlement (never logged)",
        default: "none",
    },
    EnvVar {
        name: "TARIFF_GAS_KEY_FILE",
        meaning: "a file holding that key",
        default: "none",
    },
    EnvVar {
        name: "TARIFF_BATCH_CONTRACT",
        meaning: "Multicall3 (`aggregate3`) address: settle payments ready together in one transaction",
        default: "one transaction per payment",
    },
    EnvVar {
        name: "TARIFF_FACILITATOR_URL",
        meaning: "x402 facilitator base URL",
        default: "none",
    },
];

/// Reads a documented variable; an empty value counts as unset.
fn env_var(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    debug_assert!(
        ENV_VARS.iter().any(|v| v.name == name),
        "{name} is read but not in ENV_VARS"
    );
    env(name).filter(|v| !v.is_empty())
}

/// The variables as a Markdown table (the README's).
pub fn env_vars_markdown() -> String {
    let mut out = String::from("| variable | meaning | default |\n|---|---|---|\n");
    for v in ENV_VARS {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            v.name, v.meaning, v.default
        ));
    }
    out
}

/// The variables as plain lines, for `tariff --help`.
pub fn env_vars_help() -> String {
    let mut out = String::from("Environment variables (override the config file):\n");
    for v in ENV_VARS {
        let strip = |s: &str| s.replace('`', "");
        out.push_str(&format!(
            "  {:<24} {} [default: {}]\n",
            v.name,
            strip(v.meaning),
            strip(v.default)
        ));
    }
    out
}

impl Config {
    /// Loads the file (if any) and applies the environment. `env` is injected so tests do not
    /// touch the process environment.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env_var(env, "TARIFF_CONFIG").map(PathBuf::from));
        let mut raw = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<RawConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => RawConfig::default(),
        };
        apply_env(&mut raw, env);
        validate(raw)
    }
}

fn apply_env(raw: &mut RawConfig, env: &dyn Fn(&str) -> Option<String>) {
    let set = |slot: &mut Option<String>, name: &str| {
        if let Some(v) = env_var(env, name) {
            *slot = Some(v);
        }
    };
    set(&mut raw.listen, "TARIFF_LISTEN");
    set(&mut raw.public_url, "TARIFF_PUBLIC_URL");
    set(&mut raw.upstream, "TARIFF_UPSTREAM");
    set(&mut raw.redis_url, "TARIFF_REDIS_URL");
    set(&mut raw.database_url, "TARIFF_DATABASE_URL");
    set(&mut raw.fingerprint_key, "TARIFF_FINGERPRINT_KEY");
    set(&mut raw.admin_token, "TARIFF_ADMIN_TOKEN");
    if let Some(dir) = env_var(env, "TARIFF_RULES") {
        raw.rules_dir = Some(PathBuf::from(dir));
    }
    if let Some(net) = env_var(env, "TARIFF_NETWORK") {
        // TARIFF_NETWORK replaces the network list with one network on its defaults.
        raw.networks = vec![RawNetwork {
            network: net,
            ..RawNetwork::default()
        }];
    }
    // Settings that apply to every network.
    type Apply = fn(&mut RawNetwork, String);
    let per_network: [(&str, Apply); 7] = [
        ("TARIFF_PAY_TO", |n, v| n.pay_to = Some(v)),
        ("TARIFF_RPC_URL", |n, v| n.rpc_url = Some(v)),
        ("TARIFF_GAS_KEY", |n, v| n.gas_key = Some(v)),
        ("TARIFF_GAS_KEY_FILE", |n, v| {
            n.gas_key_file = Some(PathBuf::from(v))
        }),
        ("TARIFF_FACILITATOR_URL", |n, v| n.facilitator_url = Some(v)),
        ("TARIFF_SETTLEMENT", |n, v| n.settlement = Some(v)),
        ("TARIFF_BATCH_CONTRACT", |n, v| n.batch_contract = Some(v)),
    ];
    for (name, apply) in per_network {
        if let Some(v) = env_var(env, name) {
            if raw.networks.is_empty() {
                raw.networks.push(default_network());
            }
            for n in &mut raw.networks {
                apply(n, v.clone());
            }
        }
    }
}

/// `batch_contract`, `batch_max`, `batch_window_ms` of a locally settled network.
fn batch_settings(
    n: &RawNetwork,
    at: &dyn Fn(&str) -> String,
) -> Result<Option<BatchSettings>, ConfigError> {
    let Some(contract) = n.batch_contract.as_deref().map(str::trim) else {
        if n.batch_max.is_some() || n.batch_window_ms.is_some() {
            return Err(invalid(
                at("batch_contract"),
                "batch_max and batch_window_ms need a batch_contract",
            ));
        }
        return Ok(None);
    };
    let contract = check_evm_address(&at("batch_contract"), contract)?;
    let max = n.batch_max.unwrap_or(32);
    if !(2..=256).contains(&max) {
        return Err(invalid(at("batch_max"), "must be between 2 and 256"));
    }
    let window_ms = n.batch_window_ms.unwrap_or(0);
    if window_ms > 10_000 {
        return Err(invalid(
            at("batch_window_ms"),
            "must be at most 10000 (a payer waits this long)",
        ));
    }
    Ok(Some(BatchSettings {
        contract,
        max: max as usize,
        window: std::time::Duration::from_millis(window_ms),
    }))
}

fn default_network() -> RawNetwork {
    RawNetwork {
        network: "eip155:84532".into(),
        ..RawNetwork::default()
    }
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let listen_s = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen = listen_s.parse().map_err(|_| {
        invalid(
            "listen",
            format!("`{listen_s}` is not an address like 127.0.0.1:8402"),
        )
    })?;
    let public_url = raw
        .public_url
        .map(|u| check_http_url("public_url", &u))
        .transpose()?;
    let upstream = raw
        .upstream
        .map(|u| check_http_url("upstream", &u))
        .transpose()?;
    let redis_url = raw
        .redis_url
        .map(|u| secret_url("redis_url", u, &["redis://", "rediss://", "unix://"]))
        .transpose()?;
    let database_url = raw
        .database_url
        .map(|u| {
            secret_url(
                "database_url",
                u,
                &["postgres://", "postgresql://", "sqlite:"],
            )
        })
        .transpose()?;

    let key_hex = match (raw.fingerprint_key, raw.fingerprint_key_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "fingerprint_key",
                "set fingerprint_key or fingerprint_key_file, not both",
            ));
        }
        (Some(k), None) => Some(k),
        (None, Some(path)) => Some(std::fs::read_to_string(&path).map_err(|e| {
            invalid(
                "fingerprint_key_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?),
        (None, None) => None,
    };
    let (fingerprint_key, fingerprint_key_configured) = match key_hex {
        Some(hex) => (
            FingerprintKey::from_hex(&hex).map_err(|m| invalid("fingerprint_key", m))?,
            true,
        ),
        // Instances sharing Redis must hash alike, or one instance's quotes are invisible to
        // the others: a shared store without a shared key is a configuration error.
        None if redis_url.is_some() => {
            return Err(invalid(
                "fingerprint_key",
                "required when redis_url is set (every instance sharing Redis must use the same key); \
                 generate one with `openssl rand -hex 32`",
            ));
        }
        None => (FingerprintKey::random(), false),
    };

    let quote_ttl_seconds = raw.quotes.ttl_seconds.unwrap_or(300);
    if !(10..=86_400).contains(&quote_ttl_seconds) {
        return Err(invalid(
            "quotes.ttl_seconds",
            "must be between 10 and 86400",
        ));
    }
    let memory_quote_capacity = raw.quotes.memory_capacity.unwrap_or(100_000);
    if memory_quote_capacity == 0 {
        return Err(invalid("quotes.memory_capacity", "must be at least 1"));
    }
    let local_quote_cache = raw.quotes.local_cache_capacity.unwrap_or(10_000);
    if local_quote_cache == 0 {
        return Err(invalid("quotes.local_cache_capacity", "must be at least 1"));
    }
    let max_body_bytes = raw.max_body_bytes.unwrap_or(64 * 1024);
    if !(1024..=16 * 1024 * 1024).contains(&max_body_bytes) {
        return Err(invalid(
            "max_body_bytes",
            "must be between 1024 and 16777216",
        ));
    }
    let max_price = match raw.pricing.max_price {
        Some(s) => {
            UsdMicros(parse_usd(&s).map_err(|e| invalid("pricing.max_price", e.to_string()))?)
        }
        None => UsdMicros(10_000_000),
    };
    if max_price == UsdMicros::ZERO {
        return Err(invalid("pricing.max_price", "must be above zero"));
    }

    let raw_networks = if raw.networks.is_empty() {
        vec![default_network()]
    } else {
        raw.networks
    };
    let mut networks = Vec::with_capacity(raw_networks.len());
    for (i, n) in raw_networks.into_iter().enumerate() {
        let terms = network_terms(i, n, quote_ttl_seconds)?;
        // A network may be listed once per asset (several tokens accepted there); its payments
        // are settled one way, so every listing must agree on how.
        for t in networks
            .iter()
            .filter(|t: &&NetworkConfig| t.terms.network == terms.terms.network)
        {
            if t.terms.asset.eq_ignore_ascii_case(&terms.terms.asset) {
                return Err(invalid(
                    format!("networks[{i}]"),
                    format!(
                        "{} {} is listed twice",
                        terms.terms.network, terms.terms.asset
                    ),
                ));
            }
            if t.settlement != terms.settlement {
                return Err(invalid(
                    format!("networks[{i}].settlement"),
                    format!("differs from an earlier listing of {}", terms.terms.network),
                ));
            }
        }
        networks.push(terms);
    }

    let mut topup = Vec::with_capacity(raw.topup.len());
    for (i, t) in raw.topup.into_iter().enumerate() {
        let network = Network::parse_any(t.network())
            .map_err(|e| invalid(format!("topup[{i}].network"), e.to_string()))?;
        let listed = networks.iter().find(|n| n.terms.network == network);
        let Some(listed) = listed else {
            return Err(invalid(
                format!("topup[{i}].network"),
                format!("{network} is not among `networks`: top-ups are paid and settled there"),
            ));
        };
        let t = t
            .build(i, Some(&listed.terms.pay_to))
            .map_err(|(at, msg)| invalid(at, msg))?;
        if topup
            .iter()
            .any(|o: &crate::topup::config::TopupNetwork| o.network == t.network)
        {
            return Err(invalid(format!("topup[{i}].network"), "listed twice"));
        }
        topup.push(t);
    }

    let p = raw.payments;
    let payments = PaymentsConfig {
        max_header_bytes: p.max_header_bytes.unwrap_or(16 * 1024),
        rpc_timeout_ms: p.rpc_timeout_ms.unwrap_or(10_000),
        receipt_timeout_seconds: p.receipt_timeout_seconds.unwrap_or(120),
        receipt_poll_ms: p.receipt_poll_ms.unwrap_or(500).clamp(10, 60_000),
        reconcile_after_seconds: p.reconcile_after_seconds.unwrap_or(300),
        reconcile_interval_seconds: p.reconcile_interval_seconds.unwrap_or(30).max(1),
        stored_answer_max_bytes: p
            .stored_answer_max_bytes
            .unwrap_or(crate::pricing::DEFAULT_STORED_ANSWER_BYTES),
        payment_id_ttl_seconds: p.payment_id_ttl_seconds.unwrap_or(24 * 3600).max(1),
    };
    if payments.stored_answer_max_bytes > 16 << 20 {
        return Err(invalid(
            "payments.stored_answer_max_bytes",
            "must be at most 16 MiB",
        ));
    }
    if !(1024..=64 * 1024).contains(&payments.max_header_bytes) {
        return Err(invalid(
            "payments.max_header_bytes",
            "must be between 1024 and 65536",
        ));
    }

    let backtest = backtest_terms(&raw.backtest)?;
    let server = server_limits(&raw.server, payments.max_header_bytes)?;

    Ok(Config {
        listen,
        public_url,
        upstream,
        upstream_timeout_ms: raw.upstream_timeout_ms.unwrap_or(30_000),
        rules_dir: raw
            .rules_dir
            .unwrap_or_else(|| PathBuf::from("pricing-rules")),
        redis_url,
        redis_prefix: raw.redis_prefix.unwrap_or_else(|| "tariff:".into()),
        database_url,
        fingerprint_key: Secret::new(fingerprint_key),
        admin_token: match raw.admin_token {
            Some(t) if t.len() < 32 => {
                return Err(invalid("admin_token", "must be at least 32 characters"));
            }
            t => t.map(Secret::new),
        },
        fingerprint_key_configured,
        unpriced: raw.unpriced.unwrap_or(UnpricedPolicy::Deny),
        max_body_bytes,
        quote_ttl_seconds,
        memory_quote_capacity,
        local_quote_cache,
        max_price,
        signups_per_minute: raw.signups_per_minute.unwrap_or(60),
        rules_reload_ms: raw.pricing.reload_ms.unwrap_or(1000).max(100),
        networks,
        payments,
        topup,
        aggregates: raw.aggregates.unwrap_or(true),
        extension_schemas: raw.extension_schemas.unwrap_or(true),
        backtest,
        server,
    })
}

fn server_limits(r: &RawServer, payment_header: usize) -> Result<ServerLimits, ConfigError> {
    let d = ServerLimits::default();
    let ms = |v: Option<u64>, d: Duration, name: &str| match v {
        None => Ok(d),
        Some(v) if (100..=600_000).contains(&v) => Ok(Duration::from_millis(v)),
        Some(_) => Err(invalid(name, "must be between 100 and 600000")),
    };
    let l = ServerLimits {
        max_connections: r.max_connections.unwrap_or(d.max_connections),
        header_read_timeout: ms(
            r.header_read_timeout_ms,
            d.header_read_timeout,
            "server.header_read_timeout_ms",
        )?,
        body_read_timeout: ms(
            r.body_read_timeout_ms,
            d.body_read_timeout,
            "server.body_read_timeout_ms",
        )?,
        max_headers: r.max_headers.unwrap_or(d.max_headers),
        max_header_bytes: r.max_header_bytes.unwrap_or(d.max_header_bytes),
    };
    if !(1..=1_000_000).contains(&l.max_connections) {
        return Err(invalid(
            "server.max_connections",
            "must be between 1 and 1000000",
        ));
    }
    if !(8..=1024).contains(&l.max_headers) {
        return Err(invalid("server.max_headers", "must be between 8 and 1024"));
    }
    // The payment header must fit in a request head, with room for the rest of it.
    let least = (payment_header + 4096).max(8192);
    if !(least..=1 << 20).contains(&l.max_header_bytes) {
        return Err(invalid(
            "server.max_header_bytes",
            format!("must be between {least} (payments.max_header_bytes + 4096) and 1048576"),
        ));
    }
    Ok(l)
}

fn backtest_terms(b: &RawBacktest) -> Result<BacktestConfig, ConfigError> {
    let d = BacktestConfig::default();
    let c = BacktestConfig {
        record: b.record.unwrap_or(d.record),
        retention_days: b.retention_days.unwrap_or(d.retention_days),
        max_input_bytes: b.max_input_bytes.unwrap_or(d.max_input_bytes),
        max_rows: b.max_rows.unwrap_or(d.max_rows),
    };
    if !(1..=400).contains(&c.retention_days) {
        return Err(invalid(
            "backtest.retention_days",
            "must be between 1 and 400",
        ));
    }
    if !(64..=1 << 20).contains(&c.max_input_bytes) {
        return Err(invalid(
            "backtest.max_input_bytes",
            "must be between 64 and 1048576",
        ));
    }
    if !(1..=100_000_000).contains(&c.max_rows) {
        return Err(invalid(
            "backtest.max_rows",
            "must be between 1 and 100000000",
        ));
    }
    Ok(c)
}

fn network_terms(i: usize, n: RawNetwork, quote_ttl: u64) -> Result<NetworkConfig, ConfigError> {
    let at = |field: &str| format!("networks[{i}].{field}");
    let network =
        Network::parse_any(&n.network).map_err(|e| invalid(at("network"), e.to_string()))?;
    let settlement = settlement(&at, &n)?;
    if network.chain_id().is_none() {
        return Err(invalid(
            at("network"),
            "only EVM (eip155) networks are supported",
        ));
    }
    let transfer_method = match n.transfer_method.as_deref() {
        None | Some("eip3009") => TransferMethod::Eip3009,
        Some("permit2") => TransferMethod::Permit2,
        Some(other) => {
            return Err(invalid(
                at("transfer_method"),
                format!("`{other}` is not `eip3009` or `permit2`"),
            ));
        }
    };
    let known = assets::usdc_for(&network);
    let asset = match n.asset.or_else(|| known.map(|k| k.address.to_string())) {
        Some(a) => check_evm_address(&at("asset"), &a)?,
        None => {
            return Err(invalid(
                at("asset"),
                format!("required: no known USDC on {network}"),
            ));
        }
    };
    // A custom asset must bring its own EIP-712 domain and decimals: defaults from the known
    // USDC would silently produce signatures the token rejects.
    let known_same_asset = known.filter(|k| k.address.eq_ignore_ascii_case(&asset));
    // Permit2 signs over Permit2's own domain: the token's name and version are optional.
    let optional = transfer_method == TransferMethod::Permit2;
    let need = |v: Option<String>, field: &str, default: Option<&'static str>| {
        let v = v.or(default.map(str::to_string));
        if optional {
            return Ok(v.unwrap_or_default());
        }
        v.ok_or_else(|| {
            invalid(
                at(field),
                "required for an asset that is not the network's known USDC",
            )
        })
    };
    let eip712_name = need(
        n.eip712_name,
        "eip712_name",
        known_same_asset.map(|k| k.eip712_name),
    )?;
    let eip712_version = need(
        n.eip712_version,
        "eip712_version",
        known_same_asset.map(|k| k.eip712_version),
    )?;
    let decimals = match n.decimals.or(known_same_asset.map(|k| k.decimals)) {
        Some(d) if d <= 36 => d,
        Some(_) => return Err(invalid(at("decimals"), "must be at most 36")),
        None => {
            return Err(invalid(
                at("decimals"),
                "required for an asset that is not the network's known USDC",
            ));
        }
    };
    let pay_to = check_evm_address(&at("pay_to"), n.pay_to.as_deref().unwrap_or(DEMO_PAY_TO))?;
    if pay_to == "0x0000000000000000000000000000000000000000" {
        return Err(invalid(
            at("pay_to"),
            "the zero address cannot receive payments",
        ));
    }
    let max_timeout_seconds = n.max_timeout_seconds.unwrap_or(quote_ttl);
    if max_timeout_seconds == 0 || max_timeout_seconds > quote_ttl {
        // The client signs validBefore = now + maxTimeoutSeconds; a quote that dies before its
        // authorization would turn valid payments into "unknown quote".
        return Err(invalid(
            at("max_timeout_seconds"),
            format!("must be between 1 and the quote lifetime ({quote_ttl} s)"),
        ));
    }
    Ok(NetworkConfig {
        terms: PaymentTerms {
            network,
            asset,
            decimals,
            eip712_name,
            eip712_version,
            pay_to,
            max_timeout_seconds,
            transfer_method,
            upto_facilitator: None,
        },
        settlement,
    })
}

fn settlement(at: &dyn Fn(&str) -> String, n: &RawNetwork) -> Result<Settlement, ConfigError> {
    let rpc_url = n
        .rpc_url
        .clone()
        .map(|u| check_http_url(&at("rpc_url"), &u).map(Secret::new))
        .transpose()?;
    let gas_key = match (&n.gas_key, &n.gas_key_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                at("gas_key"),
                "set gas_key or gas_key_file, not both",
            ));
        }
        (Some(k), None) => Some(k.trim().to_string()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    invalid(
                        at("gas_key_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    if let Some(k) = &gas_key {
        let hex = k.strip_prefix("0x").unwrap_or(k);
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            // The value itself is never echoed: it is a private key.
            return Err(invalid(at("gas_key"), "must be a 32-byte hex private key"));
        }
    }
    let mode = match n.settlement.as_deref() {
        Some(m) => m.to_string(),
        None if n.facilitator_url.is_some() => "facilitator".into(),
        None if gas_key.is_some() => "local".into(),
        None => "none".into(),
    };
    if mode != "local"
        && (n.batch_contract.is_some() || n.batch_max.is_some() || n.batch_window_ms.is_some())
    {
        return Err(invalid(
            at("batch_contract"),
            "batched settlement needs local settlement (a facilitator settles on its own)",
        ));
    }
    match mode.as_str() {
        "none" => Ok(Settlement::None),
        "local" => {
            let rpc_url =
                rpc_url.ok_or_else(|| invalid(at("rpc_url"), "required for local settlement"))?;
            let gas_key = gas_key.ok_or_else(|| {
                invalid(
                    at("gas_key"),
                    "required for local settlement (or gas_key_file / TARIFF_GAS_KEY)",
                )
            })?;
            let confirmations = n.confirmations.unwrap_or(1);
            if !(1..=64).contains(&confirmations) {
                return Err(invalid(at("confirmations"), "must be between 1 and 64"));
            }
            Ok(Settlement::Local {
                rpc_url,
                gas_key: Secret::new(gas_key),
                confirmations,
                batch: batch_settings(n, at)?,
            })
        }
        "facilitator" => {
            let url = n.facilitator_url.as_deref().ok_or_else(|| {
                invalid(at("facilitator_url"), "required for facilitator settlement")
            })?;
            let url = check_http_url(&at("facilitator_url"), url)?;
            let timeout_ms = n.facilitator_timeout_ms.unwrap_or(30_000);
            if !(100..=300_000).contains(&timeout_ms) {
                return Err(invalid(
                    at("facilitator_timeout_ms"),
                    "must be between 100 and 300000",
                ));
            }
            let headers = n
                .facilitator_headers
                .iter()
                .map(|(k, v)| {
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                        invalid(
                            at("facilitator_headers"),
                            format!("`{k}` is not a header name"),
                        )
                    })?;
                    reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                        invalid(
                            at("facilitator_headers"),
                            format!("the value of `{k}` is not a valid header value"),
                        )
                    })?;
                    Ok((k.clone(), Secret::new(v.clone())))
                })
                .collect::<Result<_, ConfigError>>()?;
            Ok(Settlement::Facilitator {
                url,
                headers,
                timeout_ms,
                rpc_url,
            })
        }
        other => Err(invalid(
            at("settlement"),
            format!("`{other}` is not one of local, facilitator, none"),
        )),
    }
}

/// A URL that may carry credentials: kept as a secret, checked only for its scheme (the driver
/// parses the rest and its errors name the problem).
fn secret_url(setting: &str, url: String, schemes: &[&str]) -> Result<Secret<String>, ConfigError> {
    if schemes.iter().any(|s| url.starts_with(s)) {
        Ok(Secret::new(url))
    } else {
        Err(invalid(
            setting,
            format!("must start with {}", schemes.join(", ")),
        ))
    }
}

fn check_http_url(setting: &str, u: &str) -> Result<String, ConfigError> {
    let trimmed = u.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| invalid(setting, format!("`{u}` must be an http:// or https:// URL")))?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(invalid(setting, format!("`{u}` has no host")));
    }
    Ok(trimmed.to_string())
}

fn check_evm_address(setting: &str, a: &str) -> Result<String, ConfigError> {
    let ok = a.len() == 42 && a.starts_with("0x") && a[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(a.to_string())
    } else {
        Err(invalid(
            setting,
            format!("`{a}` is not an EVM address (0x + 40 hex characters)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(None, &move |k| map.get(k).cloned())
    }

    fn err(vars: &[(&str, &str)]) -> String {
        load_env(vars).unwrap_err().to_string()
    }

    #[test]
    fn settlement_is_inferred_validated_and_its_secrets_never_echoed() {
        let key = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
        assert_eq!(
            load_env(&[]).unwrap().networks[0].settlement,
            Settlement::None
        );
        let local = load_env(&[
            ("TARIFF_RPC_URL", "http://127.0.0.1:8545"),
            ("TARIFF_GAS_KEY", key),
        ])
        .unwrap();
        match &local.networks[0].settlement {
            Settlement::Local {
                confirmations,
                gas_key,
                ..
            } => {
                assert_eq!(*confirmations, 1);
                assert_eq!(gas_key.expose(), key);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !format!("{local:?}").contains(&key[2..]),
            "the gas key never prints"
        );
        let fac = load_env(&[("TARIFF_FACILITATOR_URL", "https://x402.org/facilitator")]).unwrap();
        assert!(matches!(
            fac.networks[0].settlement,
            Settlement::Facilitator { rpc_url: None, .. }
        ));

        let e = err(&[("TARIFF_GAS_KEY", key)]);
        assert!(
            e.contains("networks[0].rpc_url") && e.contains("local"),
            "{e}"
        );
        let e = err(&[
            ("TARIFF_RPC_URL", "http://127.0.0.1:8545"),
            ("TARIFF_GAS_KEY", "0xnot-a-key-but-a-secret"),
        ]);
        assert!(
            e.contains("networks[0].gas_key") && !e.contains("not-a-key"),
            "{e}"
        );
        let e = err(&[("TARIFF_SETTLEMENT", "facilitator")]);
        assert!(e.contains("networks[0].facilitator_url"), "{e}");
        let e = err(&[("TARIFF_SETTLEMENT", "magic")]);
        assert!(
            e.contains("networks[0].settlement") && e.contains("magic"),
            "{e}"
        );
        let e = err(&[("TARIFF_RPC_URL", "ftp://node")]);
        assert!(e.contains("networks[0].rpc_url"), "{e}");
    }

    #[test]
    fn defaults_serve_base_sepolia_usdc_in_memory() {
        let c = load_env(&[]).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.redis_url.is_none() && c.upstream.is_none());
        assert!(!c.fingerprint_key_configured);
        let n = &c.networks[0].terms;
        assert_eq!(n.network.to_string(), "eip155:84532");
        assert_eq!(n.asset, "0x036CbD53842c5426634e7929541eC2318f3dCF7e");
        assert_eq!(
            (
                n.eip712_name.as_str(),
                n.eip712_version.as_str(),
                n.decimals
            ),
            ("USDC", "2", 6)
        );
        assert_eq!(n.max_timeout_seconds, 300);
        assert_eq!(c.unpriced, UnpricedPolicy::Deny);
    }

    #[test]
    fn env_selects_base_mainnet_by_v1_name() {
        let c = load_env(&[
            (
                "TARIFF_ADMIN_TOKEN",
                "bearer token of the admin endpoints (disabled without it)",
            ),
            ("TARIFF_NETWORK", "base"),
            (
                "TARIFF_PAY_TO",
                "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
            ),
        ])
        .unwrap();
        let n = &c.networks[0].terms;
        assert_eq!(n.network.to_string(), "eip155:8453");
        assert_eq!(n.eip712_name, "USD Coin");
        assert_eq!(n.pay_to, "0x209693Bc6afc0C5328bA36FaF03C514EF312287C");
    }

    #[test]
    fn bad_values_are_named() {
        assert!(err(&[("TARIFF_LISTEN", "nope")]).starts_with("listen:"));
        assert!(err(&[("TARIFF_UPSTREAM", "ftp://x")]).starts_with("upstream:"));
        assert!(err(&[("TARIFF_REDIS_URL", "redis://127.0.0.1")]).contains("fingerprint_key"));
        assert!(err(&[("TARIFF_FINGERPRINT_KEY", "abcd")]).contains("32 bytes"));
        assert!(err(&[("TARIFF_PAY_TO", "0x123")]).contains("pay_to"));
        assert!(err(&[("TARIFF_NETWORK", "eip155:31337")]).contains("networks[0].asset"));
        assert!(err(&[("TARIFF_NETWORK", "not a network")]).starts_with("networks[0].network"));
        assert!(err(&[("TARIFF_DATABASE_URL", "mysql://x")]).starts_with("database_url"));
    }

    #[test]
    fn file_with_unknown_field_is_refused_with_its_path() {
        let dir = std::env::temp_dir().join(format!("tariff-cfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tariff.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9\"\nlisten_port = 3\n").unwrap();
        let e = Config::load(Some(&path), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tariff.toml") && e.contains("listen_port"),
            "{e}"
        );
    }

    #[test]
    fn custom_chain_needs_its_own_token_terms() {
        let dir = std::env::temp_dir().join(format!("tariff-cfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tariff.toml");
        std::fs::write(
            &path,
            r#"
            [quotes]
            ttl_seconds = 120
            [[networks]]
            network = "eip155:31337"
            asset = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
            decimals = 6
            eip712_name = "USDC"
            eip712_version = "2"
            pay_to = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
            "#,
        )
        .unwrap();
        let c = Config::load(Some(&path), &|_| None).unwrap();
        assert_eq!(c.networks[0].terms.network.chain_id(), Some(31337));
        assert_eq!(c.networks[0].terms.max_timeout_seconds, 120);
        std::fs::write(&path, "[[networks]]\nnetwork = \"eip155:31337\"\nasset = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n").unwrap();
        let e = Config::load(Some(&path), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("eip712_name"), "{e}");
    }

    #[test]
    fn the_example_config_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tariff.example.toml");
        let c = Config::load(Some(&path), &|_| None).unwrap();
        assert_eq!(c.networks.len(), 3);
        assert_eq!(c.networks[0].terms.eip712_name, "USD Coin");
        assert_eq!(c.networks[1].terms.transfer_method, TransferMethod::Permit2);
        assert_eq!(c.networks[1].terms.decimals, 18);
        assert_eq!(c.networks[2].terms.max_timeout_seconds, 120);
        assert_eq!(c.upstream.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.topup.len(), 1);
        let dai: alloy::primitives::Address = "0x50c5725949A6F0c72E6C4a641F24049A917DB0Cb"
            .parse()
            .unwrap();
        assert!(c.topup[0].permits(dai) && c.topup[0].offer == vec![dai]);
        assert_eq!(c.topup[0].policy.max_impact_bps, 100);
        assert_eq!(c.backtest, BacktestConfig::default());
        assert_eq!(c.server, ServerLimits::default());
    }

    #[test]
    fn server_limits_have_defaults_and_bounds() {
        assert_eq!(from_toml("").unwrap().server, ServerLimits::default());
        let c = from_toml("[server]\nmax_connections = 8\nheader_read_timeout_ms = 500\n").unwrap();
        assert_eq!(c.server.max_connections, 8);
        assert_eq!(c.server.header_read_timeout, Duration::from_millis(500));
        for (bad, setting) in [
            ("max_connections = 0", "server.max_connections"),
            (
                "header_read_timeout_ms = 5",
                "server.header_read_timeout_ms",
            ),
            (
                "body_read_timeout_ms = 700000",
                "server.body_read_timeout_ms",
            ),
            ("max_headers = 2", "server.max_headers"),
            // Too small for the 16 KiB payment header.
            ("max_header_bytes = 16384", "server.max_header_bytes"),
        ] {
            let e = from_toml(&format!("[server]\n{bad}\n")).unwrap_err();
            assert!(e.contains(setting), "{bad}: {e}");
        }
    }

    #[test]
    fn backtest_recording_is_off_by_default_and_bounded() {
        let c = from_toml("").unwrap();
        assert!(!c.backtest.record);
        let c =
            from_toml("[backtest]\nrecord = true\nretention_days = 3\nmax_rows = 10\n").unwrap();
        assert_eq!(
            c.backtest,
            BacktestConfig {
                record: true,
                retention_days: 3,
                max_rows: 10,
                ..BacktestConfig::default()
            }
        );
        for (bad, setting) in [
            ("retention_days = 0", "backtest.retention_days"),
            ("retention_days = 401", "backtest.retention_days"),
            ("max_input_bytes = 10", "backtest.max_input_bytes"),
            ("max_rows = 0", "backtest.max_rows"),
            ("keep = true", "keep"),
        ] {
            let e = from_toml(&format!("[backtest]\n{bad}\n")).unwrap_err();
            assert!(e.contains(setting), "{bad}: {e}");
        }
    }

    fn from_toml(text: &str) -> Result<Config, String> {
        let dir = std::env::temp_dir().join(format!("tariff-cfg-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.toml");
        std::fs::write(&path, text).unwrap();
        let out = Config::load(Some(&path), &|_| None).map_err(|e| e.to_string());
        std::fs::remove_dir_all(&dir).unwrap();
        out
    }

    #[test]
    fn batched_settlement_is_opt_in_local_only_and_bounded() {
        let key = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
        let local = |extra: &str| {
            from_toml(&format!(
                "[[networks]]\nnetwork = \"base-sepolia\"\nrpc_url = \"http://127.0.0.1:8545\"\n\
                 gas_key = \"{key}\"\n{extra}"
            ))
        };
        let batch = |c: Result<Config, String>| match &c.unwrap().networks[0].settlement {
            Settlement::Local { batch, .. } => batch.clone(),
            other => panic!("not local: {other:?}"),
        };
        assert_eq!(batch(local("")), None, "off unless a contract is named");
        let multicall = "0xcA11bde05977b3631167028862bE2a173976CA11";
        assert_eq!(
            batch(local(&format!("batch_contract = \"{multicall}\"\n"))),
            Some(BatchSettings {
                contract: multicall.into(),
                max: 32,
                window: std::time::Duration::ZERO,
            })
        );
        assert_eq!(
            batch(local(&format!(
                "batch_contract = \"{multicall}\"\nbatch_max = 8\nbatch_window_ms = 250\n"
            ))),
            Some(BatchSettings {
                contract: multicall.into(),
                max: 8,
                window: std::time::Duration::from_millis(250),
            })
        );
        for (extra, says) in [
            ("batch_contract = \"0x1234\"\n", "batch_contract"),
            ("batch_max = 8\n", "need a batch_contract"),
            (
                &format!("batch_contract = \"{multicall}\"\nbatch_max = 1\n"),
                "batch_max",
            ),
            (
                &format!("batch_contract = \"{multicall}\"\nbatch_window_ms = 60000\n"),
                "batch_window_ms",
            ),
        ] {
            let e = local(extra).unwrap_err();
            assert!(e.contains(says), "{extra}: {e}");
        }
        // A facilitator settles on its own: batching there is a mistake, not a no-op.
        let e = from_toml(&format!(
            "[[networks]]\nnetwork = \"base-sepolia\"\nfacilitator_url = \"https://f.example\"\n\
             batch_contract = \"{multicall}\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("needs local settlement"), "{e}");
        // The environment names the contract for every network.
        let env = load_env(&[
            ("TARIFF_RPC_URL", "http://127.0.0.1:8545"),
            ("TARIFF_GAS_KEY", key),
            ("TARIFF_BATCH_CONTRACT", multicall),
        ])
        .unwrap();
        assert!(matches!(
            &env.networks[0].settlement,
            Settlement::Local { batch: Some(b), .. } if b.contract == multicall && b.max == 32
        ));
    }

    #[test]
    fn a_network_lists_several_assets_each_once_and_settled_alike() {
        let usdc = "[[networks]]\nnetwork = \"base-sepolia\"\n";
        let plain = |asset: &str, extra: &str| {
            format!(
                "[[networks]]\nnetwork = \"base-sepolia\"\nasset = \"{asset}\"\ndecimals = 18\ntransfer_method = \"permit2\"\n{extra}"
            )
        };
        let token = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
        let c = from_toml(&format!("{usdc}{}", plain(token, ""))).unwrap();
        assert_eq!(c.networks.len(), 2);
        // Permit2 needs no EIP-712 domain of the token; EIP-3009 still does.
        assert_eq!(c.networks[1].terms.eip712_name, "");
        let e = from_toml(&plain(token, "").replace("permit2", "eip3009")).unwrap_err();
        assert!(e.contains("networks[0].eip712_name"), "{e}");
        let e = from_toml(&plain(token, "").replace("permit2", "erc7710")).unwrap_err();
        assert!(e.contains("networks[0].transfer_method"), "{e}");
        let e = from_toml(&format!(
            "{}{}",
            plain(token, ""),
            plain(&token.to_lowercase(), "")
        ))
        .unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let e = from_toml(&format!("{usdc}{}", plain(token, "settlement = \"local\"\nrpc_url = \"http://127.0.0.1:8545\"\ngas_key = \"0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a\"\n"))).unwrap_err();
        assert!(
            e.contains("networks[1].settlement") && e.contains("differs"),
            "{e}"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let c = load_env(&[
            ("TARIFF_FINGERPRINT_KEY", &"ab".repeat(32)),
            ("TARIFF_REDIS_URL", "redis://:hunter2@h:6379"),
        ])
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains(&"ab".repeat(32)),
            "{dbg}"
        );
    }

    #[test]
    fn the_readme_documents_exactly_the_variables_that_are_read() {
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(&env_vars_markdown()),
            "README's variable table differs from config::ENV_VARS; paste:\n{}",
            env_vars_markdown()
        );
        // Every variable in the table is honoured: set alone, each changes the loaded config
        // or is refused with an error naming it (the debug assertion in `env_var` catches a
        // variable read but not listed).
        let base = format!("{:?}", load_env(&[]).unwrap());
        assert_eq!(base, format!("{:?}", load_env(&[]).unwrap()));
        for v in ENV_VARS {
            let changed = match load_env(&[(v.name, "x")]) {
                Ok(c) => format!("{c:?}") != base,
                Err(e) => !e.to_string().is_empty(),
            };
            assert!(changed, "{} seems ignored", v.name);
        }
    }
}
