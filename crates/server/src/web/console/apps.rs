//! `/admin/apps`: every registered app with who registered it, its kind and
//! status, and Suspend / Restore. A suspended app may do nothing (see
//! `Store::suspend_client` and `client_auth`); restoring it lets it ask
//! for new tokens, while what the suspension revoked stays revoked. An
//! operator also makes an app a resource server here (it may introspect
//! every token, not only its own), or takes that back.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use healthgate_core::listing::ListingState;
use healthgate_store::Suspension;
use serde::Deserialize;

use super::reason::{self, ReasonFor};
use super::{Answer, ConsoleForm, Operator, admin_failure, back_to, need};
use crate::http::error::PageError;
use crate::http::extract::{CsrfForm, Viewer};
use crate::http::forms::FieldErrors;
use crate::http::ip::ClientIp;
use crate::http::pages::{self, Site, Stamp};
use crate::services::admin;
use crate::state::AppState;

const PAGE: &str = "/admin/apps";

/// One app in the list.
pub struct AppRow {
    pub id: String,
    pub name: String,
    /// The username of who registered it in the developer portal.
    pub owner: Option<String>,
    pub kind: &'static str,
    /// Its place in the integration directory, when it has one.
    pub listing: Option<&'static str>,
    pub resource_server: bool,
    /// Registered at `/oauth/register`: with which initial access token
    /// (or `open`).
    pub registered_with: Option<String>,
    pub created: Stamp,
    pub suspended: Option<Stamp>,
}

#[derive(Template)]
#[template(path = "console_apps.html")]
pub struct AppsPage<'a> {
    pub site: Site<'a>,
    pub section: &'static str,
    pub notice: Option<String>,
    pub csrf_token: &'a str,
    pub apps: Vec<AppRow>,
}

#[derive(Deserialize)]
pub struct SuspendQuery {
    client_id: Option<String>,
}

/// The app a suspension is about, or "no such app".
async fn app_named(state: &AppState, client_id: &str) -> Result<(String, bool), PageError> {
    match state.store.client(client_id).await? {
        Some(c) => Ok((c.name, c.suspended_at.is_some())),
        None => Err(PageError {
            status: StatusCode::NOT_FOUND,
            title: "No such app",
            message: "There is no app with this id. It may have been deleted.".into(),
        }),
    }
}

/// `GET /admin/apps/suspend?client_id=`: the confirmation step, which asks
/// for the reason.
pub async fn confirm_suspend(
    State(state): State<AppState>,
    viewer: Viewer,
    op: Operator,
    Query(q): Query<SuspendQuery>,
) -> Answer {
    let client_id = need(&q.client_id, "the app")?;
    let (name, suspended) = app_named(&state, &client_id).await?;
    if suspended {
        return Ok(back_to(
            PAGE,
            &[("done", "already-suspended"), ("app", &client_id)],
        ));
    }
    Ok(reason::page(
        &state,
        &viewer,
        &op,
        ReasonFor::Suspend,
        (&client_id, &name),
        "",
        FieldErrors::default(),
    ))
}

