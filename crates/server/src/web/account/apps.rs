//! `/account/apps`: the apps a person has connected, with what each may do
//! and when it was allowed and last used, and a Revoke button that ends
//! every token of the grant at once. An organization's admins also see, and
//! revoke, the organization-level grants made for it.
//!
//! The forms act only on the signed-in person (their own grants) or on an
//! organization they administer; every one carries the session's CSRF token.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use healthgate_core::integration::IntegrationStatus;
use healthgate_core::org::{ADMIN, Organization};
use healthgate_core::redirect::with_query_params;
use healthgate_core::scope::ScopeSet;
use healthgate_store::{OrgGrant, UserGrant};
use serde::Deserialize;

use super::AccountForm;
use super::{Nav, scope_lines};
use crate::http::error::PageError;
use crate::http::extract::{CsrfForm, SignedIn, Viewer};
use crate::http::ip::ClientIp;
use crate::http::pages::{self, ScopeLine, Site, Stamp};
use crate::services::photos::served_path;
use crate::state::AppState;

const PAGE: &str = "/account/apps";

/// One app the person connected.
pub struct AppLine {
    pub client_id: String,
    pub name: String,
    pub photo_url: Option<String>,
    pub scopes: Vec<ScopeLine>,
    pub organization: Option<String>,
    pub granted_at: Stamp,
    pub last_used: Option<Stamp>,
}

/// One app connected for an organization (its live organization-level
/// families, together).
pub struct OrgAppLine {
    pub client_id: String,
    pub name: String,
    pub photo_url: Option<String>,
    pub scopes: Vec<ScopeLine>,
    pub granted_by: String,
    pub granted_at: Stamp,
}

/// An organization the person administers, with its connected apps: the
/// ones allowed for all of it, and its integrations (what the integration
/// directory connects), so "connected" reads the same on both pages.
pub struct OrgSection {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub apps: Vec<OrgAppLine>,
    pub integrations: Vec<IntegrationLine>,
}

/// One of an organization's live integrations.
pub struct IntegrationLine {
    pub name: String,
    /// `connected`, or `pending` (waiting for the partner to activate it).
    pub status: &'static str,
    pub since: Stamp,
}

#[derive(Template)]
#[template(path = "account_apps.html")]
pub struct AccountAppsPage<'a> {
    pub site: Site<'a>,
    pub nav: Nav,
    pub username: &'a str,
    pub apps: Vec<AppLine>,
    pub orgs: Vec<OrgSection>,
    pub notice: Option<String>,
    pub csrf_token: &'a str,
}

/// What the page says after a revocation: `revoked` names the app (and
/// `organization` the organization) that lost access; `nothing` says there
/// was nothing left to revoke.
#[derive(Deserialize)]
pub struct AppsQuery {
    revoked: Option<String>,
    organization: Option<String>,
    nothing: Option<String>,
}

fn app_line(state: &AppState, g: UserGrant) -> AppLine {
    AppLine {
        scopes: scope_lines(state, &g.scope),
        photo_url: served_path(&g.client_id, g.photo_url.as_deref()),
        client_id: g.client_id,
        name: g.client_name,
        organization: g.organization_name.or(g.organization_id),
        granted_at: Stamp::at(g.granted_at),
        last_used: g.last_used_at.map(Stamp::at),
    }
}

/// The live grants of an organization, one line per app: the scopes of all
/// its live families, the first grant's date and the latest grant's admin.
fn org_apps(state: &AppState, grants: Vec<OrgGrant>) -> Vec<OrgAppLine> {
    let mut by_client: BTreeMap<String, (OrgGrant, ScopeSet, i64, i64)> = BTreeMap::new();
    for g in grants.into_iter().filter(|g| g.live) {
        match by_client.get_mut(&g.client_id) {
            Some((latest, scope, first, last)) => {
                *scope = scope.union(&g.scope);
                *first = (*first).min(g.created_at);
                if g.created_at > *last {
                    *last = g.created_at;
                    *latest = g;
                }
            }
            None => {
                let (scope, at) = (g.scope.clone(), g.created_at);
                by_client.insert(g.client_id.clone(), (g, scope, at, at));
            }
        }
    }
    let mut lines: Vec<OrgAppLine> = by_client
        .into_values()
        .map(|(latest, scope, first, _)| OrgAppLine {
            scopes: scope_lines(state, &scope),
            granted_by: latest
                .granted_by_name
                .or(latest.granted_by)
                .unwrap_or_else(|| "an administrator".to_owned()),
            photo_url: served_path(&latest.client_id, latest.photo_url.as_deref()),
            client_id: latest.client_id,
            name: latest.client_name,
            granted_at: Stamp::at(first),
        })
        .collect();
    lines.sort_by_key(|l| l.name.to_lowercase());
    lines
}

