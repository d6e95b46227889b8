//! `tariff`: thin binary over the library's CLI.

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TARIFF_LOG")
                .unwrap_or_else(|_| "info,tariff=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = tariff::cli::Cli::parse_args();
    match tariff::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
