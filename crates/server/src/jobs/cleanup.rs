//! The background job that keeps tables bounded: every node runs it, and the
//! store's batched, lock-skipping deletes keep nodes from fighting over rows.

use tokio::task::JoinHandle;

use crate::state::AppState;

/// Rows per delete statement, and statements per table per pass: small, so a
/// pass never holds the SQLite writer for long.
const BATCH: i64 = 500;
const MAX_BATCHES: u32 = 20;

/// One cleanup pass; returns how many rows went.
pub async fn run_once(state: &AppState) -> Result<u64, healthgate_store::StoreError> {
    let purged = state
        .store
        .purge_expired(
            state.now(),
            state.settings.retired_token_retention.secs(),
            BATCH,
            MAX_BATCHES,
        )
        .await?;
    if purged.total() > 0 {
        tracing::info!(?purged, "expired rows removed");
    }
    Ok(purged.total())
}

/// Starts the periodic cleanup unless `cleanup_interval` is 0.
pub fn spawn(state: AppState) -> Option<JoinHandle<()>> {
    let every = state.settings.cleanup_interval?.duration();
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let pass = run_once(&state).await;
            state.metrics.job_pass("cleanup", pass.is_ok());
            if let Err(e) = pass {
                tracing::warn!(error = %e, "cleanup pass failed; retrying at the next interval");
            }
        }
    }))
}
