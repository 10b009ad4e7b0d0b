//! `/account/organizations`: each practice or clinic the person belongs
//! to, their role there, and in words what that role lets the apps they
//! allow there do (the role's scopes from `[roles]`, described by
//! `[scopes]`). An administrator also gets the way to the organization's
//! integrations and to its section of `/account/apps`.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use healthgate_core::org::{ADMIN, OrganizationKind};

use super::{Nav, scope_lines};
use crate::http::error::PageError;
use crate::http::extract::{SignedIn, Viewer};
use crate::http::pages::{self, ScopeLine, Site};
use crate::state::AppState;

const PAGE: &str = "/account/organizations";

/// One organization the person belongs to.
pub struct MembershipLine {
    pub id: String,
    pub name: String,
    /// "Practice" or "Clinic".
    pub kind: &'static str,
    /// The kind in a sentence ("this practice").
    pub kind_word: &'static str,
    pub role: String,
    /// What apps allowed in this role may do there.
    pub scopes: Vec<ScopeLine>,
    pub admin: bool,
}

#[derive(Template)]
#[template(path = "account_organizations.html")]
pub struct OrganizationsPage<'a> {
    pub site: Site<'a>,
    pub nav: Nav,
    pub memberships: Vec<MembershipLine>,
}

/// `GET /account/organizations`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    SignedIn { session: _, user }: SignedIn,
) -> Result<Response, PageError> {
    let memberships = state
        .store
        .memberships(&user.id)
        .await?
        .into_iter()
        .map(|(org, role)| {
            let policy = state.settings.role_policy(&role);
            let (kind, kind_word) = match org.kind {
                OrganizationKind::Practice => ("Practice", "practice"),
                OrganizationKind::Clinic => ("Clinic", "clinic"),
            };
            MembershipLine {
                scopes: scope_lines(&state, &policy.scopes),
                admin: role == ADMIN,
                id: org.id,
                name: org.name,
                kind,
                kind_word,
                role,
            }
        })
        .collect();
    Ok(pages::render(
        StatusCode::OK,
        &OrganizationsPage {
            site: viewer.site(&state.settings),
            nav: Nav::on(PAGE),
            memberships,
        },
    ))
}
