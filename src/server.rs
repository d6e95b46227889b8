//! Building the application state from a config and running the server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use std::collections::HashMap;

use crate::accounts::Accounts;
use crate::config::{Config, DEMO_PAY_TO, NetworkConfig, Secret, Settlement};
use crate::db::pricing_inputs::InputLog;
use crate::db::{Db, QuoteStats};
use crate::http::{AppState, StateInner, Upstream, app};
use crate::ledger::Ledger;
use crate::payment::Payments;
use crate::payment::chain::{Chain, Relayer};
use crate::payment::facilitator::Facilitator;
use crate::payment::settler::Settler;
use crate::payment::settler::batch::{BatchPolicy, Batcher};
use crate::payment::settler::facilitator::FacilitatorSettler;
use crate::payment::settler::local::LocalSettler;
use crate::pricing::expr::ExprEnv;
use crate::pricing::{LoadOptions, RulesHandle};
use crate::quote::{AnyQuoteStore, MemoryQuoteStore, QuoteEngine, RedisQuoteStore};
use crate::time::Clock;

/// Options that are not part of the config (test hooks).
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub clock: Clock,
    /// Where the embedded SQLite lives when no database URL is configured.
    pub data_dir: Option<PathBuf>,
    /// Skip the database entirely (previews and tests that do not need it).
    pub without_db: bool,
}

pub fn load_rules(config: &Config) -> Result<RulesHandle, crate::pricing::RuleErrors> {
    RulesHandle::load(
        &config.rules_dir,
        ExprEnv::new(),
        LoadOptions {
            max_price: config.max_price,
            max_stored_answer_bytes: config.payments.stored_answer_max_bytes,
            extension_schemas: config.extension_schemas,
        },
    )
}

/// Connects everything the config names. Fails (with the reason) rather than starting half-way.
pub async fn build_state(config: Config, opts: BuildOptions) -> anyhow::Result<AppState> {
    let rules =
        load_rules(&config).map_err(|e| anyhow::anyhow!("pricing rules are invalid:\n{e}"))?;
    let store = match &config.redis_url {
        Some(url) => AnyQuoteStore::Redis(
            RedisQuoteStore::connect(url.expose(), &config.redis_prefix)
                .await
                .context("connecting to Redis (TARIFF_REDIS_URL)")?,
        ),
        None => AnyQuoteStore::Memory(MemoryQuoteStore::new(
            config.memory_quote_capacity,
            opts.clock.clone(),
        )),
    };
    let db = if opts.without_db {
        None
    } else {
        let db = match &config.database_url {
            Some(url) => Db::connect(url.expose())
                .await
                .context("connecting to the database (TARIFF_DATABASE_URL)")?,
            None => {
                let dir = opts
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(".tariff"));
                Db::embedded(&dir)
                    .await
                    .context("opening the embedded SQLite database")?
            }
        };
        Some(db)
    };
    let quote_stats = db
        .clone()
        .filter(|_| config.aggregates)
        .map(QuoteStats::new);
    let pricing_inputs = db
        .clone()
        .filter(|_| config.backtest.record)
        .map(|db| InputLog::new(db, config.backtest));
    let accounts = match db.clone() {
        Some(db) => {
            let accounts = Accounts::new(
                db.clone(),
                Ledger::new(db, opts.clock.clone()),
                opts.clock.clone(),
            );
            accounts
                .ensure_system_accounts()
                .await
                .context("creating the ledger's system accounts")?;
            Some(accounts)
        }
        None => None,
    };
    let payments = match (&db, &accounts) {
        (Some(db), Some(accounts)) => Some(Arc::new(
            build_payments(
                &config,
                db.clone(),
                accounts.ledger().clone(),
                opts.clock.clone(),
            )
            .await?,
        )),
        _ => None,
    };
    let upstream = match &config.upstream {
        Some(base) => Upstream::proxy(base, Duration::from_millis(config.upstream_timeout_ms))?,
        None => Upstream::Demo,
    };
    let http_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let signups_per_minute = config.signups_per_minute;
    let opts_clock = opts.clock.clone();
    // `upto` offers name who may settle them, which only the built settlers know.
    let terms = config
        .networks
        .iter()
        .map(|n| {
            let mut t = n.terms.clone();
            t.upto_facilitator = payments
                .as_ref()
                .and_then(|p| p.settler(&t.network).ok()?.upto_facilitator())
                .map(|a| a.to_checksum(None));
            t
        })
        .collect();
    let quotes = QuoteEngine::new(
        store,
        terms,
        config.quote_ttl_seconds,
        opts.clock,
        config.local_quote_cache,
    );
    let mut topup = crate::http::topup::Valuers::new();
    for t in &config.topup {
        // Top-ups read pools and receipts with the network's settlement RPC.
        let chain = payments
            .as_ref()
            .and_then(|p| p.settler(&t.network).ok()?.chain().cloned())
            .with_context(|| {
                format!(
                    "top-ups on {} need a database and an RPC: settle locally, or give the facilitator an rpc_url",
                    t.network
                )
            })?;
        topup.insert(
            t.network.clone(),
            std::sync::Arc::new(crate::http::topup::Served::new(
                crate::topup::route::Valuer::new(t.clone(), chain),
                opts_clock.clone(),
            )),
        );
    }
    Ok(AppState::new(StateInner {
        config: Arc::new(config),
        rules,
        quotes,
        upstream,
        http_client,
        quote_stats,
        pricing_inputs,
        accounts,
        payments,
        signups: crate::http::rate_limit::TokenBucket::per_minute(signups_per_minute, opts_clock),
        topup,
        metrics: Default::default(),
        repeats: Default::default(),
        decisions: Default::default(),
    }))
}

