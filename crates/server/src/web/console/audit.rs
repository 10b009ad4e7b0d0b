//! `/admin/audit`: the event log, newest first, a hundred events a page,
//! narrowed by kind, person (actor or subject, by id or username), app,
//! organization, outcome and UTC dates. The filters go to the store as
//! bound parameters; the page links to older events by `seq`.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use healthgate_core::event::EventKind;
use healthgate_core::redirect::with_query_params;
use healthgate_store::{EventFilter, StoredEvent};
use serde::Deserialize;

use super::{Answer, Operator, Refusal};
use crate::http::extract::Viewer;
use crate::http::forms::FieldErrors;
use crate::http::pages::{self, Site, Stamp};
use crate::state::AppState;

const PAGE: &str = "/admin/audit";

/// Events on one page.
pub const PAGE_SIZE: i64 = 100;

/// The filters as the form sends them (and the links carry them).
#[derive(Deserialize, Default, Clone)]
pub struct AuditQuery {
    pub kind: Option<String>,
    pub person: Option<String>,
    pub app: Option<String>,
    pub organization: Option<String>,
    pub outcome: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub before: Option<String>,
}

/// A filter's value, trimmed; empty is absent.
fn value(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl AuditQuery {
    /// The filters as query parameters, without the page position.
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("kind", &self.kind),
            ("person", &self.person),
            ("app", &self.app),
            ("organization", &self.organization),
            ("outcome", &self.outcome),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter_map(|(k, v)| value(v).map(|v| (k, v)))
        .collect()
    }
}

/// One event as the page shows it.
pub struct EventRow {
    pub seq: i64,
    pub at: Stamp,
    pub kind: String,
    pub failed: bool,
    pub outcome: String,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub organization_id: Option<String>,
    pub ip: Option<String>,
    pub data: Option<String>,
}

#[derive(Template)]
#[template(path = "console_audit.html")]
pub struct AuditPage<'a> {
    pub site: Site<'a>,
    pub section: &'static str,
    pub notice: Option<String>,
    pub kinds: Vec<&'static str>,
    pub apps: Vec<(String, String)>,
    pub organizations: Vec<(String, String)>,
    pub kind: String,
    pub person: String,
    pub app: String,
    pub organization: String,
    pub outcome: String,
    pub from: String,
    pub to: String,
    pub errors: FieldErrors,
    pub events: Vec<EventRow>,
    pub filtered: bool,
    pub older: Option<String>,
    pub newest: Option<String>,
}

/// The days from 1970-01-01 to a civil date (proleptic Gregorian; Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The instant a `YYYY-MM-DD` date begins, UTC; `None` if it is not a date.
pub fn start_of_day(date: &str) -> Option<i64> {
    let b = date.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |s: &str| -> Option<u32> {
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (year, month, day) = (
        digits(&date[..4])?,
        digits(&date[5..7])?,
        digits(&date[8..])?,
    );
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month {
        return None;
    }
    Some(days_from_civil(i64::from(year), month, day) * 86_400)
}

/// The usernames of the accounts events name, looked up once each.
struct Names<'a> {
    state: &'a AppState,
    known: HashMap<String, Option<String>>,
}

impl Names<'_> {
    /// `username (id)` for an account id, the value itself for anything else.
    async fn of(&mut self, id: Option<&str>) -> Result<Option<String>, Refusal> {
        let Some(id) = id else {
            return Ok(None);
        };
        if !id.starts_with("usr-") {
            return Ok(Some(id.to_owned()));
        }
        if !self.known.contains_key(id) {
            let name = self.state.store.user(id).await?.map(|u| u.username);
            self.known.insert(id.to_owned(), name);
        }
        Ok(Some(match self.known.get(id).cloned().flatten() {
            Some(username) => format!("{username} ({id})"),
            None => id.to_owned(),
        }))
    }
}

