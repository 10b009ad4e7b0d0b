//! The audit trail's retention (`[audit]`): once an hour, the sealed events
//! older than `archive_after_days` go to a segment in `archive_dir`
//! (`services::audit::archive`, as `healthgate audit archive` does).

use std::time::Duration;

use healthgate_store::StoreError;
use tokio::task::JoinHandle;

use crate::services::audit;
use crate::state::AppState;

/// How often this node looks for events to archive.
const EVERY: Duration = Duration::from_secs(3600);

/// Starts the retention job when `[audit]` asks for one.
pub fn spawn(state: AppState) -> Option<JoinHandle<()>> {
    let days = state.settings.audit.archive_after_days?;
    let dir = state.settings.audit.archive_dir.clone()?;
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let before = state.now() - i64::from(days.get()) * 86_400;
            let pass = audit::archive(&state, before, &dir).await;
            let busy = matches!(pass, Err(StoreError::ArchiveBusy(_)));
            state
                .metrics
                .job_pass("audit_archive", pass.is_ok() || busy);
            match pass {
                Ok(Some(a)) => tracing::info!(
                    segment = %a.path.display(),
                    events = a.checkpoint.events,
                    through = a.checkpoint.through_pos,
                    "audit events archived"
                ),
                Ok(None) => {}
                // The command, or another node on a shared folder, is at it.
                Err(StoreError::ArchiveBusy(_)) => {
                    tracing::info!("another archive is running; this pass is skipped");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "archiving the audit trail failed; retrying at the next interval");
                }
            }
        }
    }))
}