/// What to tell the person after a revocation, from the redirect's query.
async fn notice(
    state: &AppState,
    q: &AppsQuery,
    orgs: &[Organization],
) -> Result<Option<String>, PageError> {
    if q.nothing.is_some() {
        return Ok(Some(
            "There was nothing to revoke: that app no longer had access.".to_owned(),
        ));
    }
    let Some(client_id) = q.revoked.as_deref() else {
        return Ok(None);
    };
    let app = state
        .store
        .client(client_id)
        .await?
        .map_or_else(|| "The app".to_owned(), |c| c.name);
    let org = q
        .organization
        .as_deref()
        .and_then(|id| orgs.iter().find(|o| o.id == id));
    Ok(Some(match org {
        Some(org) => format!(
            "{app} no longer has access for {}. Every token it held for it has stopped working.",
            org.name
        ),
        None => format!(
            "{app} no longer has access to your account. Every token it held has stopped working."
        ),
    }))
}

/// `GET /account/apps`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    SignedIn { session, user }: SignedIn,
    Query(q): Query<AppsQuery>,
) -> Result<Response, PageError> {
    let user_id = user.id.clone();
    let apps = state
        .store
        .grants_of_user(&user_id)
        .await?
        .into_iter()
        .map(|g| app_line(&state, g))
        .collect();
    let admin_of = state.store.organizations_where(&user_id, ADMIN).await?;
    let mut orgs = Vec::with_capacity(admin_of.len());
    for org in &admin_of {
        let grants = state.store.organization_grants(&org.id).await?;
        let mut integrations = Vec::new();
        for i in state.store.integrations_of_organization(&org.id).await? {
            if i.status == IntegrationStatus::Disconnected {
                continue;
            }
            let name = match state.store.client(&i.client_id).await? {
                Some(c) => c.name,
                None => continue,
            };
            integrations.push(IntegrationLine {
                name,
                status: i.status.as_str(),
                since: Stamp::at(i.activated_at.unwrap_or(i.created_at)),
            });
        }
        orgs.push(OrgSection {
            id: org.id.clone(),
            name: org.name.clone(),
            kind: org.kind.to_string(),
            apps: org_apps(&state, grants),
            integrations,
        });
    }
    let notice = notice(&state, &q, &admin_of).await?;
    Ok(pages::render(
        StatusCode::OK,
        &AccountAppsPage {
            site: viewer.site(&state.settings),
            nav: Nav::on(PAGE),
            username: user.name.as_deref().unwrap_or(&user.username),
            apps,
            orgs,
            notice,
            csrf_token: &session.csrf_token,
        },
    ))
}

/// `POST /account/apps/revoke` (`csrf_token`, `client_id`): revokes the
/// signed-in person's own grant to the app, whoever else it serves.
pub async fn revoke(
    State(state): State<AppState>,
    ip: ClientIp,
    SignedIn { session: _, user }: SignedIn,
    CsrfForm { fields: f, .. }: CsrfForm<AccountForm>,
) -> Result<Response, PageError> {
    let user_id = user.id.clone();
    let client_id = f
        .client_id
        .clone()
        .ok_or_else(|| PageError::bad_request("Choose the app to revoke."))?;
    let revoked = state
        .store
        .revoke_user_grant(&user_id, &client_id, ip.as_deref(), state.now())
        .await?;
    let back = if revoked {
        with_query_params(PAGE, &[("revoked", &client_id)])
    } else {
        with_query_params(PAGE, &[("nothing", "1")])
    };
    Ok(Redirect::to(&back).into_response())
}

/// `POST /account/apps/revoke-organization` (`csrf_token`,
/// `organization_id`, `client_id`): an admin revokes an organization-level
/// grant of an organization they administer; anyone else is refused.
pub async fn revoke_organization(
    State(state): State<AppState>,
    ip: ClientIp,
    SignedIn { session: _, user }: SignedIn,
    CsrfForm { fields: f, .. }: CsrfForm<AccountForm>,
) -> Result<Response, PageError> {
    let user_id = user.id.clone();
    let organization_id = f.organization_id.clone().unwrap_or_default();
    let client_id = f
        .client_id
        .clone()
        .ok_or_else(|| PageError::bad_request("Choose the app to revoke."))?;
    let admin_of = state.store.organizations_where(&user_id, ADMIN).await?;
    if !admin_of.iter().any(|o| o.id == organization_id) {
        return Err(PageError::forbidden(
            "Only an administrator of the organization can revoke the apps connected for it.",
        ));
    }
    let revoked = state
        .store
        .revoke_organization_grant(
            &organization_id,
            &client_id,
            &user_id,
            ip.as_deref(),
            state.now(),
        )
        .await?;
    let back = if revoked {
        with_query_params(
            PAGE,
            &[("revoked", &client_id), ("organization", &organization_id)],
        )
    } else {
        with_query_params(PAGE, &[("nothing", "1")])
    };
    Ok(Redirect::to(&back).into_response())
}
