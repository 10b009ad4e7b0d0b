//! The console home's Security section: what the throttles did lately that
//! an operator should see (a burst of failed sign-ins from one address, a
//! username locked after failed sign-ins, an app refused after failed
//! authentications), read from the audit trail with the audit page's
//! `EventFilter`, each linking to the audit log narrowed to its kind.

use healthgate_core::event::EventKind;
use healthgate_core::redirect::with_query_params;
use healthgate_store::{EventFilter, StoredEvent};
use serde_json::Value;

use super::Refusal;
use crate::http::pages::Stamp;
use crate::state::AppState;

/// How far back the section looks, in seconds.
pub const WINDOW: i64 = 24 * 3600;

/// The most events it lists.
pub const MOST: usize = 20;

/// The kinds it lists.
const KINDS: [EventKind; 3] = [
    EventKind::SignInBurst,
    EventKind::SignInLocked,
    EventKind::ClientThrottled,
];

/// One event as the section shows it.
pub struct SecurityRow {
    pub seq: i64,
    pub at: Stamp,
    pub kind: &'static str,
    /// The audit log narrowed to this kind.
    pub audit: String,
    /// What happened, in a few words.
    pub what: &'static str,
    /// The address it came from.
    pub ip: Option<String>,
    /// The username as typed (a lock).
    pub username: Option<String>,
    /// The Users page searched for it, when it is an account's.
    pub account: Option<String>,
    /// The client id (an app refused).
    pub client_id: Option<String>,
    /// How many: failures, or usernames in a burst, with its unit.
    pub detail: Option<String>,
    /// Until when the lock or the refusal holds, and which it is
    /// ("locked", "refused").
    pub until: Option<Stamp>,
    pub held: &'static str,
}

/// The recent security events, newest first, and whether there were more
/// than are listed.
pub async fn recent(state: &AppState) -> Result<(Vec<SecurityRow>, bool), Refusal> {
    let from = state.now() - WINDOW;
    let mut events: Vec<(EventKind, StoredEvent)> = Vec::new();
    for kind in KINDS {
        let filter = EventFilter {
            kind: Some(kind.as_str()),
            from: Some(from),
            ..EventFilter::default()
        };
        let found = state.store.audit_events(&filter, MOST as i64 + 1).await?;
        events.extend(found.into_iter().map(|e| (kind, e)));
    }
    events.sort_by_key(|(_, e)| std::cmp::Reverse(e.seq));
    let more = events.len() > MOST;
    let rows = events
        .into_iter()
        .take(MOST)
        .map(|(kind, e)| row(kind, e))
        .collect();
    Ok((rows, more))
}

/// A number of things: "1 failed sign-in", "10 failed sign-ins".
fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A window as people read it: "10 minutes", "90 seconds".
fn window_in_words(secs: u64) -> String {
    if secs.is_multiple_of(60) {
        count(secs / 60, "minute", "minutes")
    } else {
        count(secs, "second", "seconds")
    }
}

fn row(kind: EventKind, e: StoredEvent) -> SecurityRow {
    let data: Value = e
        .data
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null);
    let number = |key: &str| data.get(key).and_then(Value::as_u64);
    let until = data.get("until").and_then(Value::as_i64).map(Stamp::exact);
    let mut row = SecurityRow {
        seq: e.seq,
        at: Stamp::exact(e.at),
        kind: kind.as_str(),
        audit: with_query_params("/admin/audit", &[("kind", kind.as_str())]),
        what: "",
        ip: e.ip,
        username: None,
        account: None,
        client_id: None,
        detail: None,
        until: None,
        held: "",
    };
    match kind {
        EventKind::SignInBurst => {
            row.what = "Failed sign-ins for many usernames from one address";
            row.detail = number("accounts").map(|n| {
                let within = number("window")
                    .map(|w| format!(" within {}", window_in_words(w)))
                    .unwrap_or_default();
                format!("{}{within}", count(n, "username", "usernames"))
            });
        }
        EventKind::SignInLocked => {
            row.what = "Username locked after failed sign-ins";
            row.username = data
                .get("username")
                .and_then(Value::as_str)
                .map(str::to_owned);
            // The event names the account when the username has one.
            row.account = row
                .username
                .as_deref()
                .filter(|_| e.subject.is_some())
                .map(|u| with_query_params("/admin/users", &[("q", u)]));
            row.detail = number("failures").map(|n| count(n, "failed sign-in", "failed sign-ins"));
            row.until = until;
            row.held = "locked";
        }
        _ => {
            row.what = "App refused after failed authentications";
            row.client_id = e.client_id;
            row.detail = number("failures").map(|n| count(n, "failure", "failures"));
            row.until = until;
            row.held = "refused";
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(kind: EventKind, data: &str) -> StoredEvent {
        StoredEvent {
            seq: 7,
            id: "evt-1".into(),
            at: 1_795_305_600,
            kind: kind.as_str().into(),
            actor_user_id: None,
            subject: Some("usr-1".into()),
            client_id: Some("app-1".into()),
            organization_id: None,
            ip: Some("192.0.2.7".into()),
            outcome: "failure".into(),
            data: Some(data.into()),
            chain_pos: None,
            prev_hash: None,
            hash: None,
        }
    }

    #[test]
    fn each_kind_says_what_happened_from_its_data() {
        let burst = row(
            EventKind::SignInBurst,
            stored(EventKind::SignInBurst, r#"{"accounts":10,"window":600}"#),
        );
        assert_eq!(
            burst.detail.as_deref(),
            Some("10 usernames within 10 minutes")
        );
        assert_eq!(burst.ip.as_deref(), Some("192.0.2.7"));
        assert_eq!(burst.audit, "/admin/audit?kind=login.burst");

        let locked = row(
            EventKind::SignInLocked,
            stored(
                EventKind::SignInLocked,
                r#"{"username":"al ice","failures":10,"until":1795306500}"#,
            ),
        );
        assert_eq!(locked.username.as_deref(), Some("al ice"));
        assert_eq!(locked.account.as_deref(), Some("/admin/users?q=al+ice"));
        assert_eq!(locked.detail.as_deref(), Some("10 failed sign-ins"));
        assert_eq!(locked.until.unwrap().text, "2026-11-22 00:15:00 UTC");
        assert_eq!(locked.client_id, None);

        let client = row(
            EventKind::ClientThrottled,
            stored(
                EventKind::ClientThrottled,
                r#"{"failures":1,"until":1795305900}"#,
            ),
        );
        assert_eq!(client.client_id.as_deref(), Some("app-1"));
        assert_eq!(client.detail.as_deref(), Some("1 failure"));
        assert_eq!(client.audit, "/admin/audit?kind=client.throttled");

        // Data it cannot read leaves the details out, not the event.
        let odd = row(EventKind::SignInBurst, stored(EventKind::SignInBurst, "[]"));
        assert_eq!(odd.detail, None);
        assert_eq!(window_in_words(90), "90 seconds");
    }
}