#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
    app: Option<String>,
    families: Option<u64>,
    codes: Option<u64>,
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// `GET /admin/apps`.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    op: Operator,
    Query(q): Query<DoneQuery>,
) -> Answer {
    let listed = state.store.clients_with_owners().await?;
    let name = q
        .app
        .as_deref()
        .and_then(|id| listed.iter().find(|(c, _)| c.id == id))
        .map_or_else(|| "The app".to_owned(), |(c, _)| c.name.clone());
    let notice = match q.done.as_deref() {
        Some("suspended") => {
            let (families, codes) = (q.families.unwrap_or(0), q.codes.unwrap_or(0));
            let revoked = if families == 0 && codes == 0 {
                "It held no live tokens.".to_owned()
            } else {
                format!(
                    "Every token it held has stopped working ({} revoked, {} expired).",
                    plural(families, "grant", "grants"),
                    plural(codes, "pending code", "pending codes"),
                )
            };
            Some(format!(
                "{name} is suspended: it can no longer sign anyone in or get tokens. {revoked}"
            ))
        }
        Some("already-suspended") => Some(format!("{name} was already suspended.")),
        Some("restored") => Some(format!(
            "{name} is restored: it may ask for new tokens. Tokens revoked by the suspension stay revoked."
        )),
        Some("not-suspended") => Some(format!("{name} was not suspended.")),
        Some("resource-server") => Some(format!(
            "{name} is a resource server: it may introspect every token."
        )),
        Some("not-resource-server") => Some(format!("{name} may introspect only its own tokens.")),
        _ => None,
    };
    let apps = listed
        .into_iter()
        .map(|(c, owner)| AppRow {
            kind: c.kind.as_str(),
            listing: match c.listing.state {
                ListingState::NotListed => None,
                ListingState::Requested => Some("directory request waiting"),
                ListingState::Approved => Some("in the directory"),
                ListingState::Rejected => Some("directory request rejected"),
            },
            resource_server: c.resource_server,
            registered_with: c.registered_with,
            created: Stamp::exact(c.created_at),
            suspended: c.suspended_at.map(Stamp::exact),
            id: c.id,
            name: c.name,
            owner,
        })
        .collect();
    Ok(pages::render(
        StatusCode::OK,
        &AppsPage {
            site: viewer.site(&state.settings),
            section: "apps",
            notice,
            csrf_token: &op.session.csrf_token,
            apps,
        },
    ))
}

/// `POST /admin/apps/suspend` (`client_id`, `reason`): sent from the
/// confirmation page; without a reason, that page again with the field's
/// error.
pub async fn suspend(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let client_id = need(&f.client_id, "the app")?;
    let reason = match reason::checked(ReasonFor::Suspend, f.reason.as_deref()) {
        Ok(reason) => reason,
        Err(errors) => {
            let (name, _) = app_named(&state, &client_id).await?;
            let typed = f.reason.as_deref().map(str::trim).unwrap_or_default();
            return Ok(reason::page(
                &state,
                &viewer,
                &op,
                ReasonFor::Suspend,
                (&client_id, &name),
                typed,
                errors,
            ));
        }
    };
    let done = admin::suspend_client(
        &state.store,
        state.clock.as_ref(),
        &client_id,
        Some(reason.as_str()),
        op.actor(&ip),
    )
    .await
    .map_err(admin_failure)?;
    Ok(match done {
        Suspension::Suspended {
            families_revoked,
            codes_expired,
        } => back_to(
            PAGE,
            &[
                ("done", "suspended"),
                ("app", &client_id),
                ("families", &families_revoked.to_string()),
                ("codes", &codes_expired.to_string()),
            ],
        ),
        _ => back_to(PAGE, &[("done", "already-suspended"), ("app", &client_id)]),
    })
}

/// `POST /admin/apps/restore` (`client_id`).
pub async fn restore(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let client_id = need(&f.client_id, "the app")?;
    let restored = admin::restore_client(
        &state.store,
        state.clock.as_ref(),
        &client_id,
        op.actor(&ip),
    )
    .await
    .map_err(admin_failure)?;
    let done = if restored {
        "restored"
    } else {
        "not-suspended"
    };
    Ok(back_to(PAGE, &[("done", done), ("app", &client_id)]))
}

/// `POST /admin/apps/resource-server` (`client_id`, `resource_server` =
/// `1` or `0`): whether the app may introspect every token (RFC 7662 §4).
pub async fn set_resource_server(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let client_id = need(&f.client_id, "the app")?;
    let on = need(&f.resource_server, "whether it is a resource server")? == "1";
    admin::update_client(
        &state.store,
        &state.settings,
        state.clock.as_ref(),
        &client_id,
        admin::ClientChanges {
            resource_server: Some(on),
            ..admin::ClientChanges::default()
        },
        op.actor(&ip),
    )
    .await
    .map_err(admin_failure)?;
    let done = if on {
        "resource-server"
    } else {
        "not-resource-server"
    };
    Ok(back_to(PAGE, &[("done", done), ("app", &client_id)]))
}
