//! Guessing stopped: the throttles in front of sign-in, the token endpoint
//! and the APIs (rules in `healthgate_core::throttle`).
//!
//! - Failure runs per username and per client id live in the database
//!   (`Store::record_failure`), so every node sees them. A sign-in costs one
//!   primary-key read before the password is checked; a successful token
//!   request costs nothing but a look in this node's copy of the blocked
//!   client ids, which a failing node updates at once and every node
//!   refreshes from the database every couple of seconds.
//! - Token buckets per client address are in memory, per node: with N
//!   nodes an address gets up to N times the rate.
//! - A burst (one address failing for many usernames) is noticed per node
//!   and written to the audit trail once per window.
//!
//! Every throttle that begins and every lock is an audited event; the
//! refusals in between are not (they are in the access log as 429s).

use healthgate_core::event::EventKind;
use healthgate_core::throttle::Verdict;
use healthgate_store::{Event, StoreError, ThrottleKind};

use crate::state::AppState;

/// How a sign-in for `username` is answered before its password is
/// looked at (one primary-key read): the same for a username that has no
/// account.
pub async fn sign_in_verdict(state: &AppState, username: &str) -> Result<Verdict, StoreError> {
    let run = state
        .store
        .failure_run(ThrottleKind::SignIn, username)
        .await?;
    Ok(state
        .throttles
        .limits
        .sign_in
        .verdict(run.as_ref(), state.now()))
}

/// After a wrong password, or a username without an account: counts the
/// failure; audits the start of a slow-down, a lock, and a burst from the
/// address. `user_id` is the account's, when there is one (for the trail
/// only: the answer is the same).
pub async fn sign_in_failed(
    state: &AppState,
    username: &str,
    user_id: Option<&str>,
    ip: Option<&str>,
) -> Result<(), StoreError> {
    let now = state.now();
    let policy = state.throttles.limits.sign_in;
    let run = state
        .store
        .record_failure(
            ThrottleKind::SignIn,
            username,
            now,
            policy.forget_before(now),
        )
        .await?;
    let audit = |kind: EventKind, data: serde_json::Value| {
        let event = Event::new(kind).failed().ip(ip).data(data);
        match user_id {
            Some(id) => event.subject(id),
            None => event,
        }
    };
    if policy.locks(run.failures) && run.blocked_until.is_none_or(|until| until <= now) {
        let until = now + policy.lock_for;
        state
            .store
            .block(ThrottleKind::SignIn, username, until)
            .await?;
        let event = audit(
            EventKind::SignInLocked,
            serde_json::json!({
                "username": username, "failures": run.failures, "until": until,
            }),
        );
        state.store.record_event(now, &event).await?;
    } else if policy.starts_waiting(run.failures) {
        let event = audit(
            EventKind::SignInThrottled,
            serde_json::json!({
                "username": username, "failures": run.failures,
                "retry_after": policy.delay(run.failures),
            }),
        );
        state.store.record_event(now, &event).await?;
    }
    if let Some(accounts) = state.throttles.sign_in_failed_from(ip, username, now) {
        let event = Event::new(EventKind::SignInBurst)
            .failed()
            .ip(ip)
            .data(serde_json::json!({
                "accounts": accounts,
                "window": state.throttles.limits.burst_window,
            }));
        state.store.record_event(now, &event).await?;
    }
    Ok(())
}

/// After a right password: the run, if there was one, is forgotten.
pub async fn sign_in_succeeded(state: &AppState, username: &str) -> Result<(), StoreError> {
    state
        .store
        .clear_failures(ThrottleKind::SignIn, username)
        .await?;
    Ok(())
}

/// Until when `client_id` is refused (this node's copy: no database read).
pub fn client_blocked(state: &AppState, client_id: &str) -> Option<i64> {
    state.throttles.client_blocked(client_id, state.now())
}

/// After a failed client authentication or an `invalid_grant` answer for
/// `client_id`: counts it; at the limit blocks the client id on every node
/// and audits it. A block another node set is learnt here too.
pub async fn client_failed(
    state: &AppState,
    client_id: &str,
    ip: Option<&str>,
) -> Result<(), StoreError> {
    let now = state.now();
    let policy = state.throttles.limits.client;
    let run = state
        .store
        .record_failure(
            ThrottleKind::Client,
            client_id,
            now,
            policy.forget_before(now),
        )
        .await?;
    if let Some(until) = run.blocked_until.filter(|until| *until > now) {
        state.throttles.note_client_blocked(client_id, until);
    } else if policy.blocks(run.failures) {
        let until = now + policy.block_for;
        state
            .store
            .block(ThrottleKind::Client, client_id, until)
            .await?;
        state.throttles.note_client_blocked(client_id, until);
        let event = Event::new(EventKind::ClientThrottled)
            .failed()
            .client(client_id)
            .ip(ip)
            .data(serde_json::json!({ "failures": run.failures, "until": until }));
        state.store.record_event(now, &event).await?;
    }
    Ok(())
}

/// Refreshes this node's copy of the blocked client ids, and forgets what
/// no longer limits anyone.
pub async fn refresh(state: &AppState) -> Result<(), StoreError> {
    let now_ms = state.clock.now_millis();
    let blocked = state
        .store
        .blocked(ThrottleKind::Client, now_ms / 1000)
        .await?;
    state.throttles.set_blocked_clients(blocked);
    state.throttles.prune(now_ms);
    Ok(())
}