/// `GET /admin/audit?kind=&person=&app=&organization=&outcome=&from=&to=&before=`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    _op: Operator,
    Query(q): Query<AuditQuery>,
) -> Answer {
    let mut errors = FieldErrors::default();
    let kind = value(&q.kind);
    if let Some(k) = kind
        && !EventKind::ALL.iter().any(|e| e.as_str() == k)
    {
        errors.add("kind", "Choose a kind of event from the list.");
    }
    let outcome = value(&q.outcome);
    if outcome.is_some_and(|o| o != "success" && o != "failure") {
        errors.add("outcome", "Choose success or failure.");
    }
    let mut date = |field: &'static str, v: Option<&str>| match v {
        None => None,
        Some(d) => {
            let at = start_of_day(d);
            if at.is_none() {
                errors.add(field, "Enter a date as YYYY-MM-DD, for example 2026-11-22.");
            }
            at
        }
    };
    let from = date("from", value(&q.from));
    // Through the end of the `to` day.
    let to = date("to", value(&q.to)).map(|d| d + 86_400);
    if let (Some(f), Some(t)) = (from, to)
        && t <= f
    {
        errors.add("to", "The end date must not be before the start date.");
    }
    let before = match value(&q.before) {
        None => None,
        Some(b) => match b.parse::<i64>() {
            Ok(seq) if seq > 0 => Some(seq),
            _ => {
                errors.add(
                    "before",
                    "The page position is not valid; start from the newest events.",
                );
                None
            }
        },
    };
    // A person is named by username or by account id.
    let person = match value(&q.person) {
        None => None,
        Some(p) => Some(match state.store.user_by_username(p).await? {
            Some(u) => u.id,
            None => p.to_owned(),
        }),
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let stored: Vec<StoredEvent> = if errors.is_empty() {
        let filter = EventFilter {
            kind,
            person: person.as_deref(),
            client_id: value(&q.app),
            organization_id: value(&q.organization),
            outcome,
            from,
            to,
            before,
        };
        state.store.audit_events(&filter, PAGE_SIZE + 1).await?
    } else {
        Vec::new()
    };
    let more = stored.len() as i64 > PAGE_SIZE;
    let mut names = Names {
        state: &state,
        known: HashMap::new(),
    };
    let mut events = Vec::with_capacity(stored.len());
    for e in stored.into_iter().take(PAGE_SIZE as usize) {
        events.push(EventRow {
            seq: e.seq,
            at: Stamp::exact(e.at),
            failed: e.outcome == "failure",
            actor: names.of(e.actor_user_id.as_deref()).await?,
            subject: names.of(e.subject.as_deref()).await?,
            kind: e.kind,
            outcome: e.outcome,
            client_id: e.client_id,
            organization_id: e.organization_id,
            ip: e.ip,
            data: e.data,
        });
    }
    let filters = q.pairs();
    let older = match (more, events.last()) {
        (true, Some(last)) => {
            let seq = last.seq.to_string();
            let mut params = filters.clone();
            params.push(("before", &seq));
            Some(with_query_params(PAGE, &params))
        }
        _ => None,
    };
    let newest = before.map(|_| {
        if filters.is_empty() {
            PAGE.to_owned()
        } else {
            with_query_params(PAGE, &filters)
        }
    });
    let mut kinds: Vec<&'static str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    kinds.sort_unstable();
    let apps = state
        .store
        .clients()
        .await?
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect();
    let organizations = state
        .store
        .organizations()
        .await?
        .into_iter()
        .map(|o| (o.id, o.name))
        .collect();
    let text = |v: &Option<String>| value(v).unwrap_or("").to_owned();
    Ok(pages::render(
        status,
        &AuditPage {
            site: viewer.site(&state.settings),
            section: "audit",
            notice: None,
            kinds,
            apps,
            organizations,
            kind: text(&q.kind),
            person: text(&q.person),
            app: text(&q.app),
            organization: text(&q.organization),
            outcome: text(&q.outcome),
            from: text(&q.from),
            to: text(&q.to),
            filtered: !filters.is_empty(),
            errors,
            events,
            older,
            newest,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::start_of_day;
    use crate::http::pages::format_utc;

    #[test]
    fn dates_are_read_strictly_as_utc_days() {
        let cases = [
            ("1970-01-01", Some(0)),
            ("2000-02-29", Some(951_782_400)),
            ("2024-02-29", Some(1_709_164_800)),
            ("2026-11-22", Some(1_795_305_600)),
            ("1969-12-31", Some(-86_400)),
            ("2023-02-29", None),
            ("2026-13-01", None),
            ("2026-04-31", None),
            ("2026-1-01", None),
            ("2026/11/22", None),
            ("22-11-2026", None),
            ("+026-11-22", None),
            ("", None),
        ];
        for (text, at) in cases {
            assert_eq!(start_of_day(text), at, "{text}");
        }
        for day in 0..800 {
            let at = 1_700_000_000 / 86_400 * 86_400 + day * 86_400;
            let text = format_utc(at);
            assert_eq!(start_of_day(&text[..10]), Some(at), "{text}");
        }
    }
}
