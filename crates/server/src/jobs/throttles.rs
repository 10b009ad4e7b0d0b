//! Keeps this node's copy of the blocked client ids in step with the
//! database (a block set on another node holds here within a couple of
//! seconds, without a database read on any request), and forgets the
//! per-address buckets and burst windows that no longer limit anyone.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::services::throttle;
use crate::state::AppState;

/// How often a node looks for blocks set elsewhere.
const EVERY: Duration = Duration::from_secs(2);

pub fn spawn(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let pass = throttle::refresh(&state).await;
            state.metrics.job_pass("throttles", pass.is_ok());
            if let Err(e) = pass {
                tracing::warn!(error = %e, "reading the blocked client ids failed; retrying");
            }
        }
    })
}
