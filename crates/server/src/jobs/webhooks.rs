//! The event pipeline's background workers: the webhook delivery worker,
//! which sends the outbox's due deliveries to partners, signed, and the
//! sealer, which links new events into the audit log's hash chain.
//!
//! Nothing here keeps state between passes: a delivery is claimed from the
//! database with a lease (rows another node holds are skipped), sent, and its
//! attempt recorded, so any node can pick up what another node left behind,
//! and a delivery whose node died mid-send is sent again once its lease runs
//! out. Delivery is therefore at least once: receivers deduplicate on
//! `Healthgate-Delivery`. Deliveries go out through the public-address-only
//! client of `services::outbound`.

use std::time::{Duration, Instant};

use healthgate_core::webhook::{SIGNATURE_HEADER, signature};
use healthgate_store::StoreError;
use healthgate_store::{AttemptResult, Delivery};
use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use tokio::task::{JoinHandle, JoinSet};

use crate::services::outbound::{TIMEOUT, describe, http_client, refused_literal};
use crate::services::secrets;
use crate::state::AppState;

/// The header naming the event's type, e.g. `integration.connected`.
pub const EVENT_HEADER: &str = "Healthgate-Event";
/// The header carrying the delivery's id, the same on every retry: receivers
/// deduplicate on it.
pub const DELIVERY_HEADER: &str = "Healthgate-Delivery";
/// The `User-Agent` of every delivery.
pub const USER_AGENT_VALUE: &str = "healthgate-webhooks";

/// Deliveries claimed (and sent concurrently) per pass.
pub const BATCH: i64 = 20;
/// How long a claimed delivery is held by this node before another may take
/// it, seconds: longer than a send can take.
pub const LEASE: i64 = 60;
/// Batches one tick of the worker sends at most before waiting for the next.
const MAX_BATCHES_PER_TICK: usize = 50;

/// Seconds between passes of the audit-chain sealer.
pub const SEAL_INTERVAL: u64 = 5;
/// Events linked per sealing transaction.
const SEAL_BATCH: i64 = 1000;
/// Sealing transactions per pass at most.
const MAX_SEALS_PER_TICK: usize = 20;

/// One pass: claims up to [`BATCH`] due deliveries, sends them concurrently
/// with `http` (built by [`crate::services::outbound::http_client`]), and records every attempt.
/// Returns how many deliveries were attempted. A storage error is returned
/// after the other sends of the batch have finished; the delivery it hit is
/// retried once its lease runs out.
pub async fn deliver_due(state: &AppState, http: &reqwest::Client) -> Result<usize, StoreError> {
    let due = state
        .store
        .claim_deliveries(state.now(), BATCH, LEASE)
        .await?;
    let claimed = due.len();
    let mut sends = JoinSet::new();
    for delivery in due {
        let (state, http) = (state.clone(), http.clone());
        sends.spawn(async move { deliver(&state, &http, delivery).await });
    }
    let mut first_error = None;
    while let Some(done) = sends.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "a webhook attempt could not be recorded; it is retried when its lease runs out");
                first_error.get_or_insert(e);
            }
            Err(e) => {
                tracing::error!(error = %e, "a webhook send did not finish; it is retried when its lease runs out");
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(claimed),
    }
}

/// Signs, sends and records one delivery.
async fn deliver(
    state: &AppState,
    http: &reqwest::Client,
    delivery: Delivery,
) -> Result<(), StoreError> {
    // Deleting a client deletes its deliveries: nothing is left to send.
    let Some(client) = state.store.client(&delivery.client_id).await? else {
        return Ok(());
    };
    // Derived afresh for every send, so a rotated secret signs at once.
    let secret = secrets::webhook_secret(&state.store, &state.settings, &client).await?;
    // Sent where the partner wants deliveries now, not where it wanted them
    // when the event happened; with no URL left, the attempt fails and is
    // retried in case one is registered again.
    let result = match client.webhook_url.as_deref() {
        // A suspended app is told nothing while it is suspended; the
        // delivery is retried, so it arrives if the app is restored in time.
        Some(_) if client.suspended_at.is_some() => AttemptResult {
            status_code: None,
            error: Some("the app is suspended; deliveries resume if it is restored".into()),
            duration_ms: 0,
            succeeded: false,
        },
        Some(url) => send(state, http, &delivery, url, &secret).await,
        None => AttemptResult {
            status_code: None,
            error: Some("the app has no webhook URL registered".into()),
            duration_ms: 0,
            succeeded: false,
        },
    };
    state.metrics.webhook_attempt(result.succeeded);
    if result.succeeded {
        tracing::debug!(delivery = %delivery.id, client_id = %delivery.client_id, status = result.status_code, "webhook delivered");
    } else {
        tracing::warn!(
            delivery = %delivery.id,
            client_id = %delivery.client_id,
            attempt = delivery.attempts + 1,
            status = result.status_code,
            error = result.error.as_deref(),
            "webhook attempt failed"
        );
    }
    state
        .store
        .record_attempt(&delivery, state.now(), &result)
        .await
}