/// One settler per network that has settlement configured.
pub async fn build_payments(
    config: &Config,
    db: Db,
    ledger: Ledger,
    clock: Clock,
) -> anyhow::Result<Payments> {
    let timeout = Duration::from_millis(config.payments.rpc_timeout_ms);
    let receipt_timeout = Duration::from_secs(config.payments.receipt_timeout_seconds);
    let mut settlers = HashMap::new();
    for NetworkConfig {
        terms: n,
        settlement,
    } in &config.networks
    {
        if settlers.contains_key(&n.network) {
            // Another asset on a network already set up (config checks they settle alike).
            continue;
        }
        let chain_id = n
            .network
            .chain_id()
            .context("only EVM networks are configured")?;
        let chain = |url: &Secret<String>| -> anyhow::Result<Chain> {
            Chain::connect(url.expose(), chain_id, timeout)
                .map_err(|e| anyhow::anyhow!("{}: {e}", n.network))
        };
        let settler: Box<dyn Settler> = match settlement {
            Settlement::None => continue,
            Settlement::Local {
                rpc_url,
                gas_key,
                confirmations,
                batch,
            } => {
                let chain = chain(rpc_url)?;
                check_chain_id(&chain, &n.network).await?;
                let relayer = Relayer::new(
                    rpc_url.expose(),
                    gas_key.expose(),
                    *confirmations,
                    timeout,
                    receipt_timeout,
                    Duration::from_millis(config.payments.receipt_poll_ms),
                )
                .map_err(|e| anyhow::anyhow!("{}: {e}", n.network))?;
                tracing::info!(network = %n.network, relayer = %relayer.address(), "local settlement");
                let relayer = Arc::new(relayer);
                let batcher = match batch {
                    Some(b) => {
                        let contract = b.contract.parse().map_err(|_| {
                            anyhow::anyhow!("{}: batch_contract is not an address", n.network)
                        })?;
                        check_batch_contract(&chain, contract, &n.network).await?;
                        tracing::info!(network = %n.network, %contract, max = b.max, window_ms = b.window.as_millis() as u64, "batched settlement");
                        Some(Batcher::start(
                            relayer.clone(),
                            chain.clone(),
                            BatchPolicy {
                                contract,
                                max: b.max,
                                window: b.window,
                            },
                        ))
                    }
                    None => None,
                };
                Box::new(LocalSettler {
                    chain,
                    relayer,
                    batcher,
                })
            }
            Settlement::Facilitator {
                url,
                headers,
                timeout_ms,
                rpc_url,
            } => {
                let headers = headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().clone()))
                    .collect();
                let facilitator =
                    Facilitator::new(url, &headers, Duration::from_millis(*timeout_ms))
                        .map_err(|e| anyhow::anyhow!("{}: {e}", n.network))?;
                let chain = match rpc_url {
                    Some(u) => {
                        let c = chain(u)?;
                        check_chain_id(&c, &n.network).await?;
                        Some(c)
                    }
                    None => {
                        tracing::warn!(network = %n.network, "facilitator settlement without rpc_url: payments whose settle call gets no answer cannot be reconciled automatically");
                        None
                    }
                };
                let upto_facilitator = check_supported(&facilitator, &n.network).await;
                tracing::info!(network = %n.network, facilitator = %url, upto = ?upto_facilitator, "facilitator settlement");
                Box::new(FacilitatorSettler {
                    facilitator,
                    chain,
                    upto_facilitator,
                })
            }
        };
        settlers.insert(n.network.clone(), settler);
    }
    Ok(Payments::new(
        db,
        ledger,
        settlers,
        clock,
        config.payments.reconcile_after_seconds * 1000,
    ))
}

