//! The mail worker: turns "forgot password" requests into reset links and
//! delivers the mail outbox through the `[smtp]` server, on every node that
//! has one configured.
//!
//! Like webhook delivery it keeps nothing between passes: requests and
//! messages are claimed from the database with a lease (rows another node
//! holds are skipped), so two nodes never send one message twice, and a
//! message whose node died mid-send is tried again once its lease runs out.
//! A failed attempt is retried with backoff
//! (`core::recovery::next_attempt`) until the message is worth nothing (a
//! link that has expired) or the server refuses it for good; then it is
//! given up, logged and audited (`email.delivery_failed`). A sent or given
//! up message's body, which holds a link's secret, is blanked.

use std::time::Duration;

use healthgate_core::recovery::next_attempt;
use healthgate_store::{MailOutcome, OutgoingMail, StoreError};
use tokio::task::JoinHandle;

use crate::services::mail::{self, Mailer};
use crate::state::AppState;

/// Requests and messages claimed per pass.
pub const BATCH: i64 = 20;
/// How long a claim is held, seconds: longer than a whole pass can take
/// (every message of a batch sent one after the other, each within the
/// `[smtp]` timeout), so no other node takes a message this one is still
/// sending.
fn lease(mailer: &Mailer) -> i64 {
    mailer.timeout_secs() * (BATCH + 1) + 60
}
/// Seconds between passes.
pub const INTERVAL: u64 = 2;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Reset requests turned into links (or found to match no one).
    pub requests: usize,
    /// Messages handed to the mail server.
    pub sent: usize,
    /// Messages that failed this time (retried or given up).
    pub failed: usize,
}

/// One pass: every claimed reset request handled, then every claimed due
/// message sent, one after the other (mail is rare; a slow server delays
/// only this worker).
pub async fn run_once(state: &AppState, mailer: &Mailer) -> Result<Pass, StoreError> {
    let mut pass = Pass::default();
    let requests = state
        .store
        .claim_reset_requests(state.now(), BATCH, lease(mailer))
        .await?;
    for request in &requests {
        mail::handle_reset_request(state, request).await?;
        pass.requests += 1;
    }
    let due = state
        .store
        .claim_mail(state.now(), BATCH, lease(mailer))
        .await?;
    for message in &due {
        if deliver(state, mailer, message).await? {
            pass.sent += 1;
        } else {
            pass.failed += 1;
        }
    }
    Ok(pass)
}

/// Sends one claimed message and records the attempt; whether it was sent.
async fn deliver(
    state: &AppState,
    mailer: &Mailer,
    message: &OutgoingMail,
) -> Result<bool, StoreError> {
    let now = state.now();
    let result = if now > message.give_up_at {
        Err(mail::SendFailure {
            error: "not sent in time: what it said no longer holds".into(),
            permanent: true,
        })
    } else {
        mailer.send(message, now).await
    };
    let now = state.now();
    match result {
        Ok(()) => {
            tracing::info!(mail = %message.id, kind = message.kind.as_str(), "mail sent");
            state
                .store
                .record_mail_attempt(message, MailOutcome::Sent, now)
                .await?;
            Ok(true)
        }
        Err(failure) => {
            let attempts = message.attempts + 1;
            let retry_at = next_attempt(attempts, now, message.give_up_at, failure.permanent);
            if retry_at.is_some() {
                tracing::warn!(mail = %message.id, kind = message.kind.as_str(), attempts, error = %failure.error, "mail not sent; retrying later");
            } else {
                tracing::error!(mail = %message.id, kind = message.kind.as_str(), attempts, error = %failure.error, "mail not sent; given up");
            }
            state
                .store
                .record_mail_attempt(
                    message,
                    MailOutcome::Failed {
                        error: &failure.error,
                        retry_at,
                    },
                    now,
                )
                .await?;
            Ok(false)
        }
    }
}

/// Starts this node's mail worker when `[smtp]` is set (`open` has checked
/// that its client can be built).
pub fn spawn(state: AppState) -> Option<JoinHandle<()>> {
    let mailer = match Mailer::new(&state.settings) {
        Ok(Some(mailer)) => mailer,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the mail worker; mail stays queued");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        let period = Duration::from_secs(INTERVAL);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let pass = run_once(&state, &mailer).await;
            state.metrics.job_pass("mail", pass.is_ok());
            if let Err(e) = pass {
                tracing::warn!(error = %e, "mail pass failed; retrying at the next interval");
            }
        }
    }))
}