/// POSTs the stored payload, byte for byte as it was signed.
async fn send(
    state: &AppState,
    http: &reqwest::Client,
    delivery: &Delivery,
    url: &str,
    secret: &str,
) -> AttemptResult {
    if let Some(refused) = refused_literal(url, state.settings.allow_http_webhooks) {
        return AttemptResult {
            status_code: None,
            error: Some(refused),
            duration_ms: 0,
            succeeded: false,
        };
    }
    let body = delivery.payload.clone().into_bytes();
    let signed = signature(secret, state.now(), &body);
    let mut request = http
        .post(url)
        .timeout(TIMEOUT)
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(SIGNATURE_HEADER, signed)
        .header(DELIVERY_HEADER, &delivery.id);
    if let Some(kind) = event_type(&delivery.payload) {
        request = request.header(EVENT_HEADER, kind);
    }
    let started = Instant::now();
    let response = request.body(body).send().await;
    let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    match response {
        Ok(r) => {
            let status = r.status();
            let error = if status.is_success() {
                None
            } else if status.is_redirection() {
                Some(format!(
                    "HTTP {}: redirects are not followed; register the final URL",
                    status.as_u16()
                ))
            } else {
                Some(format!("HTTP {status}"))
            };
            AttemptResult {
                status_code: Some(i64::from(status.as_u16())),
                succeeded: error.is_none(),
                error,
                duration_ms,
            }
        }
        Err(e) => AttemptResult {
            status_code: None,
            error: Some(describe(&e)),
            duration_ms,
            succeeded: false,
        },
    }
}

/// The payload's `type`, for the `Healthgate-Event` header.
fn event_type(payload: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    value.get("type")?.as_str().map(str::to_owned)
}

/// Ticks every `period`, the first one a period after start rather than at
/// once: a server that lives for less than a period (a test's) never opens a
/// transaction in the background, and a busy pass delays the next one
/// instead of bunching them up.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// Starts this node's delivery worker unless `webhook_poll_interval` is 0.
/// Each tick sends batches until none is full.
pub fn spawn(state: AppState) -> Option<JoinHandle<()>> {
    let every = state.settings.webhook_poll_interval?.duration();
    let http = match http_client(state.settings.allow_http_webhooks) {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the webhook worker: no HTTP client; webhooks stay queued");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        let mut ticks = ticker(every);
        loop {
            ticks.tick().await;
            let mut succeeded = true;
            for _ in 0..MAX_BATCHES_PER_TICK {
                match deliver_due(&state, &http).await {
                    Ok(n) if n as i64 == BATCH => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook pass failed; retrying at the next interval");
                        succeeded = false;
                        break;
                    }
                }
            }
            state.metrics.job_pass("webhooks", succeeded);
        }
    }))
}

/// One sealing pass: links every event appended since the last one into the
/// audit hash chain (in transactions of at most 1000 rows). Returns how many.
pub async fn seal_once(state: &AppState) -> Result<u64, StoreError> {
    let mut sealed = 0;
    for _ in 0..MAX_SEALS_PER_TICK {
        let n = state.store.seal_events(SEAL_BATCH).await?;
        sealed += n;
        if n < SEAL_BATCH as u64 {
            break;
        }
    }
    Ok(sealed)
}

/// Starts the sealer: every [`SEAL_INTERVAL`] seconds, on every node (one
/// sealer at a time holds the chain head; the others wait their turn).
pub fn spawn_sealer(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = ticker(Duration::from_secs(SEAL_INTERVAL));
        loop {
            ticks.tick().await;
            let pass = seal_once(&state).await;
            state.metrics.job_pass("audit_sealer", pass.is_ok());
            if let Err(e) = pass {
                tracing::warn!(error = %e, "sealing the audit chain failed; retrying at the next interval");
            }
        }
    })
}