/// Warns when the facilitator does not list `exact` on `network` for the protocol versions
/// clients will use (payments would then be refused by it). Not fatal: a facilitator that is
/// briefly down at start-up must not keep the gateway from serving quotes. Returns the signer
/// its v2 `upto` kind names (`extra.facilitatorAddress`), which `upto` offers must carry.
async fn check_supported(
    facilitator: &Facilitator,
    network: &crate::x402::Network,
) -> Option<alloy::primitives::Address> {
    let supported = tokio::time::timeout(Duration::from_secs(5), facilitator.supported()).await;
    let Ok(Ok(supported)) = supported else {
        tracing::warn!(%network, "the facilitator's /supported did not answer at start-up; no `upto` offers on this network");
        return None;
    };
    let mut versions = vec![crate::x402::X402_VERSION_V2];
    if network.v1_name().is_some() {
        versions.push(crate::x402::X402_VERSION_V1);
    }
    for version in versions {
        let listed = supported.kinds.iter().any(|k| {
            k.x402_version == version
                && k.scheme == "exact"
                && k.network_id().is_ok_and(|n| &n == network)
        });
        if !listed {
            tracing::warn!(%network, version, "the facilitator does not list `exact` on this network for this x402 version");
        }
    }
    supported
        .find(crate::x402::X402_VERSION_V2, "upto", network)
        .and_then(|k| k.extra.as_ref()?.get("facilitatorAddress")?.as_str())
        .and_then(|a| a.parse().ok())
}

/// An RPC for the wrong chain would verify against the wrong token state: refuse to start.
/// An unreachable one only warns (payments answer 503 until it is back).
async fn check_chain_id(chain: &Chain, network: &crate::x402::Network) -> anyhow::Result<()> {
    match chain.remote_chain_id().await {
        Ok(id) if id == chain.chain_id => Ok(()),
        Ok(id) => anyhow::bail!(
            "{network}: the RPC serves chain {id}, not {}",
            chain.chain_id
        ),
        Err(e) => {
            tracing::warn!(%network, error = %e, "the chain RPC is unreachable at start-up");
            Ok(())
        }
    }
}

/// A batch contract with no code would take every batch and do nothing (a call to an empty
/// account succeeds): refuse to start rather than find out from payments.
async fn check_batch_contract(
    chain: &Chain,
    contract: alloy::primitives::Address,
    network: &crate::x402::Network,
) -> anyhow::Result<()> {
    match chain.has_code(contract).await {
        Ok(true) => Ok(()),
        Ok(false) => anyhow::bail!("{network}: batch_contract {contract} has no code on chain"),
        Err(e) => {
            tracing::warn!(%network, error = %e, "the batch contract could not be checked at start-up");
            Ok(())
        }
    }
}

/// Runs until Ctrl-C / SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let reload = Duration::from_millis(config.rules_reload_ms);
    warn_about_demo_settings(&config);
    let state = build_state(config, BuildOptions::default()).await?;
    let _watcher = state.rules.spawn_watcher(reload);
    let _sweeper = state.accounts.clone().map(|a| {
        tokio::spawn(async move {
            // Holds of requests whose client went away are released here once they expire.
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                if let Err(e) = a.ledger().sweep_expired_holds().await {
                    tracing::warn!(error = %e, "expired-hold sweep failed; will retry");
                }
            }
        })
    });
    let _reconciler = state.payments.clone().map(|p| {
        let every = Duration::from_secs(state.config.payments.reconcile_interval_seconds);
        tokio::spawn(async move {
            // The first tick fires at once: payments left open by a crash are resolved at start.
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = p.reconcile_once().await {
                    tracing::warn!(error = %e, "payment reconciliation failed; will retry");
                }
            }
        })
    });
    let _stats = state
        .quote_stats
        .as_ref()
        .map(|s| s.spawn_flusher(Duration::from_secs(10)));
    let _inputs = state
        .pricing_inputs
        .as_ref()
        .map(|l| l.spawn_flusher(Duration::from_secs(5), state.quotes.clock.clone()));
    let routes = state.rules.current().routes.len();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(
        %listen,
        routes,
        quote_store = state.quotes.store.backend_name(),
        upstream = if state.config.upstream.is_some() { "proxy" } else { "demo" },
        "tariff serving"
    );
    let state_stats = state.quote_stats.clone();
    let state_inputs = state.pricing_inputs.clone();
    let limits = state.config.server;
    crate::http::serve::serve(listener, app(state), limits, shutdown_signal()).await;
    if let Some(stats) = &state_stats
        && let Err(e) = stats.flush().await
    {
        tracing::warn!(error = %e, "final quote statistics flush failed");
    }
    if let Some(log) = &state_inputs
        && let Err(e) = log.flush().await
    {
        tracing::warn!(error = %e, "final pricing inputs flush failed");
    }
    Ok(())
}

fn warn_about_demo_settings(config: &Config) {
    if config
        .networks
        .iter()
        .any(|n| n.terms.pay_to.eq_ignore_ascii_case(DEMO_PAY_TO))
    {
        tracing::warn!(
            "no pay_to configured: quotes name the demo address {DEMO_PAY_TO}; set TARIFF_PAY_TO before taking payments"
        );
    }
    if !config.fingerprint_key_configured {
        tracing::warn!(
            "no fingerprint key configured: a random one is used, so open quotes do not survive a restart"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
