//! The database: PostgreSQL in production, SQLite as the embedded default. One schema in two
//! dialects (`migrations/postgres`, `migrations/sqlite`), applied at connect.

pub mod pricing_inputs;
pub mod quote_stats;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub use quote_stats::{PaidVia, QuoteStats, RuleFigures, StatRow};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database migration failed: {0}")]
    Migrate(String),
    #[error("database query failed: {0}")]
    Query(String),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => DbError::Unavailable(e.to_string()),
            other => DbError::Query(other.to_string()),
        }
    }
}

/// Runs the same sqlx expression on whichever pool `db` holds: `on_pool!(db, p => query.execute(p))`.
/// The expression is compiled once per driver, because sqlx's query types are per database.
macro_rules! on_pool {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Postgres($p) => $body,
            $crate::db::Db::Sqlite($p) => $body,
        }
    };
}
pub(crate) use on_pool;

#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Db {
    /// Connects to `postgres://…` or `sqlite:…` and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        let db = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| DbError::Unavailable(e.to_string()))?
                .create_if_missing(true)
                // WAL lets the dashboard read while the log writes.
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await
                .map_err(|e| DbError::Unavailable(e.to_string()))?;
            Db::Sqlite(pool)
        } else {
            let opts =
                PgConnectOptions::from_str(url).map_err(|e| DbError::Unavailable(e.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(opts)
                .await
                .map_err(|e| DbError::Unavailable(e.to_string()))?;
            Db::Postgres(pool)
        };
        db.migrate().await?;
        Ok(db)
    }

    /// The embedded default: a SQLite file in `dir`.
    pub async fn embedded(dir: &Path) -> Result<Db, DbError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbError::Unavailable(format!("{}: {e}", dir.display())))?;
        Db::connect(&format!("sqlite:{}", dir.join("tariff.db").display())).await
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    async fn migrate(&self) -> Result<(), DbError> {
        let result = match self {
            Db::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await,
            Db::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await,
        };
        result.map_err(|e| DbError::Migrate(e.to_string()))
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ())?);
        Ok(())
    }
}
