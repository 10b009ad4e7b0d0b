//! `/admin`: the console of the platform's operators (`users.operator`):
//! a home page with the last day's bursts, locks and throttled apps,
//! organizations and their members, people (search, lock, unlock, also from
//! a lock after failed sign-ins, password reset), apps (suspend after a
//! confirmation with a reason, restore), the integration directory's review
//! (approve, reject or unlist, with a reason), the audit log with filters,
//! and the health of every webhook. Nobody else may open it: a visitor is sent to
//! sign in, and a signed-in person who is not an operator is refused (403).
//!
//! Every action is a form POST carrying the session's CSRF token (checked
//! with the `Origin`), answered by a 303 back to its page with a status
//! message, and recorded as an event whose actor is the operator. The one
//! exception is a password reset, whose result page shows the temporary
//! password once instead of redirecting (a password never goes in a URL).

mod apps;
mod audit;
mod directory;
mod organizations;
mod reason;
mod security;
mod users;
mod webhooks;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use healthgate_core::redirect::with_query_params;
use healthgate_core::user::User;

use crate::http::error::PageError;
use crate::http::pages::{self, Site};
use crate::http::routes::Routes;
use crate::services::admin::AdminError;
use crate::state::AppState;

/// The console's routes, all under `/admin`.
pub fn routes() -> Routes {
    Routes::new()
        .route("/admin", get(home))
        .route(
            "/admin/organizations",
            get(organizations::list).post(organizations::create),
        )
        .route("/admin/organizations/{id}", get(organizations::show))
        .route(
            "/admin/organizations/{id}/members",
            post(organizations::add_member),
        )
        .route(
            "/admin/organizations/{id}/members/role",
            post(organizations::change_role),
        )
        .route(
            "/admin/organizations/{id}/members/remove",
            post(organizations::remove_member),
        )
        .route("/admin/users", get(users::list))
        .route("/admin/users/lock", post(users::lock))
        .route("/admin/users/unlock", post(users::unlock))
        .route("/admin/users/reset-password", post(users::reset_password))
        .route("/admin/users/reset-mfa", post(users::reset_mfa))
        .route("/admin/users/fhir-user", post(users::set_fhir_user))
        .route("/admin/users/link-patient", post(users::link_patient))
        .route("/admin/users/unlink-patient", post(users::unlink_patient))
        .route("/admin/apps", get(apps::list))
        .route(
            "/admin/apps/suspend",
            get(apps::confirm_suspend).post(apps::suspend),
        )
        .route("/admin/apps/restore", post(apps::restore))
        .route(
            "/admin/apps/resource-server",
            post(apps::set_resource_server),
        )
        .route("/admin/directory", get(directory::list))
        .route("/admin/directory/approve", post(directory::approve))
        .route(
            "/admin/directory/reject",
            get(directory::confirm_reject).post(directory::reject),
        )
        .route(
            "/admin/directory/unlist",
            get(directory::confirm_unlist).post(directory::unlist),
        )
        .route("/admin/audit", get(audit::page))
        .route("/admin/webhooks", get(webhooks::page))
        .route("/admin/webhooks/unmute", post(webhooks::unmute))
}

pub use crate::http::extract::{Operator, Refusal, Viewer};

/// A page or action's answer.
pub type Answer = Result<Response, Refusal>;

/// Every field a console form may send; each action reads the ones it
/// needs (a missing required one is a bad request: the console's own forms
/// always send it).
#[derive(Debug, Default, serde::Deserialize)]
pub struct ConsoleForm {
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub role: Option<String>,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub q: Option<String>,
    pub page: Option<String>,
    pub resource_server: Option<String>,
    /// Why an app is suspended, or its listing rejected or ended, or a
    /// person's second factors reset (kept in the audit trail).
    pub reason: Option<String>,
    /// The fingerprint of the app an operator reviewed (approving it).
    pub reviewed: Option<String>,
    /// SMART: a person's `fhirUser`, a patient to link or unlink, and how
    /// the picker names it.
    pub fhir_user: Option<String>,
    pub patient: Option<String>,
    pub display: Option<String>,
}

/// A required field of a console form, trimmed.
pub fn need(value: &Option<String>, what: &str) -> Result<String, Refusal> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| PageError::bad_request(format!("Choose {what}.")).into())
}

/// An administrative refusal as a page: the request was wrong (400), or
/// storage failed.
pub fn admin_failure(e: AdminError) -> Refusal {
    PageError::from(e).into()
}

/// The 303 that answers an action: back to `path` with `params` (which say
/// what was done; the page turns them into a status message).
pub fn back_to(path: &str, params: &[(&str, &str)]) -> Response {
    Redirect::to(&with_query_params(path, params)).into_response()
}

/// The name people know an account by: its display name with its
/// username, or the username alone.
pub fn who(user: &User) -> String {
    match &user.name {
        Some(name) if name != &user.username => format!("{name} ({})", user.username),
        _ => user.username.clone(),
    }
}

/// A person named in a status message, by id; an id no longer known reads
/// as "The account".
pub async fn person_named(state: &AppState, user_id: Option<&str>) -> Result<String, Refusal> {
    Ok(match user_id {
        Some(id) => state
            .store
            .user(id)
            .await?
            .map_or_else(|| "The account".to_owned(), |u| u.username),
        None => "The account".to_owned(),
    })
}

/// The overview: how many of each thing there are, and what needs looking
/// at, the throttles' recent events among it.
#[derive(Template)]
#[template(path = "console_home.html")]
pub struct HomePage<'a> {
    pub site: Site<'a>,
    pub section: &'static str,
    pub notice: Option<String>,
    pub operator: String,
    pub organizations: usize,
    pub people: i64,
    pub apps: usize,
    pub suspended: usize,
    /// Apps waiting for a review of their listing in the directory.
    pub listing_requests: usize,
    pub webhooks: usize,
    pub muted: usize,
    pub failing: usize,
    /// Bursts, locks and throttled apps of the last 24 hours, newest first.
    pub security: Vec<security::SecurityRow>,
    /// Whether there were more than are listed.
    pub more_security: bool,
}

/// `GET /admin`.
async fn home(State(state): State<AppState>, viewer: Viewer, op: Operator) -> Answer {
    let organizations = state.store.organizations().await?.len();
    let (_, people) = state.store.search_users("", 0, 0).await?;
    let apps = state.store.clients().await?;
    let hooks = state.store.webhook_health().await?;
    let (security, more_security) = security::recent(&state).await?;
    Ok(pages::render(
        StatusCode::OK,
        &HomePage {
            site: viewer.site(&state.settings),
            section: "home",
            notice: None,
            operator: who(&op.user),
            organizations,
            people,
            apps: apps.len(),
            suspended: apps.iter().filter(|c| c.suspended_at.is_some()).count(),
            listing_requests: apps
                .iter()
                .filter(|c| c.listing.state == healthgate_core::listing::ListingState::Requested)
                .count(),
            webhooks: hooks.len(),
            muted: hooks.iter().filter(|h| h.muted_at.is_some()).count(),
            failing: hooks
                .iter()
                .filter(|h| h.muted_at.is_none() && h.consecutive_failures > 0)
                .count(),
            security,
            more_security,
        },
    ))
}
