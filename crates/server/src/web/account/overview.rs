//! `/account`: who the signed-in person is, and the way to each part of
//! their account with a word on what is there (how many apps, organizations
//! and signed-in browsers).

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{Nav, user_type_label};
use crate::http::error::PageError;
use crate::http::extract::{SignedIn, Viewer};
use crate::http::pages::{self, Site, Stamp};
use crate::state::AppState;

const PAGE: &str = "/account";

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage<'a> {
    pub site: Site<'a>,
    pub nav: Nav,
    pub username: &'a str,
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub user_type: &'static str,
    pub member_since: Stamp,
    /// What each part of the account holds, in a sentence.
    pub apps: String,
    pub organizations: String,
    pub sessions: String,
    pub csrf_token: &'a str,
}

/// "1 app", "2 apps".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `GET /account`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    SignedIn { session, user }: SignedIn,
) -> Result<Response, PageError> {
    let apps = match state.store.grants_of_user(&user.id).await?.len() {
        0 => "No apps can use your account.".to_owned(),
        n => format!("{} can use your account.", count(n, "app", "apps")),
    };
    let organizations = match state.store.memberships(&user.id).await?.len() {
        0 => "You do not belong to any organization.".to_owned(),
        n => format!(
            "You belong to {}.",
            count(n, "organization", "organizations")
        ),
    };
    let sessions = state
        .store
        .sessions_of_user(&user.id, state.now())
        .await?
        .len();
    let sessions = format!("Signed in on {}.", count(sessions, "browser", "browsers"));
    Ok(pages::render(
        StatusCode::OK,
        &AccountPage {
            site: viewer.site(&state.settings),
            nav: Nav::on(PAGE),
            username: &user.username,
            name: user.name.as_deref(),
            email: user.email.as_deref(),
            user_type: user_type_label(&user),
            member_since: Stamp::at(user.created_at),
            apps,
            organizations,
            sessions,
            csrf_token: &session.csrf_token,
        },
    ))
}
