//! `/admin`: the console of the platform's operators (`users.operator`):
//! organizations and their members, people (search, lock, unlock, password
//! reset), apps (suspend, restore), the audit log with filters, and the
//! health of every webhook. Nobody else may open it: a visitor is sent to
//! sign in, and a signed-in person who is not an operator is refused (403).
//!
//! Every action is a form POST carrying the session's CSRF token (checked
//! with the `Origin`), answered by a 303 back to its page with a status
//! message, and recorded as an event whose actor is the operator. The one
//! exception is a password reset, whose result page shows the temporary
//! password once instead of redirecting (a password never goes in a URL).

mod apps;
mod audit;
mod organizations;
mod users;
mod webhooks;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use healthgate_core::redirect::with_query_params;
use healthgate_core::user::User;
use healthgate_store::{Actor, Session};

use crate::http::error::PageError;
use crate::http::ip::ClientIp;
use crate::http::pages::{self, Site};
use crate::http::routes::Routes;
use crate::http::session::{self, form_field};
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
        .route("/admin/apps", get(apps::list))
        .route("/admin/apps/suspend", post(apps::suspend))
        .route("/admin/apps/restore", post(apps::restore))
        .route(
            "/admin/apps/resource-server",
            post(apps::set_resource_server),
        )
        .route("/admin/audit", get(audit::page))
        .route("/admin/webhooks", get(webhooks::page))
        .route("/admin/webhooks/unmute", post(webhooks::unmute))
}

/// What only an operator may do, and a signed-in person who is not one is
/// told.
const OPERATORS_ONLY: &str = "Only the platform's operators can use the admin console.";

/// Why a console request was not served: a visitor is sent to sign in and
/// come back; anything else is an error page.
pub enum Refusal {
    SignIn(String),
    Page(PageError),
}

impl<E: Into<PageError>> From<E> for Refusal {
    fn from(e: E) -> Self {
        Self::Page(e.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn(return_to) => {
                let target = with_query_params("/login", &[("return_to", &return_to)]);
                Redirect::to(&target).into_response()
            }
            Self::Page(e) => e.into_response(),
        }
    }
}

/// A page or action's answer.
pub type Answer = Result<Response, Refusal>;

/// The signed-in operator behind a console request.
pub struct Operator {
    pub session: Session,
    pub user: User,
}

impl Operator {
    /// The operator as the actor of the events their actions write.
    pub fn actor<'a>(&'a self, ip: &'a ClientIp) -> Actor<'a> {
        Actor::user(&self.user.id, ip.as_deref())
    }
}

/// The operator viewing a console page; a visitor is sent to sign in and
/// come back to `uri`, anyone else refused.
pub async fn operator(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Operator, Refusal> {
    let return_to = uri
        .path_and_query()
        .map_or_else(|| "/admin".to_owned(), |p| p.as_str().to_owned());
    let Some(session) = session::logged_in(state, headers).await? else {
        return Err(Refusal::SignIn(return_to));
    };
    let user_id = session.user_id.clone().unwrap_or_default();
    let Some(user) = state.store.user(&user_id).await?.filter(User::is_active) else {
        return Err(Refusal::SignIn(return_to));
    };
    if !user.operator {
        return Err(PageError::forbidden(OPERATORS_ONLY).into());
    }
    Ok(Operator { session, user })
}

/// The operator behind a console form, once its CSRF token and origin are
/// checked. A form is never redirected to sign in: it is refused.
pub async fn operator_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Operator, Refusal> {
    let Some(session) = session::verified_form(state, headers, body).await? else {
        return Err(PageError::forbidden("Please sign in again.").into());
    };
    let user_id = session.user_id.clone().unwrap_or_default();
    let Some(user) = state.store.user(&user_id).await?.filter(User::is_active) else {
        return Err(PageError::forbidden("Please sign in again.").into());
    };
    if !user.operator {
        return Err(PageError::forbidden(OPERATORS_ONLY).into());
    }
    Ok(Operator { session, user })
}

/// A required field of a console form; its absence is a bad request (the
/// console's own forms always send it).
pub fn required(body: &[u8], name: &str, what: &str) -> Result<String, Refusal> {
    form_field(body, name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
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

/// The overview: how many of each thing there are, and what needs looking at.
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
    pub webhooks: usize,
    pub muted: usize,
    pub failing: usize,
}

/// `GET /admin`.
async fn home(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Answer {
    let op = operator(&state, &headers, &uri).await?;
    let organizations = state.store.organizations().await?.len();
    let (_, people) = state.store.search_users("", 0, 0).await?;
    let apps = state.store.clients().await?;
    let hooks = state.store.webhook_health().await?;
    Ok(pages::render(
        StatusCode::OK,
        &HomePage {
            site: Site::of(&state.settings),
            section: "home",
            notice: None,
            operator: who(&op.user),
            organizations,
            people,
            apps: apps.len(),
            suspended: apps.iter().filter(|c| c.suspended_at.is_some()).count(),
            webhooks: hooks.len(),
            muted: hooks.iter().filter(|h| h.muted_at.is_some()).count(),
            failing: hooks
                .iter()
                .filter(|h| h.muted_at.is_none() && h.consecutive_failures > 0)
                .count(),
        },
    ))
}
