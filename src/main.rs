//! `tariff`: thin binary over the library's CLI.

use clap::Parser;

// The 402 path allocates many small, short-lived objects (JSON values, strings, headers).
// Under load glibc malloc took ~17% of the CPU; with mimalloc the CPU per distinct 402 fell
// from ~32 to ~25 µs (perf + wrk, see scripts/bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TARIFF_LOG")
                .unwrap_or_else(|_| "info,tariff=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = tariff::cli::Cli::parse();
    match tariff::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
