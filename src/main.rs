//! `tariff`: thin binary over the library's CLI.

/// mimalloc rather than glibc malloc: allocation was ~15 % of the 402 path's CPU under glibc,
/// and glibc's per-thread arenas kept resident memory high after bursts of traffic.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("TARIFF_LOG")
            .unwrap_or_else(|_| "info,tariff=info".into())
    };
    // Logs go to stderr: text for people, or one JSON object per line for a log pipeline, each
    // carrying the request id of the request it was written for.
    match std::env::var("TARIFF_LOG_FORMAT").as_deref() {
        Ok("json") => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init(),
        Ok("text") | Err(_) => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init(),
        Ok(other) => {
            eprintln!("error: TARIFF_LOG_FORMAT is `{other}`: `text` or `json`");
            std::process::exit(2);
        }
    }
    let cli = tariff::cli::Cli::parse_args();
    match tariff::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
