//! Running a backtest for the admin API and the console: the candidate is compiled like a save,
//! the recorded inputs of the last `days` are re-priced page by page off the async runtime,
//! and the result is put next to the revenue observed over the same window.

use axum::http::StatusCode;

use super::AppState;
use super::console::ExperimentRow;
use super::error::ApiError;
use crate::db::quote_stats;
use crate::pricing::backtest::Backtest;
use crate::pricing::edit::EditError;

/// Inputs read and priced per step.
const PAGE: i64 = 2_000;

/// One backtest at a time per instance: each one is CPU-bound for up to seconds.
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

pub struct Report {
    pub file: String,
    pub days: u64,
    pub since_ms: u64,
    pub totals: Backtest,
    pub rows: Vec<ExperimentRow>,
}

/// Why a backtest did not run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("pricing inputs are not recorded on this server: set `[backtest] record = true`")]
    NotRecording,
    #[error("`days` must be between 1 and {0} (the retention of pricing inputs)")]
    Days(u64),
    #[error("another backtest is running; try again when it is done")]
    Busy,
    #[error(transparent)]
    Candidate(#[from] EditError),
    #[error("{0}")]
    Unavailable(String),
}

impl From<BacktestError> for ApiError {
    fn from(e: BacktestError) -> Self {
        match e {
            BacktestError::NotRecording => ApiError::new(
                StatusCode::CONFLICT,
                "backtest_not_recording",
                e.to_string(),
            ),
            BacktestError::Days(_) => ApiError::bad_request("invalid_days", e.to_string()),
            BacktestError::Busy => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "backtest_running",
                e.to_string(),
            ),
            BacktestError::Candidate(e) => super::admin::edit_failed(e),
            BacktestError::Unavailable(m) => ApiError::unavailable("database_unavailable", m),
        }
    }
}

/// Re-prices the inputs of the last `days` under the live rules and `file` replaced by `text`.
pub async fn run(
    state: &AppState,
    file: &str,
    text: &str,
    days: u64,
) -> Result<Report, BacktestError> {
    let log = state
        .pricing_inputs
        .as_ref()
        .ok_or(BacktestError::NotRecording)?;
    let retention = log.limits().retention_days;
    if !(1..=retention).contains(&days) {
        return Err(BacktestError::Days(retention));
    }
    let candidate = std::sync::Arc::new(state.rules.candidate(file, text)?);
    let _permit = RUNNING.try_acquire().map_err(|_| BacktestError::Busy)?;
    let live = state.rules.current();
    let now = state.quotes.clock.now().0;
    let since_ms = now.saturating_sub(days * 24 * 3_600_000);
    let since = i64::try_from(since_ms).unwrap_or(i64::MAX);
    // What is buffered belongs in the window too.
    log.flush()
        .await
        .map_err(|e| BacktestError::Unavailable(e.to_string()))?;
    let mut totals = Backtest::default();
    let mut after = 0;
    loop {
        let page = log
            .page(since, after, PAGE)
            .await
            .map_err(|e| BacktestError::Unavailable(e.to_string()))?;
        let Some(last) = page.last() else { break };
        after = last.id;
        let full = page.len() as i64 == PAGE;
        let (rules, live, candidate) = (state.rules.clone(), live.clone(), candidate.clone());
        totals = tokio::task::spawn_blocking(move || {
            for row in &page {
                totals.add_stored(&live, &candidate, rules.env(), &row.input);
            }
            totals
        })
        .await
        .map_err(|e| BacktestError::Unavailable(format!("backtest stopped: {e}")))?;
        if !full {
            break;
        }
    }
    let figures = match &state.quote_stats {
        Some(stats) => quote_stats::rule_figures(stats.db(), since - since % 60_000)
            .await
            .map_err(|e| BacktestError::Unavailable(e.to_string()))?,
        None => Vec::new(),
    };
    let rows = super::console::compare_rows(&figures, totals.compared.clone());
    Ok(Report {
        file: file.to_string(),
        days,
        since_ms,
        totals,
        rows,
    })
}
