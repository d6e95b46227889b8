//! The command line: `tariff serve`, `tariff rules check`, `tariff quote`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::money::UsdMicros;
use crate::pricing::expr::ExprEnv;
use crate::pricing::rules::{LoadOptions, load_dir};

#[derive(Parser, Debug)]
#[command(
    name = "tariff",
    version,
    about = "A seller-side x402 gateway: per-request prices, payments and credits",
    long_about = "Tariff puts a per-request, context-dependent price on any HTTP API. \
        Unpaid requests get HTTP 402 with x402 payment requirements (protocol v1 and v2).\n\n\
        Configuration: a TOML file (--config or TARIFF_CONFIG) and the TARIFF_* environment \
        variables listed below."
)]
pub struct Cli {
    /// Config file (TOML); TARIFF_* environment variables override it.
    #[arg(long, global = true, env = "TARIFF_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process arguments; `--help` lists the environment variables from
    /// [`crate::config::ENV_VARS`].
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command()
            .after_long_help(crate::config::env_vars_help())
            .get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (in-memory quotes and an embedded SQLite unless Redis/PostgreSQL are configured).
    Serve,
    /// Work with pricing rule files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Preview the price of a request and the rule that sets it; stores nothing.
    Quote(QuoteArgs),
    /// Inspect and adjust the credits ledger (TARIFF_DATABASE_URL, else the embedded SQLite).
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Inspect on-chain payments and resolve open ones against the chain.
    Payments {
        #[command(subcommand)]
        command: PaymentsCommand,
    },
    /// Top-ups in DEX-liquid tokens (`[[topup]]` in the config).
    Topup {
        #[command(subcommand)]
        command: TopupCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum TopupCommand {
    /// Value a top-up now on the configured pools (what an amount buys, or what credits cost),
    /// printed as JSON; a refusal prints its reason and exits 1.
    Quote {
        /// CAIP-2 network (default: the only one with top-ups configured).
        #[arg(long)]
        network: Option<String>,
        /// Token address.
        #[arg(long)]
        token: String,
        /// Token base units offered.
        #[arg(long, conflicts_with = "credits", required_unless_present = "credits")]
        amount: Option<String>,
        /// Credits wanted, e.g. $5.00.
        #[arg(long)]
        credits: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PaymentsCommand {
    /// The most recent payments, newest first, one JSON object per line, then counts by status.
    List {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// One reconciliation pass now (what the server does periodically); prints its report.
    /// Exit 1 if a payment could not be resolved for an error (it is retried next pass).
    Reconcile,
}

#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Recompute every balance from the transfers and check the sums are zero. Exit 1 if not.
    Check,
    /// Grant credits to an account (a negative amount takes them back), as an adjustment
    /// transfer with a reason. Repeating the same --id changes nothing.
    Grant {
        /// Account id, e.g. agent:0123…
        #[arg(long)]
        account: String,
        /// Micro-dollars (1000000 = $1); negative takes credits back.
        #[arg(long, allow_hyphen_values = true)]
        amount: i64,
        /// Why: every adjustment carries one.
        #[arg(long)]
        reason: String,
        /// Idempotency id of this grant.
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Compile and check every rule file; print each route and its rules. Exit 1 on errors.
    Check {
        /// Rules directory (default: the configured one, else ./pricing-rules).
        dir: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct QuoteArgs {
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Request path, with an optional query string: /search?q=bitcoin+price
    #[arg(long)]
    pub path: String,
    /// JSON request body.
    #[arg(long)]
    pub body: Option<String>,
    /// A request header, `name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Rules directory (default: the configured one).
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let config = Config::load(cli.config.as_deref(), &env_lookup);
    match cli.command {
        Command::Serve => {
            let config = config?;
            crate::server::serve(config).await?;
            Ok(0)
        }
        Command::Rules {
            command: RulesCommand::Check { dir },
        } => {
            let (dir, max_price) = match (&dir, &config) {
                (Some(d), Ok(c)) => (d.clone(), c.max_price),
                (Some(d), Err(_)) => (d.clone(), UsdMicros(10_000_000)),
                (None, Ok(c)) => (c.rules_dir.clone(), c.max_price),
                (None, Err(e)) => anyhow::bail!("{e}"),
            };
            Ok(rules_check(&dir, max_price))
        }
        Command::Quote(args) => {
            let config = config?;
            quote_preview(&config, &args)
        }
        Command::Ledger { command } => ledger_command(config?, command).await,
        Command::Payments { command } => payments_command(config?, command).await,
        Command::Topup { command } => topup_command(config?, command).await,
    }
}

async fn topup_command(config: Config, command: TopupCommand) -> anyhow::Result<i32> {
    use crate::config::Settlement;
    use crate::topup::pools::ReadError;
    let TopupCommand::Quote {
        network,
        token,
        amount,
        credits,
    } = command;
    let net = match &network {
        Some(n) => {
            let n = crate::x402::Network::parse_any(n)?;
            config.topup.iter().find(|t| t.network == n)
        }
        None if config.topup.len() == 1 => config.topup.first(),
        None => anyhow::bail!(
            "name the network (--network): {} have top-ups",
            config.topup.len()
        ),
    }
    .ok_or_else(|| anyhow::anyhow!("no [[topup]] is configured for that network"))?;
    let rpc = config
        .networks
        .iter()
        .filter(|n| n.terms.network == net.network)
        .find_map(|n| match &n.settlement {
            Settlement::Local { rpc_url, .. } => Some(rpc_url.expose().clone()),
            Settlement::Facilitator { rpc_url, .. } => rpc_url.as_ref().map(|u| u.expose().clone()),
            Settlement::None => None,
        })
        .ok_or_else(|| anyhow::anyhow!("{} has no rpc_url to read pools with", net.network))?;
    let chain = crate::payment::chain::Chain::connect(
        &rpc,
        net.chain_id,
        std::time::Duration::from_millis(config.payments.rpc_timeout_ms),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let valuer = crate::topup::route::Valuer::new(net.clone(), chain);
    let token: alloy::primitives::Address = token.parse()?;
    let valued = match (amount, credits) {
        (Some(a), _) => valuer.value(token, a.parse()?).await,
        (None, Some(c)) => {
            let c = crate::pricing::expr::parse_usd(&c)?;
            valuer.cost(token, UsdMicros(c)).await
        }
        (None, None) => anyhow::bail!("--amount or --credits"),
    };
    let refusal = match valued {
        Ok(v) => match valuer.check_size(v.credit) {
            Ok(()) => {
                println!("{}", serde_json::to_string_pretty(&v.to_json(&valuer.net))?);
                return Ok(0);
            }
            Err(r) => r,
        },
        Err(ReadError::Refused(r)) => r,
        Err(ReadError::Chain(e)) => anyhow::bail!("{e}"),
    };
    println!(
        "{}",
        serde_json::json!({"error": refusal.code(), "message": refusal.to_string()})
    );
    Ok(1)
}

async fn open_db(config: &Config) -> anyhow::Result<crate::db::Db> {
    Ok(match &config.database_url {
        Some(url) => crate::db::Db::connect(url.expose()).await?,
        None => crate::db::Db::embedded(std::path::Path::new(".tariff")).await?,
    })
}

async fn payments_command(config: Config, command: PaymentsCommand) -> anyhow::Result<i32> {
    let db = open_db(&config).await?;
    let ledger = crate::ledger::Ledger::new(db.clone(), crate::time::Clock::System);
    let payments =
        crate::server::build_payments(&config, db, ledger, crate::time::Clock::System).await?;
    match command {
        PaymentsCommand::List { limit } => {
            for p in payments.store().recent(limit.clamp(1, 1000)).await? {
                println!("{}", serde_json::to_string(&p)?);
            }
            for (status, n) in payments.store().counts().await? {
                eprintln!("{status}: {n}");
            }
            Ok(0)
        }
        PaymentsCommand::Reconcile => {
            let report = payments.reconcile_once().await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(i32::from(report.errors > 0))
        }
    }
}

async fn ledger_command(config: Config, command: LedgerCommand) -> anyhow::Result<i32> {
    use crate::accounts::Accounts;
    use crate::ledger::{AccountId, Ledger};
    let db = open_db(&config).await?;
    let clock = crate::time::Clock::System;
    let accounts = Accounts::new(db.clone(), Ledger::new(db, clock.clone()), clock);
    accounts.ensure_system_accounts().await?;
    let ledger = accounts.ledger();
    match command {
        LedgerCommand::Check => {
            let r = ledger.check().await?;
            println!(
                "{} accounts; posted sum {}, pending sum {}; {} counter mismatches, {} below bound, {} bad resolutions",
                r.accounts,
                r.posted_sum,
                r.pending_sum,
                r.mismatches.len(),
                r.below_bound.len(),
                r.bad_resolutions.len()
            );
            for m in &r.mismatches {
                println!(
                    "mismatch {}: stored {:?}, recomputed {:?}",
                    m.account.as_str(),
                    m.stored,
                    m.recomputed
                );
            }
            if r.is_clean() {
                println!("ok: the ledger balances");
                Ok(0)
            } else {
                println!("NOT CLEAN");
                Ok(1)
            }
        }
        LedgerCommand::Grant {
            account,
            amount,
            reason,
            id,
        } => {
            let account = AccountId::new(account)?;
            let (t, b) = accounts
                .adjust(&id, account.clone(), amount, reason)
                .await?;
            println!(
                "transfer {}: {} now has {} micro-USD available",
                t.id.as_str(),
                account.as_str(),
                b.available()
            );
            Ok(0)
        }
    }
}

fn rules_check(dir: &std::path::Path, max_price: UsdMicros) -> i32 {
    match load_dir(
        dir,
        &ExprEnv::new(),
        &LoadOptions {
            max_price,
            max_stored_answer_bytes: crate::pricing::DEFAULT_STORED_ANSWER_BYTES,
            extension_schemas: true,
        },
    ) {
        Ok(set) => {
            for route in &set.routes {
                println!(
                    "{}  {} {}  (max {}{})  [{}]",
                    route.id,
                    route.methods.join(","),
                    route.path.as_str(),
                    route.max,
                    route
                        .default
                        .map(|d| format!(", default {d}"))
                        .unwrap_or_default(),
                    route.file.display()
                );
                for rule in &route.rules {
                    let when = rule.when.as_ref().map_or("always", |w| w.source());
                    println!("    {:<20} when {when}", rule.id);
                }
            }
            println!(
                "ok: {} route(s) in {} file(s)",
                set.routes.len(),
                set.files.len()
            );
            0
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            eprintln!(
                "{} error(s); the server will not start on these rules",
                errors.0.len()
            );
            1
        }
    }
}

fn quote_preview(config: &Config, args: &QuoteArgs) -> anyhow::Result<i32> {
    let dir = args
        .rules
        .clone()
        .unwrap_or_else(|| config.rules_dir.clone());
    let env = ExprEnv::new();
    let set = load_dir(
        &dir,
        &env,
        &LoadOptions {
            max_price: config.max_price,
            max_stored_answer_bytes: config.payments.stored_answer_max_bytes,
            extension_schemas: config.extension_schemas,
        },
    )
    .map_err(|e| anyhow::anyhow!("pricing rules are invalid:\n{e}"))?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--header `{h}`: expected `name: value`"))?;
        headers.push((k.to_string(), v.to_string()));
    }
    let req = crate::http::preview::PreviewRequest {
        method: args.method.clone(),
        path: args.path.clone(),
        body: args.body.clone(),
        headers,
    };
    use crate::http::preview::{Preview, PreviewError, preview};
    match preview(&set, &env, &req) {
        Ok(Preview::NoRoute { method, path }) => {
            println!(
                "no route prices {method} {path} (unpriced policy: {:?})",
                config.unpriced
            );
            return Ok(2);
        }
        Ok(Preview::Free { route, rule }) => println!("route {route}  rule {rule}  free"),
        Ok(Preview::Priced {
            route, rule, price, ..
        }) => {
            println!(
                "route {route}  rule {rule}  price {price} ({} micro-USD)",
                price.0
            );
            for terms in config.networks.iter().map(|n| &n.terms) {
                if let Some(units) = price.to_asset_units(terms.decimals) {
                    println!(
                        "    {}  {units} base units of {}",
                        terms.network, terms.asset
                    );
                }
            }
        }
        Ok(Preview::External {
            route,
            rule,
            pricer,
            fallback,
        }) => {
            println!("route {route}  rule {rule}  external pricer {pricer} (fallback {fallback})")
        }
        Err(e @ PreviewError::Pricing(_)) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
        Err(e) => anyhow::bail!("{e}"),
    }
    Ok(0)
}
