//! `/admin/webhooks`: how every app's webhook is doing: deliveries waiting,
//! delivered, held while muted and given up on (past the 72-hour retry
//! window), the last success and the last failure with its error, the
//! failures in a row, and Unmute for a webhook muted after too many.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{Answer, ConsoleForm, Operator, back_to, need};
use crate::http::error::PageError;
use crate::http::extract::{CsrfForm, Viewer};
use crate::http::ip::ClientIp;
use crate::http::pages::{self, Site, Stamp};
use crate::state::AppState;

const PAGE: &str = "/admin/webhooks";

/// One app's webhook.
pub struct HookRow {
    pub client_id: String,
    pub name: String,
    pub url: String,
    pub muted: Option<Stamp>,
    pub consecutive_failures: i64,
    pub pending: i64,
    pub held: i64,
    pub delivered: i64,
    pub failed: i64,
    pub last_success: Option<Stamp>,
    pub last_failure: Option<(Stamp, String)>,
}

#[derive(Template)]
#[template(path = "console_webhooks.html")]
pub struct WebhooksPage<'a> {
    pub site: Site<'a>,
    pub section: &'static str,
    pub notice: Option<String>,
    pub csrf_token: &'a str,
    pub hooks: Vec<HookRow>,
}

#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
    app: Option<String>,
    resumed: Option<u64>,
}

/// `GET /admin/webhooks`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    op: Operator,
    Query(q): Query<DoneQuery>,
) -> Answer {
    let health = state.store.webhook_health().await?;
    let name = q
        .app
        .as_deref()
        .and_then(|id| health.iter().find(|h| h.client_id == id))
        .map_or_else(|| "The app".to_owned(), |h| h.client_name.clone());
    let notice = match q.done.as_deref() {
        Some("unmuted") => Some(match q.resumed.unwrap_or(0) {
            0 => format!("{name}'s webhook is unmuted. No deliveries were waiting."),
            1 => format!("{name}'s webhook is unmuted: 1 held delivery is being sent."),
            n => format!("{name}'s webhook is unmuted: {n} held deliveries are being sent."),
        }),
        Some("not-muted") => Some(format!("{name}'s webhook was not muted.")),
        _ => None,
    };
    let hooks = health
        .into_iter()
        .map(|h| HookRow {
            client_id: h.client_id,
            name: h.client_name,
            url: h.url,
            muted: h.muted_at.map(Stamp::exact),
            consecutive_failures: h.consecutive_failures,
            pending: h.pending,
            held: h.held,
            delivered: h.delivered,
            failed: h.failed,
            last_success: h.last_success_at.map(Stamp::exact),
            last_failure: h.last_failure.map(|(at, error)| (Stamp::exact(at), error)),
        })
        .collect();
    Ok(pages::render(
        StatusCode::OK,
        &WebhooksPage {
            site: viewer.site(&state.settings),
            section: "webhooks",
            notice,
            csrf_token: &op.session.csrf_token,
            hooks,
        },
    ))
}

/// `POST /admin/webhooks/unmute` (`client_id`): deliveries held while the
/// webhook was muted are sent again.
pub async fn unmute(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let client_id = need(&f.client_id, "the app")?;
    let client = state
        .store
        .client(&client_id)
        .await?
        .ok_or_else(|| PageError::bad_request("There is no such app."))?;
    if client.webhook_muted_at.is_none() {
        return Ok(back_to(PAGE, &[("done", "not-muted"), ("app", &client.id)]));
    }
    let resumed = state
        .store
        .unmute_webhook_by(&client.id, op.actor(&ip), state.now())
        .await?;
    Ok(back_to(
        PAGE,
        &[
            ("done", "unmuted"),
            ("app", &client.id),
            ("resumed", &resumed.to_string()),
        ],
    ))
}
